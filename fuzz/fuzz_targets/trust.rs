//! The fleet's trust documents, from peers, files and operators: roots (wire and JSON),
//! node certificates (wire and text), revocation lists and fleet orders. Each is decoded and
//! checked; and what decodes is signed again by the fixed root's keys, so that the checks
//! after the signature (validity, bounds, scopes) are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::NodeId;
use protocol::cert::SignedCert;
use protocol::orders::SignedOrders;
use protocol::revoke::SignedRevocations;
use protocol::root::{self, SignedRoot};
use protocol::testkeys::{NOW, key, root as fleet_root};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let trusted = fleet_root();
    match pick % 5 {
        0 => {
            if let Ok(r) = SignedRoot::decode(body) {
                let _ = r.verify_first();
                let _ = root::verify_update(&trusted, &r);
                // Signed by the trusted root key: the next root's own rules are checked.
                let resigned = SignedRoot::sign(r.signed, &[&key(1)]);
                let _ = root::update_chain(&trusted, &[resigned], NOW);
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(body) {
                if let Ok(r) = SignedRoot::from_json(text) {
                    let _ = r.verify_first();
                }
            }
        }
        2 => {
            let node = NodeId(key(7).verifying_key().to_bytes());
            let cert = match std::str::from_utf8(body) {
                Ok(text) => SignedCert::from_text(text).or_else(|_| SignedCert::decode(body)),
                Err(_) => SignedCert::decode(body),
            };
            if let Ok(c) = cert {
                let _ = c.verify(&trusted, &node, NOW);
                let resigned = SignedCert::sign(c.cert, &key(50));
                let _ = resigned.verify(&trusted, &node, NOW);
            }
        }
        3 => {
            if let Ok(l) = SignedRevocations::decode(body) {
                let _ = l.verify(&trusted);
                let resigned = SignedRevocations::sign(l.list, &key(60));
                let _ = resigned.verify(&trusted);
            }
        }
        _ => {
            if let Ok(o) = SignedOrders::decode(body) {
                let _ = o.verify(&trusted);
                let resigned = SignedOrders::sign(o.orders, &key(60));
                let _ = resigned.verify(&trusted);
            }
        }
    }
});

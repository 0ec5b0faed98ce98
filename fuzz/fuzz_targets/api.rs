//! The control API's request bodies, as the daemon reads them from its socket: the first
//! byte picks the body's type; a publish request goes on through the checks the daemon
//! makes before it reads a byte of the tree (severity, CVSS, windows, key, rollout).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 12 {
        0 => {
            if let Some(req) = decode::<api::PublishRequest>(body) {
                let _ = node::publish::Request::parse(&req);
            }
        }
        1 => {
            let _ = decode::<api::CommitRequest>(body);
        }
        2 => {
            let _ = decode::<api::ExportRequest>(body);
        }
        3 => {
            let _ = decode::<api::ApproveRequest>(body);
        }
        4 => {
            let _ = decode::<api::RevocationsRequest>(body);
        }
        5 => {
            let _ = decode::<api::OrdersRequest>(body);
        }
        6 => {
            let _ = decode::<api::RollbackRequest>(body);
        }
        7 => {
            let _ = decode::<api::RootsRequest>(body);
        }
        8 => {
            if let Some(c) = decode::<api::CertText>(body) {
                let _ = protocol::cert::SignedCert::from_text(&c.cert_text);
            }
        }
        9 => {
            let _ = decode::<api::HoldRequest>(body);
        }
        10 => {
            let _ = decode::<api::LiftHoldRequest>(body);
        }
        _ => {
            let _ = decode::<api::ForgetRequest>(body);
        }
    }
});

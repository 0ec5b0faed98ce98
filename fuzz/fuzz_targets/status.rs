//! Status records and site summaries, as peers send them and the store keeps them: decode
//! and verify; and the fuzzer's bodies signed by the key they name, so that every bound
//! the body's check enforces is reached. Ledger pages too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::NodeId;
use protocol::status::{SignedStatus, StatusBody};
use protocol::summary::{LedgerPage, SignedSummary, SummaryBody};

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9; 32])
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let node = NodeId(key().verifying_key().to_bytes());
    match pick % 3 {
        0 => {
            if let Ok(record) = SignedStatus::decode(body) {
                let _ = record.verify();
            }
            let decoded: Result<StatusBody, _> = protocol::codec::decode::<
                _,
                { protocol::status::STATUS_RECORD_BYTES_MAX },
            >(body, "fuzz");
            if let Ok(mut b) = decoded {
                b.node = node;
                let signed = SignedStatus::sign(&b, &key());
                let again =
                    SignedStatus::decode(&signed.encode()).expect("a signed record decodes");
                let _ = again.verify();
            }
        }
        1 => {
            if let Ok(summary) = SignedSummary::decode(body) {
                let _ = summary.verify();
            }
            let decoded: Result<SummaryBody, _> = protocol::codec::decode::<
                _,
                { protocol::summary::SUMMARY_BYTES_MAX },
            >(body, "fuzz");
            if let Ok(mut b) = decoded {
                b.aggregator = node;
                let signed = SignedSummary::sign(&b, &key());
                let again =
                    SignedSummary::decode(&signed.encode()).expect("a signed summary decodes");
                let _ = again.verify();
            }
        }
        _ => {
            let _ = LedgerPage::decode(body);
        }
    }
});

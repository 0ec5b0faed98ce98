//! Everything a peer sends on the data plane: frame headers, control messages (hello,
//! bitmaps, offers, summaries, trust documents), requests, reply headers, manifest deltas,
//! announcements and bitmaps. The first byte picks the decoder; a decoded message must
//! encode back to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::wire::{
    Announcement, Bitmap, Control, FRAME_HEADER_BYTES, FrameHeader, ManifestDelta, ReplyHeader,
    Request,
};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 7 {
        0 => {
            if let Ok(msg) = Control::decode(body) {
                let again = Control::decode(&protocol::codec::encode(&msg));
                assert_eq!(
                    again.ok().as_ref(),
                    Some(&msg),
                    "a control message re-encodes"
                );
            }
        }
        1 => {
            if let Ok(req) = Request::decode(body) {
                let again = Request::decode(&protocol::codec::encode(&req));
                assert_eq!(again.ok(), Some(req), "a request re-encodes");
            }
        }
        2 => {
            // A reply header is read against the request it answers.
            let (req, rest) = body.split_at(body.len().min(40));
            if let Ok(req) = Request::decode(req) {
                let _ = ReplyHeader::decode(rest, &req);
            }
        }
        3 => {
            let _ = ManifestDelta::decode(body);
        }
        4 => {
            let _ = Announcement::decode(body);
        }
        5 => {
            if let Ok(head) =
                <[u8; FRAME_HEADER_BYTES]>::try_from(body.get(..FRAME_HEADER_BYTES).unwrap_or(&[]))
            {
                let _ = FrameHeader::parse(head, protocol::wire::CONTROL_FRAME_BYTES_MAX);
            }
        }
        _ => {
            let len = body
                .get(..4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
            if let Some(bits) = Bitmap::from_bytes(len, body.get(4..).unwrap_or(&[]).to_vec()) {
                assert!(
                    bits.count() <= bits.len(),
                    "a bitmap never counts past its length"
                );
            }
        }
    }
});

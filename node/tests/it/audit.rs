//! The audit log end to end: what a daemon records, and a saved copy checked against the
//! node's seal after one entry was edited, removed or moved.

use super::*;
use std::fs;

#[test]
fn publishes_are_audited_and_a_copy_names_the_entry_edited_removed_or_moved() {
    let mut node = Node::init();
    node.start();
    let src = node.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for v in 1..=3u64 {
        fs::write(src.join("patch.bin"), random_bytes(v, 100_000)).unwrap();
        let out = node.publish(&src, "security/audit", v);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A stop is recorded, and a restart records the configuration again.
    assert!(node.stop());
    node.start();

    let log = node.ctl_json(&["audit"]);
    let entries = log["entries"].as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| {
            e["event"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "published",
            "published",
            "published",
            "stopped",
            "started"
        ]
    );
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    let first = &entries[1]["event"]["published"];
    assert_eq!(first["channel"], "security/audit");
    assert_eq!(first["version"], 1);
    assert_eq!(
        first["keys"].as_array().unwrap().len(),
        1,
        "the publisher key is named"
    );
    assert_eq!(entries[4]["event"]["stopped"]["reason"], "SIGTERM");
    assert_eq!(log["seal"]["entries"], 6);
    // Only what happened since an instant, with the seal still over the whole log.
    let since = entries[5]["at_unix_ms"].as_i64().unwrap();
    let recent = node.ctl_json(&["audit", "--since", &since_rfc3339(since)]);
    assert_eq!(recent["entries"].as_array().unwrap().len(), 1);
    assert_eq!(recent["seal"]["entries"], 6);

    let ok = node.ctl(&["audit", "verify"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact: 6 entries"));

    let check = |name: &str, copy: &serde_json::Value| {
        let path = node.dir.path().join(name);
        fs::write(&path, serde_json::to_vec(copy).unwrap()).unwrap();
        node.ctl(&["audit", "verify", "--file", path.to_str().unwrap()])
    };
    let out = check("intact.json", &log);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broken_at = |out: Output| {
        assert_eq!(out.status.code(), Some(5), "a damaged copy exits 5");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let at = err.split("broken at entry ").nth(1).expect(&err);
        at.split(':').next().unwrap().parse::<u64>().unwrap()
    };
    // Edited: version 1 becomes 9.
    let mut edited = log.clone();
    edited["entries"][1]["event"]["published"]["version"] = 9.into();
    assert_eq!(broken_at(check("edited.json", &edited)), 2);
    // Edited, and its stated hash recomputed to match: the next entry's link gives it away.
    let mut relinked = edited.clone();
    let entry: ::store::audit::ListedEntry =
        serde_json::from_value(edited["entries"][1].clone()).unwrap();
    relinked["entries"][1]["hash"] = hex::encode(entry.entry.hash()).into();
    assert_eq!(broken_at(check("relinked.json", &relinked)), 2);
    // Removed.
    let mut removed = log.clone();
    removed["entries"].as_array_mut().unwrap().remove(2);
    assert_eq!(broken_at(check("removed.json", &removed)), 3);
    // Moved: entries 3 and 4 swapped.
    let mut moved = log.clone();
    moved["entries"].as_array_mut().unwrap().swap(2, 3);
    assert_eq!(broken_at(check("moved.json", &moved)), 3);
    // Cut short at the end: the seal says 6.
    let mut cut = log.clone();
    cut["entries"].as_array_mut().unwrap().pop();
    assert_eq!(broken_at(check("cut.json", &cut)), 6);
    // A seal changed to match the cut: its signature no longer holds.
    cut["seal"]["entries"] = 5.into();
    cut["seal"]["head"] = log["entries"][4]["hash"].clone();
    let out = check("resealed.json", &cut);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature"));
    assert!(node.stop());
}

fn since_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let nanos = (ms.rem_euclid(1000) * 1_000_000) as u32;
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos);
    humantime::format_rfc3339_millis(t).to_string()
}

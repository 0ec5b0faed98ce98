//! The fleet root on real processes: `p2pctl root` makes and signs it offline, `p2pd init
//! --root` takes it, and the daemon then trusts the publishers it names, on their channels
//! by whole segments, and not the [trust] section.

use crate::Node;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn p2pctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pctl"))
        .args(args)
        .output()
        .unwrap()
}

/// A new key file in `dir`, and its public key as `keygen` prints it.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.pem"));
    let out = p2pctl(&["--json", "keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (path, v["public_key"].as_str().unwrap().to_owned())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_node_with_a_root_trusts_its_publishers_on_their_channels_and_rotation_needs_both_thresholds() {
    let keys = tempfile::tempdir().unwrap();
    let k = |n: &str| keygen(keys.path(), n).0;
    let (r1, r2, ca, team) = (k("root-1"), k("root-2"), k("ca"), k("team"));
    let (carol, carol_key) = keygen(keys.path(), "root-3");
    let root = keys.path().join("root.json");
    let out = p2pctl(&[
        "root",
        "init",
        "--fleet",
        "bank",
        "--root-key",
        &format!("alice={}", s(&r1)),
        "--root-key",
        &format!("bob={}", s(&r2)),
        "--threshold",
        "2",
        "--ca-key",
        &format!("ca={}", s(&ca)),
        "--publisher",
        &format!("release-team={}@security", s(&team)),
        "--sign",
        s(&r1),
        "--out",
        s(&root),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One of two signatures: a node would refuse it, and `p2pd init` does, writing nothing.
    let show = p2pctl(&["root", "show", s(&root)]);
    assert_eq!(show.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&show.stdout).contains("1 by its own root keys (needs 2)"));
    let refused_dir = tempfile::tempdir().unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_p2pd"))
        .args(["init", "--data"])
        .arg(refused_dir.path().join("data"))
        .args(["--root", s(&root)])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("valid signature"));
    assert!(!refused_dir.path().join("data/p2pd.toml").exists());
    // The second root key holder signs: taken.
    assert!(
        p2pctl(&["root", "sign", s(&root), "--key", s(&r2)])
            .status
            .success()
    );
    assert!(p2pctl(&["root", "show", s(&root)]).status.success());

    let mut node = Node::init_with(&["--root", s(&root)]);
    let p2pd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_p2pd"))
            .args(args)
            .output()
            .unwrap()
    };
    let config = node.data().join("p2pd.toml");
    let id = String::from_utf8_lossy(&p2pd(&["id", "--config", s(&config)]).stdout)
        .lines()
        .find_map(|l| l.strip_prefix("node id: ").map(str::to_owned))
        .unwrap();

    // Enrolment: a certificate from the fleet CA for this node's key, installed on it.
    let enroll = |key: &Path, node_id: &str, out: &Path| {
        p2pctl(&[
            "node",
            "enroll",
            node_id,
            "--site",
            "branch-7",
            "--region",
            "emea",
            "--label",
            "role=atm",
            "--ca-key",
            s(key),
            "--root",
            s(&root),
            "--out",
            s(out),
        ])
    };
    let not_ca = enroll(&team, &id, &keys.path().join("bad.cert"));
    assert_eq!(not_ca.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&not_ca.stderr).contains("not a CA key"));
    let cert = keys.path().join("node.cert");
    assert!(enroll(&ca, &id, &cert).status.success());
    let other = keys.path().join("other.cert");
    assert!(enroll(&ca, &"ab".repeat(32), &other).status.success());
    let wrong = p2pd(&["cert", "install", "--config", s(&config), s(&other)]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("is for node"));
    let installed = p2pd(&["cert", "install", "--config", s(&config), s(&cert)]);
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let shown = String::from_utf8_lossy(&p2pd(&["cert", "show", "--config", s(&config)]).stdout)
        .to_string();
    assert!(shown.contains("site:    branch-7 (region emea)"), "{shown}");
    assert!(shown.contains("labels:  role=atm"), "{shown}");
    node.start();
    let src = node.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("fix.txt"), b"patched").unwrap();
    let publish = |channel: &str, key: &Path| {
        node.ctl(&[
            "publish",
            s(&src),
            "--channel",
            channel,
            "--version",
            "1",
            "--key",
            s(key),
        ])
    };
    let ok = publish("security/openssl", &team);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Not its channel by whole segments.
    let evil = publish("security-evil/openssl", &team);
    assert_eq!(evil.status.code(), Some(4));
    // The key in [trust] (Node::init adds one) is not used under a root.
    let trust_key = publish("security/kernel", &node.key());
    assert_eq!(
        trust_key.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&trust_key.stderr)
    );
    let info = node.ctl_json(&["node"]);
    let m = &info["membership"];
    assert_eq!(m["fleet"], "bank");
    assert_eq!(m["root_version"], 1);
    assert_eq!(m["cert_site"], "branch-7");
    assert_eq!(
        info["site"], "branch-7",
        "the certificate's site, not the config's"
    );
    assert_eq!(m["cert_labels"][0], "role=atm");
    assert_eq!(m["renewal_due"], false);
    let audit = String::from_utf8_lossy(&node.ctl(&["--json", "audit"]).stdout).to_string();
    assert!(audit.contains("root_taken"));
    assert!(audit.contains("cert_installed"));

    // Rotation to keys bob and carol: the new keys alone do not make it; with alice's (v1's
    // threshold is two: alice and bob) it is taken.
    let next = keys.path().join("root-2.json");
    assert!(
        p2pctl(&["root", "next", s(&root), "--out", s(&next)])
            .status
            .success()
    );
    let text = std::fs::read_to_string(&next).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&p2pctl(&["--json", "root", "show", s(&root)]).stdout).unwrap();
    let alice_key = v["root"]["signed"]["root_keys"][0]["key"].as_str().unwrap();
    std::fs::write(
        &next,
        text.replacen(alice_key, &carol_key, 1)
            .replacen("\"alice\"", "\"carol\"", 1),
    )
    .unwrap();
    let check = |file: &Path| p2pctl(&["root", "show", s(file), "--trusted", s(&root)]);
    assert!(
        p2pctl(&["root", "sign", s(&next), "--key", s(&r2)])
            .status
            .success()
    );
    assert!(
        p2pctl(&["root", "sign", s(&next), "--key", s(&carol)])
            .status
            .success()
    );
    let only_new = check(&next);
    assert_eq!(only_new.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&only_new.stdout).contains("by v1's root keys (needs 2)"));
    assert!(
        p2pctl(&["root", "sign", s(&next), "--key", s(&r1)])
            .status
            .success()
    );
    let both = check(&next);
    assert!(
        both.status.success(),
        "{}",
        String::from_utf8_lossy(&both.stdout)
    );
    // An old root offered as the next one is a rollback.
    assert_eq!(
        p2pctl(&["root", "show", s(&root), "--trusted", s(&next)])
            .status
            .code(),
        Some(4)
    );
}

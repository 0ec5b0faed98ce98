//! Activation: completed releases installed under `<target>/<channel>/` (`/` written `+`), `current` switched
//! atomically, the apply command's failure recorded and rolled back, old versions kept.

use super::*;
use ::store::Store;
use node::activate::{self, CURRENT};
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A tree whose `MODE` file tells the test's apply command whether to fail.
fn release_tree(root: &Path, version: u64, mode: &str) {
    let _ = fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o755));
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("MODE"), mode).unwrap();
    fs::write(
        root.join("bin/patch.bin"),
        random_bytes(version, 300_000 + version as usize),
    )
    .unwrap();
    fs::write(root.join("VERSION"), version.to_string()).unwrap();
    std::os::unix::fs::symlink("bin/patch.bin", root.join("patch")).unwrap();
    // A read-only directory: pruning must still be able to remove it.
    fs::create_dir(root.join("ro")).unwrap();
    fs::write(root.join("ro/file"), b"x").unwrap();
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
}

/// The test's apply command: logs its arguments, fails with status 3 when MODE says so.
const APPLY_SCRIPT: &str = r#"
echo "applying $P2PD_CHANNEL $P2PD_VERSION from $1 (previous: ${P2PD_PREVIOUS_DIR:-none})"
echo "$P2PD_VERSION" >> "$LOG"
if grep -q fail "$1/MODE"; then
    echo "boom: the patch does not apply" >&2
    exit 3
fi
"#;

/// A node (not started) whose `[install] target` is `name` under its test directory, with
/// no apply command; and that target.
fn node_installing_into(name: &str) -> (Node, PathBuf) {
    let node = Node::init();
    let target = node.dir.path().join(name);
    let config = node.data().join("p2pd.toml");
    let text = fs::read_to_string(&config).unwrap().replace(
        "# target = \"/opt/patches\"",
        &format!("target = {:?}", target.to_str().unwrap()),
    );
    fs::write(&config, text).unwrap();
    (node, target)
}

fn status_of(node: &Node, id: &str) -> serde_json::Value {
    let st = node.ctl_json(&["status"]);
    st["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until the release's install state is one of `states`; returns its status.
fn wait_install(node: &Node, id: &str, states: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status_of(node, id);
        if states.iter().any(|w| s["install"]["state"] == *w) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "install never reached {states:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn publish_id(node: &Node, tree: &Path, version: u64, extra: &[&str]) -> String {
    let mut args = vec![
        "--json",
        "publish",
        tree.to_str().unwrap(),
        "--channel",
        "security/agent",
    ];
    let v = version.to_string();
    let key = node.key();
    args.extend_from_slice(&["--version", &v, "--key", key.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let out = node.ctl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["release"]["id"].as_str().unwrap().to_owned()
}

#[test]
fn releases_install_under_current_and_a_failed_apply_rolls_back() {
    let mut node = Node::init();
    let target = node.dir.path().join("installed");
    let log = node.dir.path().join("apply.log");
    let config = node.data().join("p2pd.toml");
    let mut text = fs::read_to_string(&config).unwrap();
    text = text.replace(
        "apply_timeout_s = 600",
        &format!(
            "target = {:?}\napply = [\"/usr/bin/env\", \"LOG={}\", \"/bin/sh\", \"-c\", {:?}, \"apply\"]\napply_timeout_s = 20",
            target.to_str().unwrap(),
            log.display(),
            APPLY_SCRIPT
        ),
    );
    fs::write(&config, text).unwrap();
    node.start();
    let chan = target.join("security+agent");
    let tree = node.dir.path().join("tree");

    // v1 installs: `current` points at its directory, which holds the release exactly.
    release_tree(&tree, 1, "ok");
    let v1 = publish_id(&node, &tree, 1, &[]);
    let s = wait_install(&node, &v1, &["installed", "failed"]);
    assert_eq!(s["install"]["state"], "installed", "{s}");
    let v1_dir = format!("1-{}", &v1[..12]);
    assert_eq!(
        activate::current_of(&chan).as_deref(),
        Some(v1_dir.as_str())
    );
    assert_eq!(tree_listing(&chan.join(CURRENT)), tree_listing(&tree));
    assert_eq!(
        s["install"]["dir"],
        chan.join(&v1_dir).to_str().unwrap(),
        "{s}"
    );

    // v2's apply command fails: recorded with its exit code and output, `current` is back
    // on v1, and both versions stay on disk.
    release_tree(&tree, 2, "fail");
    let v2 = publish_id(&node, &tree, 2, &[]);
    let s = wait_install(&node, &v2, &["installed", "failed"]);
    assert_eq!(s["install"]["state"], "failed", "{s}");
    assert_eq!(s["install"]["exit_code"], 3, "{s}");
    let output: Vec<&str> = s["install"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        output.contains(&"boom: the patch does not apply"),
        "{output:?}"
    );
    assert!(
        output
            .iter()
            .any(|l| l.starts_with("applying security/agent 2 from ")
                && l.ends_with(&format!("(previous: {})", chan.join(&v1_dir).display()))),
        "{output:?}"
    );
    assert_eq!(s["install"]["rolled_back_to"], v1_dir.as_str(), "{s}");
    assert_eq!(
        activate::current_of(&chan).as_deref(),
        Some(v1_dir.as_str())
    );
    assert!(chan.join(format!("2-{}", &v2[..12])).is_dir());
    let text =
        String::from_utf8_lossy(&node.ctl(&["status", &v2[..12], "--once"]).stdout).into_owned();
    assert!(text.contains("FAILED"), "{text}");
    assert!(text.contains("(exit code 3)"), "{text}");
    assert!(text.contains("| boom: the patch does not apply"), "{text}");

    // v3 installs; v1 stays as the version to roll back to. v1 is superseded.
    release_tree(&tree, 3, "ok");
    let v3 = publish_id(&node, &tree, 3, &[]);
    let s = wait_install(&node, &v3, &["installed", "failed"]);
    assert_eq!(s["install"]["state"], "installed", "{s}");
    let v3_dir = format!("3-{}", &v3[..12]);
    assert_eq!(
        activate::current_of(&chan).as_deref(),
        Some(v3_dir.as_str())
    );
    assert_eq!(tree_listing(&chan.join(CURRENT)), tree_listing(&tree));
    assert!(chan.join(&v1_dir).is_dir(), "the previous version is kept");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "1\n2\n3\n",
        "one apply per version"
    );

    // v4 and v5 install; with keep = 2 only v5 (current) and v4 (previous) remain.
    for v in [4, 5] {
        release_tree(&tree, v, "ok");
        let id = publish_id(&node, &tree, v, &[]);
        wait_install(&node, &id, &["installed"]);
    }
    let mut left: Vec<String> = fs::read_dir(&chan)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
        .filter(|n| n != CURRENT)
        .collect();
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left[0].starts_with("4-") && left[1].starts_with("5-"),
        "{left:?}"
    );

    // The records survive a restart: nothing is applied again.
    assert!(node.stop());
    node.start();
    let s = status_of(&node, &v2);
    assert_eq!(s["install"]["state"], "failed", "{s}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fs::read_to_string(&log).unwrap(), "1\n2\n3\n4\n5\n");
}

#[test]
fn a_release_waits_for_its_own_install_window() {
    let (mut node, target) = node_installing_into("installed");
    node.start();
    let tree = node.dir.path().join("tree");
    release_tree(&tree, 1, "ok");
    // A minute on 1 January, UTC: closed now (unless the test runs in that minute).
    let id = publish_id(
        &node,
        &tree,
        1,
        &[
            "--install-window",
            "0 0 1 1 * for 00:01 in UTC",
            "--emergency",
        ],
    );
    let shown = node.ctl_json(&["show", &id]);
    assert_eq!(shown["release"]["emergency"], true);
    assert_eq!(
        shown["release"]["install_windows"][0],
        "0 0 1 1 * for 00:01 in UTC"
    );
    let now = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC);
    if now.month() == 1 && now.day() == 1 && now.hour() == 0 && now.minute() == 0 {
        return;
    }
    let s = wait_install(&node, &id, &["waiting"]);
    let next = format!("{}-01-01T00:00:00Z", now.year() + 1);
    assert_eq!(s["install"]["window_opens"], next.as_str(), "{s}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!target.join("security+agent").join(CURRENT).exists());

    // A window that cannot be read is refused before anything is staged.
    let out = node.ctl(&[
        "publish",
        tree.to_str().unwrap(),
        "--channel",
        "security/agent",
        "--version",
        "2",
        "--key",
        node.key().to_str().unwrap(),
        "--install-window",
        "0 2 * * SAT for 04:00 in Nowhere/Town",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("install window") && err.contains("Nowhere/Town"),
        "{err}"
    );
}

/// Whatever `current` points at is a complete tree, at every instant of a switch.
#[test]
fn current_always_points_at_a_complete_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let trees = [dir.path().join("t1"), dir.path().join("t2")];
    let mut releases = Vec::new();
    for (i, t) in trees.iter().enumerate() {
        release_tree(t, i as u64 + 1, "ok");
        releases.push(super::store::publish(&store, t, i as u64 + 1));
    }
    let listings: Vec<_> = trees.iter().map(|t| tree_listing(t)).collect();
    let chan = activate::channel_dir(&dir.path().join("installed"), "security/store").unwrap();
    assert_eq!(chan, dir.path().join("installed/security+store"));

    let first =
        activate::materialise(&store, &releases[0].manifest, &releases[0].id, &chan).unwrap();
    let first_name = first.file_name().unwrap().to_str().unwrap().to_owned();
    activate::switch_current(&chan, Some(&first_name)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, seen, chan) = (stop.clone(), seen.clone(), chan.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let target = fs::read_link(chan.join(CURRENT)).expect("current always exists");
                let listing = tree_listing(&chan.join(target));
                assert!(
                    listings.contains(&listing),
                    "current pointed at an incomplete tree"
                );
                seen.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The new version is written while the reader reads the old one, then `current` flips
    // between the two many times.
    let second =
        activate::materialise(&store, &releases[1].manifest, &releases[1].id, &chan).unwrap();
    let second_name = second.file_name().unwrap().to_str().unwrap().to_owned();
    for _ in 0..200 {
        activate::switch_current(&chan, Some(&second_name)).unwrap();
        activate::switch_current(&chan, Some(&first_name)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(seen.load(Ordering::Relaxed) > 0);

    // A staging directory left by a crash is removed and written again; a complete version
    // directory is kept as it is.
    activate::remove_tree(&second).unwrap();
    let staging = chan.join(format!(".staging-2-{}", &releases[1].id.to_hex()[..12]));
    fs::create_dir_all(staging.join("junk")).unwrap();
    let second =
        activate::materialise(&store, &releases[1].manifest, &releases[1].id, &chan).unwrap();
    assert_eq!(tree_listing(&second), tree_listing(&trees[1]));
    assert!(!staging.exists());
    let again =
        activate::materialise(&store, &releases[1].manifest, &releases[1].id, &chan).unwrap();
    assert_eq!(again, second);

    // Pruning keeps the newest and the protected, and clears staging leftovers.
    fs::create_dir_all(chan.join(".staging-9-000000000000")).unwrap();
    activate::prune(&chan, 1, &[&first_name]).unwrap();
    assert!(second.is_dir() && first.is_dir());
    assert!(!chan.join(".staging-9-000000000000").exists());
    activate::switch_current(&chan, Some(&second_name)).unwrap();
    activate::prune(&chan, 1, &[&second_name]).unwrap();
    assert!(!first.exists() && second.is_dir());
}

/// An operator who switches `current` back to an older version by hand sees it in status
/// (the installed version says where `current` really points); the next install replaces it
/// and says so in the audit log, keeps the operator's directory as the one to roll back to,
/// and never prunes it.
#[test]
fn current_switched_by_hand_is_shown_kept_and_replaced_in_the_open() {
    let (mut node, target) = node_installing_into("installed");
    node.start();
    let chan = target.join("security+agent");
    let tree = node.dir.path().join("tree");
    let mut ids = Vec::new();
    for v in 1..=2 {
        release_tree(&tree, v, "ok");
        let id = publish_id(&node, &tree, v, &[]);
        let s = wait_install(&node, &id, &["installed", "failed"]);
        assert_eq!(s["install"]["state"], "installed", "{s}");
        ids.push(id);
    }
    let v1_dir = format!("1-{}", &ids[0][..12]);
    let v2_dir = format!("2-{}", &ids[1][..12]);
    assert_eq!(
        status_of(&node, &ids[1])["install"]["current_elsewhere"],
        serde_json::Value::Null
    );

    // The operator goes back to v1 by hand.
    let link = chan.join("current.hand");
    std::os::unix::fs::symlink(&v1_dir, &link).unwrap();
    fs::rename(&link, chan.join(CURRENT)).unwrap();
    let s = status_of(&node, &ids[1]);
    assert_eq!(s["install"]["state"], "installed", "{s}");
    assert_eq!(s["install"]["current_elsewhere"], v1_dir.as_str(), "{s}");
    let out = node.ctl(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("current now points at {v1_dir}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // v3 installs over it, in the open: v1 is what it would roll back to, and v1 stays on
    // disk though `keep = 2` would otherwise prune it.
    release_tree(&tree, 3, "ok");
    let v3 = publish_id(&node, &tree, 3, &[]);
    let s = wait_install(&node, &v3, &["installed", "failed"]);
    assert_eq!(s["install"]["state"], "installed", "{s}");
    assert_eq!(
        activate::current_of(&chan).as_deref(),
        Some(format!("3-{}", &v3[..12]).as_str())
    );
    assert!(
        chan.join(&v1_dir).is_dir(),
        "the operator's version was pruned"
    );
    let audit = node.ctl_json(&["audit"]);
    let replaced: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["current_replaced"].is_object())
        .collect();
    assert_eq!(replaced.len(), 1, "{audit}");
    let e = &replaced[0]["event"]["current_replaced"];
    assert_eq!(e["found"], v1_dir.as_str());
    assert_eq!(e["expected"], v2_dir.as_str());
    assert_eq!(e["version"], 3);
    assert!(node.stop());
}

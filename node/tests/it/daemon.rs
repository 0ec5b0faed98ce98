//! The daemon end to end: publish, list, verify, export, and the errors a user can cause.

use super::*;
use std::fs;

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("bin/nested/deeper")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("bin/tool"), random_bytes(1, 700_000)).unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        root.join("bin/nested/deeper/data.bin"),
        random_bytes(2, 2_000_000),
    )
    .unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(root.join("secret.conf"), b"k=v\n").unwrap();
    fs::set_permissions(root.join("secret.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("nested/deeper/data.bin", root.join("bin/data-link")).unwrap();
    fs::set_permissions(root.join("bin/nested"), fs::Permissions::from_mode(0o750)).unwrap();
}

#[test]
fn publish_export_round_trip_keeps_bytes_modes_and_links() {
    let mut node = Node::init();
    node.start();
    let src = node.dir.path().join("src");
    sample_tree(&src);
    let out = node.publish(&src, "security/demo", 1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = published["release"]["id"].as_str().unwrap().to_owned();
    assert_eq!(node.release_ids(), vec![id.clone()]);

    let verify = node.ctl_json(&["verify", &id]);
    assert_eq!(verify["signature_ok"], true);
    assert_eq!(verify["missing"].as_array().unwrap().len(), 0);

    let dest = node.dir.path().join("export");
    let report = node.ctl_json(&["export", &id[..10], dest.to_str().unwrap()]);
    assert_eq!(report["files"], 4);
    assert_eq!(report["dirs"], 4);
    assert_eq!(report["symlinks"], 1);
    assert_eq!(tree_listing(&src), tree_listing(&dest));

    // Exporting again into a non-empty directory is refused, and nothing is changed.
    let again = node.ctl(&["export", &id, dest.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    assert!(node.stop(), "p2pd did not exit cleanly on SIGTERM");
    assert!(!node.socket().exists(), "socket left behind after shutdown");
}

#[test]
fn control_socket_is_private() {
    let mut node = Node::init();
    node.start();
    let mode = fs::metadata(node.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn user_errors_exit_nonzero_with_one_line_and_leave_the_store_as_it_was() {
    let mut node = Node::init();
    node.start();
    let src = node.dir.path().join("src");
    sample_tree(&src);
    assert!(node.publish(&src, "security/demo", 5).status.success());
    let before = node.ctl_json(&["node"])["store"].clone();

    let check = |out: Output, code: i32, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    };
    // Version not above the channel's last.
    check(
        node.publish(&src, "security/demo", 5),
        4,
        "not above the highest",
    );
    check(
        node.publish(&src, "security/demo", 4),
        4,
        "not above the highest",
    );
    // Missing path.
    check(
        node.publish(&src.join("nope"), "security/demo", 6),
        4,
        "nope",
    );
    // Wrong (untrusted) key.
    let other = node.dir.path().join("other.pem");
    assert!(
        node.ctl(&["keygen", "--out", other.to_str().unwrap()])
            .status
            .success()
    );
    let out = node.ctl(&[
        "publish",
        src.to_str().unwrap(),
        "--channel",
        "security/demo",
        "--version",
        "6",
        "--key",
        other.to_str().unwrap(),
    ]);
    check(out, 4, "unknown key");
    // A key file that is not a key.
    let out = node.ctl(&[
        "publish",
        src.to_str().unwrap(),
        "--channel",
        "security/demo",
        "--version",
        "6",
        "--key",
        src.join("secret.conf").to_str().unwrap(),
    ]);
    check(out, 4, "not an ed25519 private key");
    // Unreadable file (the test runs as root, so use a FIFO: refused as a special file).
    let fifo_dir = node.dir.path().join("fifo");
    fs::create_dir(&fifo_dir).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo_dir.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    check(node.publish(&fifo_dir, "security/demo", 6), 4, "FIFO");
    // A symlink leaving the tree.
    let esc = node.dir.path().join("escape");
    fs::create_dir(&esc).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", esc.join("passwd")).unwrap();
    check(node.publish(&esc, "security/demo", 6), 4, "absolute");

    assert_eq!(node.ctl_json(&["node"])["store"], before, "store changed");
    assert_eq!(node.release_ids().len(), 1);

    // Daemon not running.
    node.stop();
    check(node.publish(&src, "security/demo", 6), 3, "not running");
}

#[test]
fn file_changed_while_publishing_is_refused_and_store_unchanged() {
    let mut node = Node::init();
    node.start();
    let src = node.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = src.join("big.bin");
    fs::write(&big, random_bytes(3, 400 << 20)).unwrap();
    let before = node.ctl_json(&["node"])["store"].clone();
    let toucher = {
        let big = big.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let f = fs::OpenOptions::new().append(true).open(&big).unwrap();
            use std::io::Write;
            (&f).write_all(b"tampered").unwrap();
        })
    };
    let out = node.publish(&src, "security/demo", 1);
    toucher.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("changed while it was being published"),
        "{err}"
    );
    assert_eq!(node.ctl_json(&["node"])["store"], before);
    assert!(node.release_ids().is_empty());
}

#[test]
fn disk_full_is_a_clear_error_and_store_stays_usable() {
    // A real full disk: a 64 MiB tmpfs holding the data directory.
    let mut node = Node::init();
    let mnt = node.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        // A check that cannot run fails where it must run (`.ci/run` runs as root).
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs here (needs root): the full-disk test cannot run"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    // Move the data directory onto the small disk.
    let data = node.data();
    let status = Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success());
    fs::remove_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(mnt.join("data"), &data).unwrap();
    let config = mnt.join("data/p2pd.toml");
    let text = fs::read_to_string(&config).unwrap().replace(
        &format!("\"{}", data.display()),
        &format!("\"{}", mnt.join("data").display()),
    );
    fs::write(&config, text).unwrap();
    node.start();

    let small = node.dir.path().join("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("a"), random_bytes(5, 1 << 20)).unwrap();
    assert!(node.publish(&small, "security/demo", 1).status.success());
    let before = node.ctl_json(&["node"])["store"].clone();

    let big = node.dir.path().join("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("b"), random_bytes(6, 100 << 20)).unwrap();
    let out = node.publish(&big, "security/demo", 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("disk full"), "{err}");
    assert_eq!(node.ctl_json(&["node"])["store"], before);

    // The space was given back: a small publish works again.
    fs::write(small.join("a2"), random_bytes(7, 1 << 20)).unwrap();
    let out = node.publish(&small, "security/demo", 3);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in node.release_ids() {
        assert_eq!(
            node.ctl_json(&["verify", &id])["corrupt"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
    }
}

/// `p2pctl schedule` reports the configured rates and windows as they stand now.
#[test]
fn schedule_reports_rates_and_windows() {
    let mut node = Node::init();
    let config = node.data().join("p2pd.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "wan_ingress = { default = \"unlimited\" }",
            "wan_ingress = { default = \"80Mbit/s\", rules = [\"* 00:00-00:00 10Mbit/s\"] }",
        )
        .replace(
            "download = []",
            "download = [{ start = \"0 0 1 1 *\", duration = \"00:01\" }]",
        );
    std::fs::write(&config, text).unwrap();
    node.start();
    let v = node.ctl_json(&["schedule"]);
    let class = |name: &str| {
        v["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == name)
            .unwrap()
            .clone()
    };
    // The all-day rule is below the default: the lower rate holds, and never changes.
    assert_eq!(class("wan_ingress")["bytes_per_s"], 1_250_000);
    assert!(class("wan_ingress")["next_change"].is_null());
    assert!(class("wan_egress")["bytes_per_s"].is_null(), "unlimited");
    // The download window opens on 1 January at 00:00 UTC for a minute.
    let now = jiff::Timestamp::now();
    let year = now.to_zoned_datetime(jiff::tz::TimeZone::UTC).year();
    if v["download"]["open"] == false {
        let next = format!("{}-01-01T00:00:00Z", year + 1);
        assert_eq!(v["download"]["opens"], next.as_str());
    }
    assert_eq!(v["download"]["windows"], 1);
    assert_eq!(v["install"]["windows"], 0);
    assert_eq!(v["install"]["open"], true);
    assert_eq!(v["emergency_critical_cvss"], 9.0);
    let out = node.ctl(&["schedule"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wan_ingress  10.00 Mbit/s"), "{text}");
    assert!(
        text.contains("install window: open (no window configured)"),
        "{text}"
    );
}

/// `p2pctl` stops quietly when its reader goes away (`p2pctl releases | head -1`), as a Unix
/// tool does: status 0 and no panic, whether or not the command talks to the daemon.
#[test]
fn p2pctl_ends_quietly_on_a_closed_stdout() {
    let mut node = Node::init();
    node.start();
    let src = node.dir.path().join("src");
    sample_tree(&src);
    for v in 1..=3 {
        assert!(node.publish(&src, "security/demo", v).status.success());
    }
    let key = node.dir.path().join("other.pem");
    let commands: [&[&str]; 4] = [
        &["releases"],
        &["--json", "releases"],
        &["node"],
        &["keygen", "--out", key.to_str().unwrap()],
    ];
    for args in commands {
        let mut child = Command::new(env!("CARGO_BIN_EXE_p2pctl"))
            .arg("--socket")
            .arg(node.socket())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "p2pctl {args:?} on a closed stdout: {:?}, stderr {stderr:?}",
            out.status
        );
    }
    assert!(node.stop());
}

/// What a new operator trips over gets a clear answer: a command right after the daemon
/// starts, a socket path that is a directory, an ambiguous or short expiry, an expired
/// release, a short or non-hex release prefix, two output formats at once, a missing config.
#[test]
fn an_operator_s_slips_get_clear_answers_and_the_right_exit_code() {
    let mut node = Node::init();
    // `p2pd run &` and at once a command: it waits for the daemon instead of failing.
    let log = node.dir.path().join("p2pd.log");
    let child = Command::new(env!("CARGO_BIN_EXE_p2pd"))
        .args(["run", "--config"])
        .arg(node.data().join("p2pd.toml"))
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    node.child = Some(child);
    let status = node.ctl(&["status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // A log written to a file carries no colour codes.
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("p2pd ready"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );

    let expect = |out: Output, code: i32, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    };
    // --socket at a directory is a bad command line, not "not running".
    let out = Command::new(env!("CARGO_BIN_EXE_p2pctl"))
        .args(["--socket"])
        .arg(node.data())
        .arg("status")
        .output()
        .unwrap();
    expect(out, 2, "is a directory, not p2pd's control socket");
    // A socket that is not there: not running, after a short wait.
    let out = Command::new(env!("CARGO_BIN_EXE_p2pctl"))
        .args(["--socket"])
        .arg(node.dir.path().join("nothing.sock"))
        .arg("status")
        .output()
        .unwrap();
    expect(out, 3, "p2pd is not running");

    let src = node.dir.path().join("src");
    sample_tree(&src);
    let publish = |version: &str, expires: &str| {
        node.ctl(&[
            "publish",
            src.to_str().unwrap(),
            "--channel",
            "security/slips",
            "--version",
            version,
            "--key",
            node.key().to_str().unwrap(),
            "--expires",
            expires,
        ])
    };
    // `1m`: minutes or months? Refused, as a bad command line.
    expect(publish("1", "1m"), 2, "minutes or months");
    // A short expiry is said out loud, then the release expires and says so everywhere.
    let out = publish("1", "3s");
    expect(out, 0, "expires in 3s");
    std::thread::sleep(Duration::from_secs(4));
    let list = node.ctl_json(&["releases"]);
    assert_eq!(list[0]["expired"], true, "{list}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let text = node.ctl(&["releases"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("EXPIRED"));
    expect(node.ctl(&["verify", &id]), 4, "expired at");

    // Release prefixes: too short, not hex, unknown.
    expect(node.ctl(&["show", &id[..3]]), 2, "at least 4 hex digits");
    expect(node.ctl(&["show", "xyz1"]), 2, "is not a release id");
    expect(node.ctl(&["show", "0000000"]), 4, "no release");
    // A version already taken names the next valid one.
    expect(publish("1", "30d"), 4, "the next valid version is 2");
    // JSON and CSV at once: which?
    expect(
        node.ctl(&["--json", "report", "--format", "csv"]),
        2,
        "two formats",
    );
    assert!(node.stop());

    // A config that is not there says so once, and how to make one.
    let out = Command::new(env!("CARGO_BIN_EXE_p2pd"))
        .args(["run", "--config"])
        .arg(node.dir.path().join("nope.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(err.contains("p2pd init"), "{err}");
}

/// SIGHUP: the sections that can change at once do ([`shaping`] here), the others are named
/// as waiting for a restart, both in the audit log; a config that does not load changes
/// nothing and the daemon carries on.
#[test]
fn sighup_applies_what_it_can_and_names_what_waits_for_a_restart() {
    let mut node = Node::init();
    node.start();
    let config = node.data().join("p2pd.toml");
    let text = fs::read_to_string(&config).unwrap();
    let rate = |node: &Node| {
        let v = node.ctl_json(&["schedule"]);
        v["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == "total")
            .unwrap()["bytes_per_s"]
            .clone()
    };
    assert_eq!(rate(&node), serde_json::Value::Null, "unlimited at first");
    fs::write(
        &config,
        text.replace(
            "total = { default = \"unlimited\" }",
            "total = { default = \"200Mbit/s\" }",
        )
        .replace("wan_peers = 4", "wan_peers = 6"),
    )
    .unwrap();
    let hup = |node: &Node| {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(node.child.as_ref().unwrap()),
            rustix::process::Signal::HUP,
        )
        .unwrap();
    };
    hup(&node);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rate(&node) != 25_000_000 {
        assert!(Instant::now() < deadline, "the new rate never took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reloaded = |node: &Node| -> Vec<serde_json::Value> {
        node.ctl_json(&["audit"])["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["event"].get("reloaded").cloned())
            .collect()
    };
    let entries = reloaded(&node);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["applied"], serde_json::json!(["shaping"]));
    assert_eq!(entries[0]["restart_needed"], serde_json::json!(["network"]));

    // A broken file: nothing changes, the daemon serves on, nothing is recorded.
    fs::write(&config, "[node\n").unwrap();
    hup(&node);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rate(&node), 25_000_000);
    assert_eq!(reloaded(&node).len(), 1);
    assert!(node.stop(), "the daemon stops cleanly after the reloads");
}

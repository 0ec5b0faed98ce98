//! The Prometheus endpoint: served on its own listener, conventional names, and output that
//! `promtool check metrics` accepts.

use super::*;
use std::io::{Read, Write};

/// A free loopback port (bound and released: the daemon binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.0 with an `Accept` header: (status line, content type, body).
fn get(port: u16, path: &str, accept: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[test]
fn metrics_are_served_with_conventional_names_and_pass_promtool() {
    let mut node = Node::init();
    let port = free_port();
    let config = node.data().join("p2pd.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "# metrics_listen = \"127.0.0.1:9464\"",
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    );
    assert!(
        text.contains("metrics_listen = \"127.0.0.1:"),
        "the config template names it"
    );
    std::fs::write(&config, text).unwrap();
    node.start();
    let src = node.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("patch.bin"), random_bytes(4, 200_000)).unwrap();
    let out = node.publish(&src, "security/metrics", 1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["release"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // What Prometheus asks for: OpenMetrics.
    let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (status, content_type, open_metrics) = get(port, "/metrics", prometheus);
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(open_metrics.contains("# TYPE p2pd_transfer_bytes counter"));
    assert!(open_metrics.ends_with("# EOF\n"));
    // Anything else: the classic text format, the one promtool reads.
    let (status, content_type, body) = get(port, "/metrics", "*/*");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    for needle in [
        "# TYPE p2pd_transfer_bytes_total counter",
        "p2pd_transfer_bytes_total{class=\"wan\",direction=\"received\"} 0",
        "p2pd_chunks_verified_total 0",
        "p2pd_peers{class=\"lan\"} 0",
        "p2pd_window_open{window=\"download\"} 1",
        "p2pd_shaper_wait_seconds_total{class=\"wan\",direction=\"sent\"}",
        &format!(
            "p2pd_release_size_bytes{{release=\"{id}\",channel=\"security/metrics\",version=\"1\"}}"
        ),
        "state=\"complete\",install=\"none\"} 1",
    ] {
        assert!(body.contains(needle), "{needle:?} missing from:\n{body}");
    }
    // Nothing but /metrics.
    let (status, _, _) = get(port, "/v1/node", "*/*");
    assert!(status.contains(" 404 "), "{status}");

    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => no_promtool(&e),
    }
    assert!(node.stop());
}

/// promtool cannot be run: an error in CI (`CI=true`, where `.ci/run` installs it), a note
/// elsewhere.
fn no_promtool(e: &std::io::Error) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "promtool is not installed ({e}); .ci/run installs it (Debian package prometheus)"
    );
    eprintln!("SKIPPED promtool check: promtool is not installed here ({e}); .ci/run installs it");
}

/// The alerting rules shipped in `deploy/prometheus` pass `promtool check rules` and their
/// unit tests (`promtool test rules`), and read only metrics the daemon exports (each one
/// is in this module's table in `node/src/metrics.rs`).
#[test]
fn the_alerting_rules_check_pass_their_tests_and_read_only_exported_metrics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let rules = std::fs::read_to_string(dir.join("p2pd.rules.yml")).unwrap();
    let documented = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"),
    )
    .unwrap();
    let mut names: Vec<&str> = rules
        .match_indices("p2pd_")
        .map(|(i, _)| {
            let rest = &rules[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| n.len() > "p2pd_".len())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 5, "{names:?}");
    for n in &names {
        assert!(
            documented.contains(&format!("`{n}`")),
            "the rules read {n}, which the daemon does not export"
        );
    }
    for args in [
        vec!["check", "rules", "p2pd.rules.yml"],
        vec!["test", "rules", "p2pd.rules.test.yml"],
    ] {
        match Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "promtool {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => return no_promtool(&e),
        }
    }
}

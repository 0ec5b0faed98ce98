//! Integration tests of the node: real `p2pd` processes, real files, real signals.

mod activate;
mod audit;
mod crash;
mod daemon;
mod fleet;
mod metrics;
mod retention;
mod root;
mod store;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `p2pd` process with its own data directory and a trusted publisher key.
pub(crate) struct Node {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) child: Option<Child>,
}

impl Node {
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.data().join("control.sock")
    }

    pub(crate) fn key(&self) -> PathBuf {
        self.dir.path().join("publisher.pem")
    }

    /// `p2pd init` plus a trusted publisher key, not started.
    pub(crate) fn init() -> Self {
        Self::init_with(&[])
    }

    /// [`Node::init`] with more arguments to `p2pd init`.
    pub(crate) fn init_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = Self { dir, child: None };
        let out = Command::new(env!("CARGO_BIN_EXE_p2pd"))
            .args(["init", "--data"])
            .arg(node.data())
            .args(["--site", "hq"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = node.ctl(&["keygen", "--json", "--out", node.key().to_str().unwrap()]);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let config = node.data().join("p2pd.toml");
        // Ephemeral loopback ports and no mDNS: tests run side by side and must not find
        // each other unless they mean to.
        let mut text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("\"0.0.0.0:7401\"", "\"127.0.0.1:0\"")
            .replace("\"0.0.0.0:7402\"", "\"127.0.0.1:0\"")
            .replace("mdns = true", "mdns = false");
        text.push_str(&format!(
            "\n[[trust.publishers]]\nname = \"test\"\nkey = \"{}\"\n",
            v["public_key"].as_str().unwrap()
        ));
        std::fs::write(&config, text).unwrap();
        node
    }

    pub(crate) fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_p2pd"))
            .args(["run", "--config"])
            .arg(self.data().join("p2pd.toml"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("p2pd did not start");
    }

    /// SIGTERM and wait; returns whether it exited cleanly.
    pub(crate) fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        child.wait().unwrap().success()
    }

    /// SIGKILL and wait.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub(crate) fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_p2pctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    pub(crate) fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        assert!(
            out.status.success(),
            "p2pctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Publishes `path` on `channel` at `version`; returns the p2pctl output.
    pub(crate) fn publish(&self, path: &Path, channel: &str, version: u64) -> Output {
        self.ctl(&[
            "--json",
            "publish",
            path.to_str().unwrap(),
            "--channel",
            channel,
            "--version",
            &version.to_string(),
            "--key",
            self.key().to_str().unwrap(),
        ])
    }

    pub(crate) fn release_ids(&self) -> Vec<String> {
        self.ctl_json(&["releases"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every file, directory and symlink under `root`: (relative path, kind, mode, content).
pub(crate) fn tree_listing(root: &Path) -> Vec<(String, String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String, u32, Vec<u8>)>) {
        let mut items: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        items.sort();
        for p in items {
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push((
                    rel,
                    "link".into(),
                    0,
                    t.to_str().unwrap().as_bytes().to_vec(),
                ));
            } else if m.is_dir() {
                out.push((rel, "dir".into(), mode, vec![]));
                walk(root, &p, out);
            } else {
                out.push((rel, "file".into(), mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

pub(crate) fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

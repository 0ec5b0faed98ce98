//! The daemon's configuration file (TOML) and the commented default that `p2pd init` writes.
//!
//! Unknown keys are refused, so a typo is an error at start-up rather than a setting
//! silently ignored.

use protocol::{PublisherKey, TrustPolicy, TrustedPublisher};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Largest config file read, in bytes: a config is a few KiB even with hundreds of keys.
const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and who this node is.
    pub node: NodeSection,
    /// The local control API.
    pub control: ControlSection,
    /// Which publishers this node trusts.
    #[serde(default)]
    pub trust: TrustSection,
    /// Peers, discovery and the data plane.
    #[serde(default)]
    pub network: NetworkSection,
    /// Bandwidth limits per traffic class, on a time-of-day schedule.
    #[serde(default)]
    pub shaping: ShapingSection,
    /// Maintenance windows for downloads and installs, and the emergency policy.
    #[serde(default)]
    pub windows: WindowsSection,
    /// Where and how completed releases are installed.
    #[serde(default)]
    pub install: InstallSection,
    /// What the store keeps.
    #[serde(default)]
    pub store: StoreSection,
}

/// Most versions `[store] keep_versions` may ask to keep per channel (more is "keep all",
/// 0).
pub const STORE_KEEP_VERSIONS_MAX: u32 = 1000;

/// `[store]`: retention.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Versions of each channel kept in the store, the newest (0: every version). Older
    /// ones are removed and their space reclaimed once a newer one completes, never one held
    /// for approval, the version installed here, or one still to install.
    #[serde(default)]
    pub keep_versions: u32,
}

/// Longest apply command run, in seconds: a day. A command that takes longer is stuck.
pub const APPLY_TIMEOUT_S_MAX: u64 = 86_400;

/// Most versions kept per channel in the install target.
pub const KEEP_VERSIONS_MAX: u32 = 100;

/// `[install]`: activation of completed releases inside the install window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallSection {
    /// Directory releases are installed into, as `<target>/<channel>/<version>-<id>/` (`/` in
    /// the channel written `+`) with a `current` symlink per channel. Unset: releases stay in
    /// the store only.
    #[serde(default)]
    pub target: Option<PathBuf>,
    /// Command run after `current` switches to a new version: program and arguments, no
    /// shell. The release directory is appended as the last argument. Empty: none.
    #[serde(default)]
    pub apply: Vec<String>,
    /// Seconds the apply command may run before it (and its process group) is killed.
    #[serde(default = "default_apply_timeout_s")]
    pub apply_timeout_s: u64,
    /// Versions kept on disk per channel (at least 2: the current one and the one before,
    /// for rollback).
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Health check run after the apply command succeeded: program and arguments, no shell,
    /// the release directory appended. A check that still fails after its retries rolls
    /// the node back (the apply command runs again for the previous version) and the
    /// install counts as failed. Empty: none.
    #[serde(default)]
    pub check: Vec<String>,
    /// Seconds one run of the check may take before it (and its process group) is killed.
    #[serde(default = "default_check_timeout_s")]
    pub check_timeout_s: u64,
    /// Runs of the check after the first that fails (a service may take a moment to come
    /// up).
    #[serde(default = "default_check_retries")]
    pub check_retries: u32,
    /// Seconds between two runs of the check.
    #[serde(default = "default_check_interval_s")]
    pub check_interval_s: u64,
}

impl Default for InstallSection {
    fn default() -> Self {
        Self {
            target: None,
            apply: Vec::new(),
            apply_timeout_s: default_apply_timeout_s(),
            keep: default_keep(),
            check: Vec::new(),
            check_timeout_s: default_check_timeout_s(),
            check_retries: default_check_retries(),
            check_interval_s: default_check_interval_s(),
        }
    }
}

fn default_check_timeout_s() -> u64 {
    60
}

fn default_check_retries() -> u32 {
    2
}

fn default_check_interval_s() -> u64 {
    5
}

/// Most runs of the health check after the first: with the longest interval and timeout a
/// failing install still ends within hours, not days.
pub const CHECK_RETRIES_MAX: u32 = 10;

/// Longest wait between two runs of the health check, seconds.
pub const CHECK_INTERVAL_S_MAX: u64 = 600;

fn default_apply_timeout_s() -> u64 {
    600
}

fn default_keep() -> u32 {
    2
}

impl InstallSection {
    /// Checks the values; an error names the setting.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |setting: &str, message: &str| Err((setting.to_owned(), message.to_owned()));
        if let Some(target) = &self.target {
            if !target.is_absolute() {
                return bad("install.target", "must be an absolute path");
            }
        }
        if let Some(program) = self.apply.first() {
            if program.is_empty() {
                return bad("install.apply", "the program name is empty");
            }
        }
        if !self.apply.is_empty() && self.target.is_none() {
            return bad(
                "install.apply",
                "needs install.target: the command gets the installed directory",
            );
        }
        if self.apply_timeout_s == 0 || self.apply_timeout_s > APPLY_TIMEOUT_S_MAX {
            return bad("install.apply_timeout_s", "must be from 1 to 86400 seconds");
        }
        if let Some(program) = self.check.first() {
            if program.is_empty() {
                return bad("install.check", "the program name is empty");
            }
        }
        if !self.check.is_empty() && self.target.is_none() {
            return bad(
                "install.check",
                "needs install.target: the check gets the installed directory",
            );
        }
        if self.check_timeout_s == 0 || self.check_timeout_s > APPLY_TIMEOUT_S_MAX {
            return bad("install.check_timeout_s", "must be from 1 to 86400 seconds");
        }
        if self.check_retries > CHECK_RETRIES_MAX {
            return bad("install.check_retries", "must be from 0 to 10");
        }
        if self.check_interval_s > CHECK_INTERVAL_S_MAX {
            return bad("install.check_interval_s", "must be from 0 to 600 seconds");
        }
        if self.keep < 2 || self.keep > KEEP_VERSIONS_MAX {
            return bad(
                "install.keep",
                "must be from 2 (the current version and the one before) to 100",
            );
        }
        Ok(())
    }
}

pub use net::config::{NetworkSection, parse_bootstrap};
pub use scheduler::policy::{
    ClassRates, RateSchedules, ShapingSection, WindowSpec, Windows, WindowsSection,
};

/// `[node]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Data directory: store, identity key, socket.
    pub data_dir: PathBuf,
    /// Site (branch) name; peers in the same site share a LAN.
    #[serde(default = "default_site")]
    pub site: String,
    /// Region the site belongs to.
    #[serde(default = "default_region")]
    pub region: String,
    /// A node of this site that sent no status record for this long, seconds, counts as
    /// silent (apart, and out of the ETA) for every release it has not applied. Three
    /// heartbeats by default; raise it where nodes sleep overnight. A shorter bound shortens
    /// the heartbeat to a third of it (5 s at the least), so a running node never counts
    /// silent; set the same value on every node of a site.
    #[serde(default = "default_silent_after_s")]
    pub silent_after_s: u64,
    /// Labels that release targets and rings select on (`os = "debian12"`, `role = "atm"`).
    /// In a fleet with a root the certificate's labels are used instead (a CA vouches for
    /// them); these are for fleets without one.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Shortest `[node] silent_after_s`: two of a node's status checks at the least record
/// interval; shorter, a node that speaks would flicker silent.
const SILENT_AFTER_MIN_S: u64 = 10;

/// Longest `[node] silent_after_s`: a week (a node off for longer is silent).
const SILENT_AFTER_MAX_S: u64 = 7 * 86_400;

fn default_silent_after_s() -> u64 {
    store::fleet::SILENT_AFTER.as_secs()
}

fn default_site() -> String {
    "default".into()
}

fn default_region() -> String {
    "default".into()
}

/// `[control]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Unix socket of the control API.
    pub socket: PathBuf,
    /// Octal permission of the socket: "0600" (owner only) or "0660" (owner and group).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// TCP address of the read-only Prometheus endpoint (`GET /metrics`), such as
    /// "127.0.0.1:9464"; absent: no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the read-only fleet dashboard at `/` on the metrics listener.
    #[serde(default)]
    pub dashboard: bool,
}

fn default_socket_mode() -> String {
    "0600".into()
}

/// `[trust]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// Valid signatures by distinct trusted keys a release needs.
    #[serde(default = "default_threshold")]
    pub threshold: usize,
    /// Trusted publisher keys.
    #[serde(default)]
    pub publishers: Vec<PublisherConfig>,
}

fn default_threshold() -> usize {
    1
}

/// One `[[trust.publishers]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    /// A name for the key, shown in logs and listings.
    pub name: String,
    /// `ed25519:<64 hex digits>`, as printed by `p2pctl keygen`.
    pub key: String,
    /// Channels this key may publish on, each with those under it by whole segments;
    /// empty or absent means all channels.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// A configuration problem, naming the file and the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file failed. The error is part of the message, not a cause of it: printed
    /// with its causes, the line says the reason once.
    #[error("{path}: {error}{}", if error.kind() == std::io::ErrorKind::NotFound {
        " (make one with `p2pd init --data DIR`)"
    } else {
        ""
    })]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The file is too large to be a config.
    #[error("{0}: larger than {CONFIG_BYTES_MAX} bytes; is this the right file?")]
    TooLarge(PathBuf),
    /// TOML syntax or an unknown/missing key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: {setting}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The setting.
        setting: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |error| ConfigError::Read {
            path: path.to_owned(),
            error,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > CONFIG_BYTES_MAX {
            return Err(ConfigError::TooLarge(path.to_owned()));
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text, path)
    }

    /// Parses and checks the text of a config file (`path` names it in errors): every
    /// setting the daemon reads is checked here, before anything starts.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.len() as u64 > CONFIG_BYTES_MAX {
            return Err(ConfigError::TooLarge(path.to_owned()));
        }
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config
            .socket_mode()
            .map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                setting: "control.socket_mode".into(),
                message,
            })?;
        let invalid = |setting: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            setting: setting.into(),
            message,
        };
        let at = |(setting, message): (String, String)| invalid(&setting, message);
        if config.control.dashboard && config.control.metrics_listen.is_none() {
            return Err(invalid(
                "control.dashboard",
                "the dashboard is served on control.metrics_listen: set that too".into(),
            ));
        }
        config.trust_policy().map_err(at)?;
        config.shaping.schedules().map_err(at)?;
        config.windows.windows().map_err(at)?;
        config.install.check().map_err(at)?;
        if config.store.keep_versions > STORE_KEEP_VERSIONS_MAX {
            return Err(invalid(
                "store.keep_versions",
                format!("at most {STORE_KEEP_VERSIONS_MAX} (0 keeps every version)"),
            ));
        }
        if !protocol::wire::valid_name(&config.node.site) {
            return Err(invalid(
                "node.site",
                "use 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if config.node.labels.len() > protocol::cert::LABELS_MAX {
            return Err(invalid(
                "node.labels",
                format!("at most {} labels", protocol::cert::LABELS_MAX),
            ));
        }
        if let Some((k, v)) = config
            .node
            .labels
            .iter()
            .find(|(k, v)| !protocol::wire::valid_name(k) || !protocol::wire::valid_name(v))
        {
            return Err(invalid(
                "node.labels",
                format!(
                    "{k} = {v:?}: keys and values are 1 to 64 letters, digits, '-', '_' or '.'"
                ),
            ));
        }
        if !protocol::wire::valid_name(&config.node.region) {
            return Err(invalid(
                "node.region",
                "use 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if !(SILENT_AFTER_MIN_S..=SILENT_AFTER_MAX_S).contains(&config.node.silent_after_s) {
            return Err(invalid(
                "node.silent_after_s",
                format!("must be between {SILENT_AFTER_MIN_S} and {SILENT_AFTER_MAX_S} seconds"),
            ));
        }
        for (i, b) in config.network.bootstrap.iter().enumerate() {
            parse_bootstrap(b).map_err(|m| invalid(&format!("network.bootstrap[{i}]"), m))?;
        }
        if config.network.max_peers == 0 || config.network.max_peers > 4096 {
            return Err(invalid(
                "network.max_peers",
                "must be between 1 and 4096".into(),
            ));
        }
        if config.network.wan_peers > 64 {
            return Err(invalid(
                "network.wan_peers",
                "must be at most 64 (each is a connection across the WAN)".into(),
            ));
        }
        Ok(config)
    }

    /// The socket permission bits.
    pub fn socket_mode(&self) -> Result<u32, String> {
        match u32::from_str_radix(self.control.socket_mode.trim_start_matches("0o"), 8) {
            Ok(m @ (0o600 | 0o660)) => Ok(m),
            _ => Err(format!(
                "{:?} is not allowed: use \"0600\" or \"0660\"",
                self.control.socket_mode
            )),
        }
    }

    /// The trust policy; an error names the setting.
    pub fn trust_policy(&self) -> Result<TrustPolicy, (String, String)> {
        if self.trust.threshold == 0 {
            return Err(("trust.threshold".into(), "must be at least 1".into()));
        }
        let mut publishers = Vec::new();
        for (i, p) in self.trust.publishers.iter().enumerate() {
            let key = PublisherKey::parse_config_string(&p.key)
                .map_err(|e| (format!("trust.publishers[{i}].key"), e.to_string()))?;
            publishers.push(TrustedPublisher {
                name: p.name.clone(),
                key,
                channel_prefixes: p.channels.clone(),
                approver: false,
            });
        }
        Ok(TrustPolicy {
            publishers,
            threshold: self.trust.threshold,
            rules: Vec::new(),
        })
    }

    /// Path of the node identity key.
    pub fn identity_path(&self) -> PathBuf {
        self.node.data_dir.join("node.key")
    }

    /// The sections of `newer` that differ from this config's, by name, in file order.
    pub fn changed_sections(&self, newer: &Self) -> Vec<&'static str> {
        fn text<T: Serialize>(section: &T) -> String {
            toml::to_string(section).unwrap_or_default()
        }
        let pairs = [
            ("node", text(&self.node), text(&newer.node)),
            ("control", text(&self.control), text(&newer.control)),
            ("trust", text(&self.trust), text(&newer.trust)),
            ("network", text(&self.network), text(&newer.network)),
            ("shaping", text(&self.shaping), text(&newer.shaping)),
            ("windows", text(&self.windows), text(&newer.windows)),
            ("install", text(&self.install), text(&newer.install)),
            ("store", text(&self.store), text(&newer.store)),
        ];
        pairs
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .map(|(name, _, _)| name)
            .collect()
    }

    /// Directory of the chunk store.
    pub fn store_dir(&self) -> PathBuf {
        self.node.data_dir.join("store")
    }
}

/// The commented default configuration `p2pd init` writes.
pub fn default_config_text(data_dir: &Path, site: &str, region: &str) -> String {
    let data = data_dir.display();
    format!(
        r#"# p2pd configuration. Reference: `p2pd --help` and README.md.

[node]
# Where the chunk store, the node identity key (node.key) and the control socket live.
data_dir = "{data}"
# The branch site this node is in. Peers of the same site share a LAN and are preferred.
site = "{site}"
# The region the site belongs to.
region = "{region}"
# A node of this site with no status record for this long (seconds) counts as silent for
# the releases it has not applied, and leaves the ETA. Below a node's heartbeat (300) a
# node waiting for its window counts silent between heartbeats.
silent_after_s = 900
# Labels that release targets and rings select on (`p2pctl publish --target 'os=debian12'`,
# `--rings 'canary: labels ring=0; pilot: 5%; broad: rest'`). In a fleet with a root the
# node's certificate's labels are used instead.
# labels = {{ os = "debian12", role = "server" }}

[control]
# Unix socket of the local control API that p2pctl talks to.
socket = "{data}/control.sock"
# "0600": only the daemon's user may use p2pctl. "0660": its group too.
socket_mode = "0600"
# Serve Prometheus metrics (read-only, no secrets) at http://ADDRESS/metrics.
# metrics_listen = "127.0.0.1:9464"
# Also serve a read-only fleet dashboard at http://ADDRESS/ (needs metrics_listen).
dashboard = false

[trust]
# How many distinct trusted publisher keys must sign a release.
threshold = 1

# Publisher keys this node accepts releases from. Make one with
#   p2pctl keygen --out publisher.pem
# and paste the printed `key` line here. `channels` limits the key to channels, each
# with those under it ("security" covers "security/openssl", not "security-evil");
# leave it out to allow every channel.
#
# [[trust.publishers]]
# name = "release-team"
# key = "ed25519:<64 hex digits>"
# channels = ["security/"]

[network]
# Control plane (discovery, announcements): libp2p over QUIC on this UDP address.
listen = "0.0.0.0:7401"
# Data plane (chunk transfers): QUIC on this UDP address.
data_listen = "0.0.0.0:7402"
# The data-plane address to give peers, when they cannot reach this node at the address
# they see it at; `advertise_wan` is the one peers of other sites use (e.g. a port
# forwarded on the branch gateway).
# advertise_data = "10.1.0.5:7402"
# advertise_wan = "203.0.113.7:7402"
# The control-plane address peers dial, when not the `listen` address (a forwarded port).
# advertise_control = "203.0.113.7:7401"
# Find peers of this site on the local network by mDNS.
mdns = true
# Peers to join at start-up (the address `p2pd id` prints on each of them).
# bootstrap = ["/ip4/10.0.0.1/udp/7401/quic-v1/p2p/12D3KooW..."]
bootstrap = []
# Channels whose releases this node fetches, each with those under it ("security" covers
# "security/openssl", not "security-evil"); "*" follows every channel.
follow = ["*"]
# Most peers connected on the data plane at once; a quarter of them is kept for peers of
# this node's own site (other sites' peers take at most the rest).
max_peers = 128
# Peers of other sites this node dials for chunks (besides bootstrap peers; others dial it).
wan_peers = 4
# Which peers chunks are sent to compressed (zstd, only where that saves a sixteenth):
# "wan" peers of other sites (a branch link is far slower than the compressor), "always"
# same-site peers too (a slow LAN), "off" none, and the node speaks the protocol of nodes
# before compression (9).
compression = "wan"
# Fetch a changed file as a patch against the version of it this node holds, where the
# release carries one smaller than the file's chunks.
patches = true

[shaping]
# Bandwidth limits of chunk traffic per class, on a time-of-day schedule. WAN is traffic with
# peers of other sites, LAN with this site's peers, total all of it. Each class has a default
# rate and rules "DAYS HH:MM-HH:MM RATE" in `zone` (an IANA name); where rules overlap, the
# lowest rate wins; "22:00-05:00" crosses midnight. Rates: unlimited, 0, 10Mbit/s, 5MB/s, ...
# `enabled = false` turns shaping off altogether (troubleshooting).
enabled = true
zone = "UTC"
# Example: at most 10 Mbit/s from other sites in business hours on weekdays, 80 at night.
# wan_ingress = {{ default = "80Mbit/s", rules = ["Mon-Fri 08:00-20:00 10Mbit/s"] }}
wan_ingress = {{ default = "unlimited" }}
wan_egress = {{ default = "unlimited" }}
lan_egress = {{ default = "unlimited" }}
total = {{ default = "unlimited" }}

[windows]
# Maintenance windows, read in `zone`: `start` is a cron expression (5 fields, or Quartz's
# 6-7 with seconds as hawkBit writes them), `duration` is HH:MM. No window: any time.
zone = "UTC"
# Download only between 22:00 and 05:00:
# download = [{{ start = "0 22 * * *", duration = "07:00" }}]
download = []
# Install only on Saturdays 02:00-06:00:
# install = [{{ start = "0 0 2 ? * SAT", duration = "04:00" }}]
install = []
# Critical releases with at least this CVSS score download outside the download window
# (rate limits still apply). Above 10 turns this off.
emergency_critical_cvss = 9.0

[install]
# Completed releases are installed inside the install window: written to a new directory
# <target>/<channel>/<version>-<id>/ (`/` in the channel written `+`, e.g.
# /opt/patches/security+openssl/), then the channel's `current` symlink switches to it in
# one rename. Without a target, releases stay in the store (`p2pctl export` writes them out).
# target = "/opt/patches"
# Run after the switch, with the new directory as last argument (no shell). It must be
# idempotent: after a crash mid-apply it runs again. If it fails or times out, `current`
# switches back to the previous version and `p2pctl status` shows the exit code and output.
# apply = ["/usr/local/sbin/apply-patch", "--quiet"]
apply_timeout_s = 600
# Health check, run after the apply command succeeded (same arguments and environment). If
# it still fails after check_retries more runs, check_interval_s apart, the node rolls back:
# `current` switches to the previous version and the apply command runs again for it (with
# P2PD_ROLLBACK=1); the install counts as failed, with the check's output in `p2pctl status`.
# check = ["/usr/local/sbin/check-service", "nginx"]
check_timeout_s = 60
check_retries = 2
check_interval_s = 5
# Versions kept per channel (at least 2: current and the one before, for rollback).
keep = 2

[store]
# Versions of each channel kept in the store, the newest (0: every version). Older ones are
# removed once a newer one completes and their space reclaimed (the packs are compacted,
# crash-safe); never one held for approval, the version installed here, or one still to
# install. `p2pctl release remove RELEASE` removes one by hand.
keep_versions = 0
"#
    )
}

/// The config the Debian package installs as `/etc/p2pd/p2pd.toml`
/// (`deploy/debian/p2pd.toml`): the default for the data directory `/var/lib/p2pd`, with the
/// control socket open to the `p2pd` group (operators in it run `p2pctl`).
pub fn packaged_config_text() -> String {
    default_config_text(Path::new("/var/lib/p2pd"), "default", "default")
        .replace("socket_mode = \"0600\"", "socket_mode = \"0660\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the package ships cannot drift from what `p2pd init` writes.
    #[test]
    fn the_packaged_config_is_the_default_for_var_lib_p2pd() {
        let shipped = include_str!("../../deploy/debian/p2pd.toml");
        assert_eq!(
            shipped,
            packaged_config_text(),
            "deploy/debian/p2pd.toml differs from packaged_config_text(): write it again"
        );
        // The config fuzz target starts from it too.
        assert_eq!(
            include_str!("../../fuzz/seeds/config/packaged"),
            shipped,
            "fuzz/seeds/config/packaged differs from deploy/debian/p2pd.toml: copy it"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p2pd.toml");
        std::fs::write(&path, shipped).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.socket_mode().unwrap(), 0o660);
        assert_eq!(c.control.socket, Path::new("/var/lib/p2pd/control.sock"));
    }

    #[test]
    fn a_reload_names_the_sections_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p2pd.toml");
        let base = default_config_text(dir.path(), "s", "r");
        std::fs::write(&path, &base).unwrap();
        let before = Config::load(&path).unwrap();
        assert!(before.changed_sections(&before).is_empty());
        std::fs::write(
            &path,
            base.replace("wan_peers = 4", "wan_peers = 6").replace(
                "total = { default = \"unlimited\" }",
                "total = { default = \"200Mbit/s\" }",
            ),
        )
        .unwrap();
        let after = Config::load(&path).unwrap();
        assert_eq!(before.changed_sections(&after), vec!["network", "shaping"]);
    }

    #[test]
    fn a_missing_config_says_so_once_and_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(&dir.path().join("nope.toml")).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.contains("p2pd init"), "{text}");
    }

    #[test]
    fn default_config_parses_and_has_no_trusted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p2pd.toml");
        std::fs::write(&path, default_config_text(dir.path(), "branch-17", "emea")).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.node.site, "branch-17");
        assert_eq!(c.socket_mode().unwrap(), 0o600);
        assert!(c.trust_policy().unwrap().publishers.is_empty());
    }

    #[test]
    fn typo_and_bad_values_are_errors_that_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p2pd.toml");
        let base = default_config_text(dir.path(), "s", "r");
        std::fs::write(&path, base.replace("site =", "stie =")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("stie"), "{err}");

        std::fs::write(&path, base.replace("\"0600\"", "\"0666\"")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("control.socket_mode"), "{err}");

        let bad_key = format!("{base}\n[[trust.publishers]]\nname = \"x\"\nkey = \"ed25519:zz\"\n");
        std::fs::write(&path, bad_key).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("trust.publishers[0].key"), "{err}");

        // A health check needs a target, and its settings are bounded.
        let check = base.replace(
            "# check = [\"/usr/local/sbin/check-service\", \"nginx\"]",
            "check = [\"/bin/true\"]",
        );
        std::fs::write(&path, &check).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("install.check") && err.contains("target"),
            "{err}"
        );
        let check = check.replace("# target = \"/opt/patches\"", "target = \"/opt/patches\"");
        std::fs::write(&path, &check).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.install.check, vec!["/bin/true".to_string()]);
        assert_eq!(config.install.check_retries, 2);
        for (from, to, setting) in [
            (
                "check_retries = 2",
                "check_retries = 11",
                "install.check_retries",
            ),
            (
                "check_timeout_s = 60",
                "check_timeout_s = 0",
                "install.check_timeout_s",
            ),
            (
                "check_interval_s = 5",
                "check_interval_s = 601",
                "install.check_interval_s",
            ),
        ] {
            std::fs::write(&path, check.replace(from, to)).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(setting), "{err}");
        }
    }
}

//! Scenarios are data: a TOML file names the sites, their node counts and WAN links, the
//! origin's uplink and the release to publish.
//!
//! ```toml
//! name = "ci-3x4"
//! seed = 7
//!
//! [release]
//! size_mib = 64          # v1: this many MiB of seeded random bytes in a few files
//! v2_changed_mib = 1     # then v2 with this many MiB rewritten (0: no v2)
//!
//! [origin]
//! up_mbit = 100          # the publishing node's uplink (its site's WAN egress)
//!
//! [wan]                  # defaults for every site
//! down_mbit = 100
//! up_mbit = 100
//! latency_ms = 5
//!
//! [[sites]]
//! name = "tokyo"
//! nodes = 4
//! # down_mbit / up_mbit / latency_ms override [wan] for this site
//! ```

use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Most nodes a scenario may have: 12 sites of 8 and the origin fit; each node is a process
/// with two UDP sockets and a few tasks, and all of them share this machine's cores.
pub const NODES_MAX: usize = 128;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, for reports.
    pub name: String,
    /// Seed of the generated release.
    #[serde(default)]
    pub seed: u64,
    /// The release.
    pub release: ReleaseSpec,
    /// The origin.
    pub origin: OriginSpec,
    /// WAN defaults.
    #[serde(default)]
    pub wan: WanSpec,
    /// Branch sites.
    pub sites: Vec<SiteSpec>,
    /// Give up after this many seconds per distribution.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Every node's `[node] silent_after_s`, when the scenario sets it (tests of silent
    /// nodes use a short one).
    #[serde(default)]
    pub silent_after_s: Option<u64>,
    /// A fleet with a root: `p2pctl root init` names a CA and the publisher key, every node
    /// is initialised with it (`p2pd init --root`), enrolled (`p2pctl node enroll`) and given
    /// its certificate (`p2pd cert install`) before it starts.
    #[serde(default)]
    pub membership: bool,
}

fn default_timeout_s() -> u64 {
    300
}

/// `[release]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Size of v1 in MiB.
    pub size_mib: u64,
    /// MiB rewritten for v2 (0: no v2).
    #[serde(default)]
    pub v2_changed_mib: u64,
}

/// `[origin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSpec {
    /// Uplink in Mbit/s (absent: unlimited).
    pub up_mbit: Option<f64>,
    /// The site the origin node says it is in (default "origin", a site of its own). Naming
    /// a scenario site makes the origin a LAN peer of that site's nodes.
    #[serde(default)]
    pub site: Option<String>,
}

/// `[wan]` defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanSpec {
    /// Downlink in Mbit/s (absent: unlimited).
    pub down_mbit: Option<f64>,
    /// Uplink in Mbit/s (absent: unlimited).
    pub up_mbit: Option<f64>,
    /// One-way latency in ms.
    #[serde(default)]
    pub latency_ms: u64,
}

/// One `[[sites]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Site name (a valid p2pd site name).
    pub name: String,
    /// Nodes in it.
    pub nodes: usize,
    /// Override of `[wan].down_mbit`.
    pub down_mbit: Option<f64>,
    /// Override of `[wan].up_mbit`.
    pub up_mbit: Option<f64>,
    /// Override of `[wan].latency_ms`.
    pub latency_ms: Option<u64>,
    /// The site's WAN ingress cap in Mbit/s, enforced by its nodes' shapers: each node's
    /// `[shaping] wan_ingress` is set to the cap divided by the site's node count (so the
    /// site as a whole stays under it). Cannot be combined with a `[shaping]` table in
    /// `node_config`.
    pub wan_ingress_cap_mbit: Option<f64>,
    /// TOML appended to the `p2pd.toml` of this site's nodes, e.g. a `[shaping]` table.
    #[serde(default)]
    pub node_config: String,
    /// Whether this site's nodes install releases: each gets `[install] target` in its data
    /// directory (`installed/`), and so counts in the compliance report.
    #[serde(default)]
    pub install: bool,
}

impl SiteSpec {
    /// Downlink in bytes/s.
    pub fn down(&self, wan: &WanSpec) -> Option<f64> {
        self.down_mbit.or(wan.down_mbit).map(mbit)
    }

    /// Uplink in bytes/s.
    pub fn up(&self, wan: &WanSpec) -> Option<f64> {
        self.up_mbit.or(wan.up_mbit).map(mbit)
    }

    /// The site's WAN ingress cap in bytes/s, if it has one.
    pub fn ingress_cap(&self) -> Option<f64> {
        self.wan_ingress_cap_mbit.map(mbit)
    }

    /// The `[shaping]` table that enforces the site's ingress cap on each of its nodes.
    pub fn shaping_table(&self) -> Option<String> {
        let per_node = self.ingress_cap()? / self.nodes as f64;
        Some(format!(
            "[shaping]\nwan_ingress = {{ default = \"{}B/s\" }}\n",
            per_node.floor() as u64
        ))
    }

    /// One-way latency.
    pub fn latency(&self, wan: &WanSpec) -> Duration {
        Duration::from_millis(self.latency_ms.unwrap_or(wan.latency_ms))
    }
}

/// Reads a scenario file with `parse`; an error names the file.
pub fn load_with<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Mbit/s to bytes/s.
pub fn mbit(m: f64) -> f64 {
    m * 1e6 / 8.0
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        crate::scenario::load_with(path, Self::parse)
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Self = toml::from_str(text)?;
        anyhow::ensure!(!s.sites.is_empty(), "at least one site is needed");
        anyhow::ensure!(s.release.size_mib > 0, "release.size_mib must be above 0");
        anyhow::ensure!(
            s.release.v2_changed_mib <= s.release.size_mib,
            "release.v2_changed_mib must not exceed size_mib"
        );
        for site in &s.sites {
            anyhow::ensure!(
                protocol::wire::valid_name(&site.name) && site.name != "origin",
                "site name {:?} is not valid (or is the reserved \"origin\")",
                site.name
            );
            anyhow::ensure!(site.nodes > 0, "site {} has no nodes", site.name);
            if let Some(cap) = site.wan_ingress_cap_mbit {
                anyhow::ensure!(
                    cap > 0.0 && cap.is_finite(),
                    "site {}: wan_ingress_cap_mbit must be above 0",
                    site.name
                );
                anyhow::ensure!(
                    !site.node_config.contains("[shaping]"),
                    "site {}: wan_ingress_cap_mbit sets [shaping]; do not also give one in node_config",
                    site.name
                );
            }
        }
        let total: usize = s.sites.iter().map(|s| s.nodes).sum();
        anyhow::ensure!(
            total <= NODES_MAX,
            "{total} nodes: the loopback testnet runs at most {NODES_MAX}"
        );
        Ok(s)
    }

    /// Nodes in all sites (the origin excluded).
    pub fn node_count(&self) -> usize {
        self.sites.iter().map(|s| s.nodes).sum()
    }

    /// The lower bound on the time for every node to hold `bytes` (seconds), from the
    /// configured caps: Kumar & Ross applied to sites over the WAN and to nodes inside a site
    /// (LAN links on loopback are unlimited, so the in-site and per-node terms vanish):
    /// `max(F/u_0, F/min_s D_s, S·F/(u_0 + Σ_s U_s))`.
    pub fn lower_bound_s(&self, bytes: u64) -> f64 {
        let f = bytes as f64;
        let u0 = self.origin.up_mbit.map(mbit).unwrap_or(f64::INFINITY);
        let d_min = self
            .sites
            .iter()
            .map(|s| {
                let down = s.down(&self.wan).unwrap_or(f64::INFINITY);
                down.min(s.ingress_cap().unwrap_or(f64::INFINITY))
            })
            .fold(f64::INFINITY, f64::min);
        let sum_up: f64 = self
            .sites
            .iter()
            .map(|s| s.up(&self.wan).unwrap_or(f64::INFINITY))
            .sum();
        let s = self.sites.len() as f64;
        let terms = [f / u0, f / d_min, s * f / (u0 + sum_up)];
        terms
            .into_iter()
            .filter(|t| t.is_finite())
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scenarios_parse() {
        for name in [
            "ci-3x4.toml",
            "demo.toml",
            "bar-3x4.toml",
            "control-3x4.toml",
            "control-6x4.toml",
            "scale-12x8.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scenarios")
                .join(name);
            Scenario::load(&path).unwrap();
        }
    }

    #[test]
    fn lower_bound_takes_the_largest_term() {
        let s = Scenario::parse(
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=8\n[wan]\ndown_mbit=16\nup_mbit=1\n\
             [[sites]]\nname='a'\nnodes=2\n[[sites]]\nname='b'\nnodes=2\n",
        )
        .unwrap();
        // F/u0 = 1 s per MB; S·F/(u0+ΣU) = 2F/(1 MB/s + 0.25 MB/s) = 1.6 s per MB.
        let f = 1_000_000;
        assert!(
            (s.lower_bound_s(f) - 1.6).abs() < 1e-9,
            "{}",
            s.lower_bound_s(f)
        );
        assert!(Scenario::parse("name='x'\n[release]\nsize_mib=1\n[origin]\nsites=[]").is_err());
    }
}

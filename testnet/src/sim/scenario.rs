//! Simulator scenarios: TOML files that describe a fleet, its links, the release and the
//! faults to inject.
//!
//! ```toml
//! name = "fleet-500x50"
//! seed = 1
//! start = "2026-11-23T20:00:00Z"   # the wall clock at publish (schedules and windows read it)
//!
//! [release]
//! size_mib = 1024        # F
//! chunk_kib = 64         # chunk size (the release is F / chunk of equal chunks)
//! emergency = false      # an emergency downloads outside download windows
//! download_windows = ["0 22 * * * for 06:00"]   # the release's own, as `p2pctl publish` takes them
//! wan_wire_ratio = 1.0   # a chunk's bytes on a WAN link compressed, per byte (1: incompressible)
//!
//! [release.patches]      # the release is the next version of one the endpoints hold
//! share = 0.8            # share of its files that carry a patch against that version
//! ratio = 0.05           # a patch's bytes per byte of the file it rebuilds
//! file_mib = 4           # the release's files are this large
//! base_share = 1.0       # share of endpoints that hold the version before
//!
//! [origin]
//! up_mbit = 1000         # u_0
//! latency_ms = 5         # one-way, origin to the WAN
//!
//! [sites]                # every branch site, unless [[site]] entries say otherwise
//! count = 500
//! nodes = 50
//! wan_down_mbit = 100
//! wan_up_mbit = 100
//! wan_latency_ms = 15    # one-way, site to the WAN
//! lan_mbit = 1000        # each node's LAN link, each way
//! lan_latency_ms = 0.2
//! zone = "Europe/Berlin" # the zone of the site's [shaping] and [windows] below
//!
//! [sites.shaping]        # each endpoint's [shaping], exactly as in p2pd.toml
//! wan_ingress = { default = "unlimited", rules = ["Mon-Fri 08:00-18:00 1Mbit/s"] }
//!
//! [sites.windows]        # each endpoint's [windows], exactly as in p2pd.toml
//! download = [{ start = "0 20 * * *", duration = "10:00" }]
//!
//! [[site]]               # optional: sites with their own figures (the rest use [sites])
//! name = "tokyo"
//! nodes = 4
//! zone = "Asia/Tokyo"    # a [[site]] may also give its own shaping and windows tables
//!
//! [swarm]
//! wan_peers = 8          # WAN peers each node dials (in other sites; links are two-way)
//!
//! [faults]
//! churn = 0.10           # share of endpoints that crash once and come back
//! churn_window_s = [5, 60]   # when they crash (seconds after publish)
//! churn_down_s = [10, 30]    # for how long
//! garbage = 0.01         # share of endpoints that serve garbage
//!
//! [[faults.cut]]         # a site cut off from the WAN for a while
//! site = "site-7"
//! at_s = 20
//! for_s = 30
//! ```

use crate::scenario::mbit;
use scheduler::policy::{RateSchedules, ShapingSection, Windows, WindowsSection};
use serde::Deserialize;
use std::path::Path;

/// The wall clock at publish when a scenario gives no `start`: a Monday, 09:00 UTC.
pub const DEFAULT_START: &str = "2026-11-23T09:00:00Z";

/// A simulator scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimScenario {
    /// Name, for reports.
    pub name: String,
    /// Seed of everything random: node keys, WAN peer choice, faults.
    #[serde(default)]
    pub seed: u64,
    /// The wall-clock instant of publish (RFC 3339), which rate schedules and windows read;
    /// [`DEFAULT_START`] when left out.
    #[serde(default)]
    pub start: Option<String>,
    /// The release.
    pub release: SimRelease,
    /// The origin.
    pub origin: SimOrigin,
    /// Defaults for every site, and how many sites there are.
    #[serde(default)]
    pub sites: SiteDefaults,
    /// Sites with their own figures; they come first, `[sites] count` fills up the rest.
    #[serde(default)]
    pub site: Vec<SiteSpec>,
    /// Swarm parameters.
    #[serde(default)]
    pub swarm: SwarmSpec,
    /// Faults.
    #[serde(default)]
    pub faults: FaultSpec,
    /// Stop after this much simulated time (seconds) even if some endpoints are not done.
    #[serde(default = "default_limit_s")]
    pub limit_s: f64,
}

fn default_limit_s() -> f64 {
    3_600.0
}

/// `[release]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRelease {
    /// Release size in MiB.
    pub size_mib: f64,
    /// Chunk size in KiB.
    #[serde(default = "default_chunk_kib")]
    pub chunk_kib: u32,
    /// Marked emergency by its publisher: it downloads outside download windows (the
    /// node's emergency policy, `scheduler::priority`).
    #[serde(default)]
    pub emergency: bool,
    /// The release's own download windows, `CRON for HH:MM [in ZONE]` as `p2pctl publish
    /// --download-window` takes them; without a zone each endpoint reads them in its own.
    #[serde(default)]
    pub download_windows: Vec<String>,
    /// What a chunk weighs on a WAN link compressed, per byte of it: 1 for incompressible
    /// data (most binaries, archives), about 0.2 for text and code. Chunks move compressed
    /// where the daemon's rule sends them so (`net::compress`: to other sites) and only
    /// where that saves a sixteenth (`chunking::compress`); patches' pieces never shrink.
    #[serde(default = "one")]
    pub wan_wire_ratio: f64,
    /// The release is the next version of one the endpoints hold, with patches.
    #[serde(default)]
    pub patches: Option<SimPatches>,
}

fn one() -> f64 {
    1.0
}

/// `[release.patches]`: the release's files and their patches against the version before.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPatches {
    /// Share of the release's files that carry a patch.
    pub share: f64,
    /// A patch's bytes per byte of the file it rebuilds.
    pub ratio: f64,
    /// Size of each of the release's files, MiB (the last may be smaller).
    #[serde(default = "default_file_mib")]
    pub file_mib: f64,
    /// Share of endpoints that hold the version before (the others fetch chunks only).
    #[serde(default = "one")]
    pub base_share: f64,
}

fn default_file_mib() -> f64 {
    4.0
}

fn default_chunk_kib() -> u32 {
    64
}

/// `[origin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimOrigin {
    /// Uplink in Mbit/s.
    pub up_mbit: f64,
    /// One-way latency from the origin to the WAN, in ms.
    #[serde(default = "default_origin_latency")]
    pub latency_ms: f64,
}

fn default_origin_latency() -> f64 {
    5.0
}

/// `[sites]`: defaults for every site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDefaults {
    /// Sites in all (`[[site]]` entries included).
    #[serde(default)]
    pub count: usize,
    /// Endpoints per site.
    #[serde(default = "default_nodes")]
    pub nodes: usize,
    /// WAN downlink in Mbit/s.
    #[serde(default = "default_wan")]
    pub wan_down_mbit: f64,
    /// WAN uplink in Mbit/s.
    #[serde(default = "default_wan")]
    pub wan_up_mbit: f64,
    /// One-way latency from the site to the WAN, in ms.
    #[serde(default = "default_wan_latency")]
    pub wan_latency_ms: f64,
    /// Each node's LAN link, each way, in Mbit/s.
    #[serde(default = "default_lan")]
    pub lan_mbit: f64,
    /// One-way LAN latency in ms.
    #[serde(default = "default_lan_latency")]
    pub lan_latency_ms: f64,
    /// IANA zone; when given it is the zone of both `shaping` and `windows`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Each endpoint's `[shaping]` (default: none; every class unlimited).
    #[serde(default)]
    pub shaping: ShapingSection,
    /// Each endpoint's `[windows]` (default: none; downloads any time).
    #[serde(default)]
    pub windows: WindowsSection,
}

fn default_nodes() -> usize {
    4
}
fn default_wan() -> f64 {
    100.0
}
fn default_wan_latency() -> f64 {
    15.0
}
fn default_lan() -> f64 {
    1000.0
}
fn default_lan_latency() -> f64 {
    0.2
}

impl Default for SiteDefaults {
    fn default() -> Self {
        Self {
            count: 0,
            nodes: default_nodes(),
            wan_down_mbit: default_wan(),
            wan_up_mbit: default_wan(),
            wan_latency_ms: default_wan_latency(),
            lan_mbit: default_lan(),
            lan_latency_ms: default_lan_latency(),
            zone: None,
            shaping: ShapingSection::default(),
            windows: WindowsSection::default(),
        }
    }
}

/// One `[[site]]` entry: any figure left out comes from `[sites]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Name.
    pub name: String,
    /// Endpoints.
    pub nodes: Option<usize>,
    /// WAN downlink in Mbit/s.
    pub wan_down_mbit: Option<f64>,
    /// WAN uplink in Mbit/s.
    pub wan_up_mbit: Option<f64>,
    /// One-way WAN latency in ms.
    pub wan_latency_ms: Option<f64>,
    /// LAN link per node in Mbit/s.
    pub lan_mbit: Option<f64>,
    /// One-way LAN latency in ms.
    pub lan_latency_ms: Option<f64>,
    /// IANA zone of this site's shaping and windows.
    pub zone: Option<String>,
    /// This site's `[shaping]`, replacing `[sites.shaping]`.
    pub shaping: Option<ShapingSection>,
    /// This site's `[windows]`, replacing `[sites.windows]`.
    pub windows: Option<WindowsSection>,
}

/// `[swarm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    /// WAN peers each endpoint dials in other sites (connections are two-way, so each has
    /// about twice this many), besides the origin.
    #[serde(default = "default_wan_peers")]
    pub wan_peers: usize,
}

fn default_wan_peers() -> usize {
    8
}

impl Default for SwarmSpec {
    fn default() -> Self {
        Self {
            wan_peers: default_wan_peers(),
        }
    }
}

/// `[faults]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Share of endpoints that leave once and come back.
    #[serde(default)]
    pub churn: f64,
    /// Share of endpoints that serve garbage (they claim every chunk and fetch nothing).
    #[serde(default)]
    pub garbage: f64,
    /// When churning endpoints leave: uniformly within this window, seconds from publish.
    #[serde(default = "default_churn_window")]
    pub churn_window_s: [f64; 2],
    /// How long a churning endpoint stays away, seconds: uniformly within this range.
    #[serde(default = "default_churn_down")]
    pub churn_down_s: [f64; 2],
    /// Sites cut off from the WAN for a while.
    #[serde(default)]
    pub cut: Vec<CutSpec>,
}

/// One `[[faults.cut]]`: a site whose WAN links carry nothing for a while (its LAN works).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutSpec {
    /// The site.
    pub site: String,
    /// When the cut starts, seconds from publish.
    pub at_s: f64,
    /// How long it lasts, seconds.
    pub for_s: f64,
}

fn default_churn_window() -> [f64; 2] {
    [5.0, 60.0]
}

fn default_churn_down() -> [f64; 2] {
    [10.0, 30.0]
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self {
            churn: 0.0,
            garbage: 0.0,
            churn_window_s: default_churn_window(),
            churn_down_s: default_churn_down(),
            cut: Vec::new(),
        }
    }
}

/// A site's endpoint policy, resolved: what the daemon builds from `[shaping]` and
/// `[windows]`.
#[derive(Debug, Clone)]
pub struct SitePolicy {
    /// Rate schedules of the traffic classes.
    pub shaping: RateSchedules,
    /// Download windows and the emergency policy.
    pub windows: Windows,
}

/// A site with every figure resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteLinks {
    /// Name.
    pub name: String,
    /// Endpoints.
    pub nodes: usize,
    /// WAN downlink, bytes/s.
    pub down: f64,
    /// WAN uplink, bytes/s.
    pub up: f64,
    /// One-way WAN latency, seconds.
    pub wan_latency: f64,
    /// LAN link per node, bytes/s.
    pub lan: f64,
    /// One-way LAN latency, seconds.
    pub lan_latency: f64,
}

impl SimScenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        crate::scenario::load_with(path, Self::parse)
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Self = toml::from_str(text)?;
        s.check()?;
        Ok(s)
    }

    /// Checks every figure (what [`SimScenario::parse`] does after reading).
    pub fn check(&self) -> anyhow::Result<()> {
        let s = self;
        let positive = |what: &str, v: f64| {
            anyhow::ensure!(v.is_finite() && v > 0.0, "{what} must be above 0");
            Ok(())
        };
        positive("release.size_mib", s.release.size_mib)?;
        anyhow::ensure!(
            s.release.wan_wire_ratio > 0.0 && s.release.wan_wire_ratio <= 1.0,
            "release.wan_wire_ratio must be in (0, 1]"
        );
        if let Some(p) = &s.release.patches {
            anyhow::ensure!(
                (0.0..=1.0).contains(&p.share)
                    && p.ratio > 0.0
                    && p.ratio <= 1.0
                    && (0.0..=1.0).contains(&p.base_share),
                "release.patches: share and base_share in [0, 1], ratio in (0, 1]"
            );
            positive("release.patches.file_mib", p.file_mib)?;
        }
        anyhow::ensure!(
            (1..=4096).contains(&s.release.chunk_kib),
            "release.chunk_kib must be 1..=4096"
        );
        positive("origin.up_mbit", s.origin.up_mbit)?;
        anyhow::ensure!(s.limit_s > 0.0, "limit_s must be above 0");
        let chunks = s.chunk_count();
        anyhow::ensure!(
            chunks <= protocol::manifest::CHUNKS_PER_RELEASE_MAX as u64,
            "{chunks} chunks: a release holds at most {}",
            protocol::manifest::CHUNKS_PER_RELEASE_MAX
        );
        let sites = s.site_links();
        anyhow::ensure!(
            !sites.is_empty(),
            "no sites: set [sites] count or add [[site]]"
        );
        let mut names = std::collections::HashSet::new();
        for site in &sites {
            anyhow::ensure!(
                names.insert(site.name.as_str()),
                "site {} is named twice",
                site.name
            );
            anyhow::ensure!(site.nodes > 0, "site {} has no nodes", site.name);
            for (what, v) in [
                ("wan_down_mbit", site.down),
                ("wan_up_mbit", site.up),
                ("lan_mbit", site.lan),
            ] {
                positive(&format!("site {}: {what}", site.name), v)?;
            }
            // The simulator runs its partitions in windows of the smallest WAN latency.
            anyhow::ensure!(
                site.wan_latency >= 1e-4 && site.lan_latency >= 0.0,
                "site {}: wan_latency_ms must be at least 0.1 and lan_latency_ms not negative",
                site.name
            );
        }
        self.start()?;
        self.site_policies()?;
        self.release_windows()?;
        let nodes: usize = sites.iter().map(|s| s.nodes).sum();
        anyhow::ensure!(
            nodes <= 1_000_000,
            "{nodes} endpoints: the simulator takes at most 1,000,000"
        );
        for (what, v) in [
            ("faults.churn", s.faults.churn),
            ("faults.garbage", s.faults.garbage),
        ] {
            anyhow::ensure!((0.0..=0.5).contains(&v), "{what} must be within 0..=0.5");
        }
        for c in &s.faults.cut {
            anyhow::ensure!(
                sites.iter().any(|l| l.name == c.site),
                "faults.cut: no site {:?}",
                c.site
            );
            anyhow::ensure!(
                c.at_s.is_finite() && c.for_s.is_finite() && c.at_s >= 0.0 && c.for_s > 0.0,
                "faults.cut {}: at_s must be at least 0 and for_s above 0",
                c.site
            );
        }
        for (what, [a, b]) in [
            ("faults.churn_window_s", s.faults.churn_window_s),
            ("faults.churn_down_s", s.faults.churn_down_s),
        ] {
            anyhow::ensure!(
                a.is_finite() && b.is_finite() && 0.0 <= a && a <= b,
                "{what} must be [from, to] with 0 <= from <= to"
            );
        }
        Ok(())
    }

    /// The wall clock at publish.
    pub fn start(&self) -> anyhow::Result<jiff::Timestamp> {
        let text = self.start.as_deref().unwrap_or(DEFAULT_START);
        text.parse()
            .map_err(|e| anyhow::anyhow!("start {text:?}: {e} (write e.g. {DEFAULT_START:?})"))
    }

    /// The release's own download windows, as written.
    pub fn release_windows(&self) -> anyhow::Result<Vec<protocol::ReleaseWindow>> {
        self.release
            .download_windows
            .iter()
            .map(|w| {
                scheduler::window::parse_release_window(w)
                    .map_err(|e| anyhow::anyhow!("release.download_windows {w:?}: {e}"))
            })
            .collect()
    }

    /// Each site's shaping and windows, in the order of [`SimScenario::site_links`]; an
    /// error names the site and the setting.
    pub fn site_policies(&self) -> anyhow::Result<Vec<SitePolicy>> {
        let d = &self.sites;
        let resolve = |name: &str, s: Option<&SiteSpec>| -> anyhow::Result<SitePolicy> {
            let mut shaping = s
                .and_then(|s| s.shaping.clone())
                .unwrap_or_else(|| d.shaping.clone());
            let mut windows = s
                .and_then(|s| s.windows.clone())
                .unwrap_or_else(|| d.windows.clone());
            if let Some(zone) = s.and_then(|s| s.zone.clone()).or_else(|| d.zone.clone()) {
                shaping.zone.clone_from(&zone);
                windows.zone = zone;
            }
            let named = |(key, why): (String, String)| anyhow::anyhow!("site {name}: {key}: {why}");
            Ok(SitePolicy {
                shaping: shaping.schedules().map_err(named)?,
                windows: windows.windows().map_err(named)?,
            })
        };
        self.site_links()
            .iter()
            .map(|l| resolve(&l.name, self.site.iter().find(|s| s.name == l.name)))
            .collect()
    }

    /// Chunk size in bytes.
    pub fn chunk_bytes(&self) -> u32 {
        self.release.chunk_kib * 1024
    }

    /// Release size in bytes.
    pub fn release_bytes(&self) -> u64 {
        (self.release.size_mib * 1024.0 * 1024.0) as u64
    }

    /// Number of chunks (the last one may be short).
    pub fn chunk_count(&self) -> u64 {
        self.release_bytes().div_ceil(u64::from(self.chunk_bytes()))
    }

    /// Origin uplink, bytes/s.
    pub fn origin_up(&self) -> f64 {
        mbit(self.origin.up_mbit)
    }

    /// Every site with its figures resolved: the `[[site]]` entries, then generated sites
    /// (`site-N`) up to `[sites] count`.
    pub fn site_links(&self) -> Vec<SiteLinks> {
        let d = &self.sites;
        let resolve = |s: &SiteSpec| SiteLinks {
            name: s.name.clone(),
            nodes: s.nodes.unwrap_or(d.nodes),
            down: mbit(s.wan_down_mbit.unwrap_or(d.wan_down_mbit)),
            up: mbit(s.wan_up_mbit.unwrap_or(d.wan_up_mbit)),
            wan_latency: s.wan_latency_ms.unwrap_or(d.wan_latency_ms) / 1e3,
            lan: mbit(s.lan_mbit.unwrap_or(d.lan_mbit)),
            lan_latency: s.lan_latency_ms.unwrap_or(d.lan_latency_ms) / 1e3,
        };
        let mut out: Vec<SiteLinks> = self.site.iter().map(resolve).collect();
        let mut k = 0;
        while out.len() < d.count {
            k += 1;
            let name = format!("site-{k}");
            if out.iter().any(|s| s.name == name) {
                continue;
            }
            out.push(resolve(&SiteSpec {
                name,
                ..SiteSpec::default()
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/sim");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            SimScenario::load(&path).unwrap();
        }
    }

    #[test]
    fn sites_are_listed_then_generated_and_bad_figures_are_refused() {
        let s = SimScenario::parse(
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[sites]\ncount=3\nnodes=2\n\
             [[site]]\nname='tokyo'\nnodes=5\nwan_down_mbit=8\n",
        )
        .unwrap();
        let sites = s.site_links();
        assert_eq!(sites.len(), 3);
        assert_eq!((sites[0].name.as_str(), sites[0].nodes), ("tokyo", 5));
        assert_eq!(sites[0].down, 1e6);
        assert_eq!((sites[1].name.as_str(), sites[1].nodes), ("site-1", 2));
        assert_eq!(s.chunk_count(), 16);
        let p = SimScenario::parse(
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[sites]\ncount=2\n\
             zone='Europe/Berlin'\n[sites.shaping.wan_ingress]\nrules=['Mon-Fri 08:00-18:00 1Mbit/s']\n\
             [[site]]\nname='tokyo'\nzone='Asia/Tokyo'\nshaping={}\n",
        )
        .unwrap()
        .site_policies()
        .unwrap();
        assert_eq!(
            p[0].shaping.wan_ingress.rules.len(),
            0,
            "a site's table replaces [sites]'"
        );
        assert_eq!(p[0].windows.zone.iana_name(), Some("Asia/Tokyo"));
        assert_eq!(p[1].shaping.wan_ingress.rules.len(), 1);
        assert_eq!(
            p[1].shaping.wan_ingress.zone.iana_name(),
            Some("Europe/Berlin")
        );
        for bad in [
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n",
            "name='x'\n[release]\nsize_mib=0\n[origin]\nup_mbit=10\n[sites]\ncount=1\n",
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[sites]\ncount=1\nwan_up_mbit=0\n",
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[sites]\ncount=1\n[faults]\nchurn=0.9\n",
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[[site]]\nname='a'\n[[site]]\nname='a'\n",
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\nbogus=1\n",
            "name='x'\nstart='yesterday'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[sites]\ncount=1\n",
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[sites]\ncount=1\nzone='Mars/Base'\n",
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[sites]\ncount=1\n\
             [sites.shaping.wan_ingress]\nrules=['Mon 25:00-26:00 0']\n",
            "name='x'\n[release]\nsize_mib=1\ndownload_windows=['every night']\n[origin]\nup_mbit=10\n[sites]\ncount=1\n",
            "name='x'\n[release]\nsize_mib=1\n[origin]\nup_mbit=10\n[[site]]\nname='a'\n\
             windows={download=[{start='0 20 * * *', duration='200:00'}]}\n",
        ] {
            assert!(SimScenario::parse(bad).is_err(), "{bad}");
        }
    }
}

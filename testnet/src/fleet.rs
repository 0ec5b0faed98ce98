//! The fleet: real `p2pd` processes on 127.0.0.1, one data directory and port pair each, an
//! origin node that publishes, the emulated WAN between sites ([`crate::wan`]), and the
//! measurements of a distribution.

use crate::scenario::Scenario;
use crate::wan::{Kind, Plane, SiteLink, Wan};
use api::FetchState;
use api::client::Client;
use api::{ExportRequest, NodeStatus, ReleaseProgress};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Where the `p2pd` and `p2pctl` binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `p2pd`.
    pub p2pd: PathBuf,
    /// `p2pctl`.
    pub p2pctl: PathBuf,
}

impl Bins {
    /// The binaries of the profile this program was built with, built first if cargo is at
    /// hand (`cargo run`/`cargo test` set `CARGO`), so they are never stale.
    pub fn locate() -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        if let Ok(cargo) = std::env::var("CARGO") {
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "node", "--bins"]);
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status()?;
            anyhow::ensure!(status.success(), "building p2pd and p2pctl failed");
        }
        let bins = Self {
            p2pd: dir.join("p2pd"),
            p2pctl: dir.join("p2pctl"),
        };
        anyhow::ensure!(
            bins.p2pd.exists() && bins.p2pctl.exists(),
            "p2pd/p2pctl not found in {}; run `cargo build -p node --bins` first",
            dir.display()
        );
        Ok(bins)
    }
}

/// One node process.
pub struct NodeProc {
    /// Name, such as `tokyo-2` or `origin`.
    pub name: String,
    /// Site index (0 is the origin's site).
    pub site: usize,
    /// Data directory.
    pub data: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// Data-plane address.
    pub data_addr: SocketAddr,
    /// Control-plane port.
    pub control_port: u16,
    child: Option<Child>,
}

impl NodeProc {
    /// API client.
    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// The peak resident memory of the node's process so far (`VmHWM`), bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A running fleet.
pub struct Fleet {
    /// The scenario.
    pub scenario: Scenario,
    /// Working directory (node data, payloads, exports).
    pub dir: PathBuf,
    /// Binaries.
    pub bins: Bins,
    /// Nodes; index 0 is the origin.
    pub nodes: Vec<NodeProc>,
    /// Site names; index 0 is `origin`.
    pub site_names: Vec<String>,
    /// The WAN relay.
    pub wan: Arc<Wan>,
    key: PathBuf,
    logs: bool,
    /// In a fleet with a root ([`Scenario::membership`]): the root file and the CA key.
    pub membership: Option<(PathBuf, PathBuf)>,
}

/// Runs `cmd`, failing with its stderr unless it succeeds.
/// The release id in `p2pctl publish --json`'s report.
fn release_of(report: &serde_json::Value) -> anyhow::Result<String> {
    report["id"]
        .as_str()
        .or_else(|| report["release"]["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no release id in publish output: {report}"))
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `p2pctl keygen --out path`; returns the path.
fn keygen(bins: &Bins, path: &Path) -> anyhow::Result<PathBuf> {
    run_ok(
        Command::new(&bins.p2pctl)
            .arg("keygen")
            .arg("--out")
            .arg(path),
    )?;
    Ok(path.to_path_buf())
}

/// The node id `p2pd id` prints for the node of `config`.
fn node_id(bins: &Bins, config: &Path) -> anyhow::Result<String> {
    let out = Command::new(&bins.p2pd)
        .args(["id", "--config"])
        .arg(config)
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("node id: ").map(|s| s.trim().to_owned()))
        .ok_or_else(|| anyhow::anyhow!("p2pd id printed no node id"))
}

/// Reserves a free loopback UDP port: the socket stays bound (so neither the kernel nor the
/// relay hands the port out again) until the caller drops it, just before the node starts.
fn reserve_udp_port(held: &mut Vec<UdpSocket>) -> anyhow::Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    held.push(socket);
    Ok(port)
}

/// How long no WAN connection must have been set up before [`Fleet::wait_connected`]
/// returns.
pub const QUIET_BEFORE_PUBLISH: Duration = Duration::from_secs(8);

/// Peers of other branch sites each node dials (`network.wan_peers`, the default).
pub const WAN_PEERS: usize = scheduler::control::WAN_PEERS_DEFAULT;

/// The window over which [`Distribution::site_wan_ingress_peak_10s`] averages.
pub const PEAK_WINDOW: Duration = Duration::from_secs(10);

/// The highest average rate of a counter over any `window` of the series (samples in time
/// order): from each sample to the first at least `window` later. A series shorter than
/// `window` gives its overall average.
pub fn peak_rate(series: &[(Instant, u64)], window: Duration) -> f64 {
    let rate = |a: &(Instant, u64), b: &(Instant, u64)| {
        let dt = b.0.duration_since(a.0).as_secs_f64();
        if dt > 0.0 {
            b.1.saturating_sub(a.1) as f64 / dt
        } else {
            0.0
        }
    };
    let (Some(first), Some(last)) = (series.first(), series.last()) else {
        return 0.0;
    };
    if last.0.duration_since(first.0) < window {
        return rate(first, last);
    }
    let mut peak = 0.0f64;
    let mut j = 0;
    for (i, a) in series.iter().enumerate() {
        j = j.max(i);
        while j < series.len() && series[j].0.duration_since(a.0) < window {
            j += 1;
        }
        let Some(b) = series.get(j) else { break };
        peak = peak.max(rate(a, b));
    }
    peak
}

/// After the last node completes, a distribution's counters are read once no control
/// message has been sent for this long (the records that say "complete", then the site
/// summaries made of them, belong to the release).
pub const CONTROL_QUIET: Duration = Duration::from_secs(4);

/// The longest wait for [`CONTROL_QUIET`]: a fleet never quiet by then (progress records,
/// heartbeats) is read as it is.
pub const CONTROL_SETTLE_MAX: Duration = Duration::from_secs(40);

/// The fleet's byte counters at one instant: the relay's, per site and [`Kind`], and the
/// control-stream counters of every node, summed per site.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Per site (0 is the origin's): `[kind][0]` sent, `[kind][1]` received over the WAN.
    relay: Vec<[[u64; 2]; 3]>,
    /// Per site: libp2p bytes between its own nodes.
    lan_control: Vec<u64>,
    /// Per site: data-plane bytes between its own nodes that came through the relay.
    lan_data: Vec<u64>,
    /// Per site: data-plane control bytes its nodes received from peers of other sites.
    control_wan_received: Vec<u64>,
    /// Per site: data-plane control bytes its nodes sent to peers of other sites.
    control_wan_sent: Vec<u64>,
    /// Per data-plane message kind: bytes all nodes sent (same-site and other peers).
    control_sent_by_kind: Vec<(String, u64)>,
    /// Per data-plane message kind: bytes all nodes sent to peers of other sites.
    control_wan_by_kind: Vec<(String, u64)>,
}

/// `a - b`, kind by kind.
fn sub_kinds(a: &[(String, u64)], b: &[(String, u64)]) -> Vec<(String, u64)> {
    a.iter()
        .map(|(k, v)| {
            let was = b.iter().find(|(bk, _)| bk == k).map_or(0, |(_, x)| *x);
            (k.clone(), v.saturating_sub(was))
        })
        .collect()
}

/// Adds `n` to `kind`'s entry of `list`.
fn add_kind(list: &mut Vec<(String, u64)>, kind: &str, n: u64) {
    match list.iter_mut().find(|(k, _)| k == kind) {
        Some((_, v)) => *v += n,
        None => list.push((kind.to_string(), n)),
    }
}

impl Counters {
    /// What was counted from `before` to `self`.
    fn since(&self, before: &Self) -> Self {
        let sub = |a: &[u64], b: &[u64]| -> Vec<u64> {
            a.iter().zip(b).map(|(x, y)| x.saturating_sub(*y)).collect()
        };
        Self {
            relay: self
                .relay
                .iter()
                .zip(&before.relay)
                .map(|(a, b)| {
                    let mut d = [[0u64; 2]; 3];
                    for k in 0..3 {
                        for j in 0..2 {
                            d[k][j] = a[k][j].saturating_sub(b[k][j]);
                        }
                    }
                    d
                })
                .collect(),
            lan_control: sub(&self.lan_control, &before.lan_control),
            lan_data: sub(&self.lan_data, &before.lan_data),
            control_wan_received: sub(&self.control_wan_received, &before.control_wan_received),
            control_wan_sent: sub(&self.control_wan_sent, &before.control_wan_sent),
            control_sent_by_kind: sub_kinds(
                &self.control_sent_by_kind,
                &before.control_sent_by_kind,
            ),
            control_wan_by_kind: sub_kinds(&self.control_wan_by_kind, &before.control_wan_by_kind),
        }
    }

    fn relay_of(&self, site: usize, kind: Kind, sent: bool) -> u64 {
        self.relay[site][kind as usize][usize::from(!sent)]
    }
}

/// Result of one distribution.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Distribution {
    /// Release id.
    pub release: String,
    /// Seconds `p2pctl publish` took on the origin (chunking, patches, signing).
    pub publish_s: f64,
    /// `p2pctl publish --json`'s report.
    pub publish_report: serde_json::Value,
    /// Release size (bytes of unique chunks).
    pub bytes: u64,
    /// Bytes of chunks new in this version (not in the previous one).
    pub new_bytes: u64,
    /// Seconds from the publish to each node's completion, by node name.
    pub completion_s: Vec<(String, f64)>,
    /// Chunk bytes each node received (LAN + WAN), by node name.
    pub received: Vec<(String, u64)>,
    /// Bytes the origin site sent over the WAN (relay count, UDP payload).
    pub origin_egress: u64,
    /// Bytes each branch site received over the WAN (relay count), by site.
    pub site_wan_ingress: Vec<(String, u64)>,
    /// Bytes each branch site sent over the WAN (relay count: requests, acknowledgements,
    /// its records), by site.
    pub site_wan_egress: Vec<(String, u64)>,
    /// Each branch site's highest WAN ingress rate (relay count) averaged over any 10 s of
    /// the distribution (over all of it when shorter), bytes/s, by site.
    pub site_wan_ingress_peak_10s: Vec<(String, f64)>,
    /// Each branch site's configured WAN ingress cap (bytes/s), by site.
    pub site_wan_ingress_cap: Vec<(String, Option<f64>)>,
    /// Chunk bytes received from same-site peers, all nodes.
    pub lan_bytes: u64,
    /// The lower bound for this release size and the configured caps (seconds).
    pub lower_bound_s: f64,
    /// Every byte of every plane but chunk data that the nodes sent from the publish until
    /// the control plane was quiet after the last completion ([`CONTROL_QUIET`]): libp2p (relay counts, same-site and
    /// across the WAN), data-plane connection setup across the WAN (relay counts of QUIC
    /// long-header packets) and data-plane control messages (the nodes' counts, frames
    /// without their QUIC packets), same-site and across the WAN.
    pub control_bytes_total: u64,
    /// `control_bytes_total` over the number of nodes (the origin included).
    pub control_bytes_per_node: f64,
    /// Control bytes that entered each branch site over the WAN: libp2p and data-plane
    /// connection setup (relay counts) and data-plane control messages from peers of other
    /// sites (the nodes' counts), by site.
    pub control_wan_ingress: Vec<(String, u64)>,
    /// The same for bytes that left each branch site.
    pub control_wan_egress: Vec<(String, u64)>,
    /// Data-plane bytes that entered each branch site over the WAN, control messages and
    /// connection setup left out: chunks with their requests, QUIC headers and
    /// acknowledgements (relay counts), by site.
    pub chunk_wan_ingress: Vec<(String, u64)>,
    /// `control_bytes_total` by what carried it: `libp2p-lan`, `libp2p-wan`,
    /// `data-handshake-wan`, then each data-plane control message kind.
    pub control_by_kind: Vec<(String, u64)>,
    /// libp2p bytes between nodes of the same site, by site (the origin's first).
    pub libp2p_lan: Vec<(String, u64)>,
    /// Of the data-plane control messages, the bytes sent to peers of other sites, by kind.
    pub control_wan_by_kind: Vec<(String, u64)>,
    /// Data-plane bytes between nodes of one site that took the relay instead of the LAN
    /// (a node dialed a same-site peer at its WAN address): 0 unless something is wrong.
    pub lan_data_via_relay: u64,
    /// Chunk bytes each branch site's nodes received from peers of other sites, as the nodes
    /// count them (chunk payload only: what `chunk_wan_ingress` carries less QUIC's headers,
    /// acknowledgements and retransmissions), by site.
    pub chunk_payload_wan_ingress: Vec<(String, u64)>,
    /// Packets each site's WAN links dropped (queue full), by site (the origin's first).
    pub wan_dropped_packets: Vec<(String, u64)>,
    /// The share of this machine's CPU time that was busy from the publish to the last
    /// completion (all cores; `/proc/stat`), and the number of cores.
    pub cpu_busy: f64,
    /// Cores of this machine.
    pub cpus: usize,
}

/// Busy and total CPU time of this machine so far (`/proc/stat`, all cores, clock ticks).
fn cpu_times() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait are the fourth and fifth fields.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

impl Distribution {
    /// Most chunk bytes any branch node received.
    pub fn max_received(&self) -> u64 {
        self.received
            .iter()
            .skip(1)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0)
    }

    /// Slowest node's completion.
    pub fn all_complete_s(&self) -> f64 {
        self.completion_s
            .iter()
            .map(|(_, t)| *t)
            .fold(0.0, f64::max)
    }
}

impl Fleet {
    /// Starts the fleet of `scenario` under `dir`. `logs`: keep each node's log in its data
    /// directory.
    pub async fn start(scenario: Scenario, dir: &Path, logs: bool) -> anyhow::Result<Self> {
        let bins = Bins::locate()?;
        std::fs::create_dir_all(dir)?;
        let key = dir.join("publisher.pem");
        let out = Command::new(&bins.p2pctl)
            .args(["--json", "keygen", "--out"])
            .arg(&key)
            .output()?;
        anyhow::ensure!(out.status.success(), "p2pctl keygen failed");
        let public: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let public = public["public_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();

        // A fleet with a root: made, signed and handed out with the operators' own commands.
        let membership = if scenario.membership {
            let root_key = keygen(&bins, &dir.join("root.pem"))?;
            let ca_key = keygen(&bins, &dir.join("ca.pem"))?;
            // The operators' key: it signs fleet orders (`p2pctl rollout`, `rollback`).
            let out = Command::new(&bins.p2pctl)
                .args(["--json", "keygen", "--out"])
                .arg(dir.join("operator.pem"))
                .output()?;
            anyhow::ensure!(out.status.success(), "p2pctl keygen failed");
            let operator: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let operator = operator["public_key"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let root = dir.join("root.json");
            run_ok(Command::new(&bins.p2pctl).args([
                "root",
                "init",
                "--fleet",
                "testnet",
                "--root-key",
                &format!("root={}", root_key.display()),
                "--ca-key",
                &format!("ca={}", ca_key.display()),
                "--publisher",
                &format!("testnet={public}"),
                "--operator",
                &format!("ops={operator}"),
                "--sign",
                &root_key.display().to_string(),
                "--out",
                &root.display().to_string(),
            ]))?;
            Some((root, ca_key))
        } else {
            None
        };

        let mut site_names = vec![
            scenario
                .origin
                .site
                .clone()
                .unwrap_or_else(|| "origin".to_string()),
        ];
        let mut links = vec![SiteLink {
            up_bytes_per_s: scenario.origin.up_mbit.map(crate::scenario::mbit),
            down_bytes_per_s: None,
            latency: Duration::ZERO,
        }];
        let mut layout: Vec<(String, usize)> = vec![("origin".into(), 0)];
        for (i, s) in scenario.sites.iter().enumerate() {
            site_names.push(s.name.clone());
            links.push(SiteLink {
                up_bytes_per_s: s.up(&scenario.wan),
                down_bytes_per_s: s.down(&scenario.wan),
                latency: s.latency(&scenario.wan),
            });
            for n in 0..s.nodes {
                layout.push((format!("{}-{}", s.name, n + 1), i + 1));
            }
        }
        let mut ports = Vec::new();
        let mut addr_site = HashMap::new();
        let mut held = Vec::new();
        for (_, site) in &layout {
            let (c, d) = (reserve_udp_port(&mut held)?, reserve_udp_port(&mut held)?);
            let data_addr: SocketAddr = ([127, 0, 0, 1], d).into();
            addr_site.insert(data_addr, *site);
            addr_site.insert(([127, 0, 0, 1], c).into(), *site);
            ports.push((c, data_addr));
        }
        let wan = Wan::new(&links, addr_site);
        // Every node's control plane is reached through the relay, by peers of its own site
        // too, so that every libp2p byte is counted.
        let mut control_ports = Vec::new();
        for ((_, site), (c, _)) in layout.iter().zip(&ports) {
            let real: SocketAddr = ([127, 0, 0, 1], *c).into();
            control_ports.push(wan.open_port(real, *site, Plane::Control).await?);
        }

        let mut nodes = Vec::new();
        let mut origin_peer = String::new();
        for (i, ((name, site), (control_port, data_addr))) in layout.iter().zip(&ports).enumerate()
        {
            let data = dir.join(name);
            let mut init = Command::new(&bins.p2pd);
            init.args(["init", "--data"]).arg(&data).args([
                "--site",
                &site_names[*site],
                "--region",
                "testnet",
            ]);
            if let Some((root, _)) = &membership {
                init.arg("--root").arg(root);
            }
            let out = init.output()?;
            anyhow::ensure!(
                out.status.success(),
                "p2pd init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let wan_addr = wan.open_port(*data_addr, *site, Plane::Data).await?;
            let config = data.join("p2pd.toml");
            let mut text = std::fs::read_to_string(&config)?
                .replace("\"0.0.0.0:7401\"", &format!("\"127.0.0.1:{control_port}\""))
                .replace("\"0.0.0.0:7402\"", &format!("\"{data_addr}\""))
                .replace("mdns = true", "mdns = false")
                .replace(
                    "# advertise_wan = \"203.0.113.7:7402\"",
                    &format!("advertise_wan = \"{wan_addr}\""),
                )
                .replace(
                    "# advertise_control = \"203.0.113.7:7401\"",
                    &format!("advertise_control = \"{}\"", control_ports[i]),
                );
            if i > 0 {
                text = text.replace(
                    "bootstrap = []",
                    &format!(
                        "bootstrap = [\"/ip4/127.0.0.1/udp/{}/quic-v1/p2p/{origin_peer}\"]",
                        control_ports[0].port()
                    ),
                );
            }
            if let Some(s) = scenario.silent_after_s {
                text = text.replace("silent_after_s = 900", &format!("silent_after_s = {s}"));
            }
            if *site > 0 {
                let spec = &scenario.sites[*site - 1];
                if spec.install {
                    let target = data.join("installed");
                    text = text.replace(
                        "# target = \"/opt/patches\"",
                        &format!("target = {:?}", target.to_string_lossy()),
                    );
                }
                let extra = format!(
                    "{}\n{}",
                    spec.shaping_table().unwrap_or_default(),
                    spec.node_config
                );
                if !extra.trim().is_empty() {
                    // The scenario's tables replace the defaults of the same name.
                    text = replace_tables(&text, &extra);
                }
            }
            text.push_str(&format!(
                "\n[[trust.publishers]]\nname = \"testnet\"\nkey = \"{public}\"\n"
            ));
            std::fs::write(&config, text)?;
            if let Some((root, ca)) = &membership {
                let id = node_id(&bins, &config)?;
                let cert = data.join("node.cert");
                run_ok(Command::new(&bins.p2pctl).args([
                    "node",
                    "enroll",
                    &id,
                    "--site",
                    &site_names[*site],
                    "--region",
                    "testnet",
                    "--ca-key",
                    &ca.display().to_string(),
                    "--root",
                    &root.display().to_string(),
                    "--out",
                    &cert.display().to_string(),
                ]))?;
                run_ok(
                    Command::new(&bins.p2pd)
                        .args(["cert", "install", "--config"])
                        .arg(&config)
                        .arg(&cert),
                )?;
            }
            if i == 0 {
                let out = Command::new(&bins.p2pd)
                    .args(["id", "--config"])
                    .arg(&config)
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                origin_peer = text
                    .lines()
                    .find_map(|l| l.strip_prefix("peer id: "))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
            }
            nodes.push(NodeProc {
                name: name.clone(),
                site: *site,
                socket: data.join("control.sock"),
                data,
                data_addr: *data_addr,
                control_port: *control_port,
                child: None,
            });
        }
        let mut fleet = Self {
            scenario,
            dir: dir.to_path_buf(),
            bins,
            nodes,
            site_names,
            wan,
            key,
            logs,
            membership,
        };
        drop(held);
        for i in 0..fleet.nodes.len() {
            fleet.start_node(i)?;
        }
        for i in 0..fleet.nodes.len() {
            fleet.wait_ready(i).await?;
        }
        Ok(fleet)
    }

    /// The publisher key the origin signs with (every node trusts it).
    pub fn publisher_key(&self) -> &Path {
        &self.key
    }

    /// The operators' signing key (PEM), in a fleet with a root: it signs fleet orders.
    pub fn operator_key(&self) -> PathBuf {
        self.dir.join("operator.pem")
    }

    /// Starts node `i`'s process.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log: Stdio = if self.logs {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(node.data.join("p2pd.log"))?
                .into()
        } else {
            Stdio::null()
        };
        let child = Command::new(&self.bins.p2pd)
            .args(["run", "--config"])
            .arg(node.data.join("p2pd.toml"))
            .env(
                "RUST_LOG",
                std::env::var("TESTNET_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers on its control socket.
    pub async fn wait_ready(&self, i: usize) -> anyhow::Result<()> {
        // A hundred nodes starting at once on a small machine take a while.
        let deadline = Instant::now() + Duration::from_secs(30 + self.nodes.len() as u64);
        while Instant::now() < deadline {
            if self.status(i).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{} did not start", self.nodes[i].name)
    }

    /// Edits node `i`'s `p2pd.toml` while it is stopped: each `(from, to)` replaces the text
    /// `from`, which must be there (a setting of the default configuration, commented or
    /// not). The node is killed first if it runs; start it again with [`Fleet::start_node`].
    pub fn edit_config(&mut self, i: usize, edits: &[(&str, String)]) -> anyhow::Result<()> {
        self.kill(i);
        let path = self.nodes[i].data.join("p2pd.toml");
        let mut text = std::fs::read_to_string(&path)?;
        for (from, to) in edits {
            anyhow::ensure!(
                text.contains(from),
                "{}: no {from:?} to replace",
                path.display()
            );
            text = text.replace(from, to);
        }
        std::fs::write(&path, text)?;
        Ok(())
    }

    /// Restarts node `i` as an installer: into `<data>/installed`, running `apply` with
    /// `/bin/sh -c` for each release, with `labels` (`[node] labels`, and in a fleet with a
    /// root a certificate enrolled anew with them, where rollouts read them). Returns the
    /// target directory once the node is ready again.
    pub async fn make_installer(
        &mut self,
        i: usize,
        apply: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<PathBuf> {
        let target = self.nodes[i].data.join("installed");
        let text = std::fs::read_to_string(self.nodes[i].data.join("p2pd.toml"))?;
        let region = text
            .lines()
            .find(|l| l.starts_with("region = "))
            .ok_or_else(|| anyhow::anyhow!("node {i}: no region line"))?
            .to_owned();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
        self.edit_config(
            i,
            &[
                (
                    "# target = \"/opt/patches\"",
                    format!("target = {:?}", target.display().to_string()),
                ),
                (
                    "# apply = [\"/usr/local/sbin/apply-patch\", \"--quiet\"]",
                    format!("apply = [\"/bin/sh\", \"-c\", {apply:?}]"),
                ),
                (
                    &region,
                    format!("{region}\nlabels = {{ {} }}", labels.join(", ")),
                ),
            ],
        )?;
        if let Some((root, ca)) = self.membership.clone() {
            let config = self.nodes[i].data.join("p2pd.toml");
            let cert = self.nodes[i].data.join("node-labelled.cert");
            let _ = std::fs::remove_file(&cert);
            let mut enroll = Command::new(&self.bins.p2pctl);
            enroll
                .args(["node", "enroll", &node_id(&self.bins, &config)?, "--site"])
                .arg(&self.site_names[self.nodes[i].site])
                .args(["--region", "testnet", "--ca-key"])
                .arg(&ca)
                .arg("--root")
                .arg(&root)
                .arg("--out")
                .arg(&cert);
            for l in &labels {
                enroll
                    .arg("--label")
                    .arg(l.replace(" = ", "=").replace('"', ""));
            }
            run_ok(&mut enroll)?;
            run_ok(
                Command::new(&self.bins.p2pd)
                    .args(["cert", "install", "--config"])
                    .arg(&config)
                    .arg(&cert),
            )?;
        }
        self.start_node(i)?;
        self.wait_ready(i).await?;
        Ok(target)
    }

    /// Runs `p2pctl --json fleet RELEASE` against node `i` (every 0.5 s, at most 60 s) until
    /// `done` holds for what it prints; each time, the exit code must say whether nodes
    /// failed (scripts and alerts tell from it alone). Panics past the deadline.
    pub async fn fleet_view(
        &self,
        i: usize,
        release: &str,
        done: impl Fn(&store::fleet::FleetReport) -> bool,
    ) -> store::fleet::FleetReport {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = tokio::process::Command::new(&self.bins.p2pctl)
                .arg("--socket")
                .arg(&self.nodes[i].socket)
                .args(["--json", "fleet", release])
                .output()
                .await
                .expect("p2pctl runs");
            let r: store::fleet::FleetReport =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "p2pctl fleet: {e}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            let want = if r.states.failed > 0 {
                api::cli::ExitCode::NodesFailed.code()
            } else {
                0
            };
            assert_eq!(out.status.code(), Some(want), "{r:?}");
            if done(&r) {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the fleet view never settled: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Status of node `i`.
    pub async fn status(&self, i: usize) -> anyhow::Result<NodeStatus> {
        let none: Option<&()> = None;
        Ok(self.nodes[i]
            .client()
            .call("GET", "/v1/status", none)
            .await?)
    }

    /// `p2pctl ARGS` against node `i`'s control socket, run to its end.
    pub fn ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new(&self.bins.p2pctl)
            .arg("--socket")
            .arg(&self.nodes[i].socket)
            .args(args)
            .output()?)
    }

    /// Waits until node `i` holds release `id` complete; an error names what it holds
    /// after `timeout`.
    pub async fn wait_complete(&self, i: usize, id: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(i).await?;
            if st
                .releases
                .iter()
                .any(|r| r.id == id && r.state == FetchState::Complete)
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not complete {id}: {:?}",
                self.nodes[i].name,
                st.releases
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The data-plane peers of node `i`.
    pub async fn peers(&self, i: usize) -> anyhow::Result<Vec<api::PeerView>> {
        let none: Option<&()> = None;
        Ok(self.nodes[i]
            .client()
            .call("GET", "/v1/peers", none)
            .await?)
    }

    /// What node `i` lacks of the connections every node makes: to each running node of its
    /// site, to the origin (its bootstrap peer), and, for the origin, from every running node;
    /// and, for a branch node, its [`WAN_PEERS`] picks in other branches (as many as there
    /// are), counted, not named. Empty when it has them all.
    async fn missing_peers(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let peers = self.peers(i).await?;
        if i > 0 {
            let origin_site = &self.site_names[0];
            let branch_wan = peers
                .iter()
                .filter(|p| !p.lan && p.site != *origin_site)
                .count();
            let others = self
                .nodes
                .iter()
                .filter(|n| n.site != 0 && n.site != self.nodes[i].site && n.is_running())
                .count();
            let want = WAN_PEERS.min(others);
            if branch_wan < want {
                return Ok(vec![format!("{} of {want} WAN peers", branch_wan)]);
            }
        }
        let ids: Vec<String> = {
            let mut v = Vec::new();
            for (j, n) in self.nodes.iter().enumerate() {
                let wanted =
                    j != i && n.is_running() && (n.site == self.nodes[i].site || i == 0 || j == 0);
                if wanted {
                    v.push((j, self.status(j).await?.node_id));
                }
            }
            v.into_iter()
                .filter(|(_, id)| !peers.iter().any(|p| p.node_id == *id))
                .map(|(j, _)| self.nodes[j].name.clone())
                .collect()
        };
        Ok(ids)
    }

    /// Waits until every running node has its data-plane connections: to every node of its
    /// site and to the origin (and the origin to every node).
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() {
                    continue;
                }
                let m = self.missing_peers(i).await?;
                if !m.is_empty() {
                    missing.push((self.nodes[i].name.clone(), m));
                    break;
                }
            }
            if missing.is_empty() {
                // Every site's first aggregator holds every other site's summary: the WAN
                // overlay has formed.
                let sites = {
                    let mut names: Vec<&String> = self.site_names.iter().collect();
                    names.sort_unstable();
                    names.dedup();
                    names.len()
                };
                let mut overlay_ready = true;
                for i in 0..self.nodes.len() {
                    if !self.nodes[i].is_running() {
                        continue;
                    }
                    let st = self.status(i).await?;
                    if st.aggregator_rank == Some(0) && st.fleet_sites < sites {
                        overlay_ready = false;
                        missing.push((
                            self.nodes[i].name.clone(),
                            vec![format!("summaries of {} of {sites} sites", st.fleet_sites)],
                        ));
                        break;
                    }
                }
                if overlay_ready {
                    return self.wait_quiet(deadline).await;
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("peers did not all connect: {missing:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until no data-plane connection has been set up across the WAN for
    /// [`QUIET_BEFORE_PUBLISH`] (the overlay of aggregators forms once their first summaries
    /// name them), or `deadline`: what a release costs is then measured on a fleet at rest.
    async fn wait_quiet(&self, deadline: Instant) -> anyhow::Result<()> {
        let handshakes = || -> u64 {
            (0..self.wan.sites())
                .map(|s| self.wan.counters(s).of(Kind::DataHandshake, true))
                .sum()
        };
        let mut last = handshakes();
        let mut since = Instant::now();
        while since.elapsed() < QUIET_BEFORE_PUBLISH && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = handshakes();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        Ok(())
    }

    /// Writes release `version`'s tree (seeded) and returns its directory.
    pub fn make_payload(&self, version: u64) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(format!("payload-v{version}"));
        std::fs::create_dir_all(dir.join("bin"))?;
        let size = self.scenario.release.size_mib << 20;
        let mut rng = ChaCha20Rng::seed_from_u64(self.scenario.seed);
        // Three files: 1/2, 1/4, 1/4 of the size.
        let parts = [
            ("bin/patch-a.bin", size / 2),
            ("bin/patch-b.bin", size / 4),
            ("data.bin", size - size / 2 - size / 4),
        ];
        for (k, (name, len)) in parts.iter().enumerate() {
            let mut bytes = vec![0u8; *len as usize];
            rng.fill_bytes(&mut bytes);
            if k == 0 && version > 1 {
                // Each later version rewrites `v2_changed_mib` in the middle of the first file.
                let changed = (self.scenario.release.v2_changed_mib << 20) as usize;
                let start = (bytes.len() / 2).saturating_sub(changed / 2);
                let end = (start + changed).min(bytes.len());
                let mut vrng = ChaCha20Rng::seed_from_u64(self.scenario.seed ^ version);
                vrng.fill_bytes(&mut bytes[start..end]);
            }
            std::fs::write(dir.join(name), bytes)?;
        }
        std::fs::write(
            dir.join("README.txt"),
            format!("testnet release, version {version}\n"),
        )?;
        Ok(dir)
    }

    /// Publishes `path` as `version` on the origin; returns the release id.
    pub fn publish(&self, path: &Path, version: u64) -> anyhow::Result<String> {
        self.publish_with(path, version, &[])
    }

    /// Publishes `path` as `version` on the origin with more `p2pctl publish` arguments
    /// (`--severity critical`, `--cvss 9.8`, ...); returns the release id.
    pub fn publish_with(
        &self,
        path: &Path,
        version: u64,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        self.publish_on(
            &format!("testnet/{}", self.scenario.name),
            path,
            version,
            extra,
        )
    }

    /// Publishes `path` as `version` of `channel` on the origin, with more `p2pctl publish`
    /// arguments; returns the release id.
    pub fn publish_on(
        &self,
        channel: &str,
        path: &Path,
        version: u64,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        self.publish_as(channel, path, version, &self.key, extra)
    }

    /// Publishes `path` as `version` of `channel` on the origin signed with the key in
    /// `key` (another publisher's), with more `p2pctl publish` arguments; returns the
    /// release id.
    pub fn publish_as(
        &self,
        channel: &str,
        path: &Path,
        version: u64,
        key: &Path,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        release_of(&self.publish_report(channel, path, version, key, extra)?)
    }

    /// Publishes as [`Fleet::publish_as`] does; returns `p2pctl publish --json`'s report.
    pub fn publish_report(
        &self,
        channel: &str,
        path: &Path,
        version: u64,
        key: &Path,
        extra: &[&str],
    ) -> anyhow::Result<serde_json::Value> {
        let out = Command::new(&self.bins.p2pctl)
            .arg("--socket")
            .arg(&self.nodes[0].socket)
            .args(["--json", "publish"])
            .arg(path)
            .args([
                "--channel",
                channel,
                "--version",
                &version.to_string(),
                "--key",
            ])
            .arg(key)
            .args(extra)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "publish failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The JSON output is the stream of events; the last line holds the release.
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(serde_json::from_str(text.trim())
            .or_else(|_| serde_json::from_str(text.lines().last().unwrap_or_default()))?)
    }

    /// The relay's counters and every node's control-stream counters now.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let sites = self.wan.sites();
        let mut c = Counters {
            relay: (0..sites)
                .map(|s| {
                    let w = self.wan.counters(s);
                    Kind::ALL.map(|k| [w.of(k, true), w.of(k, false)])
                })
                .collect(),
            lan_data: (0..sites)
                .map(|s| self.wan.counters(s).lan_data.load(Ordering::Relaxed))
                .collect(),
            lan_control: (0..sites)
                .map(|s| self.wan.counters(s).lan_control.load(Ordering::Relaxed))
                .collect(),
            control_wan_received: vec![0; sites],
            control_wan_sent: vec![0; sites],
            control_sent_by_kind: Vec::new(),
            control_wan_by_kind: Vec::new(),
        };
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let Ok(st) = self.status(i).await else {
                continue;
            };
            for k in &st.control {
                c.control_wan_received[node.site] += k.wan_received;
                c.control_wan_sent[node.site] += k.wan_sent;
                add_kind(
                    &mut c.control_sent_by_kind,
                    &k.kind,
                    k.lan_sent + k.wan_sent,
                );
                add_kind(&mut c.control_wan_by_kind, &k.kind, k.wan_sent);
            }
        }
        Ok(c)
    }

    fn relay_totals(&self) -> Vec<(u64, u64)> {
        (0..self.wan.sites())
            .map(|s| {
                let c = self.wan.counters(s);
                (
                    c.sent.load(Ordering::Relaxed),
                    c.received.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Publishes `version` and waits until every running node completes it, calling
    /// `progress` with every node's state about four times a second.
    pub async fn distribute(
        &self,
        version: u64,
        progress: impl FnMut(&[Option<ReleaseProgress>]),
    ) -> anyhow::Result<Distribution> {
        let payload = self.make_payload(version)?;
        self.distribute_path(&payload, version, progress).await
    }

    /// Publishes the file or directory `payload` as `version` and waits until every running
    /// node completes it, as [`Fleet::distribute`] does.
    pub async fn distribute_path(
        &self,
        payload: &Path,
        version: u64,
        mut progress: impl FnMut(&[Option<ReleaseProgress>]),
    ) -> anyhow::Result<Distribution> {
        let before_counters = self.counters().await?;
        let before_relay = self.relay_totals();
        let mut before_lan = 0u64;
        let mut before_recv = Vec::new();
        let mut before_wan = vec![0u64; self.wan.sites()];
        for i in 0..self.nodes.len() {
            let s = self.status(i).await?;
            before_lan += s.recv_lan_bytes;
            before_wan[self.nodes[i].site] += s.recv_wan_bytes;
            before_recv.push(s.recv_lan_bytes + s.recv_wan_bytes);
        }
        let published = Instant::now();
        let report = self.publish_report(
            &format!("testnet/{}", self.scenario.name),
            payload,
            version,
            &self.key,
            &[],
        )?;
        let publish_s = published.elapsed().as_secs_f64();
        let id = release_of(&report)?;
        let cpu0 = cpu_times();
        let dropped0: Vec<u64> = (0..self.wan.sites())
            .map(|s| self.wan.counters(s).dropped.load(Ordering::Relaxed))
            .collect();
        let t0 = Instant::now();
        // (time, bytes received by each site) samples for the peak 10 s ingress rates.
        let mut samples: Vec<(Instant, Vec<u64>)> =
            vec![(t0, before_relay.iter().map(|c| c.1).collect())];
        let n = self.nodes.len();
        let mut done: Vec<Option<f64>> = vec![None; n];
        done[0] = Some(0.0);
        let deadline = t0 + Duration::from_secs(self.scenario.timeout_s);
        let mut last: Vec<Option<ReleaseProgress>> = vec![None; n];
        let mut statuses: Vec<Option<NodeStatus>> = vec![None; n];
        loop {
            for i in 1..n {
                if done[i].is_some() || !self.nodes[i].is_running() {
                    continue;
                }
                if let Ok(st) = self.status(i).await {
                    let p = st.releases.iter().find(|r| r.id == id).cloned();
                    if p.as_ref().is_some_and(|p| p.state == FetchState::Complete) {
                        done[i] = Some(t0.elapsed().as_secs_f64());
                    }
                    last[i] = p;
                    statuses[i] = Some(st);
                }
            }
            progress(&last);
            samples.push((
                Instant::now(),
                self.relay_totals().iter().map(|c| c.1).collect(),
            ));
            if (1..n).all(|i| done[i].is_some() || !self.nodes[i].is_running()) {
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<&str> = (1..n)
                    .filter(|&i| done[i].is_none())
                    .map(|i| self.nodes[i].name.as_str())
                    .collect();
                anyhow::bail!("timed out; not complete: {missing:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cpu1 = cpu_times();
        // Let the last packets drain before reading the relay counters.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_relay = self.relay_totals();
        let settle_start = Instant::now();
        let sent = |c: &Counters| -> u64 { c.control_sent_by_kind.iter().map(|(_, b)| b).sum() };
        let mut now_counters = self.counters().await?;
        let mut quiet_since = Instant::now();
        let mut last = sent(&now_counters);
        while quiet_since.elapsed() < CONTROL_QUIET && settle_start.elapsed() < CONTROL_SETTLE_MAX {
            tokio::time::sleep(Duration::from_millis(500)).await;
            now_counters = self.counters().await?;
            let n = sent(&now_counters);
            if n != last {
                last = n;
                quiet_since = Instant::now();
            }
        }
        let counted = now_counters.since(&before_counters);
        let branch = 1..self.wan.sites();
        let named = |f: &dyn Fn(usize) -> u64| -> Vec<(String, u64)> {
            branch
                .clone()
                .map(|s| (self.site_names[s].clone(), f(s)))
                .collect()
        };
        let control_in = |s: usize| {
            counted.relay_of(s, Kind::Libp2p, false)
                + counted.relay_of(s, Kind::DataHandshake, false)
                + counted.control_wan_received[s]
        };
        let control_out = |s: usize| {
            counted.relay_of(s, Kind::Libp2p, true)
                + counted.relay_of(s, Kind::DataHandshake, true)
                + counted.control_wan_sent[s]
        };
        let all_sites = 0..self.wan.sites();
        let mut control_by_kind = vec![
            ("libp2p-lan".to_string(), counted.lan_control.iter().sum()),
            (
                "libp2p-wan".to_string(),
                all_sites
                    .clone()
                    .map(|s| counted.relay_of(s, Kind::Libp2p, true))
                    .sum(),
            ),
            (
                "data-handshake-wan".to_string(),
                all_sites
                    .clone()
                    .map(|s| counted.relay_of(s, Kind::DataHandshake, true))
                    .sum(),
            ),
        ];
        control_by_kind.extend(counted.control_sent_by_kind.iter().cloned());
        let control_bytes_total: u64 = control_by_kind.iter().map(|(_, b)| b).sum();
        let mut lan = 0u64;
        let mut wan_payload = vec![0u64; self.wan.sites()];
        let mut received = Vec::new();
        let mut bytes = 0;
        let mut new_bytes = 0;
        for (i, before) in before_recv.iter().enumerate() {
            let s = self.status(i).await?;
            lan += s.recv_lan_bytes;
            wan_payload[self.nodes[i].site] += s.recv_wan_bytes;
            received.push((
                self.nodes[i].name.clone(),
                (s.recv_lan_bytes + s.recv_wan_bytes).saturating_sub(*before),
            ));
            if let Some(r) = s.releases.iter().find(|r| r.id == id) {
                bytes = bytes.max(r.bytes_total);
                if i > 0 {
                    new_bytes = new_bytes.max(r.bytes_total - r.bytes_reused);
                }
            }
        }
        Ok(Distribution {
            publish_s,
            publish_report: report,
            release: id,
            bytes,
            new_bytes,
            completion_s: (1..n)
                .filter_map(|i| done[i].map(|t| (self.nodes[i].name.clone(), t)))
                .collect(),
            received,
            origin_egress: after_relay[0].0 - before_relay[0].0,
            site_wan_ingress: (1..self.wan.sites())
                .map(|s| {
                    (
                        self.site_names[s].clone(),
                        after_relay[s].1 - before_relay[s].1,
                    )
                })
                .collect(),
            site_wan_egress: (1..self.wan.sites())
                .map(|s| {
                    (
                        self.site_names[s].clone(),
                        after_relay[s].0 - before_relay[s].0,
                    )
                })
                .collect(),
            site_wan_ingress_peak_10s: (1..self.wan.sites())
                .map(|s| {
                    let series: Vec<(Instant, u64)> =
                        samples.iter().map(|(t, c)| (*t, c[s])).collect();
                    (self.site_names[s].clone(), peak_rate(&series, PEAK_WINDOW))
                })
                .collect(),
            site_wan_ingress_cap: self
                .scenario
                .sites
                .iter()
                .map(|s| (s.name.clone(), s.ingress_cap()))
                .collect(),
            lan_bytes: lan - before_lan,
            lower_bound_s: self.scenario.lower_bound_s(new_bytes),
            control_bytes_total,
            control_bytes_per_node: control_bytes_total as f64 / n as f64,
            control_wan_ingress: named(&control_in),
            control_wan_egress: named(&control_out),
            chunk_wan_ingress: named(&|s| {
                counted
                    .relay_of(s, Kind::Data, false)
                    .saturating_sub(counted.control_wan_received[s])
            }),
            control_by_kind,
            control_wan_by_kind: counted.control_wan_by_kind.clone(),
            lan_data_via_relay: counted.lan_data.iter().sum(),
            chunk_payload_wan_ingress: (1..self.wan.sites())
                .map(|s| {
                    (
                        self.site_names[s].clone(),
                        wan_payload[s].saturating_sub(before_wan[s]),
                    )
                })
                .collect(),
            wan_dropped_packets: (0..self.wan.sites())
                .map(|s| {
                    (
                        self.site_names[s].clone(),
                        self.wan
                            .counters(s)
                            .dropped
                            .load(Ordering::Relaxed)
                            .saturating_sub(dropped0[s]),
                    )
                })
                .collect(),
            cpu_busy: {
                let (b, t) = (cpu1.0.saturating_sub(cpu0.0), cpu1.1.saturating_sub(cpu0.1));
                if t == 0 { 0.0 } else { b as f64 / t as f64 }
            },
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            libp2p_lan: (0..self.wan.sites())
                .map(|s| (self.site_names[s].clone(), counted.lan_control[s]))
                .collect(),
        })
    }

    /// Exports `release` from every running node and compares it byte for byte with the
    /// payload of `version`. Returns the number of nodes checked.
    pub async fn check_exports(&self, release: &str, version: u64) -> anyhow::Result<usize> {
        let payload = self.dir.join(format!("payload-v{version}"));
        let want = tree_digest(&payload)?;
        let mut checked = 0;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let dest = self
                .dir
                .join("exports")
                .join(format!("{}-v{version}", node.name));
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::create_dir_all(dest.parent().unwrap_or(&self.dir))?;
            let _: serde_json::Value = node
                .client()
                .call(
                    "POST",
                    &format!("/v1/releases/{release}/export"),
                    Some(&ExportRequest { dir: dest.clone() }),
                )
                .await?;
            let got = tree_digest(&dest)?;
            anyhow::ensure!(
                got == want,
                "{}: exported tree differs from what was published",
                node.name
            );
            std::fs::remove_dir_all(&dest)?;
            checked += 1;
        }
        Ok(checked)
    }

    /// Stops every node (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(c) = &node.child {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_child(c),
                    rustix::process::Signal::TERM,
                );
            }
        }
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match c.try_wait() {
                        Ok(Some(_)) => break,
                        _ if Instant::now() > deadline => {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `config` with every table that `extra` defines removed, then `extra` appended: TOML does
/// not allow a table twice. Tables are recognised by their `[name]` header lines.
fn replace_tables(config: &str, extra: &str) -> String {
    let headers: Vec<&str> = extra
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('[') && !l.starts_with("[["))
        .collect();
    let mut out = String::new();
    let mut skipping = false;
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skipping = headers.contains(&t);
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(extra);
    out.push('\n');
    out
}

/// A directory for a test's fleet: temporary, or kept (and printed) when `TESTNET_KEEP` is
/// set so that node logs can be read after a failure. Hold the guard for the test's length.
pub fn workdir() -> (Option<tempfile::TempDir>, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    if std::env::var_os("TESTNET_KEEP").is_some() {
        eprintln!("fleet files kept in {}", dir.path().display());
        return (None, dir.keep());
    }
    let path = dir.path().to_path_buf();
    (Some(dir), path)
}

/// BLAKE3 over every path, mode, symlink target and file content of a tree, in path order.
pub fn tree_digest(root: &Path) -> anyhow::Result<blake3::Hash> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path.clone());
            }
            entries.push((path, meta));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = blake3::Hasher::new();
    for (path, meta) in entries {
        let rel = path.strip_prefix(root)?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update(&(meta.permissions().mode() & 0o7777).to_le_bytes());
        if meta.is_file() {
            h.update(&std::fs::read(&path)?);
        } else if meta.file_type().is_symlink() {
            h.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
        }
    }
    Ok(h.finalize())
}

/// `out`, a p2pctl run that must have succeeded (its stderr in the panic otherwise).
pub fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rate_is_the_highest_average_over_the_window() {
        let t0 = Instant::now();
        let at = |s: f64, bytes: u64| (t0 + Duration::from_secs_f64(s), bytes);
        // 100 B/s for 10 s, then 300 B/s for 10 s.
        let series: Vec<(Instant, u64)> = (0..=20)
            .map(|s| {
                let s = f64::from(s);
                let bytes = if s <= 10.0 {
                    100.0 * s
                } else {
                    1000.0 + 300.0 * (s - 10.0)
                };
                at(s, bytes as u64)
            })
            .collect();
        let w = Duration::from_secs(10);
        assert!((peak_rate(&series, w) - 300.0).abs() < 1e-6);
        // Shorter than the window: the overall average.
        assert!((peak_rate(&series[..6], w) - 100.0).abs() < 1e-6);
        assert_eq!(peak_rate(&[], w), 0.0);
    }
}

//! `p2pctl`: operate a p2pd node and publish releases.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use node::api::*;
use node::cli::{ExitCode, human_bytes};
use node::client::{Client, ClientError};
use node::identity;
use protocol::{Manifest, PublisherKey, codec, sign_manifest};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "p2pctl",
    version,
    about = "Operate a p2pd node: publish signed releases, follow their spread, list, verify and export them",
    after_help = "Exit codes:\n  0  ok\n  1  the operation failed\n  2  bad command line\n  \
        3  p2pd is not running, or its socket may not be used\n  \
        4  refused: untrusted key, version not newer, invalid path, file changed, ...\n  \
        5  verify (or export) found missing or corrupt chunks or a bad signature\n  \
        6  fleet: nodes failed to fetch or install the release\n\n\
        Publish in three steps:\n  p2pctl keygen --out publisher.pem      # once; add the printed key to p2pd.toml [trust]\n  \
        p2pctl publish ./patch --channel security/openssl --version 3 --key publisher.pem\n  \
        p2pctl verify <release-id>"
)]
struct Cli {
    /// Control socket of the daemon (see `control.socket` in p2pd.toml).
    #[arg(
        long,
        env = "P2PCTL_SOCKET",
        default_value = "/var/lib/p2pd/control.sock",
        global = true
    )]
    socket: PathBuf,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a publisher key (PKCS#8 PEM, mode 0600) and print the line for p2pd.toml.
    Keygen {
        /// File to write; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Publish a file or directory tree as a signed release.
    Publish {
        /// File or directory to publish (the daemon must be able to read it).
        path: PathBuf,
        /// Channel, such as security/openssl.
        #[arg(long)]
        channel: String,
        /// Version: a whole number above the channel's last.
        #[arg(long)]
        version: u64,
        /// Publisher key file made by `p2pctl keygen`; it never leaves this process.
        #[arg(long)]
        key: PathBuf,
        /// critical, high, medium or low.
        #[arg(long, default_value = "medium")]
        severity: String,
        /// CVSS base score, such as 9.8.
        #[arg(long)]
        cvss: Option<String>,
        /// How long the release stays valid, such as 30d, 12h, 90d.
        #[arg(long, default_value = "30d")]
        expires: humantime::Duration,
        /// Mark the release an emergency: nodes download it at once, outside their download
        /// windows (still under their rate limits). Critical releases with a CVSS score of
        /// 9.0 or more count as emergencies on nodes whose policy says so (the default).
        #[arg(long)]
        emergency: bool,
        /// Install the release only inside this window (and the node's own install window),
        /// written "CRON for HH:MM [in ZONE]", e.g. "0 2 * * SAT for 04:00 in Europe/Berlin".
        /// Without a zone, each node reads it in its own windows zone. Repeat for several.
        #[arg(long = "install-window", value_name = "WINDOW")]
        install_windows: Vec<String>,
        /// Download the release only inside this window (and the node's own download window);
        /// same form as --install-window. Repeat for several.
        #[arg(long = "download-window", value_name = "WINDOW")]
        download_windows: Vec<String>,
    },
    /// List releases in the store, newest first.
    Releases,
    /// Show a release and its files (the id may be a unique prefix).
    Show {
        /// Release id or prefix.
        release: String,
    },
    /// Re-check a release: its signature against the trust policy and every chunk's hash.
    Verify {
        /// Release id or prefix.
        release: String,
    },
    /// Write a release's files into a new directory, byte-identical, modes kept.
    Export {
        /// Release id or prefix.
        release: String,
        /// Destination; must not exist or be empty.
        dir: PathBuf,
    },
    /// Show the node: id, site, store usage, trusted publishers.
    Node,
    /// List connected peers: id, site, region, address, bytes in and out.
    Peers,
    /// Show this node's bandwidth limits now (per class, and when each next changes) and its
    /// download and install windows (open until, or closed until).
    Schedule,
    /// Show where releases stand on this node: state, chunks, bytes from LAN and WAN, rate.
    /// With a RELEASE on a terminal, follow it with a live progress bar until it completes.
    Status {
        /// Release id or prefix; all releases if absent.
        release: Option<String>,
        /// Print once and exit, even on a terminal.
        #[arg(long)]
        once: bool,
    },
    /// Show where a release stands across the fleet: nodes by state (every node counted
    /// once), the sites furthest behind, failed nodes with their errors, the rate at which
    /// nodes come to hold it and when the rest will. This node's site is counted from its
    /// members' records, other sites from their summaries. Exits 6 when nodes failed.
    Fleet {
        /// Release id (or a unique prefix of one stored here).
        release: String,
        /// Redraw every two seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// Sites to list, furthest behind first (--json lists all).
        #[arg(long, default_value_t = 20)]
        sites: usize,
        /// List every node of this site (asked from a member of that site).
        #[arg(long)]
        site: Option<String>,
    },
    /// Compliance report from the fleet's status: per release published in the period, the
    /// share of installing nodes that installed it (or a newer version of its channel), the
    /// time to 50/90/99 % (from delay buckets: at most a quarter late), whether a critical
    /// release reached 99 % within 72 hours, and who is still missing it (this site's nodes
    /// by name, other sites by count). Nodes that never install are not held to it.
    Report {
        /// Releases published since then: a time back from now (30d) or an RFC 3339 instant.
        #[arg(long, default_value = "30d")]
        since: String,
        /// md (a Markdown table, then the missing nodes), csv (one row per release) or json.
        #[arg(long, default_value = "md")]
        format: String,
    },
    /// List this node's audit log: releases published, accepted, fetched, installed or failed,
    /// peers banned, daemon starts. `--json` prints it with the node's signed seal: keep that
    /// copy, and `p2pctl audit verify --file COPY` proves later that it was not edited.
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        /// Only entries since then: a time back from now (30d, 12h) or an RFC 3339 instant.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the hash chain entry by entry and name the first entry changed, removed or moved:
    /// the node's own log, or a copy saved with `p2pctl audit --json` (the whole log, against
    /// the node's signature on it; no daemon needed).
    Verify {
        /// A saved copy to check instead of the node's log.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// Largest audit log copy `audit verify --file` reads: a log grows by a few hundred bytes per
/// event, so this is decades of a busy node.
const AUDIT_COPY_BYTES_MAX: u64 = 1 << 30;

/// A failure with its exit code.
struct Failure {
    code: ExitCode,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::NotRunning(_) | ClientError::PermissionDenied(_) => ExitCode::NoDaemon,
            ClientError::Api { code, .. } => code.exit(),
            _ => ExitCode::Failed,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

fn fail(code: ExitCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::Ok,
        Err(f) => {
            eprintln!("p2pctl: error: {}", f.message);
            f.code
        }
    };
    std::process::exit(code.code());
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Keygen { out } => keygen(out, cli.json),
        Command::Publish {
            path,
            channel,
            version,
            key,
            severity,
            cvss,
            expires,
            emergency,
            install_windows,
            download_windows,
        } => {
            let key =
                identity::read_key(&key).map_err(|e| fail(ExitCode::Refused, e.to_string()))?;
            let path = std::fs::canonicalize(&path)
                .map_err(|e| fail(ExitCode::Refused, format!("{}: {e}", path.display())))?;
            let req = PublishRequest {
                path,
                channel: channel.clone(),
                version,
                severity,
                cvss,
                emergency,
                download_windows,
                install_windows,
                expires_in_s: expires.as_secs(),
                publisher_key: PublisherKey(key.verifying_key().to_bytes()).to_config_string(),
            };
            publish(&client, &req, &key, cli.json).await
        }
        Command::Releases => releases(&client, cli.json).await,
        Command::Show { release } => show(&client, release, cli.json).await,
        Command::Verify { release } => verify(&client, release, cli.json).await,
        Command::Export { release, dir } => export(&client, release, dir, cli.json).await,
        Command::Node => node_info(&client, cli.json).await,
        Command::Peers => peers(&client, cli.json).await,
        Command::Schedule => schedule(&client, cli.json).await,
        Command::Status { release, once } => status(&client, release, once, cli.json).await,
        Command::Audit { action, since } => audit(&client, action, since, cli.json).await,
        Command::Fleet {
            release,
            watch,
            sites,
            site,
        } => fleet(&client, &release, watch, sites, site.as_deref(), cli.json).await,
        Command::Report { since, format } => {
            let format = if cli.json { "json".to_string() } else { format };
            report(&client, &since, &format).await
        }
    }
}

/// Writes a new publisher key and prints its public half.
fn keygen(out: PathBuf, json: bool) -> Result<(), Failure> {
    let key = identity::generate().map_err(|e| fail(ExitCode::Failed, e.to_string()))?;
    identity::write_key(&out, &key).map_err(|e| fail(ExitCode::Failed, e.to_string()))?;
    let public = PublisherKey(key.verifying_key().to_bytes()).to_config_string();
    if json {
        print_json(&serde_json::json!({ "file": out, "public_key": public }));
    } else {
        println!("wrote {}", out.display());
        println!("add to p2pd.toml on every node that should trust it:\n");
        println!("[[trust.publishers]]\nname = \"release-team\"\nkey = \"{public}\"");
    }
    Ok(())
}

/// Lists the stored releases.
async fn releases(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let list: Vec<ReleaseView> = client.call("GET", "/v1/releases", none).await?;
    if json {
        print_json(&list);
    } else if list.is_empty() {
        println!("no releases");
    } else {
        println!(
            "{:<14} {:<28} {:>8} {:<9} {:>6} {:>10}  CREATED",
            "ID", "CHANNEL", "VERSION", "SEVERITY", "FILES", "SIZE"
        );
        for r in list {
            println!(
                "{:<14} {:<28} {:>8} {:<9} {:>6} {:>10}  {}",
                &r.id[..12],
                r.channel,
                r.version,
                r.severity,
                r.files,
                human_bytes(r.total_bytes),
                r.created
            );
        }
    }
    Ok(())
}

/// Shows one release: its manifest and its tree.
async fn show(client: &Client, release: String, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let d: ReleaseDetail = client
        .call("GET", &format!("/v1/releases/{release}"), none)
        .await?;
    if json {
        print_json(&d);
        return Ok(());
    }
    let r = &d.release;
    println!("release   {}", r.id);
    println!("channel   {}  version {}", r.channel, r.version);
    let cvss = r
        .cvss
        .as_deref()
        .map(|c| format!(" (CVSS {c})"))
        .unwrap_or_default();
    let emergency = if r.emergency { ", emergency" } else { "" };
    println!("severity  {}{cvss}{emergency}", r.severity);
    for w in &r.download_windows {
        println!("download  only in {w}");
    }
    for w in &r.install_windows {
        println!("install   only in {w}");
    }
    println!("created   {}  expires {}", r.created, r.expires);
    println!("signed by {}", r.signers.join(", "));
    println!(
        "content   {} files, {}, {} chunks (chunking {})",
        r.files,
        human_bytes(r.total_bytes),
        r.unique_chunks,
        d.chunking
    );
    for e in &d.entries {
        match e.kind.as_str() {
            "dir" => println!("  {:o} dir     {}/", e.mode.unwrap_or(0), e.path),
            "symlink" => println!(
                "       link    {} -> {}",
                e.path,
                e.target.as_deref().unwrap_or("")
            ),
            _ => println!(
                "  {:o} file    {} ({})",
                e.mode.unwrap_or(0),
                e.path,
                human_bytes(e.size.unwrap_or(0))
            ),
        }
    }
    Ok(())
}

/// Re-checks a release: its signature and every chunk.
async fn verify(client: &Client, release: String, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let v: VerifyView = client
        .call("POST", &format!("/v1/releases/{release}/verify"), none)
        .await?;
    let ok = v.signature_ok && v.missing.is_empty() && v.corrupt.is_empty();
    if json {
        print_json(&v);
    } else {
        match &v.signature_error {
            None => println!("signature ok"),
            Some(e) => println!("signature FAILED: {e}"),
        }
        println!(
            "{} chunks, {} re-hashed: {} missing, {} corrupt",
            v.chunks_checked,
            human_bytes(v.bytes_checked),
            v.missing.len(),
            v.corrupt.len()
        );
        for c in v.missing.iter().take(20) {
            println!("  missing {c}");
        }
        for c in v.corrupt.iter().take(20) {
            println!("  corrupt {c}");
        }
        println!("{}: {}", &v.id[..12], if ok { "OK" } else { "DAMAGED" });
    }
    if ok {
        Ok(())
    } else {
        Err(fail(
            ExitCode::Damaged,
            format!("release {} failed verification", v.id),
        ))
    }
}

/// Writes a release's tree into an empty directory.
async fn export(client: &Client, release: String, dir: PathBuf, json: bool) -> Result<(), Failure> {
    let dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map_err(|e| fail(ExitCode::Failed, e.to_string()))?
            .join(dir)
    };
    let report: node::release::ExportReport = client
        .call(
            "POST",
            &format!("/v1/releases/{release}/export"),
            Some(&ExportRequest { dir: dir.clone() }),
        )
        .await?;
    if json {
        print_json(&report);
    } else {
        println!(
            "exported {} files, {} directories, {} symlinks ({}) to {}",
            report.files,
            report.dirs,
            report.symlinks,
            human_bytes(report.bytes),
            dir.display()
        );
    }
    Ok(())
}

/// Shows this node.
async fn node_info(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let info: NodeInfo = client.call("GET", "/v1/node", none).await?;
    if json {
        print_json(&info);
    } else {
        println!("node      {}", info.node_id);
        println!("site      {}  region {}", info.site, info.region);
        println!("version   {}", info.version);
        println!("data      {}", info.data_dir.display());
        println!(
            "store     {} releases, {} chunks, {}",
            info.store.releases,
            info.store.chunks,
            human_bytes(info.store.chunk_bytes)
        );
        println!("trusts    {}", info.trusted_publishers.join(", "));
    }
    Ok(())
}

/// Lists the connected peers.
async fn peers(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let peers: Vec<PeerView> = client.call("GET", "/v1/peers", none).await?;
    if json {
        print_json(&peers);
    } else if peers.is_empty() {
        println!("no peers connected");
    } else {
        println!(
            "{:<54} {:<16} {:<10} {:<22} {:>4} {:>10} {:>10} {:>7}",
            "PEER", "SITE", "REGION", "ADDRESS", "NET", "IN", "OUT", "RTT"
        );
        for p in peers {
            println!(
                "{:<54} {:<16} {:<10} {:<22} {:>4} {:>10} {:>10} {:>5.1}ms",
                p.peer_id,
                p.site,
                p.region,
                p.address,
                if p.lan { "LAN" } else { "WAN" },
                human_bytes(p.bytes_in),
                human_bytes(p.bytes_out),
                p.rtt_ms
            );
        }
    }
    Ok(())
}

/// Shows the rate schedules and windows in force.
async fn schedule(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let v: ScheduleView = client.call("GET", "/v1/schedule", none).await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    println!("now {}", v.now);
    println!("{:<12} {:<16} NEXT CHANGE", "CLASS", "RATE");
    for c in &v.classes {
        println!(
            "{:<12} {:<16} {}",
            c.class,
            c.rate,
            c.next_change.as_deref().unwrap_or("-")
        );
    }
    for (name, w) in [("download", &v.download), ("install", &v.install)] {
        let when = match (w.windows, w.open) {
            (0, _) => "open (no window configured)".to_string(),
            (_, true) => format!(
                "open, closes {}",
                w.closes.as_deref().unwrap_or("after the next week")
            ),
            (_, false) => format!(
                "closed, opens {}",
                w.opens.as_deref().unwrap_or("never in the next four years")
            ),
        };
        println!("{name} window: {when}");
    }
    match v.emergency_critical_cvss {
        Some(c) => {
            println!("emergencies: critical releases with CVSS >= {c:.1} download any time")
        }
        None => println!("emergencies: only releases marked emergency download any time"),
    }
    Ok(())
}

async fn report(client: &Client, since: &str, format: &str) -> Result<(), Failure> {
    use node::fleet::ComplianceRow;
    if !matches!(format, "md" | "csv" | "json") {
        return Err(fail(
            ExitCode::Usage,
            format!("--format {format}: use md, csv or json"),
        ));
    }
    let since_s = parse_since(since)?.div_euclid(1000);
    let none: Option<&()> = None;
    let rows: Vec<ComplianceRow> = client
        .call("GET", &format!("/v1/report?since_unix_s={since_s}"), none)
        .await?;
    print!("{}", render_report(&rows, format));
    Ok(())
}

fn render_report(rows: &[node::fleet::ComplianceRow], format: &str) -> String {
    use std::fmt::Write;
    let dur = |s: Option<i64>| {
        s.map_or_else(
            || "-".to_string(),
            |s| {
                humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64))
                    .to_string()
            },
        )
    };
    let secs = |s: Option<i64>| s.map_or_else(String::new, |s| s.to_string());
    let mut out = String::new();
    match format {
        "json" => {
            out = serde_json::to_string_pretty(rows).unwrap_or_default();
            out.push('\n');
        }
        "csv" => {
            out.push_str("release,channel,version,severity,published,nodes,installers,activated,activated_share,to_50_s,to_90_s,to_99_s,deadline_72h,missing\n");
            for r in rows {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{:.4},{},{},{},{},{}",
                    r.release,
                    csv_field(&r.channel),
                    r.version,
                    r.severity,
                    when(r.published_unix_s.saturating_mul(1000)),
                    r.nodes,
                    r.installers,
                    r.activated,
                    r.activated_share,
                    secs(r.to_50_s),
                    secs(r.to_90_s),
                    secs(r.to_99_s),
                    r.deadline,
                    r.missing_total
                );
            }
        }
        _ => {
            out.push_str("| release | channel | version | severity | published | installed | 50 % | 90 % | 99 % | 72 h rule | missing |\n");
            out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
            for r in rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {}/{} ({:.1} %) | {} | {} | {} | {} | {} |",
                    &r.release[..12.min(r.release.len())],
                    r.channel,
                    r.version,
                    r.severity,
                    when(r.published_unix_s.saturating_mul(1000)),
                    r.activated,
                    r.installers,
                    r.activated_share * 100.0,
                    dur(r.to_50_s),
                    dur(r.to_90_s),
                    dur(r.to_99_s),
                    r.deadline,
                    r.missing_total
                );
            }
            for r in rows.iter().filter(|r| r.missing_total > 0) {
                let _ = writeln!(
                    out,
                    "\n### {} v{} ({}): {} nodes missing\n",
                    r.channel,
                    r.version,
                    &r.release[..12.min(r.release.len())],
                    r.missing_total
                );
                for m in &r.missing {
                    let _ = writeln!(out, "- {} ({}): {}", m.node, m.site, m.state);
                }
                for m in &r.missing_sites {
                    let _ = writeln!(
                        out,
                        "- {} nodes of site {} (p2pctl fleet {} --site {} names them)",
                        m.nodes,
                        m.site,
                        &r.release[..12.min(r.release.len())],
                        m.site
                    );
                }
            }
        }
    }
    out
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// How often `fleet --watch` redraws.
const FLEET_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

async fn fleet(
    client: &Client,
    release: &str,
    watch: bool,
    sites: usize,
    site: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    use node::fleet::FleetReport;
    let none: Option<&()> = None;
    let path = match site {
        Some(s) => format!("/v1/fleet/{release}?site={s}"),
        None => format!("/v1/fleet/{release}"),
    };
    loop {
        let r: FleetReport = client.call("GET", &path, none).await?;
        if json {
            print_json(&r);
        } else {
            if watch {
                // Clear the screen and go home.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", fleet_text(&r, sites));
        }
        if !watch {
            if r.states.failed > 0 {
                return Err(fail(
                    ExitCode::NodesFailed,
                    format!("{} nodes failed to fetch or install it", r.states.failed),
                ));
            }
            return Ok(());
        }
        tokio::time::sleep(FLEET_WATCH_INTERVAL).await;
    }
}

fn fleet_text(r: &node::fleet::FleetReport, sites: usize) -> String {
    use std::fmt::Write;
    let s = &r.states;
    let pct = |n: u64| {
        if r.nodes == 0 {
            0.0
        } else {
            n as f64 * 100.0 / r.nodes as f64
        }
    };
    let mut out = String::new();
    let name = if r.channel.is_empty() {
        String::new()
    } else {
        format!(" ({} v{})", r.channel, r.version)
    };
    let _ = writeln!(
        out,
        "release {}{name}: {} nodes, {} hold it ({:.1} %), {} covered by a newer version",
        &r.release[..12.min(r.release.len())],
        r.nodes,
        s.holding(),
        pct(s.holding()),
        s.superseded
    );
    // Every node once; the parts add up to the total above.
    let parts: Vec<String> = [
        ("activated", s.activated),
        ("complete", s.complete),
        ("superseded", s.superseded),
        ("downloading", s.downloading),
        ("announced", s.announced),
        ("not yet known", s.unknown),
        ("paused by its window", s.paused),
        ("failed", s.failed),
        ("refused", s.refused),
        ("not following the channel", s.not_followed),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    let _ = writeln!(out, "  {}", parts.join(" · "));
    let moving = s.moving();
    match r.eta_s {
        Some(eta) => {
            let _ = writeln!(
                out,
                "  {:.1} nodes/min over the last 5 min; the {moving} still moving in about {}",
                r.holding_per_min,
                humantime::format_duration(std::time::Duration::from_secs(eta.round() as u64))
            );
        }
        None if moving == 0 && s.paused == 0 => {
            let _ = writeln!(
                out,
                "  done: every node holds it or a newer version, or will not ({} failed, {} refused, {} not following)",
                s.failed, s.refused, s.not_followed
            );
        }
        None if moving == 0 => {}
        None => {
            let _ = writeln!(
                out,
                "  {moving} still moving; none came to hold it in the last 5 min"
            );
        }
    }
    if s.paused > 0 {
        let opens = r.window_opens_unix_s.map_or_else(
            || "not in sight".to_string(),
            |t| when(t.saturating_mul(1000)),
        );
        let _ = writeln!(
            out,
            "  {} wait for their download window (the first opens {opens}); not counted in the ETA",
            s.paused
        );
    }
    fleet_sites_text(&mut out, r, sites);
    fleet_nodes_text(&mut out, r);
    out
}

/// The sites furthest behind, at most `sites` of them.
fn fleet_sites_text(out: &mut String, r: &node::fleet::FleetReport, sites: usize) {
    use std::fmt::Write;
    let behind: Vec<_> = r
        .sites
        .iter()
        .filter(|x| x.holding + x.superseded < x.nodes || x.stale)
        .collect();
    if !behind.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>6} {:>8} {:>7} {:>9}  FROM",
            "SITE (furthest behind)", "NODES", "HOLDING", "FAILED", "PROGRESS"
        );
        for x in behind.iter().take(sites) {
            let from = match x.age_s {
                Some(age) => format!(
                    "summary {} ago{}",
                    humantime::format_duration(std::time::Duration::from_secs(age as u64)),
                    if x.stale { " (stale)" } else { "" }
                ),
                None => x.from.clone(),
            };
            let _ = writeln!(
                out,
                "{:<24} {:>6} {:>8} {:>7} {:>8.1}%  {from}",
                x.site,
                x.nodes,
                x.holding,
                x.failed,
                x.progress * 100.0
            );
        }
        if behind.len() > sites {
            let _ = writeln!(out, "… and {} more sites behind", behind.len() - sites);
        }
    }
}

/// The nodes listed one by one (`--site`), and the failed ones.
fn fleet_nodes_text(out: &mut String, r: &node::fleet::FleetReport) {
    use std::fmt::Write;
    let s = &r.states;
    if !r.nodes_detail.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<14} {:<14} {:>8}  SINCE",
            "NODE", "STATE", "CHUNKS"
        );
        for d in &r.nodes_detail {
            let since = if d.since_unix_s > 0 {
                when(d.since_unix_s.saturating_mul(1000))
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "{:<14} {:<14} {:>8}  {since}{}",
                &d.node[..12.min(d.node.len())],
                d.state,
                d.chunks_have,
                d.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if s.failed > 0 {
        let _ = writeln!(
            out,
            "\nFAILED ({}; {} listed, summaries name a few per site: --site NAME lists all)",
            s.failed,
            r.failed.len()
        );
        for f in &r.failed {
            let _ = writeln!(
                out,
                "  {}  {:<20} {}: {}",
                &f.node[..12.min(f.node.len())],
                f.site,
                when(f.since_unix_s.saturating_mul(1000)),
                f.error
            );
        }
    }
}

/// `--since`: a time back from now, or an instant; as unix milliseconds.
fn parse_since(text: &str) -> Result<i64, Failure> {
    if let Ok(d) = humantime::parse_duration(text) {
        let back = jiff::SignedDuration::try_from(d)
            .map_err(|e| fail(ExitCode::Usage, format!("--since {text}: {e}")))?;
        return jiff::Timestamp::now()
            .checked_sub(back)
            .map(|t| t.as_millisecond())
            .map_err(|e| fail(ExitCode::Usage, format!("--since {text}: {e}")));
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            fail(
                ExitCode::Usage,
                format!("--since {text}: expected a duration such as 30d or an RFC 3339 instant"),
            )
        })
}

fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| t.round(jiff::Unit::Second).unwrap_or(t).to_string(),
    )
}

async fn audit(
    client: &Client,
    action: Option<AuditAction>,
    since: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    use node::audit::{AuditLog, verify_sealed};
    let none: Option<&()> = None;
    match action {
        None => {
            let path = match &since {
                Some(s) => format!("/v1/audit?since_unix_ms={}", parse_since(s)?),
                None => "/v1/audit".to_string(),
            };
            let log: AuditLog = client.call("GET", &path, none).await?;
            if json {
                print_json(&log);
                return Ok(());
            }
            println!("{:<6} {:<21} EVENT", "SEQ", "TIME (UTC)");
            for l in &log.entries {
                println!(
                    "{:<6} {:<21} {}",
                    l.entry.seq,
                    when(l.entry.at_unix_ms),
                    l.entry.event.describe()
                );
            }
            println!(
                "{} entries in the log, last hash {}",
                log.seal.entries,
                hex::encode(log.seal.head)
            );
            Ok(())
        }
        Some(AuditAction::Verify { file: None }) => {
            let v: AuditVerifyView = client.call("GET", "/v1/audit/verify", none).await?;
            if json {
                print_json(&v);
            }
            match (v.intact, v.broken_at, v.reason) {
                (true, _, _) => {
                    if !json {
                        println!(
                            "audit log intact: {} entries, last hash {}",
                            v.entries,
                            v.head.unwrap_or_default()
                        );
                    }
                    Ok(())
                }
                (false, at, reason) => Err(fail(
                    ExitCode::Damaged,
                    format!(
                        "audit log broken at entry {}: {}",
                        at.unwrap_or_default(),
                        reason.unwrap_or_default()
                    ),
                )),
            }
        }
        Some(AuditAction::Verify { file: Some(path) }) => {
            let read = |path: &PathBuf| -> Result<AuditLog, String> {
                let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
                let len = f.metadata().map_err(|e| e.to_string())?.len();
                if len > AUDIT_COPY_BYTES_MAX {
                    return Err(format!("{len} bytes, over {AUDIT_COPY_BYTES_MAX}"));
                }
                serde_json::from_reader(std::io::BufReader::new(f)).map_err(|e| e.to_string())
            };
            let log = read(&path).map_err(|e| {
                fail(
                    ExitCode::Failed,
                    format!("{}: not an audit log copy: {e}", path.display()),
                )
            })?;
            match verify_sealed(&log) {
                Ok(i) => {
                    println!(
                        "copy intact: {} entries, last hash {}, sealed by node {} at {}",
                        i.entries,
                        hex::encode(i.head),
                        hex::encode(log.seal.node),
                        when(log.seal.at_unix_ms)
                    );
                    Ok(())
                }
                Err(b) => Err(fail(ExitCode::Damaged, format!("{}: {b}", path.display()))),
            }
        }
    }
}

fn find_progress<'a>(status: &'a NodeStatus, prefix: &str) -> Result<&'a ReleaseProgress, Failure> {
    let prefix = prefix.to_ascii_lowercase();
    let matches: Vec<&ReleaseProgress> = status
        .releases
        .iter()
        .filter(|r| r.id.starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(fail(
            ExitCode::Failed,
            format!("no release {prefix} is served or fetched by this node"),
        )),
        _ => Err(fail(
            ExitCode::Failed,
            format!("{prefix} matches several releases"),
        )),
    }
}

async fn status(
    client: &Client,
    release: Option<String>,
    once: bool,
    json: bool,
) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let st: NodeStatus = client.call("GET", "/v1/status", none).await?;
    let Some(prefix) = release else {
        if json {
            print_json(&st);
            return Ok(());
        }
        println!(
            "node {}  site {}  region {}  {} peers{}",
            &st.node_id[..12],
            st.site,
            st.region,
            st.peers,
            if st.banned.is_empty() {
                String::new()
            } else {
                format!(", {} banned", st.banned.len())
            }
        );
        println!(
            "chunk traffic: received {} LAN, {} WAN; sent {} LAN, {} WAN",
            human_bytes(st.recv_lan_bytes),
            human_bytes(st.recv_wan_bytes),
            human_bytes(st.sent_lan_bytes),
            human_bytes(st.sent_wan_bytes)
        );
        for r in &st.refused {
            println!("refused {}: {}", &r.id[..12], r.reason);
        }
        if st.releases.is_empty() {
            println!("no releases");
            return Ok(());
        }
        println!(
            "{:<14} {:<24} {:>7} {:<9} {:>13} {:>10} {:>10} {:>10} {:>11}",
            "ID", "CHANNEL", "VERSION", "STATE", "CHUNKS", "SIZE", "FROM LAN", "FROM WAN", "RATE"
        );
        for r in &st.releases {
            println!(
                "{:<14} {:<24} {:>7} {:<9} {:>13} {:>10} {:>10} {:>10} {:>9}/s",
                &r.id[..12],
                r.channel,
                r.version,
                r.state,
                format!("{}/{}", r.chunks_have, r.chunks_total),
                human_bytes(r.bytes_total),
                human_bytes(r.bytes_from_lan),
                human_bytes(r.bytes_from_wan),
                human_bytes(r.rate_bytes_per_s)
            );
            if let Some(e) = &r.error {
                println!("               error: {e}");
            }
            if let Some(t) = &r.download_opens {
                println!("               paused until the download window opens at {t}");
            }
            if let Some(i) = &r.install {
                println!("               install: {}", install_line(i));
            }
        }
        return Ok(());
    };
    let r = find_progress(&st, &prefix)?.clone();
    let live = !once && !json && std::io::stdout().is_terminal() && r.state == FetchState::Fetching;
    if !live {
        if json {
            print_json(&r);
        } else {
            print_progress(&r);
        }
        return Ok(());
    }
    let bar = ProgressBar::new(r.bytes_total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut r = r;
    loop {
        bar.set_position(r.bytes_have);
        bar.set_message(format!(
            "LAN {} WAN {}",
            human_bytes(r.bytes_from_lan),
            human_bytes(r.bytes_from_wan)
        ));
        if r.state != FetchState::Fetching {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let st: NodeStatus = client.call("GET", "/v1/status", none).await?;
        r = find_progress(&st, &r.id)?.clone();
    }
    bar.finish_and_clear();
    print_progress(&r);
    if r.state == FetchState::Failed {
        return Err(fail(ExitCode::Failed, r.error.unwrap_or_default()));
    }
    Ok(())
}

fn print_progress(r: &ReleaseProgress) {
    println!("release   {}", r.id);
    println!("channel   {}  version {}", r.channel, r.version);
    println!("state     {}", r.state);
    if let Some(e) = &r.error {
        println!("error     {e}");
    }
    println!(
        "chunks    {}/{}  ({} of {})",
        r.chunks_have,
        r.chunks_total,
        human_bytes(r.bytes_have),
        human_bytes(r.bytes_total)
    );
    println!(
        "received  {} from LAN, {} from WAN; {} already stored",
        human_bytes(r.bytes_from_lan),
        human_bytes(r.bytes_from_wan),
        human_bytes(r.bytes_reused)
    );
    if let Some(s) = r.elapsed_s {
        println!("elapsed   {s:.1} s");
    }
    if let Some(t) = &r.download_opens {
        println!("paused    until the download window opens at {t}");
    }
    if let Some(i) = &r.install {
        println!("install   {}", install_line(i));
        if let Some(dir) = &i.dir {
            println!("          {dir}");
        }
        if !i.output.is_empty() {
            println!(
                "output    (last {} lines of the apply command)",
                i.output.len()
            );
            for line in &i.output {
                println!("  | {line}");
            }
        }
    }
}

/// One line on a release's installation.
fn install_line(i: &node::api::InstallView) -> String {
    let at =
        i.at.as_deref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
    use node::api::InstallState;
    match i.state {
        InstallState::Due => "due: the install window is open; installs next".into(),
        InstallState::Pending => "after the download completes".into(),
        InstallState::Waiting => match &i.window_opens {
            Some(t) => format!("waiting for the install window (opens {t})"),
            None => "waiting for the install window (no opening in sight)".into(),
        },
        InstallState::Failed => {
            let code = i
                .exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default();
            let back = match &i.rolled_back_to {
                Some(v) => format!("; current is back on {v}"),
                None => "; no current version".into(),
            };
            format!(
                "FAILED{at}{code}: {}{back}",
                i.reason.as_deref().unwrap_or("unknown reason")
            )
        }
        InstallState::Installed => format!("installed{at}"),
        InstallState::Installing | InstallState::Superseded => i.state.to_string(),
    }
}

async fn publish(
    client: &Client,
    req: &PublishRequest,
    key: &ed25519_dalek::SigningKey,
    json: bool,
) -> Result<(), Failure> {
    let mut lines = client.call_lines("POST", "/v1/publish", req).await?;
    let bar = if !json && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} publishing [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let staged = loop {
        let Some(line) = lines.next_line().await? else {
            return Err(fail(
                ExitCode::Failed,
                "p2pd ended the publish without an answer",
            ));
        };
        let event: PublishEvent = serde_json::from_str(&line)
            .map_err(|e| fail(ExitCode::Failed, format!("bad answer from p2pd: {e}")))?;
        match event {
            PublishEvent::Scanned { total_bytes, .. } => {
                if let Some(b) = &bar {
                    b.set_length(total_bytes);
                }
            }
            PublishEvent::Progress { bytes_done, .. } => {
                if let Some(b) = &bar {
                    b.set_position(bytes_done);
                }
            }
            PublishEvent::Failed(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(fail(e.code.exit(), e.message));
            }
            staged @ PublishEvent::Staged { .. } => break staged,
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let PublishEvent::Staged {
        session,
        manifest_b64,
        release_id,
        new_bytes,
        dedup_bytes,
        ..
    } = staged
    else {
        unreachable!("the loop breaks only on Staged");
    };
    let result = sign_and_commit(client, req, key, session, &manifest_b64, &release_id).await;
    if result.is_err() {
        let none: Option<&()> = None;
        let _: Result<serde_json::Value, _> = client
            .call("DELETE", &format!("/v1/publish/{session}"), none)
            .await;
    }
    let view = result?;
    if json {
        print_json(&serde_json::json!({
            "release": view,
            "new_bytes": new_bytes,
            "dedup_bytes": dedup_bytes,
        }));
    } else {
        println!(
            "published {} version {}: {} files, {} ({} new, {} already stored)",
            view.channel,
            view.version,
            view.files,
            human_bytes(view.total_bytes),
            human_bytes(new_bytes),
            human_bytes(dedup_bytes)
        );
        println!("{}", view.id);
    }
    Ok(())
}

async fn sign_and_commit(
    client: &Client,
    req: &PublishRequest,
    key: &ed25519_dalek::SigningKey,
    session: u64,
    manifest_b64: &str,
    release_id: &str,
) -> Result<ReleaseView, Failure> {
    let bytes = B64
        .decode(manifest_b64)
        .map_err(|e| fail(ExitCode::Failed, format!("bad manifest from p2pd: {e}")))?;
    let manifest: Manifest =
        codec::decode::<_, { protocol::manifest::MANIFEST_BYTES_MAX }>(&bytes, "manifest")
            .map_err(|e| fail(ExitCode::Failed, format!("bad manifest from p2pd: {e}")))?;
    // Sign only what was asked for.
    if manifest.channel != req.channel || manifest.version != req.version {
        return Err(fail(
            ExitCode::Failed,
            "p2pd staged a manifest for another channel or version",
        ));
    }
    let envelope = sign_manifest(&manifest, key);
    if envelope.manifest_bytes != bytes || envelope.release_id().to_hex() != release_id {
        return Err(fail(
            ExitCode::Failed,
            "p2pd staged a manifest that is not in canonical form",
        ));
    }
    let body = CommitRequest {
        envelope_b64: B64.encode(envelope.encode()),
    };
    Ok(client
        .call(
            "POST",
            &format!("/v1/publish/{session}/commit"),
            Some(&body),
        )
        .await?)
}

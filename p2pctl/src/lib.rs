//! `p2pctl`: operate a p2pd node and publish releases.
//!
//! One module per command (`keys`, `publish`, `releases`, `node`, `status`, `audit`,
//! `fleet`, `report`, `root`); what they print is made apart, in `render`. The command line is
//! parsed here and each command returns a `Failure` with its exit code.
//! The crate talks to the daemon only through the control API ([`api::client`]).
//!
//! The `p2pctl` binary is built from the node package (a three-line `main` calling
//! [`main`]), so the node's integration tests and the testnet build both binaries together.

mod audit;
mod fleet;
mod holds;
mod keys;
mod node;
mod orders;
mod output;
mod publish;
mod releases;
mod render;
mod report;
mod root;
mod status;

use api::cli::ExitCode;
use api::client::{Client, ClientError};
use api::*;
use clap::{Parser, Subcommand};
use protocol::PublisherKey;
use std::path::PathBuf;
use store::identity;

#[derive(Parser)]
#[command(
    name = "p2pctl",
    version,
    about = "Operate a p2pd node: publish signed releases, follow their spread, list, verify and export them",
    after_help = "Exit codes:\n  0  ok\n  1  the operation failed\n  \
        2  bad command line: an unknown option, or a value p2pctl or the daemon cannot take\n  \
        3  p2pd is not running, or its socket may not be used\n  \
        4  refused: untrusted key, version not newer, invalid path, file changed, expired, ...\n  \
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

/// `p2pctl release …`.
#[derive(Subcommand)]
enum ReleaseAction {
    /// Remove a release from this node's store (audited) and reclaim the space of the chunks
    /// no kept release names (the store's packs are compacted, crash-safe). The node stops
    /// serving it; its version stays taken, so it is never fetched again. Installed
    /// directories under [install] target are not touched.
    Remove {
        /// Release id or a unique prefix.
        release: String,
    },
}

/// `p2pctl rollout …`: fleet orders for one release, signed with an operator key.
#[derive(Subcommand)]
enum RolloutAction {
    /// Pause a release across the fleet: no node installs it until `rollout resume`
    /// (those that installed it keep it; see `rollback` to undo those). Takes effect on
    /// every node within seconds, and on a node that was down when it returns.
    Pause {
        /// Release id or a unique prefix.
        release: String,
        /// Why, for every node's audit log and status (200 bytes at most).
        #[arg(long)]
        reason: String,
        /// An operator key file (PEM) of the fleet root.
        #[arg(long)]
        key: PathBuf,
    },
    /// Resume a paused release, or one whose rings a failure share halted, once what failed
    /// is fixed: the nodes whose install failed before now try once more, and each ring's
    /// gate is weighed again with what they report.
    Resume {
        /// Release id or a unique prefix.
        release: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// An operator key file (PEM) of the fleet root.
        #[arg(long)]
        key: PathBuf,
    },
    /// Abort a release: no node installs it any more (final; publish a fixed version).
    Abort {
        /// Release id or a unique prefix.
        release: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// An operator key file (PEM) of the fleet root.
        #[arg(long)]
        key: PathBuf,
    },
    /// List the fleet orders this node holds: pauses, resumes, aborts, rollbacks and
    /// fleet-wide holds.
    Orders,
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
        /// How long the release stays valid, such as 30d, 12h, 90min, 2w (a bare m or M is
        /// refused: minutes or months?). Nodes refuse it once it expired; publish a new
        /// version before then.
        #[arg(long, default_value = "30d", value_parser = validity)]
        expires: humantime::Duration,
        /// Mark the release an emergency: nodes download it at once, outside their download
        /// windows (still under their rate limits). Critical releases with a CVSS score of
        /// 9.0 or more count as emergencies on nodes whose policy says so (the default). An
        /// emergency is signed without waiting for patches to be made (as --no-patches).
        #[arg(long)]
        emergency: bool,
        /// Hold the release on this node until approvers sign it (`p2pctl approve`), when
        /// the fleet root asks for more signatures on its channel than this key gives: it is
        /// stored, not sent anywhere, and goes out once the threshold is met.
        #[arg(long)]
        hold_for_approval: bool,
        /// Install the release only inside this window (and the node's own install window),
        /// written "CRON for HH:MM [in ZONE]", e.g. "0 2 * * SAT for 04:00 in Europe/Berlin".
        /// Without a zone, each node reads it in its own windows zone. Repeat for several.
        #[arg(long = "install-window", value_name = "WINDOW")]
        install_windows: Vec<String>,
        /// Download the release only inside this window (and the node's own download window);
        /// same form as --install-window. Repeat for several.
        #[arg(long = "download-window", value_name = "WINDOW")]
        download_windows: Vec<String>,
        /// Install only on the nodes this selector takes, such as 'os=debian12,role!=atm'
        /// (terms joined by ',', all must hold; 'key=a|b' for one of several values; the keys
        /// site and region are the node's, any other is one of its labels). The other nodes
        /// still fetch and serve it for their site, and `p2pctl fleet` counts only targeted
        /// nodes.
        #[arg(long, value_name = "SELECTOR")]
        target: Option<String>,
        /// A release each node must have installed first, such as 'security/openssl>=3'; it
        /// must be published already, and a cycle is refused. Repeat for several.
        #[arg(long = "requires", value_name = "CHANNEL>=VERSION")]
        requires: Vec<String>,
        /// Roll out in rings, such as 'canary: labels ring=0; pilot: 5%; broad: rest': a
        /// node of a ring installs only once the ring before met the gate, as it sees the
        /// fleet; a failure share over the gate's limit halts the rings not started yet.
        #[arg(long, value_name = "RINGS")]
        rings: Option<String>,
        /// What each ring must show before the next starts (default
        /// 'installed>=95%,failed<=1%,soak=2h'; an emergency may shorten the soak).
        #[arg(long, value_name = "GATE")]
        gate: Option<String>,
        /// Read target, requires, rings and gate from a TOML file (keys of those names;
        /// requires a list); the options above override it.
        #[arg(long, value_name = "FILE")]
        rollout: Option<PathBuf>,
        /// Publish without the rings the rollout file declares: every targeted node installs
        /// at once.
        #[arg(long, conflicts_with_all = ["rings", "gate"])]
        no_rings: bool,
        /// Make no patches: every changed file moves as its chunks. By default, each file
        /// that changed since one of the channel's three newest versions this node holds
        /// also moves as a patch against it, where that is smaller (nodes that hold the
        /// older file fetch the patch and rebuild the file, verifying every chunk). A
        /// release without patches keeps the manifest format that nodes without patch
        /// support read: use this while the fleet still runs such nodes.
        #[arg(long)]
        no_patches: bool,
    },
    /// List releases in the store, newest first.
    Releases,
    /// Manage one release in the store: `release remove RELEASE`.
    Release {
        #[command(subcommand)]
        action: ReleaseAction,
    },
    /// Show a release and its files (the id may be a unique prefix).
    Show {
        /// Release id or prefix.
        release: String,
    },
    /// Re-check a release: its signature against the trust policy, every chunk's hash, and
    /// its expiry (an intact release past its expiry exits 4: nodes refuse it).
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
    /// Hold a channel (and those under it) or a release from installing on this node until
    /// a time: an exception, for a system that cannot take a patch yet. It is still fetched
    /// and served; `p2pctl status` shows it held, and the fleet view and the compliance
    /// report list it as an exception with its reason, apart from failures. The hold ends by
    /// itself at --until, or with `p2pctl unhold`. Audited.
    Hold {
        /// A channel name, or a release id (a prefix of at least 12 hex digits will do).
        target: String,
        /// Why, for the fleet view and the report (a ticket number helps; 200 bytes at most).
        #[arg(long)]
        reason: String,
        /// When it ends by itself: 14d, 2027-01-31 (midnight UTC) or an RFC 3339 instant;
        /// within a year.
        #[arg(long)]
        until: String,
        /// Hold it fleet-wide instead, on the nodes this selector takes (`role=atm`; no
        /// value: every node), signed with --key. Each node shows it held with the reason,
        /// the fleet view and the report list it as an exception.
        #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "SELECTOR", requires = "key")]
        fleet: Option<String>,
        /// An operator key file (PEM) of the fleet root, for --fleet.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Lift an install hold before its end: what it held installs inside the install window.
    Unhold {
        /// What it holds, as `p2pctl holds` lists it.
        target: String,
        /// Lift the fleet-wide holds of TARGET instead (signed with --key).
        #[arg(long, requires = "key")]
        fleet: bool,
        /// An operator key file (PEM) of the fleet root, for --fleet.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Fleet orders for a release's rollout, signed with an operator key of the fleet root
    /// and spread to every node: `rollout pause|resume|abort RELEASE`, `rollout orders`.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Roll a channel back. With --key, across the fleet: every node the --target selector
    /// takes (all without one) whose newest installed version is above --to switches
    /// `current` back to that version, runs the apply command for it (`P2PD_ROLLBACK=1`) and
    /// reports "rolled back"; the versions above it up to the newest this node knows are not
    /// installed anywhere the order takes (a newer version, the fix, is). A node that was
    /// down does it when it returns. `--lift --key` ends such an order. Without --key, on
    /// this node only: back to --to, or to the version installed before the newest.
    /// Audited.
    Rollback {
        /// The channel.
        channel: String,
        /// The version to go back to (needed with --key).
        #[arg(long)]
        to: Option<u64>,
        /// Which nodes, with --key: a selector over labels, site and region
        /// (`role=branch-server,site!=hq`); every node when absent.
        #[arg(long, requires = "key")]
        target: Option<String>,
        /// Why, for the audit log and status (200 bytes at most).
        #[arg(long, required_unless_present = "lift")]
        reason: Option<String>,
        /// An operator key file (PEM) of the fleet root: make it a fleet order.
        #[arg(long)]
        key: Option<PathBuf>,
        /// End the fleet's rollback of the channel (its versions install again).
        #[arg(long, requires = "key", conflicts_with_all = ["to", "target"])]
        lift: bool,
    },
    /// List the install holds in force on this node.
    Holds,
    /// Show the node: id, site, store usage, trusted publishers; `node forget` retires one.
    Node {
        #[command(subcommand)]
        action: Option<NodeAction>,
    },
    /// Make, sign, roll and check the fleet root (offline, no daemon): the root keys, the
    /// fleet CA, publishers, approvers and operators. `root init` makes a fleet's first.
    Root {
        #[command(subcommand)]
        action: root::RootAction,
    },
    /// List connected peers: id, site, region, address, bytes in and out. In a fleet with a
    /// root a peer's site and region are its certificate's.
    Peers {
        /// List the peers refused lately for want of a valid certificate instead, and why.
        #[arg(long)]
        refused: bool,
    },
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
    /// Approve a release held for approval (`p2pctl publish --hold-for-approval`): shows it,
    /// signs its manifest with KEY (an approver's or publisher's key of the fleet root,
    /// allowed on its channel) and adds the signature where the release is held (this node,
    /// or the connected peer that holds it). Once the root's threshold for its channel is
    /// met, the release goes out. Audited on the holding node.
    Approve {
        /// The release id (64 hex digits, as publish printed it).
        release: String,
        /// The approver's key file (PEM).
        #[arg(long)]
        key: PathBuf,
    },
    /// Show where a release stands across the fleet: nodes by state (every node counted
    /// once), the sites furthest behind, failed nodes with their errors, the rate at which
    /// nodes come to hold it and when the rest will. This node's site is counted from its
    /// members' records, other sites from their summaries. Exits 6 when nodes failed.
    Fleet {
        /// Release id, or a unique prefix of one this node knows of: stored or served here,
        /// or named in a status record or site summary it holds.
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
        /// md (a Markdown table, then the missing nodes; the default), csv (one row per
        /// release) or json (as --json).
        #[arg(long, value_parser = ["md", "csv", "json"])]
        format: Option<String>,
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
pub(crate) enum NodeAction {
    /// Retire a node of this node's site from the fleet view and the compliance report: a
    /// machine that was decommissioned, or will not come back. Only a node silent for the
    /// bound (`[node] silent_after_s`) and not connected to this node may be (not this node
    /// itself either); this node's site-mates drop it too, and the
    /// site's next summary no longer counts it. A record it makes later brings it back.
    /// Audited on this node.
    Forget {
        /// The node's id (hex, as `p2pctl fleet RELEASE --site NAME` lists it).
        node: String,
    },
    /// Issue a node's certificate with a fleet CA key (offline, no daemon): it binds the
    /// node's key (the id `p2pd init` printed) to its site, region and labels. Install it
    /// on the node with `p2pd cert install --config p2pd.toml FILE`.
    Enroll(root::Enrolment),
    /// Revoke a node: every peer drops its connections and records within seconds, and no
    /// node admits it again with a certificate it holds now (enrol it anew to bring it back).
    /// Signs the fleet's next revocation list with KEY (an operator or CA key of the root),
    /// hands it to this node, which spreads it. Audited on every node.
    Revoke {
        /// The node's id (hex).
        node: String,
        /// Why, for the audit log and `p2pctl peers --refused` (at most 128 bytes).
        #[arg(long)]
        reason: String,
        /// The signing key file (PEM): an operator or CA key of the fleet root.
        #[arg(long)]
        key: PathBuf,
    },
    /// Take a node off the fleet's revocation list (revoked by mistake, or with a key a new
    /// root dropped): its certificate admits it again. Signed with KEY like `revoke`.
    Unrevoke {
        /// The node's id (hex).
        node: String,
        /// The signing key file (PEM): an operator or CA key of the fleet root.
        #[arg(long)]
        key: PathBuf,
    },
    /// List the nodes the fleet's revocation list (as this node holds it) revokes.
    Revoked,
    /// Renew this node's certificate with a CA key: the same node, site, region and labels,
    /// valid from now for --ttl; installed in the running daemon at once (hellos show it
    /// from then on). `p2pctl node` says RENEW NOW when fewer than 14 days are left.
    Renew {
        /// The fleet CA key file (PEM): one of the root's CA keys.
        #[arg(long)]
        ca_key: PathBuf,
        /// How long the new certificate is valid (at most a year).
        #[arg(long, default_value = "90d", value_parser = validity)]
        ttl: humantime::Duration,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditAction {
    /// Check the hash chain entry by entry and name the first entry changed, removed or moved:
    /// the node's own log, or a copy saved with `p2pctl audit --json` (the whole log, against
    /// the node's signature on it; no daemon needed).
    Verify {
        /// A saved copy to check instead of the node's log.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// A failure with its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: ExitCode,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::NotRunning(_) | ClientError::PermissionDenied(_) => ExitCode::NoDaemon,
            ClientError::NotASocket(..) => ExitCode::Usage,
            ClientError::Api { code, .. } => code.exit(),
            _ => ExitCode::Failed,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

pub(crate) fn fail(code: ExitCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Runs `p2pctl` with the process's arguments and exits with its code.
pub fn main() {
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

pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    crate::outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Keygen { out } => keys::keygen(out, cli.json),
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
            hold_for_approval,
            target,
            requires,
            rings,
            gate,
            rollout,
            no_rings,
            no_patches,
        } => {
            let mut plan = match &rollout {
                Some(file) => publish::RolloutFile::read(file)?,
                None => publish::RolloutFile::default(),
            };
            plan.target = target.unwrap_or(plan.target);
            if !requires.is_empty() {
                plan.requires = requires;
            }
            plan.rings = rings.unwrap_or(plan.rings);
            plan.gate = gate.unwrap_or(plan.gate);
            if no_rings {
                plan.rings.clear();
                plan.gate.clear();
            }
            if *expires < SHORT_VALIDITY {
                eprintln!(
                    "p2pctl: note: this release expires in {expires} (at {}): nodes refuse it from then on",
                    when(
                        jiff::Timestamp::now()
                            .as_millisecond()
                            .saturating_add(expires.as_millis() as i64)
                    )
                );
            }
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
                target: plan.target,
                requires: plan.requires.join(","),
                rings: plan.rings,
                gate: plan.gate,
                no_patches,
            };
            publish::publish(&client, &req, &key, hold_for_approval, cli.json).await
        }
        Command::Approve { release, key } => {
            let key =
                identity::read_key(&key).map_err(|e| fail(ExitCode::Refused, e.to_string()))?;
            publish::approve(&client, &release, &key, cli.json).await
        }
        Command::Hold {
            target,
            reason,
            until,
            fleet: Some(selector),
            key: Some(key),
        } => {
            let until = holds::parse_until(&until)?;
            orders::fleet_hold(&client, &target, &selector, &reason, until, &key, cli.json).await
        }
        Command::Hold {
            target,
            reason,
            until,
            ..
        } => holds::hold(&client, &target, &reason, &until, cli.json).await,
        Command::Unhold {
            target,
            fleet: true,
            key: Some(key),
        } => orders::fleet_unhold(&client, &target, &key, cli.json).await,
        Command::Unhold { target, .. } => holds::unhold(&client, &target, cli.json).await,
        Command::Rollout { action } => {
            use protocol::orders::ReleaseCommand;
            let (command, release, reason, key) = match action {
                RolloutAction::Orders => return orders::show(&client, cli.json).await,
                RolloutAction::Pause {
                    release,
                    reason,
                    key,
                } => (ReleaseCommand::Pause, release, reason, key),
                RolloutAction::Resume {
                    release,
                    reason,
                    key,
                } => (ReleaseCommand::Resume, release, reason, key),
                RolloutAction::Abort {
                    release,
                    reason,
                    key,
                } => (ReleaseCommand::Abort, release, reason, key),
            };
            orders::rollout(&client, command, &release, &reason, &key, cli.json).await
        }
        Command::Rollback {
            channel,
            to,
            target,
            reason,
            key: Some(key),
            lift,
        } => {
            if lift {
                return orders::lift_rollback(&client, &channel, &key, cli.json).await;
            }
            orders::rollback_fleet(
                &client,
                &channel,
                to,
                target.as_deref(),
                reason.as_deref().unwrap_or_default(),
                &key,
                cli.json,
            )
            .await
        }
        Command::Rollback {
            channel,
            to,
            reason,
            ..
        } => {
            orders::rollback_here(
                &client,
                &channel,
                to,
                reason.as_deref().unwrap_or_default(),
                cli.json,
            )
            .await
        }
        Command::Holds => holds::holds(&client, cli.json).await,
        Command::Releases => releases::releases(&client, cli.json).await,
        Command::Release {
            action: ReleaseAction::Remove { release },
        } => releases::remove(&client, &release, cli.json).await,
        Command::Show { release } => releases::show(&client, release, cli.json).await,
        Command::Verify { release } => releases::verify(&client, release, cli.json).await,
        Command::Export { release, dir } => releases::export(&client, release, dir, cli.json).await,
        Command::Node { action: None } => node::node_info(&client, cli.json).await,
        Command::Node {
            action: Some(NodeAction::Forget { node }),
        } => node::forget(&client, &node, cli.json).await,
        Command::Node {
            action: Some(NodeAction::Enroll(e)),
        } => root::enroll(&e, cli.json),
        Command::Node {
            action: Some(NodeAction::Revoke { node, reason, key }),
        } => node::revoke(&client, &node, Some(&reason), &key, cli.json).await,
        Command::Node {
            action: Some(NodeAction::Unrevoke { node, key }),
        } => node::revoke(&client, &node, None, &key, cli.json).await,
        Command::Node {
            action: Some(NodeAction::Revoked),
        } => node::revoked(&client, cli.json).await,
        Command::Node {
            action: Some(NodeAction::Renew { ca_key, ttl }),
        } => node::renew(&client, &ca_key, ttl, cli.json).await,
        Command::Peers { refused: false } => node::peers(&client, cli.json).await,
        Command::Peers { refused: true } => node::refused_peers(&client, cli.json).await,
        Command::Root {
            action: root::RootAction::Publish { files },
        } => root::publish(&client, &files, cli.json).await,
        Command::Root { action } => root::root(action, cli.json),
        Command::Schedule => node::schedule(&client, cli.json).await,
        Command::Status { release, once } => status::status(&client, release, once, cli.json).await,
        Command::Audit { action, since } => audit::audit(&client, action, since, cli.json).await,
        Command::Fleet {
            release,
            watch,
            sites,
            site,
        } => fleet::fleet(&client, &release, watch, sites, site.as_deref(), cli.json).await,
        Command::Report { since, format } => {
            let format = match (cli.json, format) {
                (true, Some(f)) if f != "json" => {
                    return Err(fail(
                        ExitCode::Usage,
                        format!("--json and --format {f} ask for two formats; give one"),
                    ));
                }
                (true, _) => "json".to_string(),
                (false, f) => f.unwrap_or_else(|| "md".to_string()),
            };
            report::report(&client, &since, &format).await
        }
    }
}

/// A validity or lifetime (`--expires`, `--ttl`), such as 30d, 12h, 90min or 2w. A bare `m`
/// or `M` is refused: read as minutes and months by the parser, it is the likeliest slip (a
/// release meant for a month that expires in one minute).
pub(crate) fn validity(text: &str) -> Result<humantime::Duration, String> {
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_alphabetic() {
            word.push(c);
            continue;
        }
        if word == "m" || word == "M" {
            return Err(format!(
                "{text}: `{word}` may mean minutes or months; write min (90min) or days (30d)"
            ));
        }
        word.clear();
    }
    let d: humantime::Duration = text
        .parse()
        .map_err(|e| format!("{text}: {e}; write it such as 30d, 12h, 90min or 2w"))?;
    if d.as_secs() == 0 {
        return Err(format!("{text}: must be at least a second"));
    }
    Ok(d)
}

/// Below this, `p2pctl publish` says when the release will expire: nodes refuse it from
/// then on, and a short one is more likely a slip than meant.
pub(crate) const SHORT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(3600);

/// `--since`: a time back from now, or an instant; as unix milliseconds.
pub(crate) fn parse_since(text: &str) -> Result<i64, Failure> {
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

pub(crate) fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| t.round(jiff::Unit::Second).unwrap_or(t).to_string(),
    )
}

//! `p2pd`: the p2pd daemon.

mod daemon;

use anyhow::Context;
use api::cli::{ExitCode, LogFormat, init_logging};
use clap::{Parser, Subcommand};
use node::config::{Config, default_config_text};
use std::path::PathBuf;
use store::identity;

/// jemalloc, not glibc's malloc: chunk buffers are freed on other threads than the ones that
/// allocated them, and glibc keeps such memory in per-thread arenas, so an idle daemon would
/// stay at its fetch's peak RSS. jemalloc's background thread returns freed pages to the OS
/// (configured in `.cargo/config.toml`; ARCHITECTURE.md, "Dependencies worth a note").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "p2pd",
    version,
    about = "p2pd: peer-to-peer distribution daemon for signed security patches",
    long_about = "p2pd: peer-to-peer distribution daemon for signed security patches.\n\n\
        Start with `p2pd init --data DIR`, add your publisher key to the [trust] section of\n\
        DIR/p2pd.toml (or give the fleet's root: `p2pd init --data DIR --root root.json`),\n\
        then `p2pd run --config DIR/p2pd.toml`. Operate it with `p2pctl`.",
    after_help = "Exit codes: 0 ok, 1 failed, 2 bad command line.\n\
        Logging: RUST_LOG filters (e.g. RUST_LOG=debug or RUST_LOG=node=debug,info)."
)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory with a commented default config (p2pd.toml) and a node key.
    Init {
        /// Data directory to create or fill.
        #[arg(long)]
        data: PathBuf,
        /// Site (branch) of this node.
        #[arg(long, default_value = "default")]
        site: String,
        /// Region of the site.
        #[arg(long, default_value = "default")]
        region: String,
        /// The fleet's root (`p2pctl root init`), given out of band: its publishers replace
        /// the [trust] section, and later roots come from peers by rotation.
        #[arg(long, value_name = "root.json")]
        root: Option<PathBuf>,
    },
    /// Run the daemon until SIGTERM or SIGINT. SIGHUP reads the config again: [trust] and
    /// [shaping] take effect at once, a change to another section at the next start (the log
    /// and the audit log say which).
    Run {
        /// Config file written by `p2pd init`.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Install or show this node's certificate from the fleet CA (`p2pctl node enroll`).
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Print this node's node id, peer id and the bootstrap entry other nodes use to join it.
    Id {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Make the node key (node.key in the data directory) first if there is none: for
        /// a config installed by a package, before the first start (the systemd unit does
        /// this). An existing key is never replaced.
        #[arg(long)]
        create: bool,
    },
}

#[derive(Subcommand)]
enum CertAction {
    /// Check a certificate against the fleet root this node holds and for this node's key,
    /// then keep it (replacing the one before). Run it with the daemon stopped.
    Install {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The certificate file `p2pctl node enroll` wrote.
        file: PathBuf,
    },
    /// Show this node's certificate: fleet, site, region, labels, validity.
    Show {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let code = match run(cli.command) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("p2pd: error: {e:#}");
            ExitCode::Failed
        }
    };
    std::process::exit(code.code());
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init {
            data,
            site,
            region,
            root,
        } => {
            // The root is checked before anything is written.
            let root = root
                .map(|path| -> anyhow::Result<protocol::root::SignedRoot> {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let signed = protocol::root::SignedRoot::from_json(&text)
                        .with_context(|| format!("{}", path.display()))?;
                    signed
                        .verify_first()
                        .with_context(|| format!("{}", path.display()))?;
                    protocol::root::check_expiry(
                        &signed.signed,
                        jiff::Timestamp::now().as_second(),
                    )
                    .with_context(|| format!("{}", path.display()))?;
                    Ok(signed)
                })
                .transpose()?;
            std::fs::create_dir_all(&data)?;
            let data = std::fs::canonicalize(&data)?;
            let config_path = data.join("p2pd.toml");
            if config_path.exists() {
                anyhow::bail!(
                    "{} already exists; not overwriting it",
                    config_path.display()
                );
            }
            let key_path = data.join("node.key");
            let key = identity::generate()?;
            identity::write_key(&key_path, &key)?;
            std::fs::write(&config_path, default_config_text(&data, &site, &region))?;
            println!(
                "node id: {}",
                protocol::NodeId(key.verifying_key().to_bytes())
            );
            println!("config:  {}", config_path.display());
            if let Some(signed) = root {
                let config = Config::load(&config_path)?;
                let store = store::Store::open(&config.store_dir())?;
                store.take_first_root(&signed, jiff::Timestamp::now().as_second())?;
                let r = &signed.signed;
                println!(
                    "root:    fleet {} v{}: {} publisher key(s); [trust] in p2pd.toml is not used",
                    r.fleet,
                    r.version,
                    r.publishers.len()
                );
                println!(
                    "enroll:  on the CA's machine, p2pctl node enroll {} --site {site} --region {region} --ca-key CA.pem --root ROOT.json --out NODE.cert",
                    protocol::NodeId(key.verifying_key().to_bytes())
                );
                println!(
                    "then:    p2pd cert install --config {} NODE.cert; p2pd run --config {}",
                    config_path.display(),
                    config_path.display()
                );
            } else {
                println!(
                    "next:    add a publisher key to [trust], then `p2pd run --config {}`",
                    config_path.display()
                );
            }
            Ok(())
        }
        Command::Run { config: path } => {
            let config = Config::load(&path)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(daemon::run(path, config))
        }
        Command::Cert {
            action: CertAction::Install { config, file },
        } => {
            let config = Config::load(&config)?;
            let key = identity::read_key(&config.identity_path())?;
            let node = protocol::NodeId(key.verifying_key().to_bytes());
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let cert = protocol::cert::SignedCert::from_text(&text)
                .with_context(|| format!("{}", file.display()))?;
            let store = store::Store::open(&config.store_dir())?;
            store.install_cert(&cert, &node, jiff::Timestamp::now().as_second())?;
            print_cert(&cert);
            Ok(())
        }
        Command::Cert {
            action: CertAction::Show { config },
        } => {
            let config = Config::load(&config)?;
            let store = store::Store::open(&config.store_dir())?;
            match store.node_cert()? {
                Some(cert) => print_cert(&cert),
                None => println!("no certificate: enroll this node (`p2pctl node enroll`)"),
            }
            Ok(())
        }
        Command::Id { config, create } => {
            let config = Config::load(&config)?;
            let key_path = config.identity_path();
            if create && !key_path.exists() {
                std::fs::create_dir_all(&config.node.data_dir)
                    .with_context(|| format!("creating {}", config.node.data_dir.display()))?;
                identity::write_key(&key_path, &identity::generate()?)?;
                eprintln!("p2pd: made a node key: {}", key_path.display());
            }
            let key = identity::read_key(&key_path)?;
            let peer_id = net::keypair_of(&key).public().to_peer_id();
            println!(
                "node id: {}",
                protocol::NodeId(key.verifying_key().to_bytes())
            );
            println!("peer id: {peer_id}");
            let l = config
                .network
                .advertise_control
                .unwrap_or(config.network.listen);
            let ip = if l.ip().is_unspecified() {
                "<this host's address>".to_string()
            } else {
                l.ip().to_string()
            };
            println!(
                "bootstrap entry for other nodes: \"/ip4/{ip}/udp/{}/quic-v1/p2p/{peer_id}\"",
                l.port()
            );
            Ok(())
        }
    }
}

fn print_cert(cert: &protocol::cert::SignedCert) {
    let c = &cert.cert;
    println!("node:    {}", c.node);
    println!("fleet:   {}", c.fleet);
    println!("site:    {} (region {})", c.site, c.region);
    if !c.labels.is_empty() {
        let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("labels:  {}", labels.join(", "));
    }
    let at =
        |s: i64| jiff::Timestamp::from_second(s).map_or_else(|_| s.to_string(), |t| t.to_string());
    println!(
        "valid:   {} to {}",
        at(c.not_before_unix_s),
        at(c.expires_unix_s)
    );
    if cert.renewal_due(jiff::Timestamp::now().as_second()) {
        println!("renew:   due now (less than 14 days left)");
    }
}

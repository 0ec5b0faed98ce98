//! `p2pd run`: open the store, start the network (control plane, data plane, resumed
//! fetches), bind the control socket, serve until SIGTERM or SIGINT, then shut down cleanly
//! (fetches checkpoint what they verified, in-flight requests finish, staged publishes roll
//! back, the socket file is removed).

use anyhow::{Context, bail};
use net::{Net, swarm};
use node::config::Config;
use node::server::{AppState, router};
use protocol::NodeId;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use store::identity;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

/// How often staged publishes are checked for their deadline.
const REAP_INTERVAL: Duration = Duration::from_secs(10);

/// In a fleet with a root: the root and this node's certificate, whose site and region
/// replace the config's. A node with a root and no certificate does not start: no peer
/// would admit it.
fn membership(
    root: Option<protocol::root::SignedRoot>,
    store: &Store,
    node_id: &NodeId,
    config: &mut Config,
) -> anyhow::Result<Option<net::Membership>> {
    let Some(root) = root else {
        return Ok(None);
    };
    let Some(cert) = store.node_cert().context("reading the node certificate")? else {
        anyhow::bail!(
            "this node holds fleet {}'s root but no certificate: enroll it (`p2pctl node enroll {node_id} --site ... --region ... --ca-key ... --root ...`) and install the certificate (`p2pd cert install`)",
            root.signed.fleet
        );
    };
    let now = jiff::Timestamp::now().as_second();
    match cert.verify(&root.signed, node_id, now) {
        Err(e) => {
            tracing::error!(error = %e, "this node's certificate does not verify: peers will refuse it; enroll it again and install the new certificate")
        }
        Ok(()) if cert.renewal_due(now) => tracing::warn!(
            expires_unix_s = cert.cert.expires_unix_s,
            "this node's certificate ends within 14 days: renew it"
        ),
        Ok(()) => {}
    }
    let c = &cert.cert;
    if c.site != config.node.site || c.region != config.node.region {
        tracing::warn!(site = %c.site, region = %c.region, config_site = %config.node.site, "the certificate's site and region are used, not the config's");
        config.node.site = c.site.clone();
        config.node.region = c.region.clone();
    }
    let revoked = match store.revocations().context("reading the revocation list")? {
        Some(l) => l.list,
        None => protocol::revoke::Revocations::empty(&root.signed.fleet),
    };
    Ok(Some(net::Membership {
        root: root.signed,
        cert: cert.encode(),
        revoked,
    }))
}

/// Removes the control socket file when the daemon stops, however it stops.
struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the daemon until a termination signal; SIGHUP reads `config_path` again.
pub(crate) async fn run(config_path: std::path::PathBuf, mut config: Config) -> anyhow::Result<()> {
    // The control socket is bound before anything slow (the store, the network): from the
    // moment the process runs, `p2pctl` connects, and its request waits in the socket's
    // queue until the daemon is ready to answer it.
    let socket = config.control.socket.clone();
    let listener = bind_control_socket(&config).await?;
    let _socket_file = SocketFile(socket.clone());
    // As the file says, before the certificate's site and region replace the config's: what
    // SIGHUP compares the file with.
    let loaded = config.clone();
    let key_path = config.identity_path();
    let key = identity::read_key(&key_path)
        .with_context(|| "reading the node identity (run `p2pd init` first)")?;
    let node_id = NodeId(key.verifying_key().to_bytes());
    let policy = config
        .trust_policy()
        .map_err(|(setting, message)| anyhow::anyhow!("{setting}: {message}"))?;
    let store_dir = config.store_dir();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir))
        .await?
        .context("opening the store")?;
    let store = Arc::new(store);
    // A node with a fleet root trusts the publishers it names, not [trust].
    let root = store.root().context("reading the fleet root")?;
    let policy = match &root {
        Some(signed) => {
            let r = &signed.signed;
            if let Err(e) = protocol::root::check_expiry(r, jiff::Timestamp::now().as_second()) {
                tracing::warn!(error = %e, "the fleet root has expired: roll it (`p2pctl root next`) and give nodes the new one");
            }
            if !policy.publishers.is_empty() {
                tracing::warn!("this node holds a fleet root: [trust] in p2pd.toml is not used");
            }
            tracing::info!(fleet = %r.fleet, version = r.version, publishers = r.publishers.len(), "trust from the fleet root");
            r.trust_policy()
        }
        None => policy,
    };
    if policy.publishers.is_empty() {
        tracing::warn!("no trusted publishers in [trust]: every release will be refused");
    }
    let has_root = root.is_some();
    let membership = membership(root, &store, &node_id, &mut config)?;

    let state = Arc::new(AppState::new(
        store.clone(),
        net::SharedPolicy::new(policy),
        node_id.to_hex(),
        config.node.site.clone(),
        config.node.region.clone(),
        config.node.data_dir.clone(),
    ));
    let _ = state.audit_key.set(key.clone());
    state
        .fleet
        .set_silent_after(std::time::Duration::from_secs(config.node.silent_after_s));
    // Each start records the configuration it runs with (the daemon reads it only here).
    let effective = toml::to_string(&config).context("encoding the configuration")?;
    let started = store::audit::AuditEvent::Started {
        config_blake3: blake3::hash(effective.as_bytes()).to_hex().to_string(),
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let audit_store = state.store.clone();
    // A store that cannot take the entry (a full disk) still serves what it holds.
    if let Err(e) = tokio::task::spawn_blocking(move || audit_store.append_audit(started)).await? {
        tracing::error!(error = %e, "cannot record the start in the audit log");
    }
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let net = Net::new(
        &key,
        config.node.site.clone(),
        config.node.region.clone(),
        config.node.labels.clone().into_iter().collect(),
        config.network.clone(),
        config
            .shaping
            .schedules()
            .map_err(|(setting, message)| anyhow::anyhow!("{setting}: {message}"))?,
        config
            .windows
            .windows()
            .map_err(|(setting, message)| anyhow::anyhow!("{setting}: {message}"))?,
        state.policy.clone(),
        store,
        shutdown_rx.clone(),
    )?;
    if let Some(m) = membership {
        net.set_membership(m);
    }
    let _ = net.fleet.set(state.fleet.clone());
    let (peer_id, swarm_task) = swarm::spawn(net.clone(), shutdown_rx)?;
    net.start().await.context("starting the network")?;
    let _ = state.net.set(net.clone());
    let installer = node::activate::Installer::new(&config.install).map(Arc::new);
    if let Some(installer) = &installer {
        tracing::info!(target = %installer.target().display(), "installing completed releases");
        let _ = state.installer.set(installer.clone());
        tokio::spawn(node::activate::run(
            net.clone(),
            state.store.clone(),
            installer.clone(),
        ));
    }

    let metrics = serve_metrics(&config, &state).await?;
    let status_task = tokio::spawn(publish_status(
        state.clone(),
        net.clone(),
        key.clone(),
        config.node.site.clone(),
        config.install.target.is_some(),
        std::time::Duration::from_secs(config.node.silent_after_s),
    ));
    let aggregate_task = tokio::spawn(net::aggregate::run(net.clone(), state.fleet.clone()));
    let fleet_saver = tokio::spawn(save_fleet_loop(state.clone()));
    let reaper = tokio::spawn(reap_sessions_loop(state.clone()));
    let retention = (config.store.keep_versions > 0).then(|| {
        tokio::spawn(node::retention::run(
            state.clone(),
            net.clone(),
            config.store.keep_versions,
        ))
    });

    tracing::info!(node = %node_id, %peer_id, site = %config.node.site,
        region = %config.node.region, data = %net.data_addr(), socket = %socket.display(),
        "p2pd ready");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let reloader = Reloader {
        path: config_path,
        running: loaded,
        has_root,
        state: state.clone(),
        net: net.clone(),
    };
    let shutdown = async move {
        let mut reloader = reloader;
        let reason = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => reloader.reload().await,
            }
        };
        tracing::info!("{reason}: shutting down");
        let _ = stop_tx.send(reason);
    };
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the control API")?;
    let reason = stop_rx.await.unwrap_or("the control API stopped");
    reaper.abort();
    if let Some(r) = retention {
        r.abort();
    }
    fleet_saver.abort();
    status_task.abort();
    aggregate_task.abort();
    save_fleet(&state).await;
    if let Some(m) = metrics {
        m.abort();
    }
    let _ = shutdown_tx.send(true);
    net.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), swarm_task).await;
    let abort_state = state.clone();
    tokio::task::spawn_blocking(move || abort_state.sessions.abort_all()).await?;
    let stopped = store::audit::AuditEvent::Stopped {
        reason: reason.to_string(),
    };
    let audit_store = state.store.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || audit_store.append_audit(stopped)).await? {
        tracing::error!(error = %e, "cannot record the stop in the audit log");
    }
    tracing::info!(reason, "p2pd stopped");
    Ok(())
}

/// What SIGHUP does: reads the configuration file again, applies the sections that can
/// change while the daemon runs (`[trust]` where the node holds no fleet root, `[shaping]`),
/// says which changed sections wait for a restart, and records it in the audit log. A file
/// that does not load changes nothing.
struct Reloader {
    path: std::path::PathBuf,
    /// The configuration in force (its reloadable sections as last applied).
    running: Config,
    has_root: bool,
    state: Arc<AppState>,
    net: Arc<Net>,
}

impl Reloader {
    async fn reload(&mut self) {
        tracing::info!(config = %self.path.display(), "SIGHUP: reading the configuration again");
        let newer = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded: nothing changed");
                return;
            }
        };
        // Checked before anything is applied: all or nothing.
        let checked = newer
            .shaping
            .schedules()
            .and_then(|s| newer.trust_policy().map(|p| (s, p)));
        let (schedules, policy) = match checked {
            Ok(both) => both,
            Err((setting, message)) => {
                tracing::error!(%setting, %message, "configuration not reloaded: nothing changed");
                return;
            }
        };
        let changed = self.running.changed_sections(&newer);
        let mut applied = Vec::new();
        let mut restart_needed = Vec::new();
        for section in changed {
            match section {
                "trust" if self.has_root => tracing::warn!(
                    "[trust] changed, and is not used: this node holds a fleet root, which names the publishers"
                ),
                "trust" => {
                    if policy.publishers.is_empty() {
                        tracing::warn!(
                            "no trusted publishers in [trust]: every release will be refused"
                        );
                    }
                    self.state.policy.set(policy.clone());
                    // What the old policy refused is looked at again when next announced.
                    self.net.registry.forget_refusals();
                    self.running.trust = newer.trust.clone();
                    applied.push(section.to_string());
                }
                "shaping" => {
                    self.net.shapers.reschedule(schedules.clone());
                    self.running.shaping = newer.shaping.clone();
                    applied.push(section.to_string());
                }
                // Every other section takes effect at the next start.
                other => restart_needed.push(other.to_string()),
            }
        }
        if applied.is_empty() && restart_needed.is_empty() {
            tracing::info!("configuration unchanged");
            return;
        }
        if restart_needed.is_empty() {
            tracing::info!(applied = %applied.join(", "), "configuration reloaded");
        } else {
            tracing::warn!(
                applied = %applied.join(", "),
                restart_needed = %restart_needed.join(", "),
                "configuration reloaded in part: restart p2pd for the other changed sections"
            );
        }
        let effective = toml::to_string(&newer).unwrap_or_default();
        let event = store::audit::AuditEvent::Reloaded {
            config_blake3: blake3::hash(effective.as_bytes()).to_hex().to_string(),
            applied,
            restart_needed,
        };
        let store = self.state.store.clone();
        match tokio::task::spawn_blocking(move || store.append_audit(event)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot record the reload in the audit log"),
            Err(e) => tracing::error!(error = %e, "recording the reload"),
        }
    }
}

/// Binds the control API's Unix socket (removing a stale one; refusing if another daemon
/// listens there) with the configured mode.
async fn bind_control_socket(config: &Config) -> anyhow::Result<UnixListener> {
    let socket = &config.control.socket;
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            bail!(
                "{}: another p2pd is already listening here",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    let mode = config.socket_mode().map_err(anyhow::Error::msg)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", socket.display()))?;
    Ok(listener)
}

/// Serves `/metrics` (and the dashboard) on `control.metrics_listen`, if set.
async fn serve_metrics(
    config: &Config,
    state: &Arc<AppState>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = config.control.metrics_listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding control.metrics_listen {addr}"))?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    let app = node::server::metrics_router(state.clone(), config.control.dashboard);
    if config.control.dashboard {
        tracing::info!(%addr, "serving the fleet dashboard at /");
    }
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    })))
}

/// Saves the fleet table every `PERSIST_INTERVAL` and samples it for the compliance report.
async fn save_fleet_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(store::fleet::PERSIST_INTERVAL);
    loop {
        tick.tick().await;
        save_fleet(&state).await;
        let fleet = state.fleet.clone();
        let now = jiff::Timestamp::now().as_second();
        let _ = tokio::task::spawn_blocking(move || fleet.sample_all(now)).await;
    }
}

/// Drops staged publishes that were never committed, every [`REAP_INTERVAL`].
async fn reap_sessions_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    loop {
        tick.tick().await;
        let state = state.clone();
        if let Ok(n) = tokio::task::spawn_blocking(move || state.sessions.reap()).await {
            if n > 0 {
                tracing::info!(
                    count = n,
                    "dropped staged publishes that were never committed"
                );
            }
        }
    }
}

/// Writes the fleet records and summaries that changed to the store.
async fn save_fleet(state: &Arc<AppState>) {
    let changed = state.fleet.take_dirty();
    if changed.is_empty() {
        return;
    }
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.put_fleet(&changed)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot store fleet status"),
        Err(e) => tracing::warn!(error = %e, "storing fleet status"),
    }
}

/// Sends this node's status record to its site's aggregators when its cadence says so
/// ([`scheduler::control::Cadence::status_within`]: a change of state at most every 5 s,
/// progress alone every minute, a heartbeat every five minutes or a third of the site's
/// silence bound `silent_after` if shorter), and the latest one to an aggregator that takes
/// over; the node keeps its own record in the fleet table too.
async fn publish_status(
    state: Arc<AppState>,
    net: Arc<Net>,
    key: ed25519_dalek::SigningKey,
    site: String,
    installs: bool,
    silent_after: std::time::Duration,
) {
    use protocol::status::{ReleaseState, ReleaseStatus, SignedStatus, StatusBody};
    use scheduler::control::STATUS_CHECK;
    use scheduler::ledger;
    let node = NodeId(key.verifying_key().to_bytes());
    let mut tick = tokio::time::interval(STATUS_CHECK);
    let epoch = std::time::Instant::now();
    let mut since: std::collections::HashMap<protocol::ReleaseId, (ReleaseState, i64)> =
        std::collections::HashMap::new();
    let mut last: Option<Vec<ReleaseStatus>> = None;
    // When a record goes out, and which releases it carries: changes not sent yet, the
    // moving and the recently changed, then others in turn (scheduler::ledger); the
    // aggregators merge records into each node's ledger.
    let mut publisher: ledger::Publisher<protocol::ReleaseId, (ReleaseState, u32)> =
        ledger::Publisher::status_within(silent_after);
    let mut seq = 0u64;
    // The latest record, and the aggregators that have it.
    let mut record: Option<Vec<u8>> = None;
    let mut told: std::collections::HashSet<libp2p::PeerId> = std::collections::HashSet::new();
    loop {
        tick.tick().await;
        if let Some(bytes) = &record {
            send_to_aggregators(&net, bytes, &mut told);
        }
        let Some(mut releases) = node::server::status_releases(&state).await else {
            continue;
        };
        let now = jiff::Timestamp::now();
        for r in &mut releases {
            let e = since.entry(r.release).or_insert((r.state, now.as_second()));
            if e.0 != r.state {
                *e = (r.state, now.as_second());
            }
            // An installation's own time, from its record, survives a restart; the others
            // count from when this run saw the state.
            if r.since_unix_s == 0 {
                r.since_unix_s = e.1;
            }
        }
        since.retain(|id, _| releases.iter().any(|r| r.release == *id));
        let news = publisher.status_news(last.as_deref(), &releases);
        if !publisher.poll(epoch.elapsed().as_millis() as u64, news) {
            continue;
        }
        // Above every earlier number, across restarts too (the clock), and never equal.
        seq = (seq + 1).max(u64::try_from(now.as_millisecond()).unwrap_or(0));
        let picked = publisher.pick_statuses(&releases, now.as_second());
        let body = StatusBody {
            node,
            site: site.clone(),
            installs,
            seq,
            at_unix_s: now.as_second(),
            releases: picked,
        };
        let signed = SignedStatus::sign(&body, &key).encode();
        if let Err(e) = state.fleet.offer_record(&signed) {
            tracing::warn!(error = %e, "own status record not kept");
        }
        told.clear();
        send_to_aggregators(&net, &signed, &mut told);
        record = Some(signed);
        last = Some(releases);
    }
}

/// Sends `record` to each of the site's aggregators that has not had it (`told`, cleared
/// when the record changes; an aggregator that reconnected is told again).
fn send_to_aggregators(
    net: &Net,
    record: &[u8],
    told: &mut std::collections::HashSet<libp2p::PeerId>,
) {
    let aggs = net::aggregate::site_aggregators(net);
    let peers = net.peer_list();
    told.retain(|id| peers.iter().any(|p| p.id == *id));
    for p in peers.iter().filter(|p| aggs.contains(&p.node_key)) {
        if told.insert(p.id) {
            p.send_control(protocol::wire::Control::Status(record.to_vec()));
        }
    }
}

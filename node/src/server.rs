//! The daemon's control API server: axum handlers over the Unix socket, each a thin adapter
//! from JSON to [`store`], [`store::ingest`] and [`store::release`]. Blocking store
//! work runs on tokio's blocking pool so the API stays responsive during a publish.
//!
//! A publish is two requests, so the signing key never reaches the daemon: `POST
//! /v1/publish` stages the chunks and returns the manifest to sign; `POST
//! /v1/publish/{session}/commit` takes the signed envelope ([`crate::publish`] does both).

use api::*;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use protocol::{EntryKind, Manifest, ManifestError, ReleaseId, codec};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};
use store::audit::{AuditLog, AuditSeal, ListedEntry};
use store::ingest::{self, IngestError, Progress};
use store::release;
use store::{ReleaseSummary, Store, StoreError};

pub use crate::publish::{PUBLISH_SESSION_TIMEOUT, PUBLISH_SESSIONS_MAX};

/// Progress lines are sent at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Largest JSON request body; the commit body carries a manifest (up to 64 MiB) in base64.
pub const REQUEST_BYTES_MAX: usize = 96 << 20;

/// Shared daemon state.
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// Trust policy: the fleet root's publishers, or `[trust]` without a root; shared with
    /// the network, which replaces it when a newer root is taken.
    pub policy: net::SharedPolicy,
    /// Node id (hex).
    pub node_id: String,
    /// Site.
    pub site: String,
    /// Region.
    pub region: String,
    /// Data directory.
    pub data_dir: std::path::PathBuf,
    /// The network, once started (absent in tools that only serve the store).
    pub net: std::sync::OnceLock<Arc<net::Net>>,
    /// The installer, when `[install] target` is set.
    pub installer: std::sync::OnceLock<Arc<crate::activate::Installer>>,
    /// The node's identity key, which seals the audit log when it is read out (absent in
    /// tools that only serve the store).
    pub audit_key: std::sync::OnceLock<ed25519_dalek::SigningKey>,
    /// The latest status record of every node.
    pub fleet: Arc<store::fleet::Fleet>,
    /// Staged publishes waiting for their signed commit.
    pub sessions: crate::publish::Sessions,
}

impl AppState {
    /// New state.
    pub fn new(
        store: Arc<Store>,
        policy: net::SharedPolicy,
        node_id: String,
        site: String,
        region: String,
        data_dir: std::path::PathBuf,
    ) -> Self {
        let stored = store.fleet().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the stored fleet status");
            Default::default()
        });
        let fleet = Arc::new(store::fleet::Fleet::from_stored(&site, stored));
        Self {
            store,
            policy,
            node_id,
            site,
            region,
            data_dir,
            net: std::sync::OnceLock::new(),
            installer: std::sync::OnceLock::new(),
            audit_key: std::sync::OnceLock::new(),
            fleet,
            sessions: crate::publish::Sessions::default(),
        }
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/node", get(node_info))
        .route("/v1/publish", post(publish))
        .route("/v1/publish/{session}/commit", post(commit))
        .route("/v1/publish/{session}", delete(abort))
        .route("/v1/releases", get(list_releases))
        .route("/v1/releases/{id}", get(show_release))
        .route("/v1/releases/{id}/verify", post(verify_release))
        .route("/v1/releases/{id}/export", post(export_release))
        .route("/v1/releases/{id}/remove", post(remove_release))
        .route("/v1/peers", get(peers))
        .route("/v1/peers/refused", get(refused_peers))
        .route("/v1/status", get(status))
        .route("/v1/schedule", get(schedule))
        .route("/v1/audit", get(audit_log))
        .route("/v1/fleet/{release}", get(fleet_report))
        .route("/v1/report", get(compliance_report))
        .route("/v1/fleet/forget", post(forget_node))
        .route("/v1/holds", get(get_holds).post(post_hold))
        .route("/v1/holds/lift", post(lift_hold))
        .route(
            "/v1/fleet/revocations",
            get(get_revocations).post(post_revocations),
        )
        .route("/v1/fleet/orders", get(get_orders).post(post_orders))
        .route("/v1/rollback", post(rollback_here))
        .route("/v1/fleet/root", post(post_roots))
        .route("/v1/node/cert", get(get_cert).post(post_cert))
        .route("/v1/approvals/{id}", get(get_held).post(post_approval))
        .route("/v1/audit/verify", get(audit_verify))
        .layer(axum::extract::DefaultBodyLimit::max(REQUEST_BYTES_MAX))
        .with_state(state)
}

/// The router of the metrics listener (`[control] metrics_listen`): `GET /metrics`, and
/// with `dashboard` the read-only fleet dashboard at `/` ([`crate::dashboard`]).
pub fn metrics_router(state: Arc<AppState>, dashboard: bool) -> Router {
    let mut router = Router::new().route("/metrics", get(metrics));
    if dashboard {
        router = router
            .route(
                "/",
                get(|| async {
                    crate::dashboard::page(crate::dashboard::INDEX_HTML, "text/html; charset=utf-8")
                }),
            )
            .route(
                "/dashboard.css",
                get(|| async {
                    crate::dashboard::page(crate::dashboard::CSS, "text/css; charset=utf-8")
                }),
            )
            .route(
                "/dashboard.js",
                get(|| async {
                    crate::dashboard::page(crate::dashboard::JS, "text/javascript; charset=utf-8")
                }),
            )
            .route("/dashboard/data", get(dashboard_data));
    }
    router.with_state(state)
}

async fn dashboard_data(
    State(state): State<Arc<AppState>>,
) -> Result<Json<crate::dashboard::DashboardData>, ApiError> {
    let net = net_of(&state)?;
    refresh_fleet(&state).await;
    let mut releases = net.releases();
    // Newest first; a fleet rolls out a handful at a time.
    releases.sort_by(|a, b| {
        b.urgency
            .created_unix_s
            .cmp(&a.urgency.created_unix_s)
            .then_with(|| a.channel.cmp(&b.channel))
    });
    releases.truncate(crate::dashboard::RELEASES_MAX);
    let fleet = state.fleet.clone();
    let now = jiff::Timestamp::now().as_second();
    let list = releases
        .iter()
        .filter_map(|r| release_facts(&state, &r.id))
        .collect::<Vec<_>>();
    let releases: Vec<crate::dashboard::DashboardRelease> = blocking(move || {
        Ok(list
            .into_iter()
            .map(|f| crate::dashboard::DashboardRelease {
                id: f.id.to_hex(),
                report: fleet.report(&f.id, Some(&f), now),
                channel: f.channel,
                version: f.version,
                severity: f.severity,
            })
            .collect())
    })
    .await?;
    // Every release's failures, newest first: the panel is not limited to the selection.
    let mut failures: Vec<store::fleet::FailedNode> = releases
        .iter()
        .flat_map(|r| r.report.failed.iter().cloned())
        .collect();
    failures.sort_by_key(|f| std::cmp::Reverse(f.since_unix_s));
    failures.truncate(crate::dashboard::FAILURES_MAX);
    Ok(Json(crate::dashboard::DashboardData {
        node_id: state.node_id.clone(),
        site: state.site.clone(),
        releases,
        failures,
    }))
}

async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    use crate::metrics::{ReleaseSample, Snapshot};
    use net::Class;
    use net::shape::Direction;
    let net = net_of(&state)?;
    let t = &net.traffic;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let peers = net.peer_list();
    let lan = peers.iter().filter(|p| p.class == Class::Lan).count() as u64;
    let now = jiff::Timestamp::now();
    let open = |list: &[scheduler::window::Window]| {
        list.is_empty()
            || matches!(
                scheduler::window::union_state(list, now),
                scheduler::window::WindowState::Open { .. }
            )
    };
    let mut releases = progress_of(&state, net).await?;
    releases.truncate(crate::metrics::RELEASES_MAX);
    let activations = activation_counts(&state).await?;
    let wait = |c, d| net.shapers.waited_s(c, d);
    let control = control_samples(t);
    let (fleet, fleet_releases) = fleet_samples(&state, net, now.as_second()).await?;
    let snapshot = Snapshot {
        transfer: vec![
            ("lan", "received", load(&t.recv_lan)),
            ("lan", "sent", load(&t.sent_lan)),
            ("wan", "received", load(&t.recv_wan)),
            ("wan", "sent", load(&t.sent_wan)),
        ],
        chunks_verified: load(&t.chunks_verified),
        chunks_failed: load(&t.chunks_failed),
        rebuilds: (load(&t.rebuilds), load(&t.rebuilds_failed)),
        compression_saved: (load(&t.sent_saved), load(&t.recv_saved)),
        peers: vec![("lan", lan), ("wan", peers.len() as u64 - lan)],
        bans: load(&t.bans),
        banned: net.banned().len() as u64,
        shaper_wait: vec![
            ("lan", "received", wait(Class::Lan, Direction::Ingress)),
            ("lan", "sent", wait(Class::Lan, Direction::Egress)),
            ("wan", "received", wait(Class::Wan, Direction::Ingress)),
            ("wan", "sent", wait(Class::Wan, Direction::Egress)),
        ],
        windows: vec![
            ("download", open(&net.gates.windows().download)),
            ("install", open(&net.gates.windows().install)),
        ],
        releases: releases
            .into_iter()
            .map(|r| ReleaseSample {
                release: r.id,
                channel: r.channel,
                version: r.version,
                state: r.state.as_str().to_string(),
                install: r
                    .install
                    .map_or_else(|| "none".to_string(), |i| i.state.as_str().to_string()),
                size_bytes: r.bytes_total,
                stored_bytes: r.bytes_have,
            })
            .collect(),
        activations,
        control,
        fleet,
        fleet_releases,
        aggregator_rank: net.aggregator_rank().map_or(-1, |r| r as i64),
        fleet_sites: state.fleet.sites() as u64,
        clock_offset_s: net.clock_offset_ms().map(|ms| ms / 1000),
        cert_expiry_s: {
            let store = state.store.clone();
            blocking(move || Ok(store.node_cert()?))
                .await?
                .map(|c| c.cert.expires_unix_s - now.as_second())
        },
    };
    // Prometheus asks for OpenMetrics; anything else gets the classic text format.
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let text = snapshot.render();
    let (content_type, text) = if crate::metrics::wants_openmetrics(accept) {
        (crate::metrics::OPENMETRICS_CONTENT_TYPE, text)
    } else {
        (
            crate::metrics::TEXT_CONTENT_TYPE,
            crate::metrics::to_classic_text(&text),
        )
    };
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response())
}

/// Installations by outcome, for the metrics (none when the node does not install).
async fn activation_counts(state: &Arc<AppState>) -> Result<Vec<(&'static str, u64)>, ApiError> {
    if state.installer.get().is_none() {
        return Ok(Vec::new());
    }
    let store = state.store.clone();
    let records = blocking(move || Ok(store.activations()?)).await?;
    let failed = records
        .iter()
        .filter(|(_, r)| matches!(r.outcome, crate::activate::Outcome::Failed { .. }))
        .count() as u64;
    Ok(vec![
        ("installed", records.len() as u64 - failed),
        ("failed", failed),
    ])
}

/// Control-stream bytes by message kind, class and direction, for the metrics.
fn control_samples(t: &net::Traffic) -> Vec<(&'static str, &'static str, &'static str, u64)> {
    use net::Class;
    let mut control = Vec::new();
    for k in protocol::wire::ControlKind::ALL {
        for (class, cname) in [(Class::Lan, "lan"), (Class::Wan, "wan")] {
            for (sent, dname) in [(true, "sent"), (false, "received")] {
                control.push((k.name(), cname, dname, t.control.get(k, class, sent)));
            }
        }
    }
    control
}

/// Nodes by state for each release the node knows (the newest first, at most the
/// dashboard's number), for the metrics.
async fn fleet_samples(
    state: &Arc<AppState>,
    net: &Arc<net::Net>,
    now_s: i64,
) -> Result<
    (
        Vec<(String, &'static str, u64)>,
        Vec<crate::metrics::FleetReleaseSample>,
    ),
    ApiError,
> {
    refresh_fleet(state).await;
    let mut known = net.releases();
    known.sort_by_key(|r| std::cmp::Reverse(r.urgency.created_unix_s));
    known.truncate(crate::dashboard::RELEASES_MAX);
    let facts: Vec<_> = known
        .iter()
        .filter_map(|r| release_facts(state, &r.id))
        .collect();
    let fleet_model = state.fleet.clone();
    blocking(move || {
        let mut out = Vec::new();
        let mut halted: HashMap<String, u64> = HashMap::new();
        for f in &facts {
            let report = fleet_model.report(&f.id, Some(f), now_s);
            let s = report.states;
            let hex = f.id.to_hex();
            halted.insert(hex.clone(), report.halted);
            for (name, n) in [
                ("unknown", s.unknown),
                ("announced", s.announced),
                ("downloading", s.downloading),
                ("paused", s.paused),
                ("complete", s.complete),
                ("activated", s.activated),
                ("held", s.held),
                ("waiting", s.waiting),
                ("rolled_back", s.rolled_back),
                ("not_targeted", s.not_targeted),
                ("failed", s.failed),
                ("superseded", s.superseded),
                ("refused", s.refused),
                ("not_followed", s.not_followed),
                ("silent", s.silent),
            ] {
                out.push((hex.clone(), name, n));
            }
        }
        // The compliance figures the alerting rules read (the share applied of a critical
        // release against its age).
        let applied = fleet_model
            .compliance(&facts, now_s)
            .into_iter()
            .map(|row| crate::metrics::FleetReleaseSample {
                channel: row.channel,
                severity: row.severity,
                published_unix_s: row.published_unix_s,
                applied_ratio: row.activated_share,
                installers: row.installers,
                halted_nodes: halted.get(&row.release).copied().unwrap_or(0),
                release: row.release,
            })
            .collect();
        Ok((out, applied))
    })
    .await
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn detail(&self) -> ApiErrorDetail {
        ApiErrorDetail {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            error: self.detail(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::DiskFull),
            StoreError::VersionNotNewer { .. } => {
                (StatusCode::CONFLICT, ErrorCode::VersionNotNewer)
            }
            StoreError::MissingChunk(_) => (StatusCode::CONFLICT, ErrorCode::MissingChunk),
            StoreError::Corrupt(_) | StoreError::Damaged(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::StoreDamaged)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::StoreError),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> Self {
        let code = match &e {
            ManifestError::UnknownKey(_)
            | ManifestError::KeyNotAllowedForChannel { .. }
            | ManifestError::ApproversOnly { .. } => ErrorCode::UntrustedKey,
            ManifestError::BadSignature(_) | ManifestError::BelowThreshold { .. } => {
                ErrorCode::BadSignature
            }
            ManifestError::VersionNotNewer { .. } => ErrorCode::VersionNotNewer,
            ManifestError::Expired { .. } => ErrorCode::Expired,
            _ => ErrorCode::InvalidManifest,
        };
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let (status, code) = match &e {
            IngestError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::PathNotFound),
            IngestError::Unreadable { .. } => (StatusCode::FORBIDDEN, ErrorCode::PathUnreadable),
            IngestError::Changed(_) => (StatusCode::CONFLICT, ErrorCode::FileChanged),
            IngestError::UnsupportedType { .. }
            | IngestError::BadName { .. }
            | IngestError::BadSymlink { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::BadTree)
            }
            IngestError::Limit(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::Limit),
            IngestError::Store(inner) => {
                return Self::new(
                    Self::from_store_status(inner),
                    if matches!(inner, StoreError::DiskFull { .. }) {
                        ErrorCode::DiskFull
                    } else {
                        ErrorCode::StoreError
                    },
                    e.to_string(),
                );
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<crate::publish::PublishError> for ApiError {
    fn from(e: crate::publish::PublishError) -> Self {
        use crate::publish::PublishError as P;
        let message = e.to_string();
        match e {
            P::BadRequest(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::BadRequest,
                message,
            ),
            P::Manifest(e) => e.into(),
            P::Ingest(e) => e.into(),
            P::Store(e) => e.into(),
            P::Busy => Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::Busy, message),
            P::NoSession(_) => Self::new(StatusCode::NOT_FOUND, ErrorCode::NoSession, message),
            P::ManifestMismatch => {
                Self::new(StatusCode::CONFLICT, ErrorCode::ManifestMismatch, message)
            }
        }
    }
}

impl ApiError {
    fn from_store_status(e: &StoreError) -> StatusCode {
        match e {
            StoreError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        e.to_string(),
    )
}

pub use net::now_unix_s;

fn rfc3339(unix_s: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix_s.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn release_view(s: &ReleaseSummary) -> ReleaseView {
    ReleaseView {
        id: s.id.to_hex(),
        channel: s.channel.clone(),
        version: s.version,
        severity: s.severity.to_string(),
        cvss: s.cvss_tenths.map(|t| f64::from(t) / 10.0),
        emergency: s.emergency,
        download_windows: s
            .download_windows
            .iter()
            .map(scheduler::window::format_release_window)
            .collect(),
        install_windows: s
            .install_windows
            .iter()
            .map(scheduler::window::format_release_window)
            .collect(),
        created: rfc3339(s.created_unix_s),
        expires: rfc3339(s.expires_unix_s),
        expired: s.expires_unix_s <= jiff::Timestamp::now().as_second(),
        files: s.files,
        total_bytes: s.total_bytes,
        unique_chunks: s.unique_chunks,
        signers: s.signers.clone(),
        held: None,
    }
}

/// Where a release held for approval on this node stands (`None`: not held).
fn held_state(state: &AppState, id: &ReleaseId) -> Result<Option<api::ApprovalState>, ApiError> {
    let Some(envelope) = state.store.held_envelope(id)? else {
        return Ok(None);
    };
    let s = protocol::check_signatures(&envelope, &state.policy.get())?;
    Ok(Some(api::ApprovalState {
        have: s.have as u64,
        need: s.need as u64,
    }))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

async fn node_info(State(state): State<Arc<AppState>>) -> Result<Json<NodeInfo>, ApiError> {
    let store = state.store.clone();
    let (stats, root, cert, revocations) = blocking(move || {
        Ok((
            store.stats()?,
            store.root()?,
            store.node_cert()?,
            store.revocations()?,
        ))
    })
    .await?;
    let now = jiff::Timestamp::now().as_second();
    let membership = root.map(|r| api::MembershipView {
        fleet: r.signed.fleet.clone(),
        root_version: r.signed.version,
        root_expires_unix_s: r.signed.expires_unix_s,
        cert_site: cert.as_ref().map(|c| c.cert.site.clone()),
        cert_region: cert.as_ref().map(|c| c.cert.region.clone()),
        cert_labels: cert
            .as_ref()
            .map(|c| {
                c.cert
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            })
            .unwrap_or_default(),
        cert_expires_unix_s: cert.as_ref().map(|c| c.cert.expires_unix_s),
        renewal_due: cert.as_ref().is_some_and(|c| c.renewal_due(now)),
        revocations_version: revocations.as_ref().map_or(0, |l| l.list.version),
        revoked: revocations.as_ref().map_or(0, |l| l.list.entries.len()),
    });
    Ok(Json(NodeInfo {
        membership,
        node_id: state.node_id.clone(),
        site: state.site.clone(),
        region: state.region.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        data_dir: state.data_dir.clone(),
        store: stats,
        trusted_publishers: state
            .policy
            .get()
            .publishers
            .iter()
            .map(|p| p.name.clone())
            .collect(),
    }))
}

fn net_of(state: &AppState) -> Result<&Arc<net::Net>, ApiError> {
    state.net.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NetworkNotStarted,
            "the network is not running yet",
        )
    })
}

async fn peers(State(state): State<Arc<AppState>>) -> Result<Json<Vec<PeerView>>, ApiError> {
    Ok(Json(net_of(&state)?.peer_views()))
}

/// The peers refused lately for want of a valid certificate, newest last.
async fn refused_peers(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<api::RefusedPeerView>>, ApiError> {
    Ok(Json(
        net_of(&state)?
            .refused_peers()
            .into_iter()
            .map(|r| api::RefusedPeerView {
                peer_id: r.peer.to_string(),
                node_id: net::node_id_of(&r.peer)
                    .map(hex::encode)
                    .unwrap_or_default(),
                address: r.addr.to_string(),
                reason: r.reason,
                at_unix_s: r.at_unix_s,
            })
            .collect(),
    ))
}

/// `GET /v1/fleet/{release}` query.
#[derive(Debug, serde::Deserialize)]
struct FleetQuery {
    /// A site whose nodes to list one by one (its records are asked from the site).
    site: Option<String>,
}

/// Brings the other sites' summaries up to date before a fleet view (a member asks its
/// site's aggregator, at most every few seconds).
async fn refresh_fleet(state: &AppState) {
    if let Some(net) = state.net.get() {
        net::aggregate::refresh(net).await;
    }
}

/// What the store (or the network) knows of release `id`, for the fleet views.
fn release_facts(state: &AppState, id: &ReleaseId) -> Option<store::fleet::ReleaseFacts> {
    if let Some(r) = state.net.get().and_then(|n| n.release(id)) {
        return Some(store::fleet::ReleaseFacts {
            id: r.id,
            channel: r.channel.clone(),
            version: r.version,
            severity: r.urgency.severity.to_string(),
            critical: r.urgency.severity == protocol::Severity::Critical,
            published_unix_s: r.urgency.created_unix_s,
            chunks_total: r.chunks.len() as u32,
        });
    }
    let s = state.store.summary(id).ok().flatten()?;
    Some(facts_of_summary(&s))
}

fn facts_of_summary(r: &ReleaseSummary) -> store::fleet::ReleaseFacts {
    store::fleet::ReleaseFacts {
        id: r.id,
        channel: r.channel.clone(),
        version: r.version,
        severity: r.severity.to_string(),
        critical: r.severity == protocol::Severity::Critical,
        published_unix_s: r.created_unix_s,
        chunks_total: r.unique_chunks.min(u64::from(u32::MAX)) as u32,
    }
}

async fn fleet_report(
    State(state): State<Arc<AppState>>,
    UrlPath(release): UrlPath<String>,
    axum::extract::Query(q): axum::extract::Query<FleetQuery>,
) -> Result<Json<store::fleet::FleetReport>, ApiError> {
    // A full id names any release, known here or not; a prefix may match one this node
    // stores or serves, or one any record or summary it holds names.
    refresh_fleet(&state).await;
    let state2 = state.clone();
    let id = blocking(move || resolve_known(&state2, &release)).await?;
    let now = jiff::Timestamp::now().as_second();
    let asked = match q.site {
        None => None,
        Some(site) if !protocol::wire::valid_name(&site) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadSite,
                format!("{site:?} is not a site name"),
            ));
        }
        Some(site) => {
            let records = net_of(&state)?.site_records(&site).await.map_err(|e| {
                ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::SiteUnreachable, e)
            })?;
            Some((site, records))
        }
    };
    let state2 = state.clone();
    let mut report = blocking(move || {
        let facts = release_facts(&state2, &id);
        let asked = asked.as_ref().map(|(s, r)| (s.as_str(), r.as_slice()));
        Ok(state2.fleet.report_with(&id, facts.as_ref(), asked, now))
    })
    .await?;
    // What the fleet orders say of the release, as every node reads them.
    if let Some(o) = state
        .net
        .get()
        .and_then(|n| n.orders().release_order(&id).cloned())
    {
        let when = |at: i64| {
            jiff::Timestamp::from_second(at).map_or_else(|_| at.to_string(), |t| t.to_string())
        };
        report.warnings.insert(
            0,
            match o.command {
                protocol::orders::ReleaseCommand::Pause => {
                    format!(
                        "paused by an operator at {}: {}",
                        when(o.at_unix_s),
                        o.reason
                    )
                }
                protocol::orders::ReleaseCommand::Abort => format!(
                    "aborted by an operator at {}: {}; no node installs it any more",
                    when(o.at_unix_s),
                    o.reason
                ),
                protocol::orders::ReleaseCommand::Resume => {
                    format!(
                        "resumed by an operator at {}: {}",
                        when(o.at_unix_s),
                        o.reason
                    )
                }
            },
        );
    }
    Ok(Json(report))
}

/// `GET /v1/report` query.
#[derive(Debug, serde::Deserialize)]
struct ReportQuery {
    /// Releases published at or after this instant, unix seconds.
    since_unix_s: Option<i64>,
}

async fn compliance_report(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<ReportQuery>,
) -> Result<Json<Vec<store::fleet::ComplianceRow>>, ApiError> {
    let store = state.store.clone();
    let releases = blocking(move || Ok(store.releases()?)).await?;
    refresh_fleet(&state).await;
    let since = q.since_unix_s.unwrap_or(i64::MIN);
    // Every release a record or summary named in the period, whether this node stores it
    // or not (so two nodes that heard the same summaries list the same releases), with what
    // the store knows in place of what the messages say where it has the release.
    let mut facts: Vec<store::fleet::ReleaseFacts> = releases
        .iter()
        .filter(|r| r.created_unix_s >= since)
        .map(facts_of_summary)
        .collect();
    for f in state.fleet.releases_since(since) {
        if !facts.iter().any(|k| k.id == f.id) {
            facts.push(f);
        }
    }
    store::fleet::sort_for_report(&mut facts);
    let fleet = state.fleet.clone();
    let now = jiff::Timestamp::now().as_second();
    Ok(Json(
        blocking(move || Ok(fleet.compliance(&facts, now))).await?,
    ))
}

/// Retires a silent node of this site from the fleet view and the report: here, at the
/// site's other nodes (a [`protocol::wire::Control::Forget`] to each same-site peer; each
/// checks the silence itself), and in the audit log.
/// A hold's target as stored: a release id given in full or by a unique prefix of at least
/// 12 hex digits (as `p2pctl status` shows them) becomes the full id; anything else is a
/// channel name (checked when the hold is set).
async fn hold_target(state: &Arc<AppState>, target: &str) -> Result<String, ApiError> {
    let target = target.trim().to_owned();
    let hexish = target.len() >= 12 && target.bytes().all(|b| b.is_ascii_hexdigit());
    if !hexish {
        return Ok(target);
    }
    if target.len() == 64 {
        return Ok(target.to_ascii_lowercase());
    }
    let store = state.store.clone();
    let prefix = target.to_ascii_lowercase();
    let found = blocking(move || Ok(store.find_releases(&prefix)?)).await?;
    match found.as_slice() {
        [one] => Ok(one.to_hex()),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoRelease,
            format!("no release starts with {target}; give the whole id of one not here yet"),
        )),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmbiguousRelease,
            format!("{target} starts the ids of several releases; give more digits"),
        )),
    }
}

fn hold_view(h: store::holds::InstallHold) -> api::HoldView {
    api::HoldView {
        until: jiff::Timestamp::from_second(h.until_unix_s)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        target: h.target,
        reason: h.reason,
        until_unix_s: h.until_unix_s,
        at_unix_s: h.at_unix_s,
    }
}

/// The install holds in force.
async fn get_holds(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<api::HoldView>>, ApiError> {
    let store = state.store.clone();
    let holds = blocking(move || Ok(store.holds(now_unix_s())?)).await?;
    Ok(Json(holds.into_iter().map(hold_view).collect()))
}

/// Sets an install hold (audited); what it covers stays fetched and served, not installed.
async fn post_hold(
    State(state): State<Arc<AppState>>,
    Json(req): Json<api::HoldRequest>,
) -> Result<Json<api::HoldView>, ApiError> {
    let hold = store::holds::InstallHold {
        target: hold_target(&state, &req.target).await?,
        reason: req.reason.trim().to_owned(),
        until_unix_s: req.until_unix_s,
        at_unix_s: now_unix_s(),
    };
    let store = state.store.clone();
    let kept = hold.clone();
    tokio::task::spawn_blocking(move || store.set_hold(&kept))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                e.to_string(),
            )
        })?
        .map_err(|e| match e {
            store::holds::HoldError::Store(e) => ApiError::from(e),
            e => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::BadRequest,
                e.to_string(),
            ),
        })?;
    tracing::info!(target = %hold.target, until = hold.until_unix_s, reason = %hold.reason,
        "install hold set");
    Ok(Json(hold_view(hold)))
}

/// Lifts an install hold (audited): what it held installs at the next look, inside the
/// install windows.
async fn lift_hold(
    State(state): State<Arc<AppState>>,
    Json(req): Json<api::LiftHoldRequest>,
) -> Result<Json<api::HoldView>, ApiError> {
    let target = hold_target(&state, &req.target).await?;
    let store = state.store.clone();
    let (held, lifted) = {
        let target = target.clone();
        blocking(move || {
            let now = now_unix_s();
            let held = store.holds(now)?.into_iter().find(|h| h.target == target);
            Ok((held, store.lift_hold(&target)?))
        })
        .await?
    };
    let Some(held) = held.filter(|_| lifted) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::BadRequest,
            format!("no install hold on {target}"),
        ));
    };
    tracing::info!(target = %target, "install hold lifted");
    if let Some(net) = state.net.get() {
        // The activation loop looks again now.
        net.registry.completed().notify_one();
    }
    Ok(Json(hold_view(held)))
}

async fn forget_node(
    State(state): State<Arc<AppState>>,
    Json(req): Json<api::ForgetRequest>,
) -> Result<Json<api::ForgetView>, ApiError> {
    let node: protocol::NodeId = req.node.parse().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadRequest,
            format!("{}: not a node id (64 hex digits)", req.node),
        )
    })?;
    // The freshest records first: the site's aggregator may have heard from the node since.
    refresh_fleet(&state).await;
    let now = jiff::Timestamp::now().as_second();
    let reachable =
        node.to_hex() == state.node_id || state.net.get().is_some_and(|n| n.reachable(&node));
    let last = state.fleet.forget(&node, now, reachable).map_err(|e| {
        let code = match e {
            store::fleet::ForgetError::Unknown(_) => ErrorCode::NoNode,
            store::fleet::ForgetError::NotSilent { .. }
            | store::fleet::ForgetError::Reachable(_) => ErrorCode::NodeNotSilent,
        };
        ApiError::new(StatusCode::CONFLICT, code, e.to_string())
    })?;
    if let Some(net) = state.net.get() {
        net.tell_site(protocol::wire::Control::Forget {
            node,
            last_at_unix_s: last,
        });
    }
    tracing::info!(node = %node.to_hex(), last_record = last, "node retired from the fleet view");
    let store = state.store.clone();
    let event = store::audit::AuditEvent::NodeForgotten {
        node: node.to_hex(),
        last_record_unix_s: last,
    };
    blocking(move || Ok(store.append_audit(event)?)).await?;
    Ok(Json(api::ForgetView {
        node: node.to_hex(),
        last_record_unix_s: last,
    }))
}

fn trust_refused(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::TrustRefused,
        e.to_string(),
    )
}

fn no_root() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::NoRoot,
        "this node holds no fleet root: initialise it with `p2pd init --root root.json`",
    )
}

fn approve_error(e: net::approve::ApproveError) -> ApiError {
    match e {
        net::approve::ApproveError::NotHeld(_) => {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotHeld, e.to_string())
        }
        net::approve::ApproveError::Refused(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadSignature,
            e.to_string(),
        ),
        net::approve::ApproveError::Store(e) => internal(e),
    }
}

fn held_view(id: ReleaseId, held: net::approve::HeldRelease) -> api::HeldView {
    api::HeldView {
        id: id.to_hex(),
        envelope_hex: hex::encode(&held.envelope),
        approval: api::ApprovalState {
            have: held.have as u64,
            need: held.need as u64,
        },
        signers: held.signers,
        local: held.local,
        released: held.released,
    }
}

/// A release held for approval, on this node or a connected peer (`p2pctl approve` shows
/// it and signs its manifest).
async fn get_held(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<api::HeldView>, ApiError> {
    let id: ReleaseId = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadRequest,
            format!("{id}: not a release id (64 hex digits)"),
        )
    })?;
    let net = net_of(&state)?.clone();
    let held = net.held_release(id).await.map_err(approve_error)?;
    Ok(Json(held_view(id, held)))
}

/// An approver's signature for a held release: added where the release is held (here, or
/// at the connected peer that holds it); at the threshold it is released.
async fn post_approval(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<api::ApproveRequest>,
) -> Result<Json<api::HeldView>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::BadRequest, m);
    let id: ReleaseId = id
        .parse()
        .map_err(|_| bad(format!("{id}: not a release id (64 hex digits)")))?;
    let key = protocol::PublisherKey::parse_config_string(&req.key)
        .map_err(|e| bad(format!("key: {e}")))?;
    let sig: [u8; 64] = hex::decode(req.signature_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("signature: not 64 bytes of hex".into()))?;
    let signature = protocol::ManifestSignature {
        key,
        signature: protocol::envelope::SignatureBytes(sig),
    };
    let net = net_of(&state)?.clone();
    let held = net.approve(id, signature).await.map_err(approve_error)?;
    Ok(Json(held_view(id, held)))
}

/// The fleet's revocation list this node holds (version 0 and empty before the first).
async fn get_revocations(
    State(state): State<Arc<AppState>>,
) -> Result<Json<api::RevocationsView>, ApiError> {
    let store = state.store.clone();
    let (root, list) = blocking(move || Ok((store.root()?, store.revocations()?))).await?;
    let root = root.ok_or_else(no_root)?;
    Ok(Json(match list {
        Some(l) => api::RevocationsView {
            fleet: l.list.fleet.clone(),
            root_version: root.signed.version,
            list_root_version: l.list.root_version,
            version: l.list.version,
            signer: Some(l.signer.to_hex()),
            entries: l
                .list
                .entries
                .iter()
                .map(|e| api::RevokedView {
                    node: e.node.to_hex(),
                    at_unix_s: e.at_unix_s,
                    reason: e.reason.clone(),
                })
                .collect(),
            list_hex: Some(hex::encode(l.encode())),
        },
        None => api::RevocationsView {
            root_version: root.signed.version,
            list_root_version: 0,
            fleet: root.signed.fleet,
            version: 0,
            signer: None,
            entries: Vec::new(),
            list_hex: None,
        },
    }))
}

/// Takes a newer signed revocation list (`p2pctl node revoke`): verified under the root,
/// stored and audited; connected peers it revokes are dropped at once, and it spreads to
/// the fleet ([`net::trust`]).
async fn post_revocations(
    State(state): State<Arc<AppState>>,
    Json(req): Json<api::RevocationsRequest>,
) -> Result<Json<api::RevocationsView>, ApiError> {
    let bytes = hex::decode(req.list_hex.trim()).map_err(trust_refused)?;
    let list = protocol::revoke::SignedRevocations::decode(&bytes).map_err(trust_refused)?;
    let version = list.list.version;
    let task_state = state.clone();
    blocking(move || match task_state.net.get() {
        Some(net) => net
            .take_revocations(&list)
            .map(|_| ())
            .map_err(|e| match e {
                net::trust::TrustError::NoRoot => no_root(),
                net::trust::TrustError::Refused(e) => trust_refused(e),
                net::trust::TrustError::Store(e) => internal(e),
            }),
        None => task_state
            .store
            .take_revocations(&list)
            .map_err(|e| match e {
                store::roots::TakeRevocationsError::NoRoot => no_root(),
                store::roots::TakeRevocationsError::Revoke(e) => trust_refused(e),
                store::roots::TakeRevocationsError::Store(e) => e.into(),
            }),
    })
    .await?;
    tracing::info!(version, "revocation list taken from the operator");
    get_revocations(State(state)).await
}

/// The fleet orders this node holds (version 0 and none before the first).
async fn get_orders(State(state): State<Arc<AppState>>) -> Result<Json<api::OrdersView>, ApiError> {
    let store = state.store.clone();
    let (root, orders) = blocking(move || Ok((store.root()?, store.orders()?))).await?;
    let root = root.ok_or_else(no_root)?;
    Ok(Json(api::OrdersView {
        fleet: root.signed.fleet.clone(),
        root_version: root.signed.version,
        orders_root_version: orders.as_ref().map_or(0, |o| o.orders.root_version),
        version: orders.as_ref().map_or(0, |o| o.orders.version),
        signer: orders.as_ref().map(|o| o.signer.to_hex()),
        orders_hex: orders.as_ref().map(|o| hex::encode(o.encode())),
        changes: Vec::new(),
    }))
}

/// Takes newer signed fleet orders (`p2pctl rollout`, `rollback --to`, `hold --fleet`):
/// verified under the root (an operator key signed them), stored and audited; the installer
/// acts on them at once, and they spread to the fleet ([`net::trust`]).
async fn post_orders(
    State(state): State<Arc<AppState>>,
    Json(req): Json<api::OrdersRequest>,
) -> Result<Json<api::OrdersView>, ApiError> {
    let bytes = hex::decode(req.orders_hex.trim()).map_err(trust_refused)?;
    let signed = protocol::orders::SignedOrders::decode(&bytes).map_err(trust_refused)?;
    let version = signed.orders.version;
    let task_state = state.clone();
    let changes = blocking(move || match task_state.net.get() {
        Some(net) => net.take_orders(&signed).map_err(|e| match e {
            net::trust::TrustError::NoRoot => no_root(),
            net::trust::TrustError::Refused(e) => trust_refused(e),
            net::trust::TrustError::Store(e) => internal(e),
        }),
        None => task_state.store.take_orders(&signed).map_err(|e| match e {
            store::orders::TakeOrdersError::NoRoot => no_root(),
            store::orders::TakeOrdersError::Orders(e) => trust_refused(e),
            store::orders::TakeOrdersError::Store(e) => e.into(),
        }),
    })
    .await?;
    tracing::info!(version, "fleet orders taken from the operator");
    let Json(mut view) = get_orders(State(state)).await?;
    view.changes = changes;
    Ok(Json(view))
}

/// Rolls a channel back on this node (`p2pctl rollback CHANNEL`): `current` goes back to
/// the version installed before (or the one asked for), its apply command runs, and the
/// version left is not installed again. Audited.
async fn rollback_here(
    State(state): State<Arc<AppState>>,
    Json(req): Json<api::RollbackRequest>,
) -> Result<Json<api::RollbackView>, ApiError> {
    let refused =
        |message: String| ApiError::new(StatusCode::CONFLICT, ErrorCode::CannotRollBack, message);
    let Some(installer) = state.installer.get() else {
        return Err(refused(
            "this node installs nothing ([install] target is not set)".into(),
        ));
    };
    let net = net_of(&state)?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "a rollback needs a reason",
        ));
    }
    let reason =
        protocol::wire::truncate_text(&req.reason, protocol::orders::ORDER_REASON_BYTES_MAX);
    let left = installer
        .rollback(
            net,
            &state.store,
            &req.channel,
            req.to_version,
            crate::activate::RollbackBy::Local,
            &reason,
        )
        .await
        .map_err(|e| match e {
            crate::activate::RollbackError::Activate(e) => internal(e),
            e => refused(e.to_string()),
        })?;
    let (reason, to) = match left.outcome {
        crate::activate::Outcome::RolledBack { reason, to, .. } => (reason, to),
        _ => (reason, String::new()),
    };
    Ok(Json(api::RollbackView {
        channel: left.channel,
        from_version: left.version,
        to,
        reason,
    }))
}

/// Takes newer fleet roots (`p2pctl root publish`), each the next step of the chain from
/// the one held; the trust policy follows the newest, and they spread to the fleet.
async fn post_roots(
    State(state): State<Arc<AppState>>,
    Json(req): Json<api::RootsRequest>,
) -> Result<Json<api::RootsView>, ApiError> {
    let chain = req
        .roots_json
        .iter()
        .map(|t| protocol::root::SignedRoot::from_json(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(trust_refused)?;
    let net = net_of(&state)?.clone();
    let from = net.trust_versions().0;
    let to = blocking(move || {
        net.take_roots(&chain).map_err(|e| match e {
            net::trust::TrustError::NoRoot => no_root(),
            net::trust::TrustError::Refused(e) => trust_refused(e),
            net::trust::TrustError::Store(e) => internal(e),
        })
    })
    .await?;
    if to == from {
        return Err(trust_refused(format!(
            "root v{from} is held already and none given follows it"
        )));
    }
    let fleet = net_of(&state)?
        .membership()
        .map(|m| m.root.fleet.clone())
        .unwrap_or_default();
    Ok(Json(api::RootsView {
        fleet,
        from_version: from,
        to_version: to,
    }))
}

/// This node's certificate (armored text).
async fn get_cert(State(state): State<Arc<AppState>>) -> Result<Json<api::CertText>, ApiError> {
    let store = state.store.clone();
    let cert = blocking(move || Ok(store.node_cert()?)).await?;
    let cert = cert.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoRoot,
            "this node has no certificate: enroll it (`p2pctl node enroll`)",
        )
    })?;
    Ok(Json(api::CertText {
        cert_text: cert.to_text(),
    }))
}

/// Installs a renewed (or moved) certificate while the daemon runs: it must verify for this
/// node under the root held; hellos show it from now on.
async fn post_cert(
    State(state): State<Arc<AppState>>,
    Json(req): Json<api::CertText>,
) -> Result<Json<api::CertText>, ApiError> {
    let cert = protocol::cert::SignedCert::from_text(&req.cert_text).map_err(trust_refused)?;
    let node: protocol::NodeId = state.node_id.parse().map_err(internal)?;
    let task_state = state.clone();
    let installed = cert.clone();
    blocking(move || {
        let now = jiff::Timestamp::now().as_second();
        task_state
            .store
            .install_cert(&installed, &node, now)
            .map_err(|e| match e {
                store::roots::InstallCertError::NoRoot => no_root(),
                store::roots::InstallCertError::Cert(e) => trust_refused(e),
                store::roots::InstallCertError::Store(e) => e.into(),
            })
    })
    .await?;
    if let Some(net) = state.net.get() {
        net.set_own_cert(cert.encode());
    }
    tracing::info!(
        expires_unix_s = cert.cert.expires_unix_s,
        "certificate installed"
    );
    Ok(Json(api::CertText {
        cert_text: cert.to_text(),
    }))
}

/// `GET /v1/audit` query.
#[derive(Debug, serde::Deserialize)]
struct AuditQuery {
    /// Only entries appended at or after this instant, unix milliseconds.
    since_unix_ms: Option<i64>,
}

async fn audit_log(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Json<AuditLog>, ApiError> {
    let key = state.audit_key.get().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NoIdentity,
            "this server has no node key to seal the audit log with",
        )
    })?;
    let store = state.store.clone();
    let log = blocking(move || {
        let (entries, whole) = store.audit_entries(q.since_unix_ms)?;
        let now = jiff::Timestamp::now().as_millisecond();
        Ok(AuditLog {
            entries: entries.into_iter().map(ListedEntry::from).collect(),
            seal: AuditSeal::sign(&key, whole.entries, whole.head, now),
        })
    })
    .await?;
    Ok(Json(log))
}

async fn audit_verify(
    State(state): State<Arc<AppState>>,
) -> Result<Json<AuditVerifyView>, ApiError> {
    let store = state.store.clone();
    let result = blocking(move || Ok(store.verify_audit()?)).await?;
    Ok(Json(AuditVerifyView::of(&result)))
}

async fn schedule(State(state): State<Arc<AppState>>) -> Result<Json<ScheduleView>, ApiError> {
    use scheduler::window::{WindowState, union_state};
    let net = net_of(&state)?;
    let now = jiff::Timestamp::now();
    let text = |t: jiff::Timestamp| t.to_string();
    let window = |list: &[scheduler::window::Window]| match union_state(list, now) {
        WindowState::Open { closes } => WindowView {
            windows: list.len(),
            open: true,
            closes: closes.map(text),
            opens: None,
        },
        WindowState::Closed { opens } => WindowView {
            windows: list.len(),
            open: false,
            closes: None,
            opens: opens.map(text),
        },
    };
    Ok(Json(ScheduleView {
        now: text(now),
        classes: net
            .shapers
            .rates(now)
            .into_iter()
            .map(|(class, rate, next)| ClassRateView {
                class: class.into(),
                bytes_per_s: rate.bytes_per_sec(),
                rate: rate.to_string(),
                next_change: next.map(text),
            })
            .collect(),
        download: window(&net.gates.windows().download),
        install: window(&net.gates.windows().install),
        emergency_critical_cvss: net
            .gates
            .windows()
            .policy
            .critical_cvss_at_least
            .map(|c| c.as_f32()),
    }))
}

async fn status(State(state): State<Arc<AppState>>) -> Result<Json<NodeStatus>, ApiError> {
    let net = net_of(&state)?;
    let t = &net.traffic;
    Ok(Json(NodeStatus {
        clock_offset_s: net.clock_offset_ms().map(|ms| ms as f64 / 1000.0),
        node_id: net.local.node_id.to_hex(),
        peer_id: net.local.peer_id.to_string(),
        site: net.local.site.clone(),
        region: net.local.region.clone(),
        peers: net.peer_list().len(),
        banned: net.banned().iter().map(|p| p.to_string()).collect(),
        recv_lan_bytes: t.recv_lan.load(Ordering::Relaxed),
        recv_wan_bytes: t.recv_wan.load(Ordering::Relaxed),
        sent_lan_bytes: t.sent_lan.load(Ordering::Relaxed),
        sent_wan_bytes: t.sent_wan.load(Ordering::Relaxed),
        control: protocol::wire::ControlKind::ALL
            .iter()
            .map(|&k| {
                use net::Class::{Lan, Wan};
                let c = &t.control;
                api::ControlBytesView {
                    kind: k.name().into(),
                    lan_sent: c.get(k, Lan, true),
                    lan_received: c.get(k, Lan, false),
                    wan_sent: c.get(k, Wan, true),
                    wan_received: c.get(k, Wan, false),
                }
            })
            .collect(),
        aggregator_rank: net.aggregator_rank(),
        fleet_sites: state.fleet.sites(),
        releases: progress_of(&state, net).await?,
        refused: net
            .registry
            .refused()
            .into_iter()
            .map(|r| RefusedRelease {
                id: r.id.to_hex(),
                reason: r.reason,
            })
            .collect(),
    }))
}

/// The fleet status record's state of a release, from where its fetch and its installation
/// stand here: the one mapping from the node's states to the record's.
fn record_state(r: &ReleaseProgress) -> (protocol::status::ReleaseState, Option<String>) {
    use api::InstallState as Install;
    use protocol::status::ReleaseState as Record;
    let install = r.install.as_ref();
    match (r.state, install.map(|i| i.state)) {
        (_, Some(Install::Installed)) => (Record::Activated, None),
        (_, Some(Install::Failed)) => (Record::Failed, install.and_then(|i| i.reason.clone())),
        (_, Some(Install::Superseded)) | (FetchState::Superseded, _) => (Record::Superseded, None),
        (_, Some(Install::Held)) => (Record::Held, install.and_then(|i| i.reason.clone())),
        (_, Some(Install::NotTargeted)) => (Record::NotTargeted, None),
        (_, Some(Install::Blocked)) => (Record::Waiting, install.and_then(|i| i.reason.clone())),
        (_, Some(Install::RolledBack)) => {
            (Record::RolledBack, install.and_then(|i| i.reason.clone()))
        }
        (FetchState::Complete, _) => (Record::Complete, None),
        (FetchState::Failed, _) => (Record::Failed, r.error.clone()),
        (FetchState::Paused, _) => (Record::PausedByWindow, None),
        (FetchState::Fetching, _) if r.chunks_have == 0 => (Record::Announced, None),
        (FetchState::Fetching, _) => (Record::Downloading, None),
    }
}

/// Where each release stands here, as a fleet status record says it (`since_unix_s` is the
/// installation's time for an installed or failed installation, else left 0 for the caller,
/// which knows when each state began): releases served or fetched, then
/// those refused or of channels not followed, all of them (the publisher picks the at most
/// [`protocol::status::STATUS_RELEASES_MAX`] a record carries). `None` before the network
/// runs.
pub async fn status_releases(
    state: &Arc<AppState>,
) -> Option<Vec<protocol::status::ReleaseStatus>> {
    use protocol::status::{ReleaseState, ReleaseStatus, bounded_error};
    let net = state.net.get()?;
    let mut progress = progress_of(state, net).await.ok()?;
    // The newest first, so that the limit leaves out the oldest.
    progress.sort_by_key(|p| std::cmp::Reverse(p.published_unix_s));
    let mut out = Vec::new();
    for r in progress {
        let Ok(release) = r.id.parse::<ReleaseId>() else {
            continue;
        };
        let (state, error) = record_state(&r);
        // An installation's time is its record's, kept across restarts: the compliance
        // report's delays and 72-hour verdicts are read from it.
        let installed_at = r
            .install
            .as_ref()
            .filter(|_| matches!(state, ReleaseState::Activated | ReleaseState::Failed))
            .and_then(|i| i.at.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_second());
        out.push(ReleaseStatus {
            release,
            channel: r.channel,
            version: r.version,
            published_unix_s: r.published_unix_s,
            severity: r.severity.parse().unwrap_or(protocol::Severity::Low),
            state,
            chunks_have: r.chunks_have,
            chunks_total: r.chunks_total,
            since_unix_s: installed_at,
            until_unix_s: match state {
                ReleaseState::Held => r.install.as_ref().and_then(|i| i.held_until_unix_s),
                _ => r.download_opens_unix_s,
            },
            error: error.map(|e| bounded_error(&e)),
            // Only a ring that gates a later one is counted: the last gates nothing.
            ring: scheduler::rollout::reported_ring(
                r.install
                    .as_ref()
                    .and_then(|i| i.ring_index)
                    .map(usize::from),
                net.release(&release).map_or(0, |x| x.rollout.rings.len()),
            ),
        });
    }
    for r in net.registry.refused() {
        if out.iter().any(|x| x.release == r.id) {
            continue;
        }
        let (state, channel, version, published, severity, chunks) = match r.facts {
            Some(f) => (
                ReleaseState::NotFollowed,
                f.channel,
                f.version,
                f.published_unix_s,
                f.severity,
                f.chunks_total,
            ),
            None => (
                ReleaseState::Refused,
                String::new(),
                0,
                0,
                protocol::Severity::Low,
                0,
            ),
        };
        out.push(ReleaseStatus {
            release: r.id,
            channel,
            version,
            published_unix_s: published,
            severity,
            state,
            chunks_have: 0,
            chunks_total: chunks,
            since_unix_s: 0,
            until_unix_s: None,
            error: (state == ReleaseState::Refused).then(|| bounded_error(&r.reason)),
            ring: 0,
        });
    }
    Some(out)
}

/// Every release's progress, with its download window while paused and its installation.
async fn progress_of(
    state: &Arc<AppState>,
    net: &Arc<net::Net>,
) -> Result<Vec<ReleaseProgress>, ApiError> {
    use crate::activate::{InstallState, Outcome};
    let text = |t: jiff::Timestamp| t.round(jiff::Unit::Second).unwrap_or(t).to_string();
    let (records, holds) = match state.installer.get() {
        Some(_) => {
            let store = state.store.clone();
            let (records, holds) = blocking(move || {
                let now = now_unix_s();
                Ok((store.activations()?, store.holds(now)?))
            })
            .await?;
            let holds = crate::rollout::holds_in_force(net, holds, now_unix_s());
            (Some(records.into_iter().collect::<HashMap<_, _>>()), holds)
        }
        None => (None, Vec::new()),
    };
    let mut list = Vec::new();
    let view = records
        .as_ref()
        .map(|records| crate::rollout::View::new(net, records));
    for r in net.releases() {
        let mut p = r.progress();
        if r.state() == net::ReleaseState::Paused {
            let opens = net.gates.download_opens(&r);
            p.download_opens = opens.map(text);
            p.download_opens_unix_s = opens.map(|t| t.as_second());
        }
        if let (Some(installer), Some(records), Some(view)) =
            (state.installer.get(), &records, &view)
        {
            use api::InstallState as Shown;
            let mut v = InstallView::default();
            if let Some(k) = view.ring(&r) {
                v.ring = r.rollout.rings.get(k).map(|ring| ring.name.clone());
                v.ring_index = u8::try_from(k).ok();
            }
            match installer.state_of(net, &state.store, view, &r, records, &holds) {
                InstallState::NotTargeted(selector) => {
                    v.state = Shown::NotTargeted;
                    v.reason = Some(format!("the release targets {selector}"));
                }
                InstallState::Blocked(reason) => {
                    v.state = Shown::Blocked;
                    v.reason = Some(reason);
                }
                InstallState::NotReady => v.state = Shown::Pending,
                InstallState::Due => v.state = Shown::Due,
                InstallState::Waiting { opens } => {
                    v.state = Shown::Waiting;
                    v.window_opens = opens.map(text);
                }
                InstallState::Installing => v.state = Shown::Installing,
                InstallState::Superseded => v.state = Shown::Superseded,
                InstallState::Held(hold) => {
                    v.state = Shown::Held;
                    v.reason = Some(hold.reason);
                    v.held_until = jiff::Timestamp::from_second(hold.until_unix_s)
                        .ok()
                        .map(text);
                    v.held_until_unix_s = Some(hold.until_unix_s);
                }
                InstallState::Done(record) => {
                    v.dir = Some(record.dir.display().to_string());
                    v.at = jiff::Timestamp::from_second(record.at_unix_s)
                        .ok()
                        .map(text);
                    match record.outcome {
                        Outcome::Installed => {
                            v.state = Shown::Installed;
                            v.current_elsewhere = installer.current_elsewhere(&record);
                        }
                        Outcome::Failed {
                            reason,
                            exit_code,
                            output,
                            rolled_back_to,
                        } => {
                            v.state = Shown::Failed;
                            v.reason = Some(reason);
                            v.exit_code = exit_code;
                            v.output = output;
                            v.rolled_back_to = rolled_back_to;
                        }
                        Outcome::RolledBack { by, reason, to } => {
                            v.state = Shown::RolledBack;
                            v.reason = Some(match by {
                                crate::activate::RollbackBy::Fleet => {
                                    format!("by a fleet order: {reason}")
                                }
                                crate::activate::RollbackBy::Local => {
                                    format!("on this node: {reason}")
                                }
                            });
                            v.rolled_back_to = Some(to);
                        }
                    }
                }
            }
            p.install = Some(v);
        }
        list.push(p);
    }
    Ok(list)
}

/// Checks a publish request before any byte is read: path, channel, key, version, expiry.
async fn publish(
    State(state): State<Arc<AppState>>,
    Json(req): Json<PublishRequest>,
) -> Result<Response, ApiError> {
    let req = crate::publish::Request::parse(&req)?;
    req.precheck(&state.policy.get(), &state.store)?;
    if !state.sessions.has_room() {
        return Err(crate::publish::PublishError::Busy.into());
    }
    let scan_path = req.path.clone();
    let tree = blocking(move || Ok(ingest::scan(&scan_path)?)).await?;

    let (tx, rx) = tokio::sync::mpsc::channel::<PublishEvent>(16);
    let progress = Arc::new(Progress::default());
    let _ = tx
        .send(PublishEvent::Scanned {
            files: tree.file_count() as u64,
            total_bytes: tree.total_bytes,
        })
        .await;

    let task_state = state.clone();
    let task_progress = progress.clone();
    let work = tokio::task::spawn_blocking(move || {
        let s = &task_state;
        crate::publish::stage(
            &s.store,
            &s.sessions,
            &req,
            &tree,
            &task_progress,
            now_unix_s(),
        )
    });

    // Report progress until the work ends, then its outcome.
    tokio::spawn(async move {
        let mut work = work;
        let outcome = loop {
            tokio::select! {
                done = &mut work => break done,
                () = tokio::time::sleep(PROGRESS_INTERVAL) => {
                    let event = PublishEvent::Progress {
                        bytes_done: progress.bytes_done.load(Ordering::Relaxed),
                        files_done: progress.files_done.load(Ordering::Relaxed),
                    };
                    // A client that went away is not an error: the session will time out.
                    let _ = tx.try_send(event);
                }
            }
        };
        let event = match outcome {
            Ok(Ok(staged)) => PublishEvent::Staged {
                session: staged.session,
                manifest_b64: B64.encode(&staged.manifest_bytes),
                release_id: staged.release_id().to_hex(),
                new_bytes: staged.new_bytes,
                dedup_bytes: staged.dedup_bytes,
                patches: staged.patches.0,
                patch_bytes: staged.patches.1,
                patched_chunk_bytes: staged.patches.2,
                patch_s: staged.patch_s,
                expires_in_s: PUBLISH_SESSION_TIMEOUT.as_secs(),
            },
            Ok(Err(e)) => {
                let e = ApiError::from(e);
                tracing::warn!(code = ?e.code, "publish failed: {}", e.message);
                PublishEvent::Failed(e.detail())
            }
            Err(e) => PublishEvent::Failed(internal(e).detail()),
        };
        let _ = tx.send(event).await;
    });

    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(internal)
}

async fn commit(
    State(state): State<Arc<AppState>>,
    UrlPath(session_id): UrlPath<u64>,
    Json(req): Json<CommitRequest>,
) -> Result<Json<ReleaseView>, ApiError> {
    let envelope = B64.decode(req.envelope_b64.as_bytes()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadRequest,
            format!("envelope: {e}"),
        )
    })?;
    let task_state = state.clone();
    let hold = req.hold;
    let done = blocking(move || {
        let s = &task_state;
        let done = crate::publish::commit(
            &s.store,
            &s.sessions,
            &s.policy.get(),
            session_id,
            &envelope,
            hold,
            now_unix_s(),
        )?;
        let v = &done.release;
        match done.held {
            Some((have, need)) => tracing::info!(release = %v.id, channel = %v.manifest.channel,
                version = v.manifest.version, signers = ?v.signers, have, need,
                "release held for approval"),
            None => {
                if let Some(net) = s.net.get() {
                    net.published(v);
                }
                tracing::info!(release = %v.id, channel = %v.manifest.channel,
                    version = v.manifest.version, signers = ?v.signers, "release published");
            }
        }
        Ok(done)
    })
    .await?;
    let mut view = release_view(&done.summary);
    view.held = done.held.map(|(have, need)| api::ApprovalState {
        have: have as u64,
        need: need as u64,
    });
    Ok(Json(view))
}

async fn abort(
    State(state): State<Arc<AppState>>,
    UrlPath(session_id): UrlPath<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let task_state = state.clone();
    let found = tokio::task::spawn_blocking(move || task_state.sessions.abort(session_id))
        .await
        .map_err(internal)?;
    if found {
        Ok(Json(serde_json::json!({})))
    } else {
        Err(crate::publish::PublishError::NoSession(session_id).into())
    }
}

async fn list_releases(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    let task = state.clone();
    let list = blocking(move || {
        // Few releases are held: read the held table once, each held envelope once.
        let held = task.store.held_releases()?;
        task.store
            .releases()?
            .iter()
            .map(|s| {
                let mut v = release_view(s);
                if held.contains(&s.id) {
                    v.held = held_state(&task, &s.id)?;
                }
                Ok(v)
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(list))
}

/// Finds a release by full id or unique hex prefix (at least 4 digits) among those the
/// fleet knows: stored or served here, or named by a record or summary this node holds.
fn resolve_known(state: &AppState, text: &str) -> Result<ReleaseId, ApiError> {
    resolve_among(text, |prefix| {
        let mut ids = state.store.find_releases(prefix)?;
        if let Some(net) = state.net.get() {
            let lower = prefix.to_ascii_lowercase();
            ids.extend(
                net.releases()
                    .iter()
                    .map(|r| r.id)
                    .filter(|id| id.to_hex().starts_with(&lower)),
            );
        }
        ids.extend(state.fleet.releases_matching(prefix));
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    })
}

/// Finds a release by full id or unique hex prefix (at least 4 digits).
fn resolve(store: &Store, text: &str) -> Result<ReleaseId, ApiError> {
    resolve_among(text, |prefix| Ok(store.find_releases(prefix)?))
}

/// Fewest hex digits a release id prefix may have: 4 digits name one of 65,536, enough
/// to pick among a store's releases, and fewer match too much by chance.
const RELEASE_PREFIX_MIN: usize = 4;

/// A full id, or the one release `candidates` gives for a hex prefix of at least
/// [`RELEASE_PREFIX_MIN`] digits.
fn resolve_among(
    text: &str,
    candidates: impl FnOnce(&str) -> Result<Vec<ReleaseId>, ApiError>,
) -> Result<ReleaseId, ApiError> {
    if let Ok(id) = text.parse::<ReleaseId>() {
        return Ok(id);
    }
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoRelease,
            format!("no release {text:?} is known here"),
        )
    };
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "{text:?} is not a release id: give its hex digits (at least {RELEASE_PREFIX_MIN}, as `p2pctl releases` lists them)"
            ),
        ));
    }
    if text.len() < RELEASE_PREFIX_MIN {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "{text:?} is too short: give at least {RELEASE_PREFIX_MIN} hex digits of the release id"
            ),
        ));
    }
    match candidates(text)?.as_slice() {
        [id] => Ok(*id),
        [] => Err(not_found()),
        many => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmbiguousRelease,
            format!(
                "{text:?} is ambiguous: it matches {} releases; give more digits",
                many.len()
            ),
        )),
    }
}

fn load_manifest(store: &Store, id: &ReleaseId) -> Result<(Manifest, Vec<u8>), ApiError> {
    let envelope = store.signed_manifest(id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoRelease,
            format!("no release {id}"),
        )
    })?;
    let signed: protocol::SignedManifest = codec::decode::<
        _,
        { protocol::envelope::ENVELOPE_BYTES_MAX },
    >(&envelope, "stored envelope")
    .map_err(|e| internal(format!("stored release {id} is damaged: {e}")))?;
    let manifest = Manifest::decode(&signed.manifest_bytes)
        .map_err(|e| internal(format!("stored release {id} is damaged: {e}")))?;
    Ok((manifest, envelope))
}

async fn show_release(
    State(state): State<Arc<AppState>>,
    UrlPath(text): UrlPath<String>,
) -> Result<Json<ReleaseDetail>, ApiError> {
    let store = state.store.clone();
    let task = state.clone();
    blocking(move || {
        let id = resolve(&store, &text)?;
        let summary = store
            .summary(&id)?
            .ok_or_else(|| internal("summary missing"))?;
        let (manifest, _) = load_manifest(&store, &id)?;
        let entries = manifest
            .entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::Dir { mode } => EntryView {
                    path: e.path.clone(),
                    kind: "dir".into(),
                    mode: Some(*mode),
                    size: None,
                    chunks: None,
                    target: None,
                },
                EntryKind::File { mode, size, chunks } => EntryView {
                    path: e.path.clone(),
                    kind: "file".into(),
                    mode: Some(*mode),
                    size: Some(*size),
                    chunks: Some(chunks.len() as u64),
                    target: None,
                },
                EntryKind::Symlink { target } => EntryView {
                    path: e.path.clone(),
                    kind: "symlink".into(),
                    mode: None,
                    size: None,
                    chunks: None,
                    target: Some(target.clone()),
                },
            })
            .collect();
        let c = manifest.chunking;
        let mut release = release_view(&summary);
        release.held = held_state(&task, &id)?;
        Ok(Json(ReleaseDetail {
            release,
            chunking: format!("{}/{}/{}", c.min_bytes, c.avg_bytes, c.max_bytes),
            entries,
        }))
    })
    .await
}

async fn verify_release(
    State(state): State<Arc<AppState>>,
    UrlPath(text): UrlPath<String>,
) -> Result<Json<VerifyView>, ApiError> {
    let state = state.clone();
    blocking(move || {
        let store = &state.store;
        let id = resolve(store, &text)?;
        let (manifest, envelope) = load_manifest(store, &id)?;
        let signature = protocol::envelope::verify_signed(&envelope, &state.policy.get());
        let report = release::verify_chunks(store, &manifest)?;
        Ok(Json(VerifyView {
            id: id.to_hex(),
            signature_ok: signature.is_ok(),
            signature_error: signature.err().map(|e| e.to_string()),
            expires: rfc3339(manifest.expires_unix_s),
            expired: manifest.expires_unix_s <= jiff::Timestamp::now().as_second(),
            chunks_checked: report.chunks_checked,
            bytes_checked: report.bytes_checked,
            missing: report.missing.iter().map(|c| c.to_hex()).collect(),
            corrupt: report.corrupt.iter().map(|c| c.to_hex()).collect(),
        }))
    })
    .await
}

/// Removes a release from the store (audited) and compacts: the node stops serving it, and
/// the chunks no kept release names are reclaimed. A release being fetched is refused.
async fn remove_release(
    State(state): State<Arc<AppState>>,
    UrlPath(text): UrlPath<String>,
) -> Result<Json<api::RemoveReport>, ApiError> {
    let store = state.store.clone();
    let id = blocking(move || resolve(&store, &text)).await?;
    remove_and_compact(&state, id).await.map(Json)
}

/// Removes `id` from the store and the network's releases, then compacts
/// ([`crate::retention::remove_and_compact`]); a release being fetched is refused.
pub async fn remove_and_compact(
    state: &Arc<AppState>,
    id: ReleaseId,
) -> Result<api::RemoveReport, ApiError> {
    let net = state.net.get();
    if net.is_some_and(|n| n.registry.get(&id).is_some_and(|r| !r.state().is_settled())) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Busy,
            format!("release {id} is being fetched; remove it once it completed or failed"),
        ));
    }
    let (removed, reclaimed) = crate::retention::remove_and_compact(state, net, vec![id]).await?;
    if removed.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoRelease,
            format!("release {id} is not in the store"),
        ));
    }
    Ok(api::RemoveReport {
        release: id.to_hex(),
        reclaimed,
    })
}

async fn export_release(
    State(state): State<Arc<AppState>>,
    UrlPath(text): UrlPath<String>,
    Json(req): Json<ExportRequest>,
) -> Result<Json<release::ExportReport>, ApiError> {
    if !req.dir.is_absolute() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadRequest,
            format!("{}: destination must be absolute", req.dir.display()),
        ));
    }
    let store = state.store.clone();
    blocking(move || {
        let id = resolve(&store, &text)?;
        let (manifest, _) = load_manifest(&store, &id)?;
        release::export(&store, &manifest, &req.dir)
            .map(Json)
            .map_err(|e| {
                let code = match e {
                    release::ExportError::DestinationNotEmpty(_) => ErrorCode::DestinationNotEmpty,
                    release::ExportError::Chunk { .. } => ErrorCode::StoreDamaged,
                    _ => ErrorCode::ExportFailed,
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
            })
    })
    .await
}

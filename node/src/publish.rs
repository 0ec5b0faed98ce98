//! Publishing, in two steps, so that the signing key never reaches the daemon: [`stage`]
//! checks the request against the trust policy and the store, chunks the tree into an
//! ingest session (packs written, nothing indexed) and builds the manifest to sign; the
//! session waits in [`Sessions`]; [`commit`] takes the signed envelope, passes it through
//! the same gate as any manifest from the network ([`protocol::verify_release`]) and commits
//! the chunks and the release in one transaction. A session not committed within
//! [`PUBLISH_SESSION_TIMEOUT`] is dropped and its chunks roll back.
//!
//! No HTTP here: `server.rs` adapts these to the control API (`POST /v1/publish`, `.../commit`,
//! `DELETE`), and maps [`PublishError`] to its answers.

use protocol::{
    ChunkingParams, MANIFEST_FORMAT_VERSION, Manifest, ManifestError, PublisherKey, ReleaseId,
    TrustPolicy, VerifiedRelease,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use store::ingest::{self, IngestError, Progress};
use store::{IngestSession, ReleaseSummary, Store, StoreError};

/// How long a staged publish waits for its signed commit.
pub const PUBLISH_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// Staged publishes held at once. Each holds an open pack; publishing is an operator action,
/// so a handful is plenty and a runaway script cannot exhaust file handles.
pub const PUBLISH_SESSIONS_MAX: usize = 4;

/// Why a publish step failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The request itself is wrong (a relative path, a bad severity, a window that does not
    /// parse, an expiry in the past).
    #[error("{0}")]
    BadRequest(String),
    /// The manifest, its key or its version breaks a rule.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The tree cannot be published.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// [`PUBLISH_SESSIONS_MAX`] sessions are staged already.
    #[error("{PUBLISH_SESSIONS_MAX} publishes are already staged; commit or abort one")]
    Busy,
    /// No such session: committed, aborted or timed out.
    #[error("no staged publish {0}: it was committed, aborted or timed out")]
    NoSession(u64),
    /// The signed manifest is not the one the session staged.
    #[error("the signed manifest is not the one this session staged")]
    ManifestMismatch,
}

/// What a publish is asked to make: the request's fields, parsed.
#[derive(Debug, Clone)]
pub struct Request {
    /// Absolute path of a file or directory.
    pub path: PathBuf,
    /// Channel.
    pub channel: String,
    /// Version, above the channel's highest.
    pub version: u64,
    /// Severity.
    pub severity: protocol::Severity,
    /// CVSS score.
    pub cvss: Option<protocol::Cvss>,
    /// An emergency: nodes may download it outside their download windows.
    pub emergency: bool,
    /// The release's own download windows.
    pub download_windows: Vec<protocol::ReleaseWindow>,
    /// The release's own install windows.
    pub install_windows: Vec<protocol::ReleaseWindow>,
    /// Validity from now, in seconds.
    pub expires_in_s: u64,
    /// The key that will sign.
    pub publisher_key: PublisherKey,
    /// Target, requirements, rings and gate.
    pub rollout: protocol::Rollout,
    /// Make patches from the channel's earlier versions the store holds (never for an
    /// emergency, which must not wait for them).
    pub patches: bool,
}

impl Request {
    /// Parses the API's request.
    pub fn parse(req: &api::PublishRequest) -> Result<Self, PublishError> {
        let bad = |e: String| PublishError::BadRequest(e);
        let windows = |kind: &str, list: &[String]| {
            list.iter()
                .map(|w| {
                    scheduler::window::parse_release_window(w)
                        .map_err(|e| bad(format!("{kind} window: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            path: req.path.clone(),
            channel: req.channel.clone(),
            version: req.version,
            severity: req.severity.parse().map_err(bad)?,
            cvss: req
                .cvss
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(bad)?,
            emergency: req.emergency,
            download_windows: windows("download", &req.download_windows)?,
            install_windows: windows("install", &req.install_windows)?,
            expires_in_s: req.expires_in_s,
            publisher_key: PublisherKey::parse_config_string(&req.publisher_key)
                .map_err(|e| bad(e.to_string()))?,
            rollout: rollout_of(req).map_err(|e| bad(e.to_string()))?,
            // An emergency moves the moment it is signed: it never waits for patches to be
            // made (its chunks still move compressed across the WAN).
            patches: !req.no_patches && !req.emergency,
        })
    }

    /// Checks, before any byte is read, what can be checked: the path, the channel, the
    /// key's right to it, the version, the expiry.
    pub fn precheck(&self, policy: &TrustPolicy, store: &Store) -> Result<(), PublishError> {
        if !self.path.is_absolute() {
            return Err(PublishError::BadRequest(format!(
                "{}: path must be absolute",
                self.path.display()
            )));
        }
        if !protocol::manifest::is_valid_channel(&self.channel) {
            return Err(ManifestError::BadChannel(self.channel.clone()).into());
        }
        let key = self.publisher_key;
        match policy.publisher(&key) {
            None => return Err(ManifestError::UnknownKey(key).into()),
            Some(p) if !p.allows_channel(&self.channel) => {
                return Err(p.not_allowed_on(&self.channel).into());
            }
            Some(_) => {}
        }
        if let Some(highest) = store.highest_version(&self.channel)? {
            if self.version <= highest {
                return Err(ManifestError::VersionNotNewer {
                    channel: self.channel.clone(),
                    version: self.version,
                    highest,
                }
                .into());
            }
        }
        if self.expires_in_s == 0 {
            return Err(PublishError::BadRequest(
                "expiry must be in the future".into(),
            ));
        }
        self.check_requirements(store)
    }

    /// Each requirement must name another channel with a version this node holds, and
    /// following requirements from there through each channel's newest release (the one a
    /// node installs) must not come back to this channel: a node could then install
    /// neither.
    fn check_requirements(&self, store: &Store) -> Result<(), PublishError> {
        let bad = |e: String| Err(PublishError::BadRequest(e));
        let releases = store.releases()?;
        let newest = |channel: &str| {
            releases
                .iter()
                .filter(|r| r.channel == channel)
                .max_by_key(|r| r.version)
        };
        for req in &self.rollout.requires {
            if req.channel == self.channel {
                return bad(format!(
                    "requires {req}: a release cannot require its own channel (only the newest version of a channel is installed)"
                ));
            }
            match newest(&req.channel) {
                None => {
                    return bad(format!(
                        "requires {req}: no release of {} is published here; publish it first",
                        req.channel
                    ));
                }
                Some(r) if r.version < req.min_version => {
                    return bad(format!(
                        "requires {req}: the newest release of {} here is version {}; publish version {} first",
                        req.channel, r.version, req.min_version
                    ));
                }
                Some(_) => {}
            }
        }
        // Depth-first over channels, each visited once: the path to any channel that leads
        // back here is the cycle.
        let mut stack: Vec<Vec<String>> = self
            .rollout
            .requires
            .iter()
            .map(|r| vec![self.channel.clone(), r.channel.clone()])
            .collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(path) = stack.pop() {
            let channel = path.last().expect("a path has a channel").clone();
            if !seen.insert(channel.clone()) {
                continue;
            }
            let Some(r) = newest(&channel) else { continue };
            let Some(m) = store.manifest(&r.id)? else {
                continue;
            };
            for next in &m.rollout.requires {
                let mut longer = path.clone();
                longer.push(next.channel.clone());
                if next.channel == self.channel {
                    return bad(format!(
                        "requires: a cycle, {} (each channel's newest release requires the next)",
                        longer.join(" -> ")
                    ));
                }
                stack.push(longer);
            }
        }
        Ok(())
    }
}

/// The rollout rules of a publish request.
fn rollout_of(
    req: &api::PublishRequest,
) -> Result<protocol::Rollout, protocol::rollout::RolloutError> {
    use protocol::rollout::{Gate, Requirement, Ring, RolloutError, Selector};
    let rings = Ring::parse_list(&req.rings)?;
    if rings.is_empty() && !req.gate.trim().is_empty() {
        return Err(RolloutError {
            what: "gate",
            why: "a gate needs rings (--rings)".into(),
        });
    }
    let rollout = protocol::Rollout {
        target: Selector::parse(&req.target, "target")?,
        requires: Requirement::parse_list(&req.requires)?,
        rings,
        gate: Gate::parse(&req.gate)?,
    };
    rollout.validate()?;
    Ok(rollout)
}

/// A staged publish: the manifest to sign, and what chunking it cost.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The session that holds the chunks.
    pub session: u64,
    /// The canonical manifest encoding to sign.
    pub manifest_bytes: Vec<u8>,
    /// Bytes of chunks the store did not have.
    pub new_bytes: u64,
    /// Bytes of chunks it had already.
    pub dedup_bytes: u64,
    /// The patches made from earlier versions, and their bytes and what the patched files'
    /// chunks would have moved compressed.
    pub patches: (u64, u64, u64),
    /// Seconds making the patches took.
    pub patch_s: f64,
}

impl Staged {
    /// The release id the manifest will have.
    pub fn release_id(&self) -> ReleaseId {
        ReleaseId::of_manifest_bytes(&self.manifest_bytes)
    }
}

struct Pending {
    session: IngestSession,
    manifest_bytes: Vec<u8>,
    deadline: Instant,
}

/// Staged publishes waiting for their signed commit, at most [`PUBLISH_SESSIONS_MAX`].
#[derive(Default)]
pub struct Sessions {
    pending: Mutex<HashMap<u64, Pending>>,
    next: Mutex<u64>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another session may be staged.
    pub fn has_room(&self) -> bool {
        self.lock().len() < PUBLISH_SESSIONS_MAX
    }

    fn insert(&self, session: IngestSession, manifest_bytes: Vec<u8>) -> u64 {
        let id = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            *next
        };
        self.lock().insert(
            id,
            Pending {
                session,
                manifest_bytes,
                deadline: Instant::now() + PUBLISH_SESSION_TIMEOUT,
            },
        );
        id
    }

    /// Drops staged publishes past their deadline (their chunks roll back). Returns how
    /// many. Blocking: dropping a session removes its pack.
    pub fn reap(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<Pending> = {
            let mut pending = self.lock();
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        expired.len()
    }

    /// Drops session `id` (its chunks roll back); false if there is none. Blocking.
    pub fn abort(&self, id: u64) -> bool {
        let pending = self.lock().remove(&id);
        pending.is_some()
    }

    /// Drops every staged publish (shutdown). Blocking.
    pub fn abort_all(&self) {
        let all: Vec<Pending> = self.lock().drain().map(|(_, p)| p).collect();
        drop(all);
    }
}

/// Chunks `req`'s tree into the store (nothing indexed yet) and stages its manifest in
/// `sessions`. Blocking: it reads the whole tree. `progress` counts what was read.
pub fn stage(
    store: &std::sync::Arc<Store>,
    sessions: &Sessions,
    req: &Request,
    tree: &ingest::ScannedTree,
    progress: &std::sync::Arc<Progress>,
    now_unix_s: i64,
) -> Result<Staged, PublishError> {
    let mut session = store.begin_ingest();
    let params = ChunkingParams::default();
    let entries = ingest::ingest(tree, params, &mut session, progress)?;
    // The tree's own chunks, before the patches' pieces join the session.
    let (new_bytes, dedup_bytes) = (session.new_bytes(), session.dedup_bytes());
    let patching = std::time::Instant::now();
    let made = if req.patches {
        let on_disk: HashMap<&str, &std::path::Path> = tree
            .entries
            .iter()
            .map(|e| (e.rel.as_str(), e.abs.as_path()))
            .collect();
        let bases = store::patch::bases(store, &req.channel, req.version)?;
        store::patch::make(
            &mut session,
            store,
            &entries,
            &bases,
            chunking::patch::PATCH_LEVEL_DEFAULT,
            |path| match on_disk.get(path) {
                Some(abs) => std::fs::read(abs),
                None => Err(std::io::ErrorKind::NotFound.into()),
            },
        )?
    } else {
        store::patch::Made::default()
    };
    let patch_s = if req.patches {
        patching.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let manifest = Manifest {
        // Without patches, the format every node since rollouts reads: a fleet still
        // running older nodes publishes with --no-patches until they are upgraded.
        format_version: if made.patches.is_empty() {
            2
        } else {
            MANIFEST_FORMAT_VERSION
        },
        channel: req.channel.clone(),
        version: req.version,
        created_unix_s: now_unix_s,
        expires_unix_s: now_unix_s.saturating_add(req.expires_in_s.min(i64::MAX as u64) as i64),
        severity: req.severity,
        cvss: req.cvss,
        emergency: req.emergency,
        download_windows: req.download_windows.clone(),
        install_windows: req.install_windows.clone(),
        chunking: params,
        entries,
        total_bytes: tree.total_bytes,
        rollout: req.rollout.clone(),
        patches: made.patches.clone(),
    };
    manifest.validate()?;
    let manifest_bytes = manifest.canonical_bytes();
    if manifest_bytes.len() > protocol::manifest::MANIFEST_BYTES_MAX {
        return Err(ManifestError::TooLarge {
            what: "manifest",
            len: manifest_bytes.len(),
            max: protocol::manifest::MANIFEST_BYTES_MAX,
        }
        .into());
    }
    let id = sessions.insert(session, manifest_bytes.clone());
    Ok(Staged {
        session: id,
        manifest_bytes,
        new_bytes,
        dedup_bytes,
        patches: (
            made.patches.len() as u64,
            made.patch_bytes,
            made.chunk_bytes,
        ),
        patch_s,
    })
}

/// What a commit did.
pub struct Committed {
    /// The release, as far as its signatures verified.
    pub release: VerifiedRelease,
    /// Its summary in the store.
    pub summary: ReleaseSummary,
    /// Held for approval: the signatures it has and needs.
    pub held: Option<(usize, usize)>,
}

/// Commits session `id` with its signed `envelope`: verified by the network's gate, the
/// same manifest as staged, then the chunks and the release in one transaction (with its
/// audit entry). With `hold`, a release short of its channel's threshold (but signed by a
/// publisher of the channel) is committed held for approval instead of refused: stored, its
/// version taken, not served until approvers sign ([`net::approve`]). Blocking.
pub fn commit(
    store: &Store,
    sessions: &Sessions,
    policy: &TrustPolicy,
    id: u64,
    envelope: &[u8],
    hold: bool,
    now_unix_s: i64,
) -> Result<Committed, PublishError> {
    let mut pending = sessions
        .lock()
        .remove(&id)
        .ok_or(PublishError::NoSession(id))?;
    let signed = protocol::check_signatures(envelope, policy)?;
    let (have, need) = (signed.have, signed.need);
    let held = hold && have < need;
    let verified = if held {
        signed.release
    } else {
        signed.complete()?
    };
    let highest = store.highest_version(&verified.manifest.channel)?;
    verified.check_fresh(now_unix_s, highest)?;
    if verified.envelope.manifest_bytes != pending.manifest_bytes {
        return Err(PublishError::ManifestMismatch);
    }
    if held {
        pending.session.hold();
        pending
            .session
            .audit_on_commit(store::audit::AuditEvent::Held {
                release: verified.id.to_hex(),
                channel: verified.manifest.channel.clone(),
                version: verified.manifest.version,
                signers: verified.signers.clone(),
                need: need as u64,
            });
    } else {
        pending
            .session
            .audit_on_commit(store::audit::AuditEvent::published(&verified));
    }
    pending.session.commit(Some(&verified), now_unix_s)?;
    let summary = store.summary(&verified.id)?.ok_or_else(|| {
        StoreError::Damaged(format!("release {} vanished after its commit", verified.id))
    })?;
    Ok(Committed {
        release: verified,
        summary,
        held: held.then_some((have, need)),
    })
}

//! Activation: installing completed releases inside the install window.
//!
//! With `[install] target` set, each followed channel gets a directory `<target>/<channel>/`,
//! its name the channel's with `/` written `+` (`security+openssl`: one path component, so
//! no channel's directory can sit inside another's and be taken for one of its versions),
//! holding one directory per installed version, `<version>-<id>/` (the id's first 12 hex
//! digits), and a symlink `current` to the active one. A completed
//! release is activated when the node's install windows and the release's own are open, the
//! highest version of each channel only, emergencies and higher severities first
//! ([`scheduler::priority`]). Each step survives a crash at any instant:
//!
//! 1. **Materialise**: the tree is exported from the store (every chunk re-verified) into
//!    `.staging-<name>`, every file and directory is fsynced, and the directory is renamed to
//!    `<name>`. A `<name>` directory therefore only ever exists complete; a leftover staging
//!    directory is removed and written again.
//! 2. **Switch**: a symlink `.current.tmp -> <name>` is renamed over `current` (rename is
//!    atomic), and the channel directory is fsynced. A reader of `current` sees the old tree
//!    or the new one, never a mix.
//! 3. **Apply**: the optional `[install] apply` command runs with the new directory as its
//!    last argument (no shell), in its own process group, with `P2PD_*` variables; its
//!    output is kept as a bounded tail. Past `apply_timeout_s` the whole group is killed.
//! 4. **Check**: the optional `[install] check` command runs the same way once the apply
//!    command succeeded, up to `1 + check_retries` times, `check_interval_s` apart
//!    (`P2PD_CHECK_TRY` counts the runs). If it never passes, `current` switches back to the
//!    previous version and the apply command runs again for it (`P2PD_ROLLBACK=1`), and
//!    the install is a failure with the check's exit code and output.
//! 5. **Record**: success, or failure with the exit code (or signal, or timeout) and the last
//!    lines of output, after switching `current` back to the previous version (removing it
//!    when there was none). The record is what `p2pctl status` shows; a failed release is not
//!    retried until a newer version arrives.
//! 6. **Prune**: version directories beyond `keep` are removed, never `current` nor the
//!    version before it.
//!
//! A crash between the switch and the record leaves no record, so after a restart the
//! release is activated again: step 1 finds its directory complete and the apply command
//! runs again. Apply commands must therefore be idempotent (as Mender's state scripts and
//! Debian's maintainer scripts must be).

use crate::config::InstallSection;
use net::{Net, ReleaseState};
use protocol::{Manifest, ReleaseId};
use scheduler::rollout::Verdict;
use scheduler::window::WindowState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use store::RollbackBy;
use store::Store;
use store::release;
use tokio::io::AsyncReadExt;

/// Lines of the apply command's output kept (stdout and stderr interleaved, last lines).
pub const OUTPUT_TAIL_LINES: usize = 20;

/// Longest output line kept, in bytes; the rest of a longer line is dropped.
pub const OUTPUT_LINE_BYTES_MAX: usize = 400;

/// Most bytes of output a record holds: [`OUTPUT_TAIL_LINES`] full lines.
pub const OUTPUT_TAIL_BYTES_MAX: usize = OUTPUT_TAIL_LINES * OUTPUT_LINE_BYTES_MAX;

// A record (path, reason, the output tail) must fit what the store reads back.
const _: () = assert!(OUTPUT_TAIL_BYTES_MAX * 4 <= store::ACTIVATION_BYTES_MAX);

/// How long the output readers may outlive the apply command (a background child holding
/// its pipes open) before its process group is killed.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Longest sleep of the activation loop: it looks again at least this often, so a clock
/// change or a missed wake-up costs at most this much delay.
const RECHECK: Duration = Duration::from_secs(60);

/// Name of the per-channel symlink to the active version.
pub const CURRENT: &str = "current";

pub use store::{ActivationRecord, Outcome};

/// Why an activation step failed.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Writing the tree failed.
    #[error(transparent)]
    Export(#[from] release::ExportError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The channel name cannot be a directory name (the manifest gate should have refused it).
    #[error("channel {0:?} cannot be installed")]
    BadChannel(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ActivateError + '_ {
    move |source| ActivateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The name of a version's directory.
pub fn version_dir_name(version: u64, id: &ReleaseId) -> String {
    format!("{version}-{}", &id.to_hex()[..12])
}

/// The version a directory name stands for, if it is one.
fn version_of_dir_name(name: &str) -> Option<u64> {
    let (version, id) = name.split_once('-')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| version.parse().ok())
        .flatten()
}

/// The directory of `channel` under `target`: `/` becomes `+`, which channel names never
/// contain, so the mapping is one to one and the result is a single path component.
pub fn channel_dir(target: &Path, channel: &str) -> Result<PathBuf, ActivateError> {
    if !protocol::manifest::is_valid_channel(channel) {
        return Err(ActivateError::BadChannel(channel.to_owned()));
    }
    Ok(target.join(channel.replace('/', "+")))
}

fn sync_dir(dir: &Path) -> Result<(), ActivateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Removes a tree, making its directories writable first (a release may ship read-only
/// directories, which `remove_dir_all` cannot empty without privileges).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    fs::remove_dir(path)
}

/// Step 1: writes the release into its version directory under `channel_dir`, unless a
/// complete one is there already. Returns the directory.
pub fn materialise(
    store: &Store,
    manifest: &Manifest,
    id: &ReleaseId,
    channel_dir: &Path,
) -> Result<PathBuf, ActivateError> {
    fs::create_dir_all(channel_dir).map_err(io_at(channel_dir))?;
    let name = version_dir_name(manifest.version, id);
    let dir = channel_dir.join(&name);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => return Ok(dir),
        Ok(_) => fs::remove_file(&dir).map_err(io_at(&dir))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&dir)(e)),
    }
    let staging = channel_dir.join(format!(".staging-{name}"));
    match remove_tree(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&staging)(e)),
    }
    release::export(store, manifest, &staging)?;
    // Files were fsynced by the export; their directory entries need their directories'.
    for entry in &manifest.entries {
        if let protocol::EntryKind::Dir { .. } = entry.kind {
            sync_dir(&staging.join(&entry.path))?;
        }
    }
    sync_dir(&staging)?;
    fs::rename(&staging, &dir).map_err(io_at(&dir))?;
    sync_dir(channel_dir)?;
    Ok(dir)
}

/// Step 2: points `current` in `channel_dir` at `name` in one rename, or removes it.
pub fn switch_current(channel_dir: &Path, name: Option<&str>) -> Result<(), ActivateError> {
    let link = channel_dir.join(CURRENT);
    match name {
        Some(name) => {
            let tmp = channel_dir.join(".current.tmp");
            match fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&tmp)(e)),
            }
            std::os::unix::fs::symlink(name, &tmp).map_err(io_at(&tmp))?;
            fs::rename(&tmp, &link).map_err(io_at(&link))?;
        }
        None => match fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&link)(e)),
        },
    }
    sync_dir(channel_dir)
}

/// The version directory `current` points at, if any.
pub fn current_of(channel_dir: &Path) -> Option<String> {
    fs::read_link(channel_dir.join(CURRENT))
        .ok()
        .and_then(|t| t.to_str().map(str::to_owned))
}

/// Step 5: removes version directories of `channel_dir` beyond the `keep` newest, never
/// those in `protect`; also leftover staging directories.
pub fn prune(channel_dir: &Path, keep: usize, protect: &[&str]) -> Result<(), ActivateError> {
    let mut versions: Vec<(u64, String)> = Vec::new();
    for entry in fs::read_dir(channel_dir).map_err(io_at(channel_dir))? {
        let entry = entry.map_err(io_at(channel_dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(".staging-") {
            let path = entry.path();
            remove_tree(&path).map_err(io_at(&path))?;
        } else if let Some(v) = version_of_dir_name(&name) {
            versions.push((v, name));
        }
    }
    versions.sort_unstable_by(|a, b| b.cmp(a));
    for (_, name) in versions.into_iter().skip(keep) {
        if protect.contains(&name.as_str()) {
            continue;
        }
        let path = channel_dir.join(&name);
        tracing::info!(dir = %path.display(), "removing an old installed version");
        remove_tree(&path).map_err(io_at(&path))?;
    }
    Ok(())
}

/// The last [`OUTPUT_TAIL_LINES`] lines of a command's output, each cut at
/// [`OUTPUT_LINE_BYTES_MAX`] bytes: memory stays bounded whatever the command prints.
#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    fn push(&mut self, line: &[u8]) {
        let line = &line[..line.len().min(OUTPUT_LINE_BYTES_MAX)];
        let text = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_owned();
        if self.lines.len() == OUTPUT_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(text);
    }
}

/// Reads `pipe` to its end into `tail`, line by line, holding at most one bounded line.
async fn read_lines<R: tokio::io::AsyncRead + Unpin>(mut pipe: R, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                lock(&tail).push(&line);
                line.clear();
            } else if line.len() < OUTPUT_LINE_BYTES_MAX {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        lock(&tail).push(&line);
    }
}

/// How the apply command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    /// `None` on success, else what went wrong.
    pub failure: Option<String>,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Last lines of output.
    pub output: Vec<String>,
}

/// Step 3: runs `command` with `dir` appended, the `env` variables, and `timeout`.
pub async fn run_apply(
    command: &[String],
    dir: &Path,
    env: &[(&str, String)],
    timeout: Duration,
) -> ApplyResult {
    run_command("apply command", command, dir, env, timeout).await
}

/// Runs `command` (`what` it is, for the messages) with `dir` appended, the `env`
/// variables, in `dir`, in its own process group, killed with the group past `timeout`.
async fn run_command(
    what: &str,
    command: &[String],
    dir: &Path,
    env: &[(&str, String)],
    timeout: Duration,
) -> ApplyResult {
    let Some((program, args)) = command.split_first() else {
        return ApplyResult {
            failure: None,
            exit_code: None,
            output: Vec::new(),
        };
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ApplyResult {
                failure: Some(format!("cannot start {program}: {e}")),
                exit_code: None,
                output: Vec::new(),
            };
        }
    };
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let kill_group = || {
        if let Some(pid) = group {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(read_lines(out, tail.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(read_lines(err, tail.clone()));
    }
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let timed_out = status.is_err();
    if timed_out {
        kill_group();
        let _ = child.wait().await;
    }
    // Let the readers drain what the command wrote; a background child that keeps the pipes
    // open is killed with the group.
    if tokio::time::timeout(OUTPUT_GRACE, async {
        while readers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        kill_group();
        readers.abort_all();
    }
    let output: Vec<String> = lock(&tail).lines.iter().cloned().collect();
    match status {
        Err(_) => ApplyResult {
            failure: Some(format!(
                "{what} timed out after {} s and was killed",
                timeout.as_secs()
            )),
            exit_code: None,
            output,
        },
        Ok(Err(e)) => ApplyResult {
            failure: Some(format!("waiting for the {what}: {e}")),
            exit_code: None,
            output,
        },
        Ok(Ok(status)) if status.success() => ApplyResult {
            failure: None,
            exit_code: Some(0),
            output,
        },
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            let failure = match (status.code(), status.signal()) {
                (Some(code), _) => format!("{what} exited with status {code}"),
                (None, Some(sig)) => format!("{what} was killed by signal {sig}"),
                (None, None) => format!("{what} failed: {status}"),
            };
            ApplyResult {
                failure: Some(failure),
                exit_code: status.code(),
                output,
            }
        }
    }
}

/// The health check of `[install]` ([`Installer::check_health`]).
#[derive(Debug, Clone)]
struct HealthCheck {
    command: Vec<String>,
    timeout: Duration,
    retries: u32,
    interval: Duration,
}

/// Runs the health check with `dir` and `env` (plus `P2PD_CHECK_TRY`, from 1) until it
/// passes, at most 1 + `retries` times, `interval` apart. The last run's result.
async fn check_health(check: &HealthCheck, dir: &Path, env: &[(&str, String)]) -> ApplyResult {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut env = env.to_vec();
        env.push(("P2PD_CHECK_TRY", tries.to_string()));
        let result = run_command("health check", &check.command, dir, &env, check.timeout).await;
        if result.failure.is_none() || tries > check.retries {
            return ApplyResult {
                failure: result.failure.map(|f| {
                    format!(
                        "{f} (run {tries} time{})",
                        if tries == 1 { "" } else { "s" }
                    )
                }),
                ..result
            };
        }
        tokio::time::sleep(check.interval).await;
    }
}

/// Installs completed releases; see the module docs.
pub struct Installer {
    target: PathBuf,
    apply: Vec<String>,
    timeout: Duration,
    check: Option<HealthCheck>,
    keep: usize,
    /// The release being activated now.
    busy: Mutex<Option<ReleaseId>>,
    /// Held while activating or rolling back: one change of `current` at a time.
    work: tokio::sync::Mutex<()>,
}

/// Why a rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// Nothing of the channel is installed here.
    #[error("no version of {0} is installed on this node")]
    NothingInstalled(String),
    /// The version asked for is not below the one installed.
    #[error("{channel} v{installed} is installed; v{to} is not older")]
    NotOlder {
        /// The channel.
        channel: String,
        /// The version installed.
        installed: u64,
        /// The version asked for.
        to: u64,
    },
    /// No older version to go back to is installed or stored here.
    #[error("{0}")]
    NoEarlier(String),
    /// Activation failed.
    #[error(transparent)]
    Activate(#[from] ActivateError),
}

/// Where a release stands with activation, for `p2pctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    /// Not complete yet.
    NotReady,
    /// Complete, and the install windows are open: it is next in line.
    Due,
    /// Complete; waiting for the install windows (`opens`: when they next open).
    Waiting {
        /// Next opening (`None`: not within the search horizon).
        opens: Option<jiff::Timestamp>,
    },
    /// Being activated now.
    Installing,
    /// A newer version of the channel was activated (or is waiting) instead.
    Superseded,
    /// Complete, and held from installing by an exception (`p2pctl hold`).
    Held(store::holds::InstallHold),
    /// The release's target leaves this node out (the selector, in words).
    NotTargeted(String),
    /// Complete, waiting on the rollout: a requirement, an earlier ring's gate, a halt.
    Blocked(String),
    /// Activated: see the record.
    Done(ActivationRecord),
}

impl Installer {
    /// An installer for `[install]`, or `None` when no target is set.
    pub fn new(section: &InstallSection) -> Option<Self> {
        Some(Self {
            target: section.target.clone()?,
            apply: section.apply.clone(),
            timeout: Duration::from_secs(section.apply_timeout_s),
            check: (!section.check.is_empty()).then(|| HealthCheck {
                command: section.check.clone(),
                timeout: Duration::from_secs(section.check_timeout_s),
                retries: section.check_retries,
                interval: Duration::from_secs(section.check_interval_s),
            }),
            keep: section.keep as usize,
            busy: Mutex::new(None),
            work: tokio::sync::Mutex::new(()),
        })
    }

    /// The target directory.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// For an installed version: the directory its channel's `current` points at now, when
    /// that is another one (an operator switched it by hand).
    pub fn current_elsewhere(&self, record: &ActivationRecord) -> Option<String> {
        let chan_dir = channel_dir(&self.target, &record.channel).ok()?;
        let now = current_of(&chan_dir)?;
        let ours = record.dir.file_name()?.to_str()?;
        (now != ours).then_some(now)
    }

    /// Where `release` stands, given the store's records, the install holds in force and
    /// what `view` gathered of the rollout. Blocking (store IO for ring gates).
    pub fn state_of(
        &self,
        net: &Net,
        store: &Store,
        view: &crate::rollout::View,
        release: &net::Release,
        records: &HashMap<ReleaseId, ActivationRecord>,
        holds: &[store::holds::InstallHold],
    ) -> InstallState {
        if let Some(r) = records.get(&release.id) {
            return InstallState::Done(r.clone());
        }
        if *lock(&self.busy) == Some(release.id) {
            return InstallState::Installing;
        }
        let not_targeted = || InstallState::NotTargeted(release.rollout.target.to_string());
        match *lock(&release.state) {
            ReleaseState::Complete => {}
            ReleaseState::Superseded(_) => return InstallState::Superseded,
            _ if !view.targeted(&release.rollout) => return not_targeted(),
            _ => return InstallState::NotReady,
        }
        // Only the newest complete version of a channel is installed, whatever the order the
        // downloads finished in (scheduler::versions), and never one older than installed.
        let newer = records
            .values()
            .any(|r| r.channel == release.channel && r.version > release.version)
            || scheduler::versions::to_install(&net.registry.versions_of(&release.channel))
                != Some(release.version);
        if newer {
            return InstallState::Superseded;
        }
        let hold = store::holds::covering(holds, &release.id, &release.channel);
        match view.verdict(net, store, release, hold.is_some(), net::now_unix_s()) {
            Verdict::Go => {}
            Verdict::NotTargeted => return not_targeted(),
            Verdict::Held => {
                if let Some(h) = hold {
                    return InstallState::Held(h.clone());
                }
            }
            blocked => {
                return InstallState::Blocked(blocked.reason(&release.rollout).unwrap_or_default());
            }
        }
        match net.gates.install_state(release, jiff::Timestamp::now()) {
            WindowState::Open { .. } => InstallState::Due,
            WindowState::Closed { opens } => InstallState::Waiting { opens },
        }
    }

    /// After a failed health check: switches `current` of `chan_dir` back to version
    /// directory `prev` and runs the apply command for it again (`P2PD_ROLLBACK=1`, the
    /// failed version's directory `failed` as the previous one). What it came to, for the
    /// failure's reason.
    async fn apply_again(
        &self,
        chan_dir: &Path,
        prev: &str,
        channel: &str,
        failed: &Path,
        records: &HashMap<ReleaseId, ActivationRecord>,
    ) -> Result<String, ActivateError> {
        {
            let (chan_dir, back) = (chan_dir.to_path_buf(), prev.to_owned());
            blocking(move || switch_current(&chan_dir, Some(&back))).await?;
        }
        let prev_dir = chan_dir.join(prev);
        let prev_id = records
            .iter()
            .find(|(_, r)| r.dir.file_name() == Some(std::ffi::OsStr::new(prev)))
            .map(|(id, _)| id.to_hex())
            .unwrap_or_default();
        let mut env = apply_env(
            prev_id,
            channel,
            version_of_dir_name(prev).unwrap_or(0),
            &prev_dir,
            Some(failed),
        );
        env.push(("P2PD_ROLLBACK", "1".to_string()));
        let again = run_apply(&self.apply, &prev_dir, &env, self.timeout).await;
        Ok(match again.failure {
            None => format!("; {prev} applied again"),
            Some(e) => {
                tracing::error!(%channel, previous = %prev, error = %e,
                    "applying the previous version again failed");
                format!("; applying {prev} again failed: {e}")
            }
        })
    }

    /// Activates `id` now (steps 1 to 6), records and returns the outcome.
    pub async fn activate(
        &self,
        store: &Arc<Store>,
        id: ReleaseId,
        records: &HashMap<ReleaseId, ActivationRecord>,
    ) -> Result<ActivationRecord, ActivateError> {
        let _work = self.work.lock().await;
        *lock(&self.busy) = Some(id);
        let result = self.activate_inner(store, id, records).await;
        *lock(&self.busy) = None;
        let record = result?;
        let store = store.clone();
        let r = record.clone();
        blocking(move || Ok(store.record_activation(&id, &r)?)).await?;
        Ok(record)
    }

    async fn activate_inner(
        &self,
        store: &Arc<Store>,
        id: ReleaseId,
        records: &HashMap<ReleaseId, ActivationRecord>,
    ) -> Result<ActivationRecord, ActivateError> {
        let manifest = {
            let store = store.clone();
            blocking(move || Ok(store.manifest(&id)?))
                .await?
                .ok_or_else(|| {
                    ActivateError::Store(store::StoreError::Damaged(format!(
                        "release {id} is not in the store"
                    )))
                })?
        };
        let channel = manifest.channel.clone();
        let version = manifest.version;
        let chan_dir = channel_dir(&self.target, &channel)?;
        let name = version_dir_name(version, &id);
        // The version to roll back to: the highest installed one of the channel whose
        // directory is still there.
        let installed = records
            .values()
            .filter(|r| {
                r.channel == channel && r.version < version && r.outcome == Outcome::Installed
            })
            .max_by_key(|r| r.version)
            .and_then(|r| r.dir.file_name()?.to_str().map(str::to_owned));
        // What `current` really points at wins: an operator who switched it by hand (to an
        // older version, say) gets that one back if this install fails, and it is never
        // pruned; the replacement is logged and audited.
        let found = current_of(&chan_dir).filter(|n| chan_dir.join(n).is_dir());
        if let Some(found) = found.as_ref().filter(|f| Some(*f) != installed.as_ref()) {
            tracing::warn!(%channel, current = %found,
                expected = installed.as_deref().unwrap_or("nothing"), version,
                "current was switched by hand; this install replaces it");
            let event = store::audit::AuditEvent::CurrentReplaced {
                channel: channel.clone(),
                found: found.clone(),
                expected: installed.clone().unwrap_or_default(),
                version,
            };
            let store = store.clone();
            blocking(move || Ok(store.append_audit(event)?)).await?;
        }
        let previous = found.or(installed).filter(|n| chan_dir.join(n).is_dir());

        tracing::info!(release = %id, %channel, version, "installing");
        let dir = {
            let store = store.clone();
            let chan_dir = chan_dir.clone();
            blocking(move || materialise(&store, &manifest, &id, &chan_dir)).await?
        };
        {
            let chan_dir = chan_dir.clone();
            let name = name.clone();
            blocking(move || switch_current(&chan_dir, Some(&name))).await?;
        }
        let env = apply_env(
            id.to_hex(),
            &channel,
            version,
            &dir,
            previous.as_ref().map(|p| chan_dir.join(p)).as_deref(),
        );
        let mut applied = run_apply(&self.apply, &dir, &env, self.timeout).await;
        let mut rollback_note = String::new();
        if let (None, Some(check)) = (&applied.failure, &self.check) {
            let checked = check_health(check, &dir, &env).await;
            if let Some(reason) = &checked.failure {
                tracing::warn!(release = %id, %channel, version, %reason,
                    "health check failed; rolling back");
                // The new version was applied: the previous one is applied again once
                // `current` points back at it.
                if let Some(prev) = previous.as_ref().filter(|_| !self.apply.is_empty()) {
                    rollback_note = self
                        .apply_again(&chan_dir, prev, &channel, &dir, records)
                        .await?;
                }
                applied = ApplyResult {
                    failure: Some(format!("health check failed: {reason}")),
                    ..checked
                };
            }
        }
        let outcome = match applied.failure {
            None => Outcome::Installed,
            Some(reason) => {
                let chan_dir = chan_dir.clone();
                let back = previous.clone();
                blocking(move || switch_current(&chan_dir, back.as_deref())).await?;
                tracing::warn!(release = %id, %channel, version, %reason,
                    rolled_back_to = previous.as_deref().unwrap_or("nothing"), "install failed");
                Outcome::Failed {
                    reason: reason + &rollback_note,
                    exit_code: applied.exit_code,
                    output: applied.output,
                    rolled_back_to: previous.clone(),
                }
            }
        };
        if outcome == Outcome::Installed {
            tracing::info!(release = %id, %channel, version, dir = %dir.display(), "installed");
        }
        let current = current_of(&chan_dir);
        let keep = self.keep;
        {
            // Pruning is housekeeping: a failure is logged and the outcome stands.
            let chan_dir = chan_dir.clone();
            let protect: Vec<String> = [current, previous.clone()].into_iter().flatten().collect();
            let pruned = blocking(move || {
                let protect: Vec<&str> = protect.iter().map(String::as_str).collect();
                prune(&chan_dir, keep, &protect)
            })
            .await;
            if let Err(e) = pruned {
                tracing::warn!(error = %e, "cannot remove old installed versions");
            }
        }
        Ok(ActivationRecord {
            channel,
            version,
            dir,
            at_unix_s: net::now_unix_s(),
            previous,
            outcome,
        })
    }
}

impl Installer {
    /// Rolls `channel` back on this node: `current` switches from the newest installed
    /// version to `to` (or, without one, the installed version before it), the apply
    /// command runs for that version (`P2PD_ROLLBACK=1`), and the version left is recorded
    /// as rolled back ([`Outcome::RolledBack`], audited): it is not installed again, a newer
    /// one is. The version gone back to is taken from its directory when it is still there,
    /// else written again from the store. Returns the record of the version left.
    pub async fn rollback(
        &self,
        net: &Net,
        store: &Arc<Store>,
        channel: &str,
        to: Option<u64>,
        by: store::RollbackBy,
        reason: &str,
    ) -> Result<ActivationRecord, RollbackError> {
        let _work = self.work.lock().await;
        let records = {
            let store = store.clone();
            blocking(move || records(&store)).await?
        };
        let installed =
            |r: &&ActivationRecord| r.channel == channel && r.outcome == Outcome::Installed;
        let Some((&from_id, from)) = records
            .iter()
            .filter(|(_, r)| installed(r))
            .max_by_key(|(_, r)| r.version)
        else {
            return Err(RollbackError::NothingInstalled(channel.to_owned()));
        };
        if let Some(v) = to.filter(|&v| v >= from.version) {
            return Err(RollbackError::NotOlder {
                channel: channel.to_owned(),
                installed: from.version,
                to: v,
            });
        }
        let chan_dir = channel_dir(&self.target, channel)?;
        // The version to go back to: installed here before (its directory still there, or
        // the release still stored), else any complete release of that version stored.
        let earlier = records
            .iter()
            .filter(|(_, r)| installed(r) && r.version < from.version)
            .filter(|(_, r)| to.is_none_or(|v| r.version == v))
            .max_by_key(|(_, r)| r.version)
            .map(|(id, r)| (*id, r.version));
        let stored = || {
            let v = to?;
            net.releases()
                .into_iter()
                .find(|r| {
                    r.channel == channel && r.version == v && r.state() == ReleaseState::Complete
                })
                .map(|r| (r.id, v))
        };
        let Some((to_id, to_version)) = earlier.or_else(stored) else {
            return Err(RollbackError::NoEarlier(match to {
                Some(v) => format!("{channel} v{v} is neither installed nor stored on this node"),
                None => format!(
                    "no version of {channel} older than v{} was installed on this node",
                    from.version
                ),
            }));
        };
        let manifest = {
            let store = store.clone();
            blocking(move || Ok(store.manifest(&to_id)?)).await?
        };
        let name = version_dir_name(to_version, &to_id);
        let dir = match (chan_dir.join(&name).is_dir(), manifest) {
            (true, _) => chan_dir.join(&name),
            (false, Some(manifest)) => {
                let (store, chan_dir) = (store.clone(), chan_dir.clone());
                blocking(move || materialise(&store, &manifest, &to_id, &chan_dir)).await?
            }
            (false, None) => {
                return Err(RollbackError::NoEarlier(format!(
                    "{channel} v{to_version}: its directory was pruned and the release is no longer stored"
                )));
            }
        };
        tracing::warn!(%channel, from = from.version, to = to_version, ?by, %reason, "rolling back");
        {
            let (chan_dir, name) = (chan_dir.clone(), name.clone());
            blocking(move || switch_current(&chan_dir, Some(&name))).await?;
        }
        let mut env = apply_env(to_id.to_hex(), channel, to_version, &dir, Some(&from.dir));
        env.push(("P2PD_ROLLBACK", "1".to_string()));
        let applied = run_apply(&self.apply, &dir, &env, self.timeout).await;
        let mut why = reason.to_owned();
        if let Some(e) = &applied.failure {
            tracing::error!(%channel, to = to_version, error = %e, "applying the earlier version failed");
            why = format!("{why}; applying v{to_version} again failed: {e}");
        }
        let now = net::now_unix_s();
        let left = ActivationRecord {
            at_unix_s: now,
            outcome: Outcome::RolledBack {
                by,
                reason: why,
                to: name.clone(),
            },
            ..from.clone()
        };
        let back = records.get(&to_id).cloned().map_or_else(
            || ActivationRecord {
                channel: channel.to_owned(),
                version: to_version,
                dir: dir.clone(),
                at_unix_s: now,
                previous: from
                    .dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned),
                outcome: Outcome::Installed,
            },
            |mut r| {
                r.at_unix_s = now;
                r
            },
        );
        {
            let (store, left, back) = (store.clone(), left.clone(), back);
            blocking(move || {
                store.record_activation(&to_id, &back)?;
                Ok(store.record_activation(&from_id, &left)?)
            })
            .await?;
        }
        Ok(left)
    }
}

/// Carries out the fleet orders' rollbacks that take this node: a channel whose newest
/// installed version is one a rollback names goes back to its version. Idempotent: once
/// done, the version is recorded as rolled back and nothing is left to do.
async fn roll_back_as_ordered(net: &Arc<Net>, store: &Arc<Store>, installer: &Installer) {
    let orders = net.orders();
    if orders.rollbacks.is_empty() {
        return;
    }
    let records = {
        let store = store.clone();
        match blocking(move || records(&store)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the activation records");
                return;
            }
        }
    };
    let here = crate::rollout::Here::of(net);
    let place = here.place();
    for rb in orders.rollbacks.iter().filter(|r| r.target.matches(&place)) {
        let newest = records
            .values()
            .filter(|r| r.channel == rb.channel && r.outcome == Outcome::Installed)
            .map(|r| r.version)
            .max();
        if !newest.is_some_and(|v| v > rb.to_version && v <= rb.through_version) {
            continue;
        }
        match installer
            .rollback(
                net,
                store,
                &rb.channel,
                Some(rb.to_version),
                store::RollbackBy::Fleet,
                &rb.reason,
            )
            .await
        {
            Ok(r) => tracing::info!(channel = %rb.channel, from = r.version, to = rb.to_version,
                "rolled back as the fleet orders say"),
            Err(e) => tracing::error!(channel = %rb.channel, to = rb.to_version, error = %e,
                "the fleet orders roll this channel back, and it cannot be done here"),
        }
    }
}

/// The `P2PD_*` variables the apply command and the health check run with.
fn apply_env(
    release: String,
    channel: &str,
    version: u64,
    dir: &Path,
    previous: Option<&Path>,
) -> Vec<(&'static str, String)> {
    vec![
        ("P2PD_RELEASE", release),
        ("P2PD_CHANNEL", channel.to_owned()),
        ("P2PD_VERSION", version.to_string()),
        ("P2PD_RELEASE_DIR", dir.display().to_string()),
        (
            "P2PD_PREVIOUS_DIR",
            previous
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
    ]
}

/// Runs blocking filesystem or store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ActivateError> + Send + 'static,
) -> Result<T, ActivateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ActivateError::Io {
            path: PathBuf::from("(activation task)"),
            source: io::Error::other(e),
        })?
}

/// Records by release, read from the store.
fn records(store: &Store) -> Result<HashMap<ReleaseId, ActivationRecord>, ActivateError> {
    Ok(store.activations()?.into_iter().collect())
}

/// The activation loop: activates what is due, then sleeps until a release completes, an
/// install window opens, or [`RECHECK`] passes.
pub async fn run(net: Arc<Net>, store: Arc<Store>, installer: Arc<Installer>) {
    let mut shutdown = net.shutdown.clone();
    // Releases tried in this run whose outcome could not be recorded (the store refused the
    // write): not tried again until a restart, so a full disk cannot make the apply command
    // run over and over.
    let mut unrecorded: HashSet<ReleaseId> = HashSet::new();
    // What the rollout said of each release at the last look: a change is logged.
    let mut said: HashMap<ReleaseId, &'static str> = HashMap::new();
    let mut orders = net.watch_orders();
    loop {
        let mut wake_in = RECHECK;
        roll_back_as_ordered(&net, &store, &installer).await;
        match due(&net, &store, &unrecorded, &mut said).await {
            Ok((Some(id), looked)) => {
                if let Err(e) = installer.activate(&store, id, &looked.records).await {
                    // A failure outside the apply command (disk full, store damage) is
                    // recorded too, so it shows in status and is not retried.
                    tracing::error!(release = %id, error = %e, "install failed");
                    let saved = {
                        let (store, target) = (store.clone(), installer.target.clone());
                        let reason = e.to_string();
                        blocking(move || {
                            let record = failed_before_apply(&store, &target, id, reason);
                            Ok(store.record_activation(&id, &record)?)
                        })
                        .await
                    };
                    if let Err(e) = saved {
                        tracing::error!(release = %id, error = %e,
                            "cannot record the failure; not trying again until restart");
                        unrecorded.insert(id);
                    }
                }
                continue;
            }
            Ok((None, looked)) => {
                if looked.ring_wait || looked.halt_wait {
                    // A member reads the fleet's ring figures from its aggregator first.
                    net::aggregate::refresh_ledger(&net).await;
                    let again = if looked.ring_wait {
                        crate::rollout::RING_RECHECK
                    } else {
                        crate::rollout::HALT_RECHECK
                    };
                    wake_in = wake_in.min(again);
                }
                if let Some(next) = looked.next_open {
                    let secs = next
                        .duration_since(jiff::Timestamp::now())
                        .as_secs_f64()
                        .max(0.0);
                    wake_in = wake_in.min(Duration::from_secs_f64(secs + 0.05));
                }
            }
            Err(e) => tracing::error!(error = %e, "activation check failed"),
        }
        tokio::select! {
            () = net.registry.completed().notified() => {}
            () = tokio::time::sleep(wake_in) => {}
            _ = orders.changed() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// The record of an activation that failed outside the apply command (blocking IO).
fn failed_before_apply(
    store: &Store,
    target: &Path,
    id: ReleaseId,
    reason: String,
) -> ActivationRecord {
    let (channel, version) = store
        .summary(&id)
        .ok()
        .flatten()
        .map(|s| (s.channel, s.version))
        .unwrap_or_default();
    let dir = channel_dir(target, &channel)
        .map(|d| d.join(version_dir_name(version, &id)))
        .unwrap_or_default();
    let rolled_back_to = channel_dir(target, &channel)
        .ok()
        .and_then(|d| current_of(&d));
    ActivationRecord {
        channel,
        version,
        dir,
        at_unix_s: net::now_unix_s(),
        previous: rolled_back_to.clone(),
        outcome: Outcome::Failed {
            reason,
            exit_code: None,
            output: Vec::new(),
            rolled_back_to,
        },
    }
}

/// The activation records, after dropping those of installs that failed before their
/// release was resumed by a fleet order ([`protocol::orders::Orders::resumed_at`]): those
/// are tried once more (the new record is later than the resume, so once). Blocking.
fn retry_resumed(
    net: &Net,
    store: &Store,
) -> Result<HashMap<ReleaseId, ActivationRecord>, ActivateError> {
    let mut records = records(store)?;
    let orders = net.orders();
    let again: Vec<(ReleaseId, i64)> = records
        .iter()
        .filter(|(_, r)| matches!(r.outcome, Outcome::Failed { .. }))
        .filter_map(|(id, r)| {
            orders
                .resumed_at(id)
                .filter(|&at| r.at_unix_s < at)
                .map(|at| (*id, at))
        })
        .collect();
    for (id, at) in again {
        if store.retry_failed_install(&id, at)? {
            tracing::info!(release = %id, resumed_at = at,
                "the release was resumed after its install failed here: trying once more");
            records.remove(&id);
        }
    }
    Ok(records)
}

/// What [`due`] found besides the release to activate.
struct Looked {
    /// The records it read.
    records: HashMap<ReleaseId, ActivationRecord>,
    /// When the next install window of a waiting release opens, or a hold on one ends, or
    /// a ring's soak.
    next_open: Option<jiff::Timestamp>,
    /// Whether a release waits for another ring's figures or soaks (they change with the
    /// fleet view, which wakes nothing: read them again and look again within
    /// [`crate::rollout::RING_RECHECK`]).
    ring_wait: bool,
    /// Whether a release's rollout is halted (read again within
    /// [`crate::rollout::HALT_RECHECK`]).
    halt_wait: bool,
}

/// The release to activate now, if any (with the records read), and otherwise when the
/// next install window of a waiting release opens. Releases in `skip` are passed over.
async fn due(
    net: &Arc<Net>,
    store: &Arc<Store>,
    skip: &HashSet<ReleaseId>,
    said: &mut HashMap<ReleaseId, &'static str>,
) -> Result<(Option<ReleaseId>, Looked), ActivateError> {
    let (records, holds) = {
        let store = store.clone();
        let net = net.clone();
        blocking(move || {
            let now = net::now_unix_s();
            let local = store.holds(now)?;
            Ok((
                retry_resumed(&net, &store)?,
                crate::rollout::holds_in_force(&net, local, now),
            ))
        })
        .await?
    };
    let mut handled: HashMap<&str, u64> = HashMap::new();
    for r in records.values() {
        let v = handled.entry(r.channel.as_str()).or_insert(0);
        *v = (*v).max(r.version);
    }
    // Of each channel, the version to install (scheduler::versions: the newest complete
    // version that no newer known version supersedes), if newer than any activated or failed.
    let releases = net.releases();
    said.retain(|id, _| releases.iter().any(|r| r.id == *id));
    let mut versions: HashMap<&str, Vec<(u64, scheduler::versions::Standing)>> = HashMap::new();
    for r in &releases {
        versions
            .entry(r.channel.as_str())
            .or_default()
            .push((r.version, r.standing()));
    }
    let mut newest: HashMap<&str, Arc<net::Release>> = HashMap::new();
    for r in &releases {
        let pick = scheduler::versions::to_install(&versions[r.channel.as_str()]);
        if pick != Some(r.version) || records.contains_key(&r.id) || skip.contains(&r.id) {
            continue;
        }
        if handled
            .get(r.channel.as_str())
            .is_some_and(|&v| v >= r.version)
        {
            continue;
        }
        newest.insert(r.channel.as_str(), r.clone());
    }
    let mut candidates: Vec<Arc<net::Release>> = newest.into_values().collect();
    let policy = net.gates.windows().policy;
    candidates.sort_by(|a, b| policy.compare(&a.urgency, &b.urgency));
    let now = jiff::Timestamp::now();
    let mut next: Option<jiff::Timestamp> = None;
    let mut ring_wait = false;
    let mut halt_wait = false;
    let view = crate::rollout::View::new(net, &records);
    let soon = |at: i64, next: &mut Option<jiff::Timestamp>| {
        if let Ok(t) = jiff::Timestamp::from_second(at) {
            *next = Some(next.map_or(t, |n| n.min(t)));
        }
    };
    for r in candidates {
        let hold = store::holds::covering(&holds, &r.id, &r.channel);
        let verdict = view.verdict(net, store, &r, hold.is_some(), now.as_second());
        let kind = verdict_kind(&verdict);
        if said.insert(r.id, kind) != Some(kind) {
            tracing::info!(release = %r.id, channel = %r.channel, version = r.version,
                reason = verdict.reason(&r.rollout).as_deref().unwrap_or("none"),
                "rollout: {kind}");
        }
        match verdict {
            Verdict::Go => {}
            // A held release waits for its hold to end (or be lifted, which wakes the loop).
            Verdict::Held => {
                soon(hold.map_or(i64::MAX, |h| h.until_unix_s), &mut next);
                continue;
            }
            // The soak ends at its instant unless news comes first: the figures are read
            // again meanwhile, so a failure in the ring before halts it.
            Verdict::Soaking { until_unix_s, .. } => {
                soon(until_unix_s, &mut next);
                ring_wait = true;
                continue;
            }
            Verdict::RingWaits { .. } => {
                ring_wait = true;
                continue;
            }
            // A halt ends only by what an operator does: its figures are read again at a
            // slower pace, so that what the status says stays current.
            Verdict::Halted { .. } => {
                halt_wait = true;
                continue;
            }
            // A requirement is met by an install here, which wakes the loop; newer fleet
            // orders wake it too.
            Verdict::NotTargeted | Verdict::Requires(_) | Verdict::Ordered(_) => continue,
        }
        match net.gates.install_state(&r, now) {
            WindowState::Open { .. } => {
                return Ok((
                    Some(r.id),
                    Looked {
                        records,
                        next_open: None,
                        ring_wait,
                        halt_wait,
                    },
                ));
            }
            WindowState::Closed { opens: Some(o) } => {
                next = Some(next.map_or(o, |n| n.min(o)));
            }
            WindowState::Closed { opens: None } => {}
        }
    }
    Ok((
        None,
        Looked {
            records,
            next_open: next,
            ring_wait,
            halt_wait,
        },
    ))
}

/// What a verdict says, in a word or two, for the log of its changes.
fn verdict_kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Go => "go",
        Verdict::NotTargeted => "not targeted",
        Verdict::Ordered(_) => "stopped by a fleet order",
        Verdict::Held => "held",
        Verdict::Requires(_) => "waits for a requirement",
        Verdict::RingWaits { .. } => "waits for a ring",
        Verdict::Soaking { .. } => "waits for a ring's soak",
        Verdict::Halted { .. } => "halted",
    }
}

/// Locks `m`, taking over a lock a panicking holder poisoned (the guarded maps stay valid).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

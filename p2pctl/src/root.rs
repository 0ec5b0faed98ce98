//! `p2pctl root`: make, sign, roll and check the fleet root (`protocol::root`) offline, on
//! the machines that hold the root keys. No daemon is involved: a node takes its first root
//! with `p2pd init --root`, and later ones from its peers.

use crate::{Failure, fail, print_json};
use api::cli::ExitCode;
use clap::Subcommand;
use protocol::PublisherKey;
use protocol::root::{
    ApprovalRule, NamedKey, ROOT_FORMAT_VERSION, Root, RootError, ScopedKey, SignedRoot,
    check_expiry, verify_update,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use store::identity;

#[derive(Subcommand)]
pub(crate) enum RootAction {
    /// Write a fleet's first root (version 1) to a new file, signed by the `--sign` keys
    /// given here; the other root key holders add theirs with `p2pctl root sign`. A KEY is
    /// `ed25519:HEX` (as `p2pctl keygen` prints it), bare hex, or a PEM key file whose public
    /// half is taken.
    Init {
        /// The fleet's name (a-z, 0-9, '.', '_', '-'): a root of another fleet is refused.
        #[arg(long)]
        fleet: String,
        /// A root key, NAME=KEY; repeat for each.
        #[arg(long = "root-key", required = true, value_name = "NAME=KEY")]
        root_keys: Vec<String>,
        /// How many root keys must sign the next root (and this one).
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// A fleet CA key, NAME=KEY: it certifies nodes; repeat for each.
        #[arg(long = "ca-key", required = true, value_name = "NAME=KEY")]
        ca_keys: Vec<String>,
        /// A publisher key with the channels it may publish on (each with those under it;
        /// none: every channel): NAME=KEY[@CHANNEL,CHANNEL]; repeat for each.
        #[arg(long = "publisher", value_name = "NAME=KEY[@CHANNELS]")]
        publishers: Vec<String>,
        /// An approver key, NAME=KEY[@CHANNEL,CHANNEL]; repeat for each.
        #[arg(long = "approver", value_name = "NAME=KEY[@CHANNELS]")]
        approvers: Vec<String>,
        /// Signatures a release needs on a channel (and those under it), and in an
        /// emergency: CHANNEL=N[/EMERGENCY]; repeat for each.
        #[arg(long = "approval", value_name = "CHANNEL=N[/E]")]
        approvals: Vec<String>,
        /// An operator key, NAME=KEY: it may sign fleet commands; repeat for each.
        #[arg(long = "operator", value_name = "NAME=KEY")]
        operators: Vec<String>,
        /// How long the root is valid (365d, 26w): roll it with `p2pctl root next` before.
        #[arg(long, default_value = "365d", value_parser = crate::validity)]
        expires: humantime::Duration,
        /// A root key file (PEM) to sign with now; repeat for each.
        #[arg(long = "sign", value_name = "KEY.pem")]
        sign: Vec<PathBuf>,
        /// File to write; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a signature to a root file (replacing one the same key made before).
    Sign {
        /// The root file.
        file: PathBuf,
        /// The key file (PEM): a root key of this root, or of the one before it.
        #[arg(long)]
        key: PathBuf,
    },
    /// Write the next version of a root to edit and sign: version + 1, a new expiry, no
    /// signatures. It is taken by nodes only once the previous root's threshold of its root
    /// keys and its own threshold of its own have signed it.
    Next {
        /// The root now in force.
        file: PathBuf,
        /// How long the new root is valid.
        #[arg(long, default_value = "365d", value_parser = crate::validity)]
        expires: humantime::Duration,
        /// File to write; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a root file and print it: its rules, its signatures against its own threshold
    /// and, with `--trusted`, whether a node holding that root would take it. Exits 4 if it
    /// would be refused.
    Show {
        /// The root file.
        file: PathBuf,
        /// The root nodes hold now (the one before it).
        #[arg(long)]
        trusted: Option<PathBuf>,
    },
    /// Hand signed newer roots to this node (oldest first, each the next version): it takes
    /// each that its predecessor's threshold and its own signed, trusts the newest's
    /// publishers from then on, and the fleet takes them from it within seconds.
    Publish {
        /// The root files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `p2pctl root publish`: newer roots to the daemon, which spreads them.
pub(crate) async fn publish(
    client: &api::client::Client,
    files: &[PathBuf],
    json: bool,
) -> Result<(), Failure> {
    let roots_json = files
        .iter()
        .map(|f| read_root(f).map(|r| r.to_json()))
        .collect::<Result<Vec<_>, _>>()?;
    let req = api::RootsRequest { roots_json };
    let done: api::RootsView = client.call("POST", "/v1/fleet/root", Some(&req)).await?;
    if json {
        crate::print_json(&done);
    } else {
        crate::outln!(
            "fleet {}: root v{} -> v{} taken; it spreads to the fleet from this node",
            done.fleet,
            done.from_version,
            done.to_version
        );
    }
    Ok(())
}

pub(crate) fn root(action: RootAction, json: bool) -> Result<(), Failure> {
    match action {
        RootAction::Init {
            fleet,
            root_keys,
            threshold,
            ca_keys,
            publishers,
            approvers,
            approvals,
            operators,
            expires,
            sign,
            out,
        } => {
            let root = Root {
                format_version: ROOT_FORMAT_VERSION,
                fleet,
                version: 1,
                expires_unix_s: expiry(expires)?,
                root_keys: named_keys(&root_keys)?,
                root_threshold: threshold,
                ca_keys: named_keys(&ca_keys)?,
                publishers: scoped_keys(&publishers)?,
                approvers: scoped_keys(&approvers)?,
                approvals: approvals
                    .iter()
                    .map(|a| approval(a))
                    .collect::<Result<_, _>>()?,
                operators: named_keys(&operators)?,
            };
            root.validate().map_err(refused)?;
            let mut signed = SignedRoot::sign(root, &[]);
            for path in &sign {
                let key = read_key(path)?;
                must_be_root_key(&signed.signed, &key, path)?;
                signed.add_signature(&key);
            }
            write_new(&out, &signed)?;
            report(&out, &signed, None, json)
        }
        RootAction::Sign { file, key } => {
            let mut signed = read_root(&file)?;
            let k = read_key(&key)?;
            signed.add_signature(&k);
            let text = signed.to_json();
            std::fs::write(&file, text)
                .map_err(|e| fail(ExitCode::Failed, format!("{}: {e}", file.display())))?;
            report(&file, &signed, None, json)
        }
        RootAction::Next { file, expires, out } => {
            let now = read_root(&file)?;
            let mut next = now.signed.clone();
            next.version += 1;
            next.expires_unix_s = expiry(expires)?;
            let signed = SignedRoot::sign(next, &[]);
            write_new(&out, &signed)?;
            report(&out, &signed, Some(&now.signed), json)
        }
        RootAction::Publish { .. } => Err(fail(
            ExitCode::Failed,
            "p2pctl root publish is run with the daemon",
        )),
        RootAction::Show { file, trusted } => {
            let signed = read_root(&file)?;
            let trusted = trusted.map(|t| read_root(&t)).transpose()?;
            report(&file, &signed, trusted.as_ref().map(|t| &t.signed), json)?;
            check(&signed, trusted.as_ref().map(|t| &t.signed)).map_err(refused)
        }
    }
}

/// `p2pctl node enroll`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Enrolment {
    /// The node's id (64 hex digits, as `p2pd init` or `p2pd id` print it).
    pub(crate) node: String,
    /// Its site.
    #[arg(long)]
    pub(crate) site: String,
    /// Its site's region.
    #[arg(long)]
    pub(crate) region: String,
    /// A label, KEY=VALUE (role=atm, impact=high): what rollouts select on; repeat.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// How long it is valid (at most a year); renew it before it ends.
    #[arg(long, default_value = "90d", value_parser = crate::validity)]
    pub(crate) ttl: humantime::Duration,
    /// The fleet CA key file (PEM): one of the root's CA keys.
    #[arg(long)]
    pub(crate) ca_key: PathBuf,
    /// The fleet's root (to check the CA key and name the fleet).
    #[arg(long)]
    pub(crate) root: PathBuf,
    /// File to write; never overwritten.
    #[arg(long)]
    pub(crate) out: PathBuf,
}

/// `p2pctl node enroll`: a certificate for a node, signed with a CA key of the root.
pub(crate) fn enroll(e: &Enrolment, json: bool) -> Result<(), Failure> {
    use protocol::cert::{CERT_FORMAT_VERSION, NodeCert, SignedCert};
    let root = read_root(&e.root)?;
    root.verify_first().map_err(refused)?;
    let ca = read_key(&e.ca_key)?;
    let issuer = PublisherKey(ca.verifying_key().to_bytes());
    if !root.signed.is_ca(&issuer) {
        return Err(fail(
            ExitCode::Refused,
            format!(
                "{} is not a CA key of fleet {}'s root v{}",
                e.ca_key.display(),
                root.signed.fleet,
                root.signed.version
            ),
        ));
    }
    let node: protocol::NodeId = e.node.trim().parse().map_err(|_| {
        fail(
            ExitCode::Usage,
            format!("{}: not a node id (64 hex digits)", e.node),
        )
    })?;
    let labels = e
        .labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| fail(ExitCode::Usage, format!("{l:?}: expected KEY=VALUE")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = jiff::Timestamp::now().as_second();
    let cert = SignedCert::sign(
        NodeCert {
            format_version: CERT_FORMAT_VERSION,
            fleet: root.signed.fleet.clone(),
            node,
            site: e.site.clone(),
            region: e.region.clone(),
            labels,
            not_before_unix_s: now,
            expires_unix_s: now.saturating_add(i64::try_from(e.ttl.as_secs()).unwrap_or(i64::MAX)),
            issuer,
        },
        &ca,
    );
    cert.cert
        .validate()
        .map_err(|err| fail(ExitCode::Refused, err.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&e.out)
        .map_err(|err| fail(ExitCode::Failed, format!("{}: {err}", e.out.display())))?;
    f.write_all(cert.to_text().as_bytes())
        .map_err(|err| fail(ExitCode::Failed, format!("{}: {err}", e.out.display())))?;
    let c = &cert.cert;
    if json {
        print_json(&serde_json::json!({
            "file": e.out,
            "node": c.node.to_hex(),
            "fleet": c.fleet,
            "site": c.site,
            "region": c.region,
            "labels": c.labels,
            "expires_unix_s": c.expires_unix_s,
        }));
    } else {
        crate::outln!(
            "wrote {}: node {} in site {} ({}), fleet {}, until {}",
            e.out.display(),
            c.node.short(),
            c.site,
            c.region,
            c.fleet,
            crate::when(c.expires_unix_s.saturating_mul(1000))
        );
        crate::outln!(
            "install it on the node: p2pd cert install --config p2pd.toml {}",
            e.out.display()
        );
    }
    Ok(())
}

/// Whether a node would take `signed`: as a first root, or after `trusted`.
fn check(signed: &SignedRoot, trusted: Option<&Root>) -> Result<(), RootError> {
    match trusted {
        Some(t) => verify_update(t, signed).map(|_| ()),
        None => signed.verify_first().map(|_| ()),
    }?;
    check_expiry(&signed.signed, jiff::Timestamp::now().as_second())
}

/// Prints the root and where its signatures stand.
fn report(
    file: &Path,
    signed: &SignedRoot,
    trusted: Option<&Root>,
    json: bool,
) -> Result<(), Failure> {
    let r = &signed.signed;
    let own = signed.valid_signatures(&r.root_keys);
    let before = trusted.map(|t| {
        (
            t.version,
            signed.valid_signatures(&t.root_keys),
            t.root_threshold,
        )
    });
    let verdict = check(signed, trusted);
    if json {
        print_json(&serde_json::json!({
            "file": file,
            "root": signed,
            "blake3": r.digest_hex(),
            "own_signatures": own,
            "trusted": before.map(|(v, n, t)| serde_json::json!({"version": v, "signatures": n, "threshold": t})),
            "takes": verdict.is_ok(),
            "why_not": verdict.as_ref().err().map(|e| e.to_string()),
        }));
        return Ok(());
    }
    let mut out = String::new();
    let line = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "{}: fleet {} root v{}, expires {}",
            file.display(),
            r.fleet,
            r.version,
            crate::when(r.expires_unix_s.saturating_mul(1000))
        ),
    );
    line(
        &mut out,
        format!(
            "  root keys ({} of {} sign the next root):",
            r.root_threshold,
            r.root_keys.len()
        ),
    );
    for k in &r.root_keys {
        let signed_it = signed.signatures.iter().any(|s| s.key == k.key);
        line(
            &mut out,
            format!(
                "    {:<16} {}{}",
                k.name,
                k.key.to_config_string(),
                if signed_it { "  signed" } else { "" }
            ),
        );
    }
    for (what, keys) in [("CA keys", &r.ca_keys), ("operators", &r.operators)] {
        if keys.is_empty() {
            continue;
        }
        line(&mut out, format!("  {what}:"));
        for k in keys.iter() {
            line(
                &mut out,
                format!("    {:<16} {}", k.name, k.key.to_config_string()),
            );
        }
    }
    for (what, keys) in [("publishers", &r.publishers), ("approvers", &r.approvers)] {
        if keys.is_empty() {
            continue;
        }
        line(&mut out, format!("  {what}:"));
        for k in keys.iter() {
            let scope = if k.channels.is_empty() {
                "every channel".to_string()
            } else {
                k.channels.join(", ")
            };
            line(
                &mut out,
                format!("    {:<16} {}  {scope}", k.name, k.key.to_config_string()),
            );
        }
    }
    for a in &r.approvals {
        line(
            &mut out,
            format!(
                "  releases on {} need {} signatures ({} in an emergency)",
                a.channels, a.threshold, a.emergency_threshold
            ),
        );
    }
    line(
        &mut out,
        format!(
            "  signatures: {own} by its own root keys (needs {})",
            r.root_threshold
        ),
    );
    if let Some((v, n, t)) = before {
        line(
            &mut out,
            format!("  signatures: {n} by v{v}'s root keys (needs {t})"),
        );
    }
    match &verdict {
        Ok(()) => line(&mut out, "  a node would take it".into()),
        Err(e) => line(&mut out, format!("  a node would refuse it: {e}")),
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    Ok(())
}

fn refused(e: RootError) -> Failure {
    fail(ExitCode::Refused, e.to_string())
}

fn expiry(d: humantime::Duration) -> Result<i64, Failure> {
    let secs =
        i64::try_from(d.as_secs()).map_err(|_| fail(ExitCode::Usage, "--expires is too long"))?;
    Ok(jiff::Timestamp::now().as_second().saturating_add(secs))
}

pub(crate) fn read_key(path: &Path) -> Result<ed25519_dalek::SigningKey, Failure> {
    identity::read_key(path).map_err(|e| fail(ExitCode::Failed, e.to_string()))
}

pub(crate) fn read_root(path: &Path) -> Result<SignedRoot, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(ExitCode::Failed, format!("{}: {e}", path.display())))?;
    SignedRoot::from_json(&text)
        .map_err(|e| fail(ExitCode::Refused, format!("{}: {e}", path.display())))
}

fn write_new(path: &Path, signed: &SignedRoot) -> Result<(), Failure> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| fail(ExitCode::Failed, format!("{}: {e}", path.display())))?;
    f.write_all(signed.to_json().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail(ExitCode::Failed, format!("{}: {e}", path.display())))
}

fn must_be_root_key(
    root: &Root,
    key: &ed25519_dalek::SigningKey,
    path: &Path,
) -> Result<(), Failure> {
    let public = PublisherKey(key.verifying_key().to_bytes());
    if root.root_keys.iter().any(|k| k.key == public) {
        Ok(())
    } else {
        Err(fail(
            ExitCode::Refused,
            format!("{} is not one of the root keys", path.display()),
        ))
    }
}

/// `NAME=KEY`, KEY as `ed25519:HEX`, bare hex, or a PEM key file.
fn named_key(text: &str) -> Result<NamedKey, Failure> {
    let (name, key) = text
        .split_once('=')
        .ok_or_else(|| fail(ExitCode::Usage, format!("{text:?}: expected NAME=KEY")))?;
    let key = match PublisherKey::parse_config_string(key) {
        Ok(k) => k,
        Err(_) if Path::new(key).exists() => {
            PublisherKey(read_key(Path::new(key))?.verifying_key().to_bytes())
        }
        Err(_) => {
            return Err(fail(
                ExitCode::Usage,
                format!("{text:?}: {key:?} is neither a key (ed25519:HEX) nor a key file"),
            ));
        }
    };
    Ok(NamedKey {
        name: name.to_owned(),
        key,
    })
}

fn named_keys(list: &[String]) -> Result<Vec<NamedKey>, Failure> {
    list.iter().map(|t| named_key(t)).collect()
}

/// `NAME=KEY[@CHANNEL,CHANNEL]`.
fn scoped_keys(list: &[String]) -> Result<Vec<ScopedKey>, Failure> {
    list.iter()
        .map(|t| {
            let (key, channels) = match t.rsplit_once('@') {
                Some((k, c)) => (k, c.split(',').map(str::to_owned).collect()),
                None => (t.as_str(), Vec::new()),
            };
            let k = named_key(key)?;
            Ok(ScopedKey {
                name: k.name,
                key: k.key,
                channels,
            })
        })
        .collect()
}

/// `CHANNEL=N[/EMERGENCY]`.
fn approval(text: &str) -> Result<ApprovalRule, Failure> {
    let usage = || fail(ExitCode::Usage, format!("{text:?}: expected CHANNEL=N[/E]"));
    let (channels, n) = text.split_once('=').ok_or_else(usage)?;
    let (threshold, emergency) = match n.split_once('/') {
        Some((t, e)) => (t, Some(e)),
        None => (n, None),
    };
    let threshold: u32 = threshold.parse().map_err(|_| usage())?;
    let emergency_threshold = match emergency {
        Some(e) => e.parse().map_err(|_| usage())?,
        None => threshold,
    };
    Ok(ApprovalRule {
        channels: channels.to_owned(),
        threshold,
        emergency_threshold,
    })
}

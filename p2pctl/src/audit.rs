//! `p2pctl audit`: the node's audit log, and checking a saved copy.

use crate::{AuditAction, Failure, fail, parse_since, print_json, when};
use api::cli::ExitCode;
use api::client::Client;
use api::*;
use std::path::PathBuf;

/// Largest audit log copy `audit verify --file` reads: a log grows by a few hundred bytes per
/// event, so this is decades of a busy node.
pub(crate) const AUDIT_COPY_BYTES_MAX: u64 = 1 << 30;

pub(crate) async fn audit(
    client: &Client,
    action: Option<AuditAction>,
    since: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    use store::audit::{AuditLog, verify_sealed};
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
            crate::outln!("{:<6} {:<21} EVENT", "SEQ", "TIME (UTC)");
            for l in &log.entries {
                crate::outln!(
                    "{:<6} {:<21} {}",
                    l.entry.seq,
                    when(l.entry.at_unix_ms),
                    l.entry.event.describe()
                );
            }
            crate::outln!(
                "{} in the log, last hash {}",
                api::cli::count(log.seal.entries, "entry"),
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
                        crate::outln!(
                            "audit log intact: {}, last hash {}",
                            api::cli::count(v.entries, "entry"),
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
                    crate::outln!(
                        "copy intact: {}, last hash {}, sealed by node {} at {}",
                        api::cli::count(i.entries, "entry"),
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

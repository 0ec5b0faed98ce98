//! `p2pctl releases`, `show`, `verify`, `export`: the releases a node holds.

use crate::{Failure, fail, print_json};
use api::cli::{ExitCode, human_bytes};
use api::client::Client;
use api::*;
use std::path::PathBuf;

/// Lists the stored releases.
pub(crate) async fn releases(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let list: Vec<ReleaseView> = client.call("GET", "/v1/releases", none).await?;
    if json {
        print_json(&list);
    } else if list.is_empty() {
        crate::outln!("no releases");
    } else {
        crate::outln!(
            "{:<14} {:<28} {:>8} {:<9} {:>6} {:>10}  {:<20}  EXPIRES",
            "ID",
            "CHANNEL",
            "VERSION",
            "SEVERITY",
            "FILES",
            "SIZE",
            "CREATED"
        );
        for r in list {
            crate::outln!(
                "{:<14} {:<28} {:>8} {:<9} {:>6} {:>10}  {:<20}  {}{}{}",
                &r.id[..12],
                r.channel,
                r.version,
                r.severity,
                r.files,
                human_bytes(r.total_bytes),
                r.created,
                r.expires,
                if r.expired { " EXPIRED" } else { "" },
                r.held
                    .as_ref()
                    .map(|h| format!("  HELD for approval ({} of {})", h.have, h.need))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Shows one release: its manifest and its tree.
pub(crate) async fn show(client: &Client, release: String, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let d: ReleaseDetail = client
        .call("GET", &format!("/v1/releases/{release}"), none)
        .await?;
    if json {
        print_json(&d);
        return Ok(());
    }
    let r = &d.release;
    crate::outln!("release   {}", r.id);
    crate::outln!("channel   {}  version {}", r.channel, r.version);
    let cvss = r
        .cvss
        .map(|c| format!(" (CVSS {c:.1})"))
        .unwrap_or_default();
    let emergency = if r.emergency { ", emergency" } else { "" };
    crate::outln!("severity  {}{cvss}{emergency}", r.severity);
    for w in &r.download_windows {
        crate::outln!("download  only in {w}");
    }
    for w in &r.install_windows {
        crate::outln!("install   only in {w}");
    }
    crate::outln!(
        "created   {}  expires {}{}",
        r.created,
        r.expires,
        if r.expired {
            " (EXPIRED: nodes refuse it; publish a new version)"
        } else {
            ""
        }
    );
    crate::outln!("signed by {}", r.signers.join(", "));
    if let Some(h) = &r.held {
        crate::outln!(
            "HELD      for approval: {} of {} signatures; not sent until approvers sign (p2pctl approve {} --key KEY)",
            h.have,
            h.need,
            r.id
        );
    }
    crate::outln!(
        "content   {}, {}, {} (chunking {})",
        api::cli::count(r.files, "file"),
        human_bytes(r.total_bytes),
        api::cli::count(r.unique_chunks, "chunk"),
        d.chunking
    );
    for e in &d.entries {
        match e.kind.as_str() {
            "dir" => crate::outln!("  {:04o} dir     {}/", e.mode.unwrap_or(0), e.path),
            "symlink" => crate::outln!(
                "        link    {} -> {}",
                e.path,
                e.target.as_deref().unwrap_or("")
            ),
            _ => crate::outln!(
                "  {:04o} file    {} ({})",
                e.mode.unwrap_or(0),
                e.path,
                human_bytes(e.size.unwrap_or(0))
            ),
        }
    }
    Ok(())
}

/// Re-checks a release: its signature and every chunk.
pub(crate) async fn verify(client: &Client, release: String, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let v: VerifyView = client
        .call("POST", &format!("/v1/releases/{release}/verify"), none)
        .await?;
    let ok = v.signature_ok && v.missing.is_empty() && v.corrupt.is_empty();
    if json {
        print_json(&v);
    } else {
        match &v.signature_error {
            None => crate::outln!("signature ok"),
            Some(e) => crate::outln!("signature FAILED: {e}"),
        }
        if v.expired {
            crate::outln!("EXPIRED   at {}: nodes refuse it", v.expires);
        } else if !v.expires.is_empty() {
            crate::outln!("expires   {}", v.expires);
        }
        crate::outln!(
            "{} chunks, {} re-hashed: {} missing, {} corrupt",
            v.chunks_checked,
            human_bytes(v.bytes_checked),
            v.missing.len(),
            v.corrupt.len()
        );
        for c in v.missing.iter().take(20) {
            crate::outln!("  missing {c}");
        }
        for c in v.corrupt.iter().take(20) {
            crate::outln!("  corrupt {c}");
        }
        let verdict = match (ok, v.expired) {
            (false, _) => "DAMAGED",
            (true, true) => "intact, but EXPIRED",
            (true, false) => "OK",
        };
        crate::outln!("{}: {verdict}", &v.id[..12]);
    }
    if !ok {
        Err(fail(
            ExitCode::Damaged,
            format!("release {} failed verification", v.id),
        ))
    } else if v.expired {
        Err(fail(
            ExitCode::Refused,
            format!(
                "release {} expired at {}: nodes refuse it (publish a new version)",
                v.id, v.expires
            ),
        ))
    } else {
        Ok(())
    }
}

/// Writes a release's tree into an empty directory.
pub(crate) async fn export(
    client: &Client,
    release: String,
    dir: PathBuf,
    json: bool,
) -> Result<(), Failure> {
    let dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map_err(|e| fail(ExitCode::Failed, e.to_string()))?
            .join(dir)
    };
    let report: store::release::ExportReport = client
        .call(
            "POST",
            &format!("/v1/releases/{release}/export"),
            Some(&ExportRequest { dir: dir.clone() }),
        )
        .await?;
    if json {
        print_json(&report);
    } else {
        crate::outln!(
            "exported {}, {}, {} ({}) to {}",
            api::cli::count(report.files, "file"),
            api::cli::count(report.dirs, "directory"),
            api::cli::count(report.symlinks, "symlink"),
            human_bytes(report.bytes),
            dir.display()
        );
    }
    Ok(())
}

/// `p2pctl release remove`.
pub(crate) async fn remove(client: &Client, release: &str, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let report: api::RemoveReport = client
        .call(
            "POST",
            &format!("/v1/releases/{}/remove", release.trim()),
            none,
        )
        .await?;
    if json {
        print_json(&report);
    } else {
        let r = &report.reclaimed;
        crate::outln!(
            "removed {}: reclaimed {} ({} chunks no kept release names) in {} packs rewritten ({} copied); the packs hold {} now",
            &report.release[..12],
            human_bytes(r.bytes_reclaimed),
            r.chunks_removed,
            r.packs_rewritten,
            human_bytes(r.bytes_copied),
            human_bytes(r.pack_bytes_after)
        );
    }
    Ok(())
}

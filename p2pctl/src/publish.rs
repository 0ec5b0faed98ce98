//! `p2pctl publish`: stage a tree on the node, sign its manifest here, commit.

use crate::{Failure, fail, print_json};
use api::cli::{ExitCode, human_bytes};
use api::client::Client;
use api::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use indicatif::{ProgressBar, ProgressStyle};
use protocol::{Manifest, codec, sign_manifest};
use std::io::IsTerminal;

pub(crate) async fn publish(
    client: &Client,
    req: &PublishRequest,
    key: &ed25519_dalek::SigningKey,
    hold: bool,
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
        patches,
        patch_bytes,
        patched_chunk_bytes,
        patch_s,
        ..
    } = staged
    else {
        unreachable!("the loop breaks only on Staged");
    };
    let result = sign_and_commit(client, req, key, session, &manifest_b64, &release_id, hold).await;
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
            "patches": patches,
            "patch_bytes": patch_bytes,
            "patched_chunk_bytes": patched_chunk_bytes,
            "patch_s": patch_s,
        }));
    } else if let Some(h) = &view.held {
        crate::outln!(
            "held {} version {} for approval: signed by {} of the {} keys it needs; nothing is sent until approvers sign it: p2pctl approve {} --key KEY",
            view.channel,
            view.version,
            h.have,
            h.need,
            view.id
        );
        crate::outln!("{}", view.id);
    } else {
        crate::outln!(
            "published {} version {}: {}, {} ({} new, {} already stored)",
            view.channel,
            view.version,
            api::cli::count(view.files, "file"),
            human_bytes(view.total_bytes),
            human_bytes(new_bytes),
            human_bytes(dedup_bytes)
        );
        if patches > 0 {
            crate::outln!(
                "{patches} changed files also move as patches from earlier versions: {} instead of {} as compressed chunks (made in {patch_s:.1} s)",
                human_bytes(patch_bytes),
                human_bytes(patched_chunk_bytes)
            );
        }
        crate::outln!("{}", view.id);
    }
    Ok(())
}

pub(crate) async fn sign_and_commit(
    client: &Client,
    req: &PublishRequest,
    key: &ed25519_dalek::SigningKey,
    session: u64,
    manifest_b64: &str,
    release_id: &str,
    hold: bool,
) -> Result<ReleaseView, Failure> {
    let bytes = B64
        .decode(manifest_b64)
        .map_err(|e| fail(ExitCode::Failed, format!("bad manifest from p2pd: {e}")))?;
    let manifest = Manifest::decode(&bytes)
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
        hold,
    };
    Ok(client
        .call(
            "POST",
            &format!("/v1/publish/{session}/commit"),
            Some(&body),
        )
        .await?)
}

/// `p2pctl approve`: the held release from this node (or the peer that holds it), shown,
/// its manifest signed with `key`, the signature sent to the holder.
pub(crate) async fn approve(
    client: &Client,
    release: &str,
    key: &ed25519_dalek::SigningKey,
    json: bool,
) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let held: HeldView = client
        .call("GET", &format!("/v1/approvals/{}", release.trim()), none)
        .await?;
    let bytes = hex::decode(&held.envelope_hex)
        .map_err(|e| fail(ExitCode::Failed, format!("bad envelope from p2pd: {e}")))?;
    let envelope: protocol::SignedManifest =
        codec::decode::<_, { protocol::envelope::ENVELOPE_BYTES_MAX }>(&bytes, "envelope")
            .map_err(|e| fail(ExitCode::Failed, format!("bad envelope from p2pd: {e}")))?;
    // Sign only the release asked for, and show what it is.
    if envelope.release_id().to_hex() != held.id || !held.id.starts_with(release.trim()) {
        return Err(fail(ExitCode::Failed, "p2pd answered with another release"));
    }
    let manifest = Manifest::decode(&envelope.manifest_bytes)
        .map_err(|e| fail(ExitCode::Failed, format!("bad manifest: {e}")))?;
    if !json {
        crate::outln!(
            "{} version {} ({}{}), {} files, {}; signed by {} ({} of {})",
            manifest.channel,
            manifest.version,
            manifest.severity,
            if manifest.emergency {
                ", emergency"
            } else {
                ""
            },
            manifest.files().count(),
            human_bytes(manifest.total_bytes),
            held.signers.join(", "),
            held.approval.have,
            held.approval.need
        );
    }
    let signature = protocol::envelope::signature_over(&envelope.manifest_bytes, key);
    let req = ApproveRequest {
        key: signature.key.to_config_string(),
        signature_hex: hex::encode(signature.signature.0),
    };
    let done: HeldView = client
        .call("POST", &format!("/v1/approvals/{}", held.id), Some(&req))
        .await?;
    if json {
        print_json(&done);
    } else if done.released {
        crate::outln!(
            "approved: {} of {} signatures ({}); released, the fleet fetches it now",
            done.approval.have,
            done.approval.need,
            done.signers.join(", ")
        );
    } else {
        crate::outln!(
            "approved: {} of {} signatures ({}); it waits for {} more",
            done.approval.have,
            done.approval.need,
            done.signers.join(", "),
            done.approval.need.saturating_sub(done.approval.have)
        );
    }
    Ok(())
}

/// A rollout file (`p2pctl publish --rollout FILE`): the same four settings as the options.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutFile {
    /// `--target`.
    #[serde(default)]
    pub target: String,
    /// `--requires`, each.
    #[serde(default)]
    pub requires: Vec<String>,
    /// `--rings`.
    #[serde(default)]
    pub rings: String,
    /// `--gate`.
    #[serde(default)]
    pub gate: String,
}

/// Longest rollout file read: a few lines.
const ROLLOUT_FILE_BYTES_MAX: u64 = 64 << 10;

impl RolloutFile {
    /// Reads and parses `path`.
    pub(crate) fn read(path: &std::path::Path) -> Result<Self, Failure> {
        let refused = |why: String| fail(ExitCode::Refused, format!("{}: {why}", path.display()));
        let len = std::fs::metadata(path)
            .map_err(|e| refused(e.to_string()))?
            .len();
        if len > ROLLOUT_FILE_BYTES_MAX {
            return Err(refused(format!(
                "larger than {ROLLOUT_FILE_BYTES_MAX} bytes"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| refused(e.to_string()))?;
        toml::from_str(&text).map_err(|e| refused(e.to_string()))
    }
}

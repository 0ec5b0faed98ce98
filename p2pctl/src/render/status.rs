//! A release's progress, as text or a progress bar.

use api::cli::human_bytes;
use api::*;

pub(crate) fn print_progress(r: &ReleaseProgress) {
    crate::outln!("release   {}", r.id);
    crate::outln!("channel   {}  version {}", r.channel, r.version);
    crate::outln!("state     {}", r.state);
    if let Some(e) = &r.error {
        crate::outln!("error     {e}");
    }
    crate::outln!(
        "chunks    {}/{}  ({} of {})",
        r.chunks_have,
        r.chunks_total,
        human_bytes(r.bytes_have),
        human_bytes(r.bytes_total)
    );
    crate::outln!(
        "received  {} from LAN, {} from WAN; {} already stored",
        human_bytes(r.bytes_from_lan),
        human_bytes(r.bytes_from_wan),
        human_bytes(r.bytes_reused)
    );
    let (raw, wire) = (
        r.bytes_from_lan + r.bytes_from_wan,
        r.bytes_wire_lan + r.bytes_wire_wan,
    );
    if wire < raw {
        crate::outln!(
            "wire      {} from LAN, {} from WAN: compression saved {}",
            human_bytes(r.bytes_wire_lan),
            human_bytes(r.bytes_wire_wan),
            human_bytes(raw - wire)
        );
    }
    if r.bytes_rebuilt > 0 {
        crate::outln!(
            "patches   {} of chunks rebuilt from {} of patches against earlier versions",
            human_bytes(r.bytes_rebuilt),
            human_bytes(r.bytes_patches)
        );
    }
    if let Some(s) = r.elapsed_s {
        crate::outln!("elapsed   {s:.1} s");
    }
    if let Some(t) = &r.download_opens {
        crate::outln!("paused    until the download window opens at {t}");
    }
    if let Some(i) = &r.install {
        crate::outln!("install   {}", install_line(i));
        if let Some(dir) = &i.dir {
            crate::outln!("          {dir}");
        }
        if !i.output.is_empty() {
            let of = if i
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("health check failed"))
            {
                "health check"
            } else {
                "apply command"
            };
            crate::outln!("output    (last {} lines of the {of})", i.output.len());
            for line in &i.output {
                crate::outln!("  | {line}");
            }
        }
    }
}

/// One line on a release's installation.
pub(crate) fn install_line(i: &api::InstallView) -> String {
    let at =
        i.at.as_deref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
    use api::InstallState;
    let line = match i.state {
        InstallState::Due => "due: the install window is open; installs next".into(),
        InstallState::Held => format!(
            "held until {}: {}",
            i.held_until.as_deref().unwrap_or("?"),
            i.reason.as_deref().unwrap_or("no reason given")
        ),
        InstallState::Pending => "after the download completes".into(),
        InstallState::Waiting => match &i.window_opens {
            Some(t) => format!("waiting for the install window (opens {t})"),
            None => "waiting for the install window (no opening in sight)".into(),
        },
        InstallState::Failed => {
            let code = i
                .exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default();
            let back = match &i.rolled_back_to {
                Some(v) => format!("; current is back on {v}"),
                None => "; no current version".into(),
            };
            format!(
                "FAILED{at}{code}: {}{back}",
                i.reason.as_deref().unwrap_or("unknown reason")
            )
        }
        InstallState::Installed => match &i.current_elsewhere {
            Some(other) => {
                format!("installed{at}; current now points at {other} (switched by hand)")
            }
            None => format!("installed{at}"),
        },
        InstallState::Installing | InstallState::Superseded => i.state.to_string(),
        InstallState::NotTargeted => format!(
            "not targeted: {}; fetched and served for the site, never installed here",
            i.reason
                .as_deref()
                .unwrap_or("the release's target leaves this node out")
        ),
        InstallState::Blocked => format!(
            "waiting on the rollout: {}",
            i.reason.as_deref().unwrap_or("unknown reason")
        ),
        InstallState::RolledBack => format!(
            "rolled back{at} {}; current is back on {}; not installed again (a newer version is)",
            i.reason.as_deref().unwrap_or("for no reason given"),
            i.rolled_back_to.as_deref().unwrap_or("?")
        ),
    };
    match &i.ring {
        Some(ring) => format!("{line} (ring {ring})"),
        None => line,
    }
}

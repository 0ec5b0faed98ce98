//! `p2pctl status`: what the node fetches and installs (rendering in [`crate::render::status`]).

use crate::render::status::{install_line, print_progress};
use crate::{Failure, fail, print_json};
use api::cli::{ExitCode, human_bytes};
use api::client::Client;
use api::*;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub(crate) fn find_progress<'a>(
    status: &'a NodeStatus,
    prefix: &str,
) -> Result<&'a ReleaseProgress, Failure> {
    let prefix = prefix.to_ascii_lowercase();
    let matches: Vec<&ReleaseProgress> = status
        .releases
        .iter()
        .filter(|r| r.id.starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(fail(
            ExitCode::Failed,
            format!("no release {prefix} is served or fetched by this node"),
        )),
        _ => Err(fail(
            ExitCode::Failed,
            format!("{prefix} matches several releases"),
        )),
    }
}

/// A clock this far from its peers' (seconds) is shown in `p2pctl status`.
const CLOCK_NOTICE_S: f64 = 60.0;

pub(crate) async fn status(
    client: &Client,
    release: Option<String>,
    once: bool,
    json: bool,
) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let st: NodeStatus = client.call("GET", "/v1/status", none).await?;
    let Some(prefix) = release else {
        if json {
            print_json(&st);
            return Ok(());
        }
        crate::outln!(
            "node {}  site {}  region {}  {}{}",
            &st.node_id[..12],
            st.site,
            st.region,
            api::cli::count(st.peers as u64, "peer"),
            if st.banned.is_empty() {
                String::new()
            } else {
                format!(", {} banned", st.banned.len())
            }
        );
        crate::outln!(
            "chunk traffic: received {} LAN, {} WAN; sent {} LAN, {} WAN",
            human_bytes(st.recv_lan_bytes),
            human_bytes(st.recv_wan_bytes),
            human_bytes(st.sent_lan_bytes),
            human_bytes(st.sent_wan_bytes)
        );
        if let Some(off) = st.clock_offset_s.filter(|o| o.abs() >= CLOCK_NOTICE_S) {
            crate::outln!(
                "CLOCK: this node's clock is {:.0} s {} its peers' (median): fix it, or releases look expired or not yet made",
                off.abs(),
                if off > 0.0 { "behind" } else { "ahead of" }
            );
        }
        for r in &st.refused {
            crate::outln!("refused {}: {}", &r.id[..12], r.reason);
        }
        if st.releases.is_empty() {
            crate::outln!("no releases");
            return Ok(());
        }
        crate::outln!(
            "{:<14} {:<24} {:>7} {:<9} {:>13} {:>10} {:>10} {:>10} {:>11}",
            "ID",
            "CHANNEL",
            "VERSION",
            "STATE",
            "CHUNKS",
            "SIZE",
            "FROM LAN",
            "FROM WAN",
            "RATE"
        );
        for r in &st.releases {
            crate::outln!(
                "{:<14} {:<24} {:>7} {:<9} {:>13} {:>10} {:>10} {:>10} {:>9}/s",
                &r.id[..12],
                r.channel,
                r.version,
                r.state,
                format!("{}/{}", r.chunks_have, r.chunks_total),
                human_bytes(r.bytes_total),
                human_bytes(r.bytes_from_lan),
                human_bytes(r.bytes_from_wan),
                human_bytes(r.rate_bytes_per_s)
            );
            if let Some(e) = &r.error {
                crate::outln!("               error: {e}");
            }
            if let Some(t) = &r.download_opens {
                crate::outln!("               paused until the download window opens at {t}");
            }
            if let Some(i) = &r.install {
                crate::outln!("               install: {}", install_line(i));
            }
        }
        return Ok(());
    };
    let r = find_progress(&st, &prefix)?.clone();
    let live = !once && !json && std::io::stdout().is_terminal() && r.state == FetchState::Fetching;
    if !live {
        if json {
            print_json(&r);
        } else {
            print_progress(&r);
        }
        return Ok(());
    }
    let bar = ProgressBar::new(r.bytes_total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut r = r;
    loop {
        bar.set_position(r.bytes_have);
        bar.set_message(format!(
            "LAN {} WAN {}",
            human_bytes(r.bytes_from_lan),
            human_bytes(r.bytes_from_wan)
        ));
        if r.state != FetchState::Fetching {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let st: NodeStatus = client.call("GET", "/v1/status", none).await?;
        r = find_progress(&st, &r.id)?.clone();
    }
    bar.finish_and_clear();
    print_progress(&r);
    if r.state == FetchState::Failed {
        return Err(fail(ExitCode::Failed, r.error.unwrap_or_default()));
    }
    Ok(())
}

//! `p2pctl node`, `peers`, `schedule`: the node itself.

use crate::{Failure, print_json};
use api::cli::human_bytes;
use api::client::Client;
use api::*;

/// Shows this node.
pub(crate) async fn node_info(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let info: NodeInfo = client.call("GET", "/v1/node", none).await?;
    if json {
        print_json(&info);
    } else {
        crate::outln!("node      {}", info.node_id);
        crate::outln!("site      {}  region {}", info.site, info.region);
        crate::outln!("version   {}", info.version);
        crate::outln!("data      {}", info.data_dir.display());
        crate::outln!(
            "store     {}, {}, {}",
            api::cli::count(info.store.releases, "release"),
            api::cli::count(info.store.chunks, "chunk"),
            human_bytes(info.store.chunk_bytes)
        );
        crate::outln!("trusts    {}", info.trusted_publishers.join(", "));
        if let Some(m) = &info.membership {
            crate::outln!(
                "fleet     {}  root v{} until {}",
                m.fleet,
                m.root_version,
                crate::when(m.root_expires_unix_s.saturating_mul(1000))
            );
            match m.cert_expires_unix_s {
                Some(until) => crate::outln!(
                    "cert      {} ({}){}  until {}{}",
                    m.cert_site.as_deref().unwrap_or("-"),
                    m.cert_region.as_deref().unwrap_or("-"),
                    if m.cert_labels.is_empty() {
                        String::new()
                    } else {
                        format!("  {}", m.cert_labels.join(", "))
                    },
                    crate::when(until.saturating_mul(1000)),
                    if m.renewal_due {
                        "  RENEW NOW: less than 14 days left"
                    } else {
                        ""
                    }
                ),
                None => crate::outln!("cert      none: enroll this node (p2pctl node enroll)"),
            }
            crate::outln!(
                "revoked   {} (revocation list v{})",
                api::cli::count(m.revoked as u64, "node"),
                m.revocations_version
            );
        }
    }
    Ok(())
}

/// Retires a silent node of this site from the fleet view and the report.
pub(crate) async fn forget(client: &Client, node: &str, json: bool) -> Result<(), Failure> {
    let req = ForgetRequest {
        node: node.to_owned(),
    };
    let done: ForgetView = client.call("POST", "/v1/fleet/forget", Some(&req)).await?;
    if json {
        print_json(&done);
    } else {
        crate::outln!(
            "node {} retired from the fleet view and the report (its last record: {}); a record it makes later brings it back",
            done.node,
            crate::when(done.last_record_unix_s.saturating_mul(1000))
        );
    }
    Ok(())
}

/// `p2pctl node revoke` (with a reason) and `unrevoke` (without): the next revocation list,
/// built on the one this node holds under the root it holds, signed with `key`, handed to
/// this node (which spreads it).
pub(crate) async fn revoke(
    client: &Client,
    node: &str,
    reason: Option<&str>,
    key: &std::path::Path,
    json: bool,
) -> Result<(), Failure> {
    use protocol::revoke::{Revocations, SignedRevocations};
    let node_id: protocol::NodeId = node.trim().parse().map_err(|_| {
        crate::fail(
            api::cli::ExitCode::Usage,
            format!("{node}: not a node id (64 hex digits)"),
        )
    })?;
    let key = crate::root::read_key(key)?;
    let none: Option<&()> = None;
    let held: RevocationsView = client.call("GET", "/v1/fleet/revocations", none).await?;
    let current = match &held.list_hex {
        Some(h) => {
            let bytes = hex::decode(h)
                .map_err(|e| crate::fail(api::cli::ExitCode::Failed, e.to_string()))?;
            SignedRevocations::decode(&bytes)
                .map_err(|e| crate::fail(api::cli::ExitCode::Failed, e.to_string()))?
                .list
        }
        None => Revocations::empty(&held.fleet),
    };
    let now = jiff::Timestamp::now().as_second();
    let next = match reason {
        Some(reason) => current.next(held.root_version, node_id, reason, now),
        None => current.without(held.root_version, &node_id, now),
    };
    let next = next.ok_or_else(|| {
        crate::fail(
            api::cli::ExitCode::Refused,
            match reason {
                Some(_) => format!(
                    "the revocation list is full ({} nodes revoked within a year)",
                    protocol::revoke::REVOKED_MAX
                ),
                None => format!("node {} is not revoked", node_id.to_hex()),
            },
        )
    })?;
    let signed = SignedRevocations::sign(next, &key);
    let req = RevocationsRequest {
        list_hex: hex::encode(signed.encode()),
    };
    let done: RevocationsView = client
        .call("POST", "/v1/fleet/revocations", Some(&req))
        .await?;
    if json {
        print_json(&done);
    } else {
        crate::outln!(
            "node {} {} (fleet {}, revocation list v{} under root v{}, {} nodes revoked); it spreads to the fleet from this node",
            node_id.to_hex(),
            if reason.is_some() {
                "revoked"
            } else {
                "no longer revoked"
            },
            done.fleet,
            done.version,
            done.list_root_version,
            done.entries.len()
        );
    }
    Ok(())
}

/// `p2pctl node revoked`: the revocation list this node holds.
pub(crate) async fn revoked(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let held: RevocationsView = client.call("GET", "/v1/fleet/revocations", none).await?;
    if json {
        print_json(&held);
        return Ok(());
    }
    crate::outln!(
        "fleet {}: revocation list v{}{}",
        held.fleet,
        held.version,
        held.signer
            .as_deref()
            .map(|s| format!(", signed by {}", &s[..s.len().min(16)]))
            .unwrap_or_default()
    );
    if held.entries.is_empty() {
        crate::outln!("no node revoked");
    } else {
        crate::outln!("{:<64} {:<20} REASON", "NODE", "REVOKED");
        for e in &held.entries {
            crate::outln!(
                "{:<64} {:<20} {}",
                e.node,
                crate::when(e.at_unix_s.saturating_mul(1000)),
                e.reason
            );
        }
    }
    Ok(())
}

/// `p2pctl node renew`: this node's certificate again, valid from now, signed with a CA key
/// and installed in the running daemon.
pub(crate) async fn renew(
    client: &Client,
    ca_key: &std::path::Path,
    ttl: humantime::Duration,
    json: bool,
) -> Result<(), Failure> {
    use protocol::cert::SignedCert;
    let ca = crate::root::read_key(ca_key)?;
    let none: Option<&()> = None;
    let held: CertText = client.call("GET", "/v1/node/cert", none).await?;
    let old = SignedCert::from_text(&held.cert_text)
        .map_err(|e| crate::fail(api::cli::ExitCode::Failed, e.to_string()))?;
    let now = jiff::Timestamp::now().as_second();
    let mut cert = old.cert.clone();
    cert.not_before_unix_s = now;
    cert.expires_unix_s = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    cert.validate()
        .map_err(|e| crate::fail(api::cli::ExitCode::Refused, e.to_string()))?;
    let renewed = SignedCert::sign(cert, &ca);
    let req = CertText {
        cert_text: renewed.to_text(),
    };
    let done: CertText = client.call("POST", "/v1/node/cert", Some(&req)).await?;
    if json {
        print_json(&done);
    } else {
        crate::outln!(
            "certificate renewed: node {} in site {} until {}",
            renewed.cert.node.to_hex(),
            renewed.cert.site,
            crate::when(renewed.cert.expires_unix_s.saturating_mul(1000))
        );
    }
    Ok(())
}

/// A node id as the fleet views show it (its first 12 hex digits), or the peer id where
/// the key is not an ed25519 node key.
fn short_node<'a>(node_id: &'a str, peer_id: &'a str) -> &'a str {
    node_id.get(..12).unwrap_or(peer_id)
}

/// Lists the peers refused lately for want of a valid certificate.
pub(crate) async fn refused_peers(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let list: Vec<api::RefusedPeerView> = client.call("GET", "/v1/peers/refused", none).await?;
    if json {
        print_json(&list);
    } else if list.is_empty() {
        crate::outln!("no peer refused");
    } else {
        crate::outln!("{:<20} {:<14} {:<22} REASON", "WHEN", "NODE", "ADDRESS");
        for r in list {
            crate::outln!(
                "{:<20} {:<14} {:<22} {}",
                crate::when(r.at_unix_s.saturating_mul(1000)),
                short_node(&r.node_id, &r.peer_id),
                r.address,
                r.reason
            );
        }
    }
    Ok(())
}

pub(crate) async fn peers(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let peers: Vec<PeerView> = client.call("GET", "/v1/peers", none).await?;
    if json {
        print_json(&peers);
    } else if peers.is_empty() {
        crate::outln!("no peers connected");
    } else {
        crate::outln!(
            "{:<14} {:<16} {:<10} {:<22} {:>4} {:>5} {:>10} {:>10} {:>7}",
            "NODE",
            "SITE",
            "REGION",
            "ADDRESS",
            "NET",
            "PROTO",
            "IN",
            "OUT",
            "RTT"
        );
        for p in peers {
            crate::outln!(
                "{:<14} {:<16} {:<10} {:<22} {:>4} {:>5} {:>10} {:>10} {:>5.1}ms",
                short_node(&p.node_id, &p.peer_id),
                p.site,
                p.region,
                p.address,
                if p.lan { "LAN" } else { "WAN" },
                p.protocol,
                human_bytes(p.bytes_in),
                human_bytes(p.bytes_out),
                p.rtt_ms
            );
        }
    }
    Ok(())
}

/// Shows the rate schedules and windows in force.
pub(crate) async fn schedule(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let v: ScheduleView = client.call("GET", "/v1/schedule", none).await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    crate::outln!("now {}", v.now);
    crate::outln!("{:<12} {:<16} NEXT CHANGE", "CLASS", "RATE");
    for c in &v.classes {
        crate::outln!(
            "{:<12} {:<16} {}",
            c.class,
            c.rate,
            c.next_change.as_deref().unwrap_or("-")
        );
    }
    for (name, w) in [("download", &v.download), ("install", &v.install)] {
        let when = match (w.windows, w.open) {
            (0, _) => "open (no window configured)".to_string(),
            (_, true) => format!(
                "open, closes {}",
                w.closes.as_deref().unwrap_or("after the next week")
            ),
            (_, false) => format!(
                "closed, opens {}",
                w.opens.as_deref().unwrap_or("never in the next four years")
            ),
        };
        crate::outln!("{name} window: {when}");
    }
    match v.emergency_critical_cvss {
        Some(c) => {
            crate::outln!("emergencies: critical releases with CVSS >= {c:.1} download any time")
        }
        None => crate::outln!("emergencies: only releases marked emergency download any time"),
    }
    Ok(())
}

//! `p2pctl rollout pause|resume|abort|orders`, `p2pctl rollback`, and fleet-wide holds
//! (`p2pctl hold --fleet`): fleet orders ([`protocol::orders`]) built on the ones this node
//! holds, signed with an operator key of the fleet root, and handed to this node, which
//! spreads them to the fleet within seconds. Each is idempotent (the orders say what is in
//! force, not what to do once) and audited on every node that takes them.

use crate::{Failure, fail, print_json};
use api::cli::ExitCode;
use api::client::Client;
use api::{OrdersRequest, OrdersView};
use protocol::orders::{FleetHold, Orders, ReleaseCommand, Rollback, SignedOrders};
use std::path::Path;

fn failed(e: impl std::fmt::Display) -> Failure {
    fail(ExitCode::Failed, e.to_string())
}

/// The orders this node holds, and the view they came in.
async fn held(client: &Client) -> Result<(OrdersView, Orders), Failure> {
    let none: Option<&()> = None;
    let view: OrdersView = client.call("GET", "/v1/fleet/orders", none).await?;
    let orders = match &view.orders_hex {
        Some(h) => {
            SignedOrders::decode(&hex::decode(h).map_err(failed)?)
                .map_err(failed)?
                .orders
        }
        None => Orders::empty(&view.fleet),
    };
    Ok((view, orders))
}

/// Signs `next` with the key at `key` and hands it to this node; prints what changed.
async fn send(client: &Client, next: Orders, key: &Path, json: bool) -> Result<(), Failure> {
    let key = crate::root::read_key(key)?;
    let signed = SignedOrders::sign(next, &key);
    let req = OrdersRequest {
        orders_hex: hex::encode(signed.encode()),
    };
    let done: OrdersView = client.call("POST", "/v1/fleet/orders", Some(&req)).await?;
    if json {
        print_json(&done);
    } else {
        for c in &done.changes {
            crate::outln!("{c}");
        }
        crate::outln!(
            "fleet orders v{} (fleet {}, under root v{}); they spread to the fleet from this node",
            done.version,
            done.fleet,
            done.orders_root_version
        );
    }
    Ok(())
}

/// A full release id from an id or a unique prefix this node knows of (stored, served, or
/// named in the fleet status it holds).
async fn release_id(client: &Client, release: &str) -> Result<protocol::ReleaseId, Failure> {
    let none: Option<&()> = None;
    let report: store::fleet::FleetReport = client
        .call("GET", &format!("/v1/fleet/{}", release.trim()), none)
        .await?;
    report.release.parse().map_err(failed)
}

/// What a fleet-wide hold names: a channel as given, or a release's full id from an id or
/// a prefix of at least 12 hex digits (as a node's own hold takes).
async fn hold_target(client: &Client, what: &str) -> Result<String, Failure> {
    let what = what.trim();
    let hex = what.len() >= 12 && what.len() <= 64 && what.bytes().all(|b| b.is_ascii_hexdigit());
    if hex {
        return Ok(release_id(client, what).await?.to_hex());
    }
    Ok(what.to_owned())
}

/// `p2pctl rollout pause|resume|abort RELEASE --reason … --key …`.
pub(crate) async fn rollout(
    client: &Client,
    command: ReleaseCommand,
    release: &str,
    reason: &str,
    key: &Path,
    json: bool,
) -> Result<(), Failure> {
    let id = release_id(client, release).await?;
    let (view, orders) = held(client).await?;
    let now = jiff::Timestamp::now().as_second();
    if command == ReleaseCommand::Resume
        && orders
            .release_order(&id)
            .is_some_and(|o| o.command == ReleaseCommand::Abort)
    {
        return Err(fail(
            ExitCode::Refused,
            format!(
                "release {} was aborted; an abort is final: publish a fixed version",
                id.to_hex()
            ),
        ));
    }
    let next = orders.with_release(view.root_version, id, command, reason, now);
    send(client, next, key, json).await
}

/// `p2pctl rollback CHANNEL --lift --key …`: ends the fleet's rollback of the channel.
pub(crate) async fn lift_rollback(
    client: &Client,
    channel: &str,
    key: &Path,
    json: bool,
) -> Result<(), Failure> {
    let (view, orders) = held(client).await?;
    let now = jiff::Timestamp::now().as_second();
    let next = orders
        .without_rollback(view.root_version, channel, now)
        .ok_or_else(|| {
            fail(
                ExitCode::Refused,
                format!("{channel} is not rolled back by the fleet orders"),
            )
        })?;
    send(client, next, key, json).await
}

/// `p2pctl rollback CHANNEL --to VERSION --key … [--target …]`: every node the target
/// takes goes back to the version, and the versions above it up to the newest this node
/// knows are not installed.
pub(crate) async fn rollback_fleet(
    client: &Client,
    channel: &str,
    to: Option<u64>,
    target: Option<&str>,
    reason: &str,
    key: &Path,
    json: bool,
) -> Result<(), Failure> {
    let (view, orders) = held(client).await?;
    let now = jiff::Timestamp::now().as_second();
    let to = to.ok_or_else(|| fail(ExitCode::Usage, "a fleet rollback needs --to VERSION"))?;
    let target = protocol::Selector::parse(target.unwrap_or(""), "target")
        .map_err(|e| fail(ExitCode::Usage, e.to_string()))?;
    let none: Option<&()> = None;
    let st: api::NodeStatus = client.call("GET", "/v1/status", none).await?;
    let through = st
        .releases
        .iter()
        .filter(|r| r.channel == channel)
        .map(|r| r.version)
        .max()
        .unwrap_or(0);
    if through <= to {
        return Err(fail(
            ExitCode::Refused,
            format!("this node knows no version of {channel} above v{to}: nothing to roll back"),
        ));
    }
    let next = orders
        .with_rollback(
            view.root_version,
            Rollback {
                channel: channel.to_owned(),
                to_version: to,
                through_version: through,
                target,
                at_unix_s: now,
                reason: reason.to_owned(),
            },
        )
        .ok_or_else(|| {
            fail(
                ExitCode::Refused,
                format!(
                    "{} channels are rolled back already; lift one first",
                    protocol::orders::ROLLBACKS_MAX
                ),
            )
        })?;
    send(client, next, key, json).await
}

/// `p2pctl rollback CHANNEL [--to VERSION]` without a key: on this node only.
pub(crate) async fn rollback_here(
    client: &Client,
    channel: &str,
    to: Option<u64>,
    reason: &str,
    json: bool,
) -> Result<(), Failure> {
    let req = api::RollbackRequest {
        channel: channel.to_owned(),
        to_version: to,
        reason: reason.to_owned(),
    };
    let done: api::RollbackView = client.call("POST", "/v1/rollback", Some(&req)).await?;
    if json {
        print_json(&done);
    } else {
        crate::outln!(
            "{} v{} rolled back on this node: current is {} now ({}); v{} is not installed again",
            done.channel,
            done.from_version,
            done.to,
            done.reason,
            done.from_version
        );
    }
    Ok(())
}

/// `p2pctl hold WHAT --fleet [SELECTOR] --key …`: a fleet-wide install hold.
pub(crate) async fn fleet_hold(
    client: &Client,
    what: &str,
    target: &str,
    reason: &str,
    until_unix_s: i64,
    key: &Path,
    json: bool,
) -> Result<(), Failure> {
    let (view, orders) = held(client).await?;
    let now = jiff::Timestamp::now().as_second();
    if until_unix_s <= now || until_unix_s > now + protocol::orders::FLEET_HOLD_DURATION_MAX_S {
        return Err(fail(
            ExitCode::Usage,
            "a hold must end in the future and within a year",
        ));
    }
    let what = hold_target(client, what).await?;
    let hold = FleetHold {
        what,
        target: protocol::Selector::parse(target, "target")
            .map_err(|e| fail(ExitCode::Usage, e.to_string()))?,
        reason: reason.to_owned(),
        until_unix_s,
        at_unix_s: now,
    };
    let next = orders.with_hold(view.root_version, hold).ok_or_else(|| {
        fail(
            ExitCode::Refused,
            format!(
                "{} fleet-wide holds are in force already; lift one first",
                protocol::orders::FLEET_HOLDS_MAX
            ),
        )
    })?;
    next.validate()
        .map_err(|e| fail(ExitCode::Usage, e.to_string()))?;
    send(client, next, key, json).await
}

/// `p2pctl unhold WHAT --fleet --key …`: lifts the fleet-wide holds of WHAT.
pub(crate) async fn fleet_unhold(
    client: &Client,
    what: &str,
    key: &Path,
    json: bool,
) -> Result<(), Failure> {
    let (view, orders) = held(client).await?;
    let now = jiff::Timestamp::now().as_second();
    let what = hold_target(client, what).await?;
    let next = orders
        .without_hold(view.root_version, &what, now)
        .ok_or_else(|| fail(ExitCode::Refused, format!("no fleet-wide hold of {what}")))?;
    send(client, next, key, json).await
}

/// `p2pctl rollout orders`: the fleet orders this node holds.
pub(crate) async fn show(client: &Client, json: bool) -> Result<(), Failure> {
    let (view, orders) = held(client).await?;
    if json {
        print_json(&view);
        return Ok(());
    }
    let when = |at: i64| crate::when(at.saturating_mul(1000));
    crate::outln!(
        "fleet {}: orders v{}{}",
        view.fleet,
        view.version,
        view.signer
            .as_deref()
            .map(|s| format!(", signed by {}", &s[..s.len().min(16)]))
            .unwrap_or_default()
    );
    if orders.releases.is_empty() && orders.rollbacks.is_empty() && orders.holds.is_empty() {
        crate::outln!("no orders");
    }
    for o in &orders.releases {
        crate::outln!(
            "{:<8} release {}  {}  {}",
            o.command.name(),
            o.release.to_hex(),
            when(o.at_unix_s),
            o.reason
        );
    }
    for r in &orders.rollbacks {
        crate::outln!(
            "rollback {} to v{} (v{}..=v{} not installed) for {}  {}  {}",
            r.channel,
            r.to_version,
            r.to_version + 1,
            r.through_version,
            if r.target.is_all() {
                "every node".to_string()
            } else {
                r.target.to_string()
            },
            when(r.at_unix_s),
            r.reason
        );
    }
    let now = jiff::Timestamp::now().as_second();
    for h in orders.holds.iter().filter(|h| h.until_unix_s > now) {
        crate::outln!(
            "hold     {} for {} until {}  {}",
            h.what,
            if h.target.is_all() {
                "every node".to_string()
            } else {
                h.target.to_string()
            },
            when(h.until_unix_s),
            h.reason
        );
    }
    Ok(())
}

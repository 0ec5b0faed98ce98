//! `p2pctl hold`, `unhold` and `holds`: install holds (exceptions) on this node. What a hold
//! covers is still fetched and served; it is not installed until the hold ends.

use crate::{Failure, fail, print_json};
use api::cli::ExitCode;
use api::client::Client;
use api::{HoldRequest, HoldView, LiftHoldRequest};

/// `--until`: a time from now (`14d`, `36h`), a date (`2027-01-31`, midnight UTC) or an
/// RFC 3339 instant; as unix seconds.
pub(crate) fn parse_until(text: &str) -> Result<i64, Failure> {
    let bad = |why: String| fail(ExitCode::Usage, format!("--until {text}: {why}"));
    if let Ok(d) = humantime::parse_duration(text) {
        let ahead = jiff::SignedDuration::try_from(d).map_err(|e| bad(e.to_string()))?;
        return jiff::Timestamp::now()
            .checked_add(ahead)
            .map(|t| t.as_second())
            .map_err(|e| bad(e.to_string()));
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        return jiff::tz::TimeZone::UTC
            .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .map(|t| t.as_second())
            .map_err(|e| bad(e.to_string()));
    }
    Err(bad(
        "expected a duration such as 14d, a date such as 2027-01-31, or an RFC 3339 instant".into(),
    ))
}

fn show(h: &HoldView) {
    crate::outln!("{:<40} until {}  {}", h.target, h.until, h.reason);
}

/// `p2pctl hold TARGET --reason … --until …`.
pub(crate) async fn hold(
    client: &Client,
    target: &str,
    reason: &str,
    until: &str,
    json: bool,
) -> Result<(), Failure> {
    let req = HoldRequest {
        target: target.to_owned(),
        reason: reason.to_owned(),
        until_unix_s: parse_until(until)?,
    };
    let set: HoldView = client.call("POST", "/v1/holds", Some(&req)).await?;
    if json {
        print_json(&set);
    } else {
        crate::outln!(
            "install hold on {} until {}: fetched and served, not installed",
            set.target,
            set.until
        );
    }
    Ok(())
}

/// `p2pctl unhold TARGET`.
pub(crate) async fn unhold(client: &Client, target: &str, json: bool) -> Result<(), Failure> {
    let req = LiftHoldRequest {
        target: target.to_owned(),
    };
    let lifted: HoldView = client.call("POST", "/v1/holds/lift", Some(&req)).await?;
    if json {
        print_json(&lifted);
    } else {
        crate::outln!(
            "install hold on {} lifted: it installs inside the install window",
            lifted.target
        );
    }
    Ok(())
}

/// `p2pctl holds`.
pub(crate) async fn holds(client: &Client, json: bool) -> Result<(), Failure> {
    let none: Option<&()> = None;
    let list: Vec<HoldView> = client.call("GET", "/v1/holds", none).await?;
    if json {
        print_json(&list);
    } else if list.is_empty() {
        crate::outln!("no install holds");
    } else {
        for h in &list {
            show(h);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_a_duration_a_date_or_an_instant() {
        let now = jiff::Timestamp::now().as_second();
        let in_two_weeks = parse_until("14d").unwrap();
        assert!((in_two_weeks - now - 14 * 86_400).abs() <= 2);
        assert_eq!(parse_until("2027-01-31").unwrap(), 1_801_353_600);
        assert_eq!(
            parse_until("2027-01-31T12:00:00Z").unwrap(),
            1_801_353_600 + 43_200
        );
        assert!(parse_until("next tuesday").is_err());
    }
}

//! Which release goes first, and which may ignore the download window.
//!
//! Releases are ordered emergencies first, then by severity (critical first), then by age
//! (older first: a release that has waited longer is closer to its deadline), then by id so
//! the order is total and every node agrees on it.
//!
//! Fetches run side by side, but not as equals: a fetch that another running fetch outranks
//! may only send a request to a peer while the bytes in flight to that peer, counted over
//! all fetches, are below [`OUTRANKED_BUDGET_DIVISOR`]⁻¹ of its budget. At a peer the urgent
//! fetch keeps busy the outranked one therefore waits, so the urgent release gets the
//! bottleneck link to itself; at peers the urgent fetch does not need, the outranked one
//! goes on, so no link idles for the sake of priority (a strict stop of every other fetch
//! would leave them idle).
//!
//! An emergency may fetch outside the download window; the hard ceilings (rate schedules)
//! still apply to it. A release is an emergency if its publisher marked it so, or, when the
//! node's policy enables it, if it is critical with a CVSS score at or above the policy's
//! threshold (9.0 by default).

use protocol::{Cvss, Severity};
use std::cmp::Ordering;

/// Share of a peer's in-flight budget an outranked fetch may use: a quarter.
pub const OUTRANKED_BUDGET_DIVISOR: u64 = 4;

/// What the scheduler needs to know of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Urgency {
    /// Severity from the manifest.
    pub severity: Severity,
    /// CVSS base score, if given.
    pub cvss: Option<Cvss>,
    /// Marked an emergency by its publisher.
    pub emergency: bool,
    /// Creation time, unix seconds.
    pub created_unix_s: i64,
    /// Tie-breaker (the release id's first bytes).
    pub tie: u64,
}

/// The node's emergency policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmergencyPolicy {
    /// Critical releases with a CVSS score at or above this (in tenths) count as emergencies;
    /// `None` turns the rule off (only releases marked emergency are).
    pub critical_cvss_at_least: Option<Cvss>,
}

impl Default for EmergencyPolicy {
    fn default() -> Self {
        Self {
            critical_cvss_at_least: Some(Cvss(90)),
        }
    }
}

impl EmergencyPolicy {
    /// Whether `u` may fetch outside the download window.
    pub fn is_emergency(&self, u: &Urgency) -> bool {
        u.emergency
            || (u.severity == Severity::Critical
                && matches!((self.critical_cvss_at_least, u.cvss), (Some(min), Some(score)) if score >= min))
    }

    /// Orders two releases: the one to fetch first is `Less`.
    pub fn compare(&self, a: &Urgency, b: &Urgency) -> Ordering {
        self.is_emergency(b)
            .cmp(&self.is_emergency(a))
            .then(b.severity.cmp(&a.severity))
            .then(a.created_unix_s.cmp(&b.created_unix_s))
            .then(a.tie.cmp(&b.tie))
    }

    /// Whether a running fetch of `me` is outranked by one of the `running` others.
    pub fn is_outranked<'a>(
        &self,
        me: &Urgency,
        running: impl IntoIterator<Item = &'a Urgency>,
    ) -> bool {
        running
            .into_iter()
            .any(|other| self.compare(other, me) == Ordering::Less)
    }

    /// The in-flight budget (all fetches' bytes at the peer together) under which a fetch of
    /// `me` may still send requests to a peer whose full budget is `budget`.
    pub fn budget_for<'a>(
        &self,
        budget: u64,
        me: &Urgency,
        running: impl IntoIterator<Item = &'a Urgency>,
    ) -> u64 {
        if self.is_outranked(me, running) {
            budget / OUTRANKED_BUDGET_DIVISOR
        } else {
            budget
        }
    }

    /// Whether a release may download now: inside the download window, or an emergency.
    pub fn may_download(&self, u: &Urgency, window_open: bool) -> bool {
        window_open || self.is_emergency(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(severity: Severity, cvss: Option<u8>, emergency: bool, created: i64) -> Urgency {
        Urgency {
            severity,
            cvss: cvss.map(Cvss),
            emergency,
            created_unix_s: created,
            tie: created as u64,
        }
    }

    #[test]
    fn emergencies_then_severity_then_age() {
        let p = EmergencyPolicy::default();
        let mut list = [
            u(Severity::Low, None, false, 1),
            u(Severity::High, None, false, 5),
            u(Severity::High, None, false, 2),
            u(Severity::Medium, None, true, 9),
            u(Severity::Critical, Some(98), false, 7),
            u(Severity::Critical, Some(75), false, 3),
        ];
        list.sort_by(|a, b| p.compare(a, b));
        let created: Vec<i64> = list.iter().map(|x| x.created_unix_s).collect();
        // Emergencies (the marked one and critical 9.8) oldest first, then critical 7.5,
        // then high oldest first, then low.
        assert_eq!(created, vec![7, 9, 3, 2, 5, 1]);
    }

    #[test]
    fn an_outranked_fetch_keeps_a_quarter_of_the_budget() {
        let p = EmergencyPolicy::default();
        let low = u(Severity::Low, None, false, 1);
        let high = u(Severity::High, None, false, 5);
        let critical = u(Severity::Critical, Some(98), false, 9);
        assert!(p.is_outranked(&low, &[high, critical]));
        assert!(!p.is_outranked(&critical, &[low, high]));
        assert!(!p.is_outranked(&high, &[]));
        assert!(
            !p.is_outranked(&high, &[high]),
            "a release does not outrank itself"
        );
        assert_eq!(p.budget_for(8 << 20, &high, &[critical]), 2 << 20);
        assert_eq!(p.budget_for(8 << 20, &critical, &[high, low]), 8 << 20);
    }

    #[test]
    fn the_cvss_rule_can_be_tuned_or_turned_off() {
        let critical_92 = u(Severity::Critical, Some(92), false, 0);
        let high_99 = u(Severity::High, Some(99), false, 0);
        let default = EmergencyPolicy::default();
        assert!(default.is_emergency(&critical_92));
        assert!(
            !default.is_emergency(&high_99),
            "only critical releases qualify"
        );
        assert!(!default.is_emergency(&u(Severity::Critical, None, false, 0)));
        let strict = EmergencyPolicy {
            critical_cvss_at_least: Some(Cvss(95)),
        };
        assert!(!strict.is_emergency(&critical_92));
        let off = EmergencyPolicy {
            critical_cvss_at_least: None,
        };
        assert!(!off.is_emergency(&critical_92));
        assert!(off.is_emergency(&u(Severity::Low, None, true, 0)));
        assert!(off.may_download(&critical_92, true));
        assert!(!off.may_download(&critical_92, false));
        assert!(default.may_download(&critical_92, false));
    }
}

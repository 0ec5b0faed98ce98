use super::*;
use crate::testkeys::{NOW, key, root};

fn release(i: u8) -> ReleaseId {
    ReleaseId([i; 32])
}

fn place<'a>(labels: &'a [(String, String)]) -> Place<'a> {
    Place {
        site: "branch-042",
        region: "emea",
        labels,
    }
}

fn rollback(to: u64, through: u64, target: &str) -> Rollback {
    Rollback {
        channel: "security/openssl".into(),
        to_version: to,
        through_version: through,
        target: Selector::parse(target, "target").unwrap(),
        at_unix_s: NOW,
        reason: "CVE fix breaks TLS 1.0 clients".into(),
    }
}

#[test]
fn pause_resume_and_abort_stop_a_release_or_let_it_go() {
    let none = Vec::new();
    let p = place(&none);
    let o = Orders::empty("bank").with_release(1, release(3), ReleaseCommand::Pause, "INC-1", NOW);
    assert_eq!(o.version, 1);
    o.validate().unwrap();
    let stop = o.stop_for(&release(3), "security/openssl", 3, &p).unwrap();
    assert!(matches!(stop, Stop::Paused { .. }));
    assert!(
        stop.to_string().starts_with("paused by an operator"),
        "{stop}"
    );
    assert_eq!(o.stop_for(&release(4), "security/openssl", 4, &p), None);
    // Resume replaces the pause, and says since when.
    let r = o.with_release(1, release(3), ReleaseCommand::Resume, "fixed", NOW + 60);
    assert_eq!(r.version, 2);
    assert_eq!(r.releases.len(), 1);
    assert_eq!(r.stop_for(&release(3), "security/openssl", 3, &p), None);
    assert_eq!(r.resumed_at(&release(3)), Some(NOW + 60));
    let a = r.with_release(1, release(3), ReleaseCommand::Abort, "withdrawn", NOW + 120);
    assert!(matches!(
        a.stop_for(&release(3), "security/openssl", 3, &p),
        Some(Stop::Aborted { .. })
    ));
    assert_eq!(a.resumed_at(&release(3)), None);
    assert_eq!(
        a.changes_from(&r),
        vec![format!("abort release {}: withdrawn", release(3).to_hex())]
    );
}

#[test]
fn a_rollback_stops_the_versions_it_names_on_the_nodes_it_targets_only() {
    let atm = vec![("role".to_string(), "atm".to_string())];
    let server = vec![("role".to_string(), "server".to_string())];
    let o = Orders::empty("bank")
        .with_rollback(1, rollback(2, 4, "role=server"))
        .unwrap();
    o.validate().unwrap();
    let s = place(&server);
    for (version, stopped) in [(2, false), (3, true), (4, true), (5, false)] {
        let stop = o.stop_for(&release(version as u8), "security/openssl", version, &s);
        assert_eq!(stop.is_some(), stopped, "v{version}");
    }
    // Another node, another channel: untouched.
    assert_eq!(
        o.stop_for(&release(3), "security/openssl", 3, &place(&atm)),
        None
    );
    assert_eq!(o.stop_for(&release(3), "security/curl", 3, &s), None);
    assert_eq!(
        o.rollback_for("security/openssl", &s).unwrap().to_version,
        2
    );
    // A second rollback of the channel replaces the first; lifting it lets v3 go again.
    let o2 = o.with_rollback(1, rollback(1, 4, "")).unwrap();
    assert_eq!(o2.rollbacks.len(), 1);
    assert!(
        o2.stop_for(&release(2), "security/openssl", 2, &place(&atm))
            .is_some()
    );
    let o3 = o2.without_rollback(1, "security/openssl", NOW + 5).unwrap();
    assert_eq!(o3.stop_for(&release(3), "security/openssl", 3, &s), None);
    assert_eq!(
        o3.changes_from(&o2),
        vec!["rollback of security/openssl lifted"]
    );
    assert!(
        o3.without_rollback(1, "security/openssl", NOW + 6)
            .is_none()
    );
    // A rollback that rolls nothing back is not valid.
    let mut bad = o.clone();
    bad.rollbacks[0].through_version = 2;
    assert!(matches!(bad.validate(), Err(OrdersError::Invalid(_))));
}

#[test]
fn fleet_holds_apply_to_the_nodes_they_target_until_they_end() {
    let atm = vec![("role".to_string(), "atm".to_string())];
    let none = Vec::new();
    let hold = FleetHold {
        what: "security".into(),
        target: Selector::parse("role=atm", "target").unwrap(),
        reason: "ATM vendor certification, CHG-77".into(),
        until_unix_s: NOW + 3600,
        at_unix_s: NOW,
    };
    let o = Orders::empty("bank").with_hold(1, hold.clone()).unwrap();
    o.validate().unwrap();
    let a = place(&atm);
    let held: Vec<_> = o.holds_for(&a, NOW + 10).collect();
    assert_eq!(held.len(), 1);
    assert!(held[0].covers(&release(1), "security/openssl"));
    assert!(!held[0].covers(&release(1), "security-evil/openssl"));
    let n = place(&none);
    assert_eq!(o.holds_for(&n, NOW + 10).count(), 0);
    assert_eq!(o.holds_for(&a, NOW + 3600).count(), 0, "it ended by itself");
    // The same what and target replace; ended holds are dropped from the next document.
    let o2 = o
        .with_hold(
            1,
            FleetHold {
                reason: "extended".into(),
                ..hold.clone()
            },
        )
        .unwrap();
    assert_eq!(o2.holds.len(), 1);
    assert_eq!(o2.holds[0].reason, "extended");
    let later = FleetHold {
        what: "security/curl".into(),
        at_unix_s: NOW + 7200,
        until_unix_s: NOW + 9000,
        ..hold.clone()
    };
    let o3 = o2.with_hold(1, later).unwrap();
    assert_eq!(o3.holds.len(), 1, "the ended hold is gone");
    let lifted = o3.without_hold(1, "security/curl", NOW + 7300).unwrap();
    assert!(lifted.holds.is_empty());
    assert_eq!(lifted.changes_from(&o3).len(), 1);
}

#[test]
fn only_an_operator_of_the_root_signs_orders_and_only_newer_ones_are_taken() {
    let root = root();
    let o = Orders::empty("bank").with_release(1, release(3), ReleaseCommand::Pause, "x", NOW);
    let signed = SignedOrders::sign(o.clone(), &key(60));
    let decoded = SignedOrders::decode(&signed.encode()).unwrap();
    assert_eq!(decoded.verify(&root).unwrap(), &o);
    // A publisher or CA key is not an operator (Uptane's split).
    for k in [40, 50, 7] {
        assert!(matches!(
            SignedOrders::sign(o.clone(), &key(k)).verify(&root),
            Err(OrdersError::UnknownSigner(_))
        ));
    }
    // A changed byte breaks the signature.
    let mut forged = signed.clone();
    forged.orders.releases[0].command = ReleaseCommand::Resume;
    assert_eq!(forged.verify(&root), Err(OrdersError::BadSignature));
    // Another fleet's orders are refused.
    let mut other = o.clone();
    other.fleet = "shop".into();
    assert!(matches!(
        SignedOrders::sign(other, &key(60)).verify(&root),
        Err(OrdersError::OtherFleet { .. })
    ));
    // Not newer than held; made under a newer root than held.
    assert!(matches!(
        signed.verify_after(&root, Some(&o)),
        Err(OrdersError::NotNewer { .. })
    ));
    let next = o.with_release(2, release(3), ReleaseCommand::Resume, "y", NOW + 1);
    assert_eq!((next.root_version, next.version), (2, 1));
    assert!(next.replaces(&o));
    assert!(matches!(
        SignedOrders::sign(next, &key(60)).verify_after(&root, Some(&o)),
        Err(OrdersError::NewerRoot { .. })
    ));
    // Garbage does not decode, and does not panic.
    assert!(SignedOrders::decode(&[0xff; 40]).is_err());
}

#[test]
fn release_orders_stay_bounded_oldest_dropped_first() {
    let mut o = Orders::empty("bank");
    for i in 0..RELEASE_ORDERS_MAX + 10 {
        let id = ReleaseId(*blake3::hash(&i.to_le_bytes()).as_bytes());
        o = o.with_release(1, id, ReleaseCommand::Pause, "p", NOW + i as i64);
    }
    assert_eq!(o.releases.len(), RELEASE_ORDERS_MAX);
    o.validate().unwrap();
    let first = ReleaseId(*blake3::hash(&0usize.to_le_bytes()).as_bytes());
    assert!(o.release_order(&first).is_none(), "the oldest went first");
    // A year on, the old orders are dropped when the next is made.
    let later = o.with_release(
        1,
        first,
        ReleaseCommand::Pause,
        "p",
        NOW + RELEASE_ORDER_KEPT_S + 2000,
    );
    assert_eq!(later.releases.len(), 1);
    assert!(SignedOrders::sign(o, &key(60)).encode().len() < ORDERS_BYTES_MAX);
}

use super::*;

const NOW: i64 = 1_800_000_000;
const YEAR: i64 = 365 * 86_400;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn public(i: u8) -> PublisherKey {
    PublisherKey(key(i).verifying_key().to_bytes())
}

fn named(name: &str, i: u8) -> NamedKey {
    NamedKey {
        name: name.into(),
        key: public(i),
    }
}

/// Root `version` with root keys `roots` (threshold `threshold`), CA key 50, publisher 60 on
/// `security`, approvers 61 and 62, two signatures needed on `security`.
fn root(version: u64, roots: &[u8], threshold: u32) -> Root {
    Root {
        format_version: ROOT_FORMAT_VERSION,
        fleet: "bank".into(),
        version,
        expires_unix_s: NOW + YEAR,
        root_keys: roots
            .iter()
            .map(|&i| named(&format!("root-{i}"), i))
            .collect(),
        root_threshold: threshold,
        ca_keys: vec![named("ca", 50)],
        publishers: vec![ScopedKey {
            name: "release-team".into(),
            key: public(60),
            channels: vec!["security".into()],
        }],
        approvers: vec![
            ScopedKey {
                name: "ciso".into(),
                key: public(61),
                channels: Vec::new(),
            },
            ScopedKey {
                name: "change-board".into(),
                key: public(62),
                channels: vec!["security/".into()],
            },
        ],
        approvals: vec![ApprovalRule {
            channels: "security".into(),
            threshold: 2,
            emergency_threshold: 1,
        }],
        operators: vec![named("ops", 70)],
    }
}

fn signed(r: Root, by: &[u8]) -> SignedRoot {
    let keys: Vec<SigningKey> = by.iter().map(|&i| key(i)).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    SignedRoot::sign(r, &refs)
}

#[test]
fn channel_scopes_match_whole_segments() {
    assert!(channel_in_scope("security", "security"));
    assert!(channel_in_scope("security", "security/openssl"));
    assert!(channel_in_scope("security/", "security/openssl"));
    assert!(!channel_in_scope("security", "security-evil"));
    assert!(!channel_in_scope("security", "securityx/openssl"));
    assert!(!channel_in_scope("security/openssl", "security"));
    assert!(channel_in_scope("", "anything/at/all"));
    assert!(channel_in_scope("*", "anything"));
}

#[test]
fn a_first_root_needs_its_own_threshold() {
    let r = root(1, &[1, 2, 3], 2);
    assert!(signed(r.clone(), &[1, 2]).verify_first().is_ok());
    assert!(matches!(
        signed(r.clone(), &[1]).verify_first(),
        Err(RootError::BelowThreshold { valid: 1, .. })
    ));
    // The same key twice counts once; a key that is no root key counts for nothing.
    let mut twice = signed(r.clone(), &[1]);
    twice.signatures.push(twice.signatures[0].clone());
    assert!(twice.verify_first().is_err());
    assert!(signed(r.clone(), &[1, 9]).verify_first().is_err());
    // A changed byte after signing breaks every signature.
    let mut altered = signed(r, &[1, 2]);
    altered.signed.ca_keys[0].key = public(51);
    assert!(matches!(
        altered.verify_first(),
        Err(RootError::BelowThreshold { valid: 0, .. })
    ));
}

#[test]
fn rotation_takes_a_root_signed_by_both_thresholds_only() {
    let v1 = root(1, &[1, 2, 3], 2);
    // v2 moves to keys 3, 4, 5 (threshold 2): signed by 1, 2 (v1's threshold) and 4, 5.
    let v2 = root(2, &[3, 4, 5], 2);
    assert_eq!(
        verify_update(&v1, &signed(v2.clone(), &[1, 2, 4, 5])).unwrap(),
        v2
    );
    // Key 3 is in both: 1 + 3 meet v1's threshold, 3 + 4 v2's.
    assert!(verify_update(&v1, &signed(v2.clone(), &[1, 3, 4])).is_ok());
    // Only the new keys: refused (a thief's new root).
    assert!(matches!(
        verify_update(&v1, &signed(v2.clone(), &[3, 4, 5])),
        Err(RootError::BelowThreshold { by, valid: 1, .. }) if by == "v1's"
    ));
    // Only the old keys: refused (the new threshold is not met).
    assert!(matches!(
        verify_update(&v1, &signed(v2.clone(), &[1, 2])),
        Err(RootError::BelowThreshold { by, .. }) if by == "its own"
    ));
    // An older or equal version, or one that skips: refused.
    let v2s = signed(v2, &[1, 2, 4, 5]);
    let taken = verify_update(&v1, &v2s).unwrap();
    assert!(matches!(
        verify_update(&taken, &v2s),
        Err(RootError::NotNext {
            trusted: 2,
            found: 2
        })
    ));
    let v1s = signed(v1.clone(), &[1, 2]);
    assert!(matches!(
        verify_update(&taken, &v1s),
        Err(RootError::NotNext { .. })
    ));
    let v3 = signed(root(3, &[1, 2, 3], 2), &[1, 2, 3]);
    assert!(matches!(
        verify_update(&v1, &v3),
        Err(RootError::NotNext {
            trusted: 1,
            found: 3
        })
    ));
    // Another fleet's root, even signed by the same keys: refused.
    let mut other = root(2, &[1, 2, 3], 2);
    other.fleet = "other".into();
    assert!(matches!(
        verify_update(&v1, &signed(other, &[1, 2, 3])),
        Err(RootError::OtherFleet { .. })
    ));
}

#[test]
fn a_chain_is_walked_in_order_and_only_its_end_must_be_current() {
    let v1 = root(1, &[1, 2], 1);
    let mut v2 = root(2, &[2, 3], 1);
    v2.expires_unix_s = NOW - 10; // long expired: still a step
    let v3 = root(3, &[3, 4], 1);
    let chain = vec![
        signed(v1.clone(), &[1]),
        signed(v2, &[2]),
        signed(v3.clone(), &[3]),
    ];
    let (taken, err) = update_chain(&v1, &chain, NOW);
    assert_eq!(err, None);
    assert_eq!(
        taken.iter().map(|r| r.signed.version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    // The end expired: nothing taken.
    let (taken, err) = update_chain(&v1, &chain, v3.expires_unix_s);
    assert!(taken.is_empty());
    assert!(matches!(err, Some(RootError::Expired { version: 3, .. })));
    // A bad step stops the walk; the steps before it are taken.
    let bad = vec![
        signed(root(2, &[2, 3], 1), &[2]),
        signed(root(3, &[3, 4], 1), &[4]),
    ];
    let (taken, err) = update_chain(&v1, &bad, NOW);
    assert_eq!(taken.len(), 1);
    assert!(matches!(err, Some(RootError::BelowThreshold { .. })));
    // Too long a chain: refused whole.
    let long: Vec<SignedRoot> = (2..=(ROOT_CHAIN_MAX as u64 + 2))
        .map(|v| signed(root(v, &[1], 1), &[1]))
        .collect();
    assert!(matches!(
        update_chain(&root(1, &[1], 1), &long, NOW),
        (t, Some(RootError::ChainTooLong { .. })) if t.is_empty()
    ));
}

#[test]
fn the_file_and_the_wire_forms_verify_alike_and_bound_what_they_read() {
    let s = signed(root(1, &[1, 2, 3], 2), &[1, 3]);
    let json = s.to_json();
    assert!(json.contains(&public(1).to_hex()), "keys in hex: {json}");
    let back = SignedRoot::from_json(&json).unwrap();
    assert_eq!(back, s);
    assert!(back.verify_first().is_ok());
    let wire = SignedRoot::decode(&s.encode()).unwrap();
    assert_eq!(wire, s);
    assert!(matches!(
        SignedRoot::decode(&vec![0u8; ROOT_BYTES_MAX + 1]),
        Err(RootError::Decode(ManifestError::TooLarge { .. }))
    ));
    assert!(matches!(
        SignedRoot::from_json("{\"signed\": 1}"),
        Err(RootError::Json(_))
    ));
    // A key written as bare hex reads too.
    let bare = json.replace(&format!("ed25519:{}", public(2)), &public(2).to_hex());
    assert_ne!(bare, json);
    assert_eq!(SignedRoot::from_json(&bare).unwrap(), s);
}

#[test]
fn a_root_that_breaks_its_rules_is_refused_with_the_rule() {
    let ok = root(1, &[1, 2], 2);
    assert_eq!(ok.validate(), Ok(()));
    let broken = |f: &dyn Fn(&mut Root), says: &str| {
        let mut r = ok.clone();
        f(&mut r);
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains(says), "{e} should say {says}");
    };
    broken(&|r| r.root_threshold = 3, "root_threshold");
    broken(&|r| r.root_threshold = 0, "root_threshold");
    broken(&|r| r.version = 0, "version");
    broken(&|r| r.fleet = "Bank!".into(), "fleet name");
    broken(&|r| r.ca_keys.clear(), "ca_keys");
    broken(&|r| r.root_keys.push(named("root-1", 9)), "two keys named");
    broken(&|r| r.root_keys.push(named("again", 1)), "named twice");
    broken(
        &|r| r.publishers[0].channels = vec!["Security".into()],
        "scope",
    );
    broken(
        &|r| r.approvals[0].threshold = 4,
        "only 3 publisher and approver keys",
    );
    broken(&|r| r.approvals[0].emergency_threshold = 0, "emergency");
    broken(&|r| r.approvals[0].emergency_threshold = 3, "emergency");
    broken(
        &|r| {
            r.root_keys = (0..=ROOT_KEYS_MAX as u8)
                .map(|i| named(&format!("k{i}"), i + 100))
                .collect()
        },
        "more than",
    );
    let mut later = ok.clone();
    later.format_version = 2;
    assert!(matches!(
        later.validate(),
        Err(RootError::UnsupportedFormat { found: 2, .. })
    ));
}

#[test]
fn approvals_take_the_longest_scope_and_emergencies_their_own_threshold() {
    let mut r = root(1, &[1], 1);
    r.approvals.push(ApprovalRule {
        channels: "security/openssl".into(),
        threshold: 3,
        emergency_threshold: 2,
    });
    r.approvers.push(ScopedKey {
        name: "crypto-lead".into(),
        key: public(63),
        channels: vec!["security/openssl".into()],
    });
    assert_eq!(r.validate(), Ok(()));
    assert_eq!(r.release_threshold("security/kernel", false), 2);
    assert_eq!(r.release_threshold("security/kernel", true), 1);
    assert_eq!(r.release_threshold("security/openssl", false), 3);
    assert_eq!(r.release_threshold("security/openssl", true), 2);
    assert_eq!(r.release_threshold("security-evil", false), 1);
    assert_eq!(r.release_threshold("apps/office", false), 1);
    let policy = r.trust_policy();
    assert_eq!(policy.publishers.iter().filter(|p| !p.approver).count(), 1);
    assert_eq!(
        policy.publishers.iter().filter(|p| p.approver).count(),
        r.approvers.len()
    );
    assert!(policy.publishers[0].allows_channel("security/openssl"));
    assert!(!policy.publishers[0].allows_channel("security-evil"));
}

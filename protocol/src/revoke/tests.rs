use super::*;
use crate::cert::CERT_FORMAT_VERSION;
use crate::testkeys::{NOW, key, root};

fn node(i: u8) -> NodeId {
    NodeId(key(i).verifying_key().to_bytes())
}

fn cert(n: u8, not_before: i64) -> NodeCert {
    NodeCert {
        format_version: CERT_FORMAT_VERSION,
        fleet: "bank".into(),
        node: node(n),
        site: "branch-042".into(),
        region: "emea".into(),
        labels: Vec::new(),
        not_before_unix_s: not_before,
        expires_unix_s: not_before + 90 * 86_400,
        issuer: PublisherKey(key(50).verifying_key().to_bytes()),
    }
}

#[test]
fn a_list_revokes_the_certificates_a_node_had_before_not_those_after() {
    let l = Revocations::empty("bank")
        .next(1, node(9), "laptop stolen", NOW)
        .unwrap();
    assert_eq!(l.version, 1);
    let e = l
        .revokes(&cert(9, NOW - 60))
        .expect("the old certificate is revoked");
    assert_eq!(e.reason, "laptop stolen");
    assert!(
        l.revokes(&cert(9, NOW)).is_some(),
        "one of the same second too"
    );
    assert!(
        l.revokes(&cert(9, NOW + 1)).is_none(),
        "a node enrolled again afterwards is admitted"
    );
    assert!(
        l.revokes(&cert(8, NOW - 60)).is_none(),
        "other nodes are not"
    );
}

#[test]
fn the_next_list_keeps_the_others_sorted_and_drops_entries_past_every_certificate() {
    let mut l = Revocations::empty("bank");
    for (i, n) in [7u8, 3, 9].into_iter().enumerate() {
        l = l.next(1, node(n), "compromised", NOW + i as i64).unwrap();
    }
    assert_eq!(l.version, 3);
    assert_eq!(l.entries.len(), 3);
    assert_eq!(l.validate(), Ok(()));
    // Revoking a listed node again moves its time; the count stays.
    let again = l.next(1, node(3), "again", NOW + 100).unwrap();
    assert_eq!(again.entries.len(), 3);
    assert_eq!(again.entry(&node(3)).unwrap().at_unix_s, NOW + 100);
    // A year and more later the old entries cover no valid certificate and leave.
    let later = NOW + CERT_TTL_MAX_S + CERT_SKEW_MAX_S + 200;
    let pruned = again
        .next(1, node(1), "x".repeat(500).as_str(), later)
        .unwrap();
    assert_eq!(pruned.entries.len(), 1, "{:?}", pruned.entries);
    assert_eq!(pruned.entries[0].reason.len(), REASON_BYTES_MAX);
    assert_eq!(pruned.validate(), Ok(()));
}

#[test]
fn a_full_list_takes_no_more() {
    let mut l = Revocations::empty("bank");
    l.version = 1;
    l.entries = (0..REVOKED_MAX as u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            Revoked {
                node: NodeId(id),
                at_unix_s: NOW,
                reason: "r".repeat(REASON_BYTES_MAX),
            }
        })
        .collect();
    assert_eq!(l.validate(), Ok(()));
    assert!(l.next(1, node(1), "one more", NOW).is_none());
    let signed = SignedRevocations::sign(l, &key(60));
    assert!(
        signed.encode().len() <= REVOCATIONS_BYTES_MAX,
        "a full list fits its bound: {} bytes",
        signed.encode().len()
    );
    assert!(SignedRevocations::decode(&signed.encode()).is_ok());
}

#[test]
fn only_an_operator_or_ca_key_of_the_fleet_signs_a_list_and_only_a_newer_one_is_taken() {
    let l = Revocations::empty("bank")
        .next(1, node(9), "stolen", NOW)
        .unwrap();
    let r = root();
    for signer in [50u8, 60] {
        let s = SignedRevocations::sign(l.clone(), &key(signer));
        let back = SignedRevocations::decode(&s.encode()).unwrap();
        assert_eq!(back.verify(&r), Ok(&l));
        assert_eq!(back.verify_after(&r, None), Ok(&l));
        assert_eq!(
            back.verify_after(&r, Some(&l)),
            Err(RevokeError::NotNewer { held: 1, found: 1 }),
            "no replay of the list held"
        );
    }
    let stranger = SignedRevocations::sign(l.clone(), &key(1));
    assert!(matches!(
        stranger.verify(&r),
        Err(RevokeError::UnknownSigner(_))
    ));
    let mut altered = SignedRevocations::sign(l.clone(), &key(60));
    altered.list.entries.clear();
    assert_eq!(altered.verify(&r), Err(RevokeError::BadSignature));
    let mut other = l.clone();
    other.fleet = "other".into();
    assert!(matches!(
        SignedRevocations::sign(other, &key(60)).verify(&r),
        Err(RevokeError::OtherFleet { .. })
    ));
    let mut unsorted = l.next(1, node(3), "x", NOW).unwrap();
    unsorted.entries.reverse();
    assert!(matches!(
        SignedRevocations::sign(unsorted, &key(60)).verify(&r),
        Err(RevokeError::Invalid(_))
    ));
    assert!(SignedRevocations::decode(&[1, 2, 3]).is_err());
}

#[test]
fn a_list_under_a_newer_root_replaces_any_under_an_older_one_and_none_names_a_root_not_held() {
    let mut r = root();
    r.version = 2;
    // A key of root v1, since dropped, signed a list of a huge version under v1.
    let mut hostile = Revocations::empty("bank")
        .next(1, node(1), "everyone", NOW)
        .unwrap();
    hostile.version = u64::MAX;
    // The next list under v2 replaces it, and starts its numbering again.
    let honest = hostile.without(2, &node(1), NOW + 10).unwrap();
    assert_eq!((honest.root_version, honest.version), (2, 1));
    assert!(honest.entries.is_empty());
    assert!(honest.replaces(&hostile));
    assert!(!hostile.replaces(&honest));
    let signed = SignedRevocations::sign(honest.clone(), &key(60));
    assert_eq!(signed.verify_after(&r, Some(&hostile)), Ok(&honest));
    // A list that names a root newer than the one held is refused until that root is.
    let ahead = honest.next(3, node(4), "x", NOW + 20).unwrap();
    assert_eq!(
        SignedRevocations::sign(ahead, &key(60)).verify_after(&r, Some(&honest)),
        Err(RevokeError::NewerRoot { held: 2, found: 3 })
    );
    // Taking a node off a list it is not on makes no list.
    assert!(honest.without(2, &node(7), NOW).is_none());
}

//! Signature, trust, time and version rules of `verify_release`.

use super::*;
use protocol::envelope::{SignatureBytes, verify_signed};
use protocol::{ManifestError, ManifestSignature, SignedManifest, sign_manifest, verify_release};

fn signed(m: &Manifest, k: &SigningKey) -> Vec<u8> {
    sign_manifest(m, k).encode()
}

#[test]
fn valid_release_verifies_and_id_hashes_manifest_bytes() {
    let k = key(1);
    let env = sign_manifest(&sample_manifest(), &k);
    let r = verify_release(&env.encode(), &policy_for(&[(&k, &[])]), NOW, |_| Some(6)).unwrap();
    assert_eq!(
        r.id,
        protocol::ReleaseId::of_manifest_bytes(&env.manifest_bytes)
    );
    assert_eq!(r.manifest, sample_manifest());
    assert_eq!(r.signers, vec!["publisher-0".to_string()]);
}

#[test]
fn unknown_key_is_refused() {
    let err = verify_release(
        &signed(&sample_manifest(), &key(2)),
        &policy_for(&[(&key(1), &[])]),
        NOW,
        |_| None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ManifestError::UnknownKey(PublisherKey(key(2).verifying_key().to_bytes()))
    );
    assert!(err.to_string().contains("unknown key"));
}

#[test]
fn tampered_manifest_fails_signature() {
    let k = key(1);
    let mut env = sign_manifest(&sample_manifest(), &k);
    let last = env.manifest_bytes.len() - 1;
    env.manifest_bytes[last] ^= 1;
    let err = verify_release(&env.encode(), &policy_for(&[(&k, &[])]), NOW, |_| None).unwrap_err();
    assert!(matches!(err, ManifestError::BadSignature(_)));
    assert!(err.to_string().contains("does not verify"));
}

#[test]
fn signature_from_other_key_under_trusted_name_is_refused() {
    let trusted = key(1);
    let mut env = sign_manifest(&sample_manifest(), &key(2));
    env.signatures[0].key = PublisherKey(trusted.verifying_key().to_bytes());
    let err = verify_release(&env.encode(), &policy_for(&[(&trusted, &[])]), NOW, |_| {
        None
    })
    .unwrap_err();
    assert!(matches!(err, ManifestError::BadSignature(_)));
}

#[test]
fn unsigned_and_oversigned_envelopes_are_refused() {
    let k = key(1);
    let mut env = sign_manifest(&sample_manifest(), &k);
    let sig = env.signatures[0];
    env.signatures.clear();
    let policy = policy_for(&[(&k, &[])]);
    assert_eq!(
        verify_signed(&env.encode(), &policy).unwrap_err(),
        ManifestError::Unsigned
    );
    env.signatures = vec![sig; 17];
    assert!(matches!(
        verify_signed(&env.encode(), &policy),
        Err(ManifestError::TooManySignatures { count: 17, .. })
    ));
}

#[test]
fn key_outside_its_channel_prefix_is_refused() {
    let k = key(1);
    let err = verify_release(
        &signed(&sample_manifest(), &k),
        &policy_for(&[(&k, &["apps/"])]),
        NOW,
        |_| None,
    )
    .unwrap_err();
    assert!(matches!(err, ManifestError::KeyNotAllowedForChannel { .. }));
    assert!(err.to_string().contains("security/openssl"));
    // The right prefix passes.
    verify_release(
        &signed(&sample_manifest(), &k),
        &policy_for(&[(&k, &["security/"])]),
        NOW,
        |_| None,
    )
    .unwrap();
}

#[test]
fn threshold_counts_distinct_trusted_keys() {
    let (a, b) = (key(1), key(2));
    let mut policy = policy_for(&[(&a, &[]), (&b, &[])]);
    policy.threshold = 2;
    let mut env = sign_manifest(&sample_manifest(), &a);
    // The same signature twice is still one key.
    env.signatures.push(env.signatures[0]);
    assert_eq!(
        verify_signed(&env.encode(), &policy).unwrap_err(),
        ManifestError::BelowThreshold {
            valid: 1,
            threshold: 2
        }
    );
    let second = sign_manifest(&sample_manifest(), &b).signatures.remove(0);
    env.signatures.push(second);
    verify_signed(&env.encode(), &policy).unwrap();
}

#[test]
fn expired_manifest_is_refused() {
    let k = key(1);
    let m = sample_manifest();
    let err = verify_release(
        &signed(&m, &k),
        &policy_for(&[(&k, &[])]),
        m.expires_unix_s,
        |_| None,
    )
    .unwrap_err();
    assert!(matches!(err, ManifestError::Expired { .. }));
    assert!(err.to_string().contains("expired"));
}

#[test]
fn manifest_from_the_far_future_is_refused() {
    let k = key(1);
    let mut m = sample_manifest();
    m.created_unix_s = NOW + 2 * 86_400;
    m.expires_unix_s = NOW + 40 * 86_400;
    let err =
        verify_release(&signed(&m, &k), &policy_for(&[(&k, &[])]), NOW, |_| None).unwrap_err();
    assert!(matches!(err, ManifestError::CreatedInFuture { .. }));
}

#[test]
fn replayed_or_older_version_is_refused() {
    let k = key(1);
    let policy = policy_for(&[(&k, &[])]);
    let bytes = signed(&sample_manifest(), &k);
    for highest in [7, 8] {
        let err = verify_release(&bytes, &policy, NOW, |_| Some(highest)).unwrap_err();
        assert_eq!(
            err,
            ManifestError::VersionNotNewer {
                channel: "security/openssl".into(),
                version: 7,
                highest
            }
        );
    }
}

#[test]
fn invalid_structure_is_refused_even_when_signed() {
    let k = key(1);
    let mut m = sample_manifest();
    m.entries[0].path = "/README".into();
    let err =
        verify_release(&signed(&m, &k), &policy_for(&[(&k, &[])]), NOW, |_| None).unwrap_err();
    assert!(matches!(err, ManifestError::BadPath { .. }));
}

#[test]
fn non_canonical_encoding_is_refused() {
    // Re-encode the manifest with a trailing byte inside the signed bytes: it decodes to the
    // same value only if trailing bytes were ignored, and must be refused either way.
    let k = key(1);
    let mut bytes = protocol::codec::encode(&sample_manifest());
    bytes.push(0);
    let sig = {
        use ed25519_dalek::Signer;
        let mut msg = protocol::envelope::SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(&bytes);
        k.sign(&msg).to_bytes()
    };
    let env = SignedManifest {
        format_version: protocol::MANIFEST_FORMAT_VERSION,
        manifest_bytes: bytes,
        signatures: vec![ManifestSignature {
            key: PublisherKey(k.verifying_key().to_bytes()),
            signature: SignatureBytes(sig),
        }],
    };
    let err = verify_signed(&env.encode(), &policy_for(&[(&k, &[])])).unwrap_err();
    assert!(matches!(
        err,
        ManifestError::Decode { .. } | ManifestError::NonCanonical
    ));
}

#[test]
fn garbage_envelope_gives_a_decode_error() {
    let policy = policy_for(&[(&key(1), &[])]);
    for garbage in [&b""[..], b"\xff\xff\xff\xff", &[0u8; 100]] {
        assert!(verify_signed(garbage, &policy).is_err());
    }
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Flipping any byte of a signed envelope never panics and never verifies as a
        /// different manifest.
        #[test]
        fn mutated_envelope_never_panics(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = key(1);
            let policy = policy_for(&[(&k, &[])]);
            let mut bytes = signed(&sample_manifest(), &k);
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(r) = verify_signed(&bytes, &policy) {
                prop_assert_eq!(r.manifest, sample_manifest());
            }
        }
    }
}

#[test]
fn a_root_s_approval_rules_set_how_many_signatures_a_release_needs_and_approvers_alone_are_not_enough()
 {
    use protocol::envelope::{check_signatures, sign_manifest, signature_over, verify_signed};
    use protocol::root::{ApprovalRule, NamedKey, ScopedKey};
    let publisher = key(20);
    let approver = key(21);
    let mut r = protocol::root::Root {
        format_version: protocol::root::ROOT_FORMAT_VERSION,
        fleet: "bank".into(),
        version: 1,
        expires_unix_s: i64::MAX,
        root_keys: vec![NamedKey {
            name: "r".into(),
            key: PublisherKey(key(1).verifying_key().to_bytes()),
        }],
        root_threshold: 1,
        ca_keys: Vec::new(),
        publishers: Vec::new(),
        approvers: Vec::new(),
        approvals: Vec::new(),
        operators: Vec::new(),
    };
    r.publishers = vec![ScopedKey {
        name: "team".into(),
        key: PublisherKey(publisher.verifying_key().to_bytes()),
        channels: vec!["security".into()],
    }];
    r.approvers = vec![ScopedKey {
        name: "ciso".into(),
        key: PublisherKey(approver.verifying_key().to_bytes()),
        channels: Vec::new(),
    }];
    r.approvals = vec![ApprovalRule {
        channels: "security".into(),
        threshold: 2,
        emergency_threshold: 1,
    }];
    let policy = r.trust_policy();
    assert_eq!(policy.threshold_for("security/openssl", false), 2);
    assert_eq!(policy.threshold_for("security/openssl", true), 1);
    assert_eq!(policy.threshold_for("tools", false), 1);
    let manifest = |emergency: bool| {
        let mut m = sample_manifest();
        m.channel = "security/openssl".into();
        m.emergency = emergency;
        m
    };
    let encode = |m: &protocol::Manifest, keys: &[&SigningKey]| {
        let mut env = sign_manifest(m, keys[0]);
        for k in &keys[1..] {
            env.add_signature(signature_over(&env.manifest_bytes, k));
        }
        env.encode()
    };
    // The publisher alone: 1 of 2, held; with the approver's signature: complete.
    let one = encode(&manifest(false), &[&publisher]);
    let held = check_signatures(&one, &policy).unwrap();
    assert_eq!((held.have, held.need), (1, 2));
    assert!(matches!(
        held.complete(),
        Err(protocol::ManifestError::BelowThreshold {
            valid: 1,
            threshold: 2
        })
    ));
    let two = encode(&manifest(false), &[&publisher, &approver]);
    assert!(verify_signed(&two, &policy).is_ok());
    // An emergency needs the rule's lower threshold only.
    let urgent = encode(&manifest(true), &[&publisher]);
    assert!(verify_signed(&urgent, &policy).is_ok());
    // Approvers alone never make a release.
    let approvers_only = encode(&manifest(true), &[&approver]);
    assert!(matches!(
        check_signatures(&approvers_only, &policy),
        Err(protocol::ManifestError::ApproversOnly { .. })
    ));
}

#[test]
fn format_three_carries_patches_and_an_older_format_that_claims_them_is_refused() {
    let k = key(1);
    let policy = policy_for(&[(&k, &[])]);
    let mut m = sample_manifest();
    m.patches = vec![crate::validation::patch("bin/tool", 7, &[40])];
    let r = verify_release(&signed(&m, &k), &policy, NOW, |_| None).unwrap();
    assert_eq!(r.manifest.patches, m.patches);
    // The piece is a unit peers exchange after the release's chunks.
    let units = r.manifest.units();
    assert_eq!(units.len(), r.manifest.unique_chunks().len() + 1);
    assert_eq!(units.last(), m.patches[0].pieces.last());
    for old in [1, 2] {
        let mut lying = m.clone();
        lying.format_version = old;
        assert!(matches!(lying.validate(), Err(ManifestError::BadPatch(_))));
        assert!(verify_signed(&signed(&lying, &k), &policy).is_err());
    }
}

#[test]
fn format_one_manifests_still_verify_with_their_ids_and_format_two_carries_the_rollout() {
    let k = key(1);
    let policy = policy_for(&[(&k, &[])]);
    // A format-1 manifest: its bytes are format 2's without the rollout, as it was signed.
    let mut v1 = sample_manifest();
    v1.format_version = 1;
    let env1 = sign_manifest(&v1, &k);
    assert_eq!(env1.format_version, 1);
    let v2_bytes = sample_manifest().canonical_bytes();
    assert!(env1.manifest_bytes.len() < v2_bytes.len());
    assert_eq!(
        env1.manifest_bytes[1..],
        v2_bytes[1..env1.manifest_bytes.len()]
    );
    let r1 = verify_release(&env1.encode(), &policy, NOW, |_| None).unwrap();
    assert_eq!(
        r1.id,
        protocol::ReleaseId::of_manifest_bytes(&env1.manifest_bytes)
    );
    assert!(r1.manifest.rollout.is_default());

    // Format 2 with a target, a requirement and rings.
    let mut v2 = sample_manifest();
    v2.rollout = protocol::Rollout {
        target: protocol::Selector::parse("os=debian12,role!=atm", "target").unwrap(),
        requires: protocol::Requirement::parse_list("base/libc>=3").unwrap(),
        rings: protocol::Ring::parse_list("canary: labels ring=0; broad: rest").unwrap(),
        gate: protocol::Gate::parse("soak=10m").unwrap(),
    };
    let r2 = verify_release(&signed(&v2, &k), &policy, NOW, |_| None).unwrap();
    assert_eq!(r2.manifest.rollout, v2.rollout);

    // A format-1 envelope whose manifest claims rollout rules, or a format mismatch
    // between the envelope and the manifest, is refused.
    let mut lying = v2.clone();
    lying.format_version = 1;
    assert!(verify_signed(&signed(&lying, &k), &policy).is_err());
    assert!(matches!(
        lying.validate(),
        Err(ManifestError::BadRollout(_))
    ));
    let mut mismatched = sign_manifest(&v2, &k);
    mismatched.format_version = 1;
    assert!(matches!(
        verify_signed(&mismatched.encode(), &policy),
        Err(ManifestError::UnsupportedFormat { .. })
    ));

    // A format-2 manifest (a rollout, no patches) keeps its bytes: format 3's without the
    // empty patch list.
    let mut f2 = v2.clone();
    f2.format_version = 2;
    let env2 = sign_manifest(&f2, &k);
    let f3_bytes = v2.canonical_bytes();
    assert_eq!(env2.manifest_bytes.len() + 1, f3_bytes.len());
    assert_eq!(env2.manifest_bytes[1..], f3_bytes[1..f3_bytes.len() - 1]);
    let r2 = verify_release(&env2.encode(), &policy, NOW, |_| None).unwrap();
    assert_eq!(r2.manifest.rollout, v2.rollout);
    assert!(r2.manifest.patches.is_empty());

    // Rules the rollout breaks are refused with the reason.
    let mut bad = sample_manifest();
    bad.rollout.rings = vec![protocol::Ring {
        name: "only".into(),
        members: protocol::RingMembers::Rest,
    }];
    let e = verify_signed(&signed(&bad, &k), &policy).unwrap_err();
    assert!(
        e.to_string().contains("rollout: rings: 2 to 8 rings"),
        "{e}"
    );
}

//! The store on its own: atomic sessions, dedup, recovery of crash leftovers, corruption.

use super::*;
use ::store::Store;
use ::store::ingest::{self, Progress};
use ed25519_dalek::SigningKey;
use protocol::{
    ChunkingParams, MANIFEST_FORMAT_VERSION, Manifest, PublisherKey, Severity, TrustPolicy,
    TrustedPublisher, VerifiedRelease, sign_manifest, verify_release,
};
use std::fs;
use std::sync::Arc;

const NOW: i64 = 1_795_392_000;

pub(crate) fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

pub(crate) fn policy() -> TrustPolicy {
    TrustPolicy {
        publishers: vec![TrustedPublisher {
            name: "t".into(),
            key: PublisherKey(key().verifying_key().to_bytes()),
            channel_prefixes: vec![],
            approver: false,
        }],
        threshold: 1,
        rules: Vec::new(),
    }
}

/// Ingests `path` into `store` and commits it as `version`; returns the release.
pub(crate) fn publish(store: &Arc<Store>, path: &Path, version: u64) -> VerifiedRelease {
    publish_patched(store, path, version, false).0
}

/// [`publish`], with patches from the channel's earlier versions when `patches` (as
/// `p2pctl publish` makes them).
pub(crate) fn publish_patched(
    store: &Arc<Store>,
    path: &Path,
    version: u64,
    patches: bool,
) -> (VerifiedRelease, ::store::patch::Made) {
    let tree = ingest::scan(path).unwrap();
    let mut session = store.begin_ingest();
    let entries = ingest::ingest(
        &tree,
        ChunkingParams::default(),
        &mut session,
        &Arc::new(Progress::default()),
    )
    .unwrap();
    let made = if patches {
        let bases = ::store::patch::bases(store, "security/store", version).unwrap();
        ::store::patch::make(&mut session, store, &entries, &bases, 19, |rel| {
            let e = tree.entries.iter().find(|e| e.rel == rel).unwrap();
            fs::read(&e.abs)
        })
        .unwrap()
    } else {
        ::store::patch::Made::default()
    };
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        channel: "security/store".into(),
        version,
        created_unix_s: NOW,
        expires_unix_s: NOW + 86_400,
        severity: Severity::High,
        cvss: None,
        emergency: false,
        download_windows: Vec::new(),
        install_windows: Vec::new(),
        chunking: ChunkingParams::default(),
        entries,
        total_bytes: tree.total_bytes,
        rollout: Default::default(),
        patches: made.patches.clone(),
    };
    let env = sign_manifest(&manifest, &key()).encode();
    let release =
        verify_release(&env, &policy(), NOW, |c| store.highest_version(c).unwrap()).unwrap();
    session.commit(Some(&release), NOW).unwrap();
    (release, made)
}

/// A rebuilt library: an insertion near its start (which shifts every later byte, so few
/// chunks after it match), a few bytes changed throughout.
fn rebuilt(old: &[u8], seed: u64) -> Vec<u8> {
    let mut new = old[..5000].to_vec();
    new.extend_from_slice(&random_bytes(seed, 3000));
    new.extend_from_slice(&old[5000..]);
    for i in (0..new.len()).step_by(200_000) {
        new[i] ^= 0x5a;
    }
    new
}

#[test]
fn a_new_version_carries_patches_from_earlier_ones_that_rebuild_its_changed_files() {
    use ::store::patch::{RebuildError, rebuild};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("lib")).unwrap();
    let lib1 = random_bytes(1, 1 << 20);
    let notes: String = (0..400)
        .map(|i| format!("line {i} of the notes\n"))
        .collect();
    fs::write(tree.join("lib/libfoo.so.1.0.0"), &lib1).unwrap();
    fs::write(tree.join("NOTES"), &notes).unwrap();
    fs::write(tree.join("data.bin"), random_bytes(2, 300 << 10)).unwrap();
    fs::write(tree.join("noise.bin"), random_bytes(3, 200 << 10)).unwrap();
    let (v1, made) = publish_patched(&store, &tree, 1, true);
    assert!(made.patches.is_empty(), "nothing to patch from");

    // Version 2: the library rebuilt under a new name, the notes edited, the data as it
    // was, the noise all new.
    let lib2 = rebuilt(&lib1, 4);
    fs::remove_file(tree.join("lib/libfoo.so.1.0.0")).unwrap();
    fs::write(tree.join("lib/libfoo.so.1.0.1"), &lib2).unwrap();
    fs::write(tree.join("NOTES"), notes.replace("line 200 ", "LINE 200 ")).unwrap();
    fs::write(tree.join("noise.bin"), random_bytes(5, 200 << 10)).unwrap();
    let (v2, made) = publish_patched(&store, &tree, 2, true);
    let m2 = &v2.manifest;
    let patched: Vec<(&str, &str)> = m2
        .patches
        .iter()
        .map(|p| (p.path.as_str(), p.base_path.as_str()))
        .collect();
    assert_eq!(
        patched,
        [
            ("NOTES", "NOTES"),
            ("lib/libfoo.so.1.0.1", "lib/libfoo.so.1.0.0")
        ]
    );
    assert!(m2.patches.iter().all(|p| p.base == v1.id));
    // Much smaller than the chunks they stand for.
    assert!(made.patch_bytes * 20 < made.chunk_bytes, "{made:?}");
    // Each rebuilds its file from what the store holds, chunk by chunk.
    for p in &m2.patches {
        let (_, size, chunks) = m2.files().find(|f| f.0 == p.path).unwrap();
        let rebuilt = rebuild(&store, p, size, chunks).unwrap();
        assert_eq!(rebuilt.len(), chunks.len());
        for ((id, bytes), c) in rebuilt.iter().zip(chunks) {
            assert_eq!(*id, c.id);
            assert!(c.id.matches(bytes));
        }
    }
    // The pieces are units of the release, after its chunks.
    let units = m2.units();
    assert_eq!(
        units.len(),
        m2.unique_chunks().len() + m2.patches.iter().map(|p| p.pieces.len()).sum::<usize>()
    );
    assert!(::store::release::verify_chunks(&store, m2).unwrap().is_ok());

    // A patch that names a base of another size, or a piece the store lacks, rebuilds
    // nothing.
    let lib = m2.patches[1].clone();
    let (_, size, chunks) = m2.files().find(|f| f.0 == lib.path).unwrap();
    let mut wrong = lib.clone();
    wrong.base_size += 1;
    assert!(matches!(
        rebuild(&store, &wrong, size, chunks),
        Err(RebuildError::Base(_))
    ));
    let mut missing = lib.clone();
    missing.pieces[0].id = protocol::ChunkId::of(b"not stored");
    assert!(matches!(
        rebuild(&store, &missing, size, chunks),
        Err(RebuildError::Missing(_))
    ));
    // Against another file, it does not rebuild this one.
    let mut other = lib.clone();
    other.path = "NOTES".into();
    let (_, nsize, nchunks) = m2.files().find(|f| f.0 == "NOTES").unwrap();
    assert!(rebuild(&store, &other, nsize, nchunks).is_err());

    // Version 3: patches from both earlier versions.
    let lib3 = rebuilt(&lib2, 6);
    fs::write(tree.join("lib/libfoo.so.1.0.1"), &lib3).unwrap();
    let (v3, _) = publish_patched(&store, &tree, 3, true);
    let bases: Vec<_> = v3
        .manifest
        .patches
        .iter()
        .filter(|p| p.path == "lib/libfoo.so.1.0.1")
        .map(|p| p.base)
        .collect();
    assert_eq!(bases, sorted(vec![v1.id, v2.id]));

    // Version 1 removed and the packs compacted: the pieces of version 2's and 3's patches
    // stay (peers that hold the old files fetch them), whatever else goes.
    let pieces: Vec<protocol::ChunkRef> = [&v2, &v3]
        .iter()
        .flat_map(|v| v.manifest.patches.iter().flat_map(|p| p.pieces.clone()))
        .collect();
    store.remove_release(&v1.id).unwrap();
    assert!(store.compact().unwrap().packs_rewritten > 0);
    for p in &pieces {
        let bytes = store.read_chunk(&p.id).unwrap().expect("piece kept");
        assert!(p.id.matches(&bytes));
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn new_version_stores_only_changed_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let file = dir.path().join("image.bin");
    let mut data = random_bytes(11, 64 << 20);
    fs::write(&file, &data).unwrap();
    publish(&store, &file, 1);
    let before = store.stats().unwrap();
    // Rewrite 1 MiB in the middle.
    let mid = data.len() / 2;
    data[mid..mid + (1 << 20)].copy_from_slice(&random_bytes(12, 1 << 20));
    fs::write(&file, &data).unwrap();
    publish(&store, &file, 2);
    let after = store.stats().unwrap();
    let growth = after.pack_bytes - before.pack_bytes;
    assert!(
        growth <= 2 << 20,
        "store grew by {growth} bytes for a 1 MiB change"
    );
    assert!(growth >= 1 << 20);
    assert_eq!(after.releases, 2);
}

#[test]
fn dropped_session_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let file = dir.path().join("a.bin");
    fs::write(&file, random_bytes(1, 3 << 20)).unwrap();
    publish(&store, &file, 1);
    let before = store.stats().unwrap();
    let pack_sizes = |d: &Path| -> u64 {
        fs::read_dir(d.join("store/packs"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let disk_before = pack_sizes(dir.path());
    {
        let mut session = store.begin_ingest();
        let bytes = random_bytes(2, 100_000);
        assert!(
            session
                .put_chunk(protocol::ChunkId::of(&bytes), &bytes)
                .unwrap()
        );
        // Dropped without commit.
    }
    assert_eq!(store.stats().unwrap(), before);
    assert_eq!(pack_sizes(dir.path()), disk_before);
}

#[test]
fn open_truncates_bytes_past_the_committed_length_and_removes_unknown_packs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let file = dir.path().join("a.bin");
    fs::write(&file, random_bytes(3, 2 << 20)).unwrap();
    let release = {
        let store = Arc::new(Store::open(&root).unwrap());
        publish(&store, &file, 1)
    };
    // Simulate a crash mid-write: garbage after the committed bytes, and a pack no commit named.
    let pack = fs::read_dir(root.join("packs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let committed = fs::metadata(&pack).unwrap().len();
    let mut f = fs::OpenOptions::new().append(true).open(&pack).unwrap();
    std::io::Write::write_all(&mut f, &random_bytes(4, 300_000)).unwrap();
    fs::write(root.join("packs/99999999.pack"), b"half a publish").unwrap();

    let store = Store::open(&root).unwrap();
    assert_eq!(fs::metadata(&pack).unwrap().len(), committed);
    assert!(!root.join("packs/99999999.pack").exists());
    let report = ::store::release::verify_chunks(&store, &release.manifest).unwrap();
    assert!(report.is_ok());
}

#[test]
fn corrupt_bytes_on_disk_are_detected_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let file = dir.path().join("a.bin");
    fs::write(&file, random_bytes(5, 1 << 20)).unwrap();
    let store = Arc::new(Store::open(&root).unwrap());
    let release = publish(&store, &file, 1);
    let chunk = release.manifest.unique_chunks()[3];
    let loc = store.locate(&chunk.id).unwrap().unwrap();
    let pack = root.join(format!("packs/{:08}.pack", loc.pack));
    let mut bytes = fs::read(&pack).unwrap();
    bytes[loc.offset as usize + 10] ^= 0x40;
    fs::write(&pack, bytes).unwrap();
    drop(store);
    let store = Store::open(&root).unwrap();
    assert!(matches!(
        store.read_chunk(&chunk.id),
        Err(::store::StoreError::Corrupt(id)) if id == chunk.id
    ));
    let report = ::store::release::verify_chunks(&store, &release.manifest).unwrap();
    assert_eq!(report.corrupt, vec![chunk.id]);
}

#[test]
fn replayed_version_is_refused_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let file = dir.path().join("a.bin");
    fs::write(&file, random_bytes(6, 100_000)).unwrap();
    let r1 = publish(&store, &file, 1);
    // The same verified release committed again (a replay) is refused by the store itself.
    let session = store.begin_ingest();
    let err = session.commit(Some(&r1), NOW).unwrap_err();
    assert!(
        matches!(err, ::store::StoreError::VersionNotNewer { .. }),
        "{err}"
    );
}

#[test]
fn a_committed_release_and_an_activation_record_carry_their_audit_entries() {
    use ::store::audit::AuditEvent;
    use node::activate::{ActivationRecord, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let file = dir.path().join("patch.bin");
    fs::write(&file, random_bytes(5, 300_000)).unwrap();
    let v1 = publish(&store, &file, 1);

    // A session that commits with an audit event stores both; one dropped stores neither.
    let mut session = store.begin_ingest();
    session.audit_on_commit(AuditEvent::completed(&v1));
    session.commit(None, NOW).unwrap();
    let mut dropped = store.begin_ingest();
    dropped.audit_on_commit(AuditEvent::published(&v1));
    drop(dropped);

    let record = |outcome| ActivationRecord {
        channel: "security/store".into(),
        version: 1,
        dir: dir.path().join("v1"),
        at_unix_s: NOW,
        previous: None,
        outcome,
    };
    store
        .record_activation(&v1.id, &record(Outcome::Installed))
        .unwrap();
    let failed = Outcome::Failed {
        reason: "apply exited 3".into(),
        exit_code: Some(3),
        output: vec!["x".repeat(10_000)],
        rolled_back_to: None,
    };
    store.record_activation(&v1.id, &record(failed)).unwrap();

    let (entries, whole) = store.audit_entries(None).unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds, ["completed", "activated", "activation_failed"]);
    assert_eq!(whole.entries, 3);
    assert_eq!(whole.head, entries[2].hash());
    match &entries[2].event {
        AuditEvent::ActivationFailed {
            reason, version, ..
        } => {
            assert_eq!(reason, "apply exited 3");
            assert_eq!(*version, 1);
        }
        other => panic!("{other:?}"),
    }
    let intact = store.verify_audit().unwrap().unwrap();
    assert_eq!((intact.entries, intact.head), (3, whole.head));
    // Since the second entry: the last two, the log's length unchanged.
    let (recent, again) = store.audit_entries(Some(entries[1].at_unix_ms)).unwrap();
    assert!(recent.len() >= 2 && recent.last() == entries.last());
    assert_eq!(again.entries, 3);

    // The log survives a reopen and goes on from where it was.
    drop(store);
    let store = Store::open(&dir.path().join("store")).unwrap();
    store.append_audit(AuditEvent::completed(&v1)).unwrap();
    let intact = store.verify_audit().unwrap().unwrap();
    assert_eq!(intact.entries, 4);
}

/// A release announced and accepted is recorded once: a fetch that resumes after a restart
/// finds it pending and writes nothing again.
#[test]
fn an_accepted_release_is_audited_once_however_often_its_fetch_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(5, 50_000)).unwrap();
    let origin = Arc::new(Store::open(&dir.path().join("origin")).unwrap());
    let v = publish(&origin, &src, 1);
    let branch_dir = dir.path().join("branch");
    let announced = |store: &Store| {
        store
            .audit_entries(None)
            .unwrap()
            .0
            .iter()
            .filter(|e| matches!(e.event, ::store::audit::AuditEvent::Announced { .. }))
            .count()
    };
    {
        let branch = Store::open(&branch_dir).unwrap();
        assert!(branch.add_pending(&v).unwrap(), "new the first time");
        assert!(!branch.add_pending(&v).unwrap(), "pending already");
        assert_eq!(announced(&branch), 1);
    }
    // Reopened, as after a restart: the resumed fetch adds it again, and nothing is written.
    let branch = Store::open(&branch_dir).unwrap();
    assert!(!branch.add_pending(&v).unwrap());
    assert_eq!(announced(&branch), 1);
}

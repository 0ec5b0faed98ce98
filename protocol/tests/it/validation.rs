//! One rejection test per structural rule of `Manifest::validate`.

use super::*;
use protocol::ManifestError;
use protocol::manifest::{CHUNKS_PER_RELEASE_MAX, ENTRIES_PER_RELEASE_MAX};
use protocol::path::{PathRule, SymlinkRule};

fn with_entries(entries: Vec<Entry>) -> Manifest {
    let mut m = sample_manifest();
    m.total_bytes = entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    m.entries = entries;
    m
}

fn file(path: &str, len: u32) -> Entry {
    Entry {
        path: path.into(),
        kind: EntryKind::File {
            mode: 0o644,
            size: u64::from(len),
            chunks: if len == 0 {
                vec![]
            } else {
                vec![chunk(9, len)]
            },
        },
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        path: path.into(),
        kind: EntryKind::Dir { mode: 0o755 },
    }
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry {
        path: path.into(),
        kind: EntryKind::Symlink {
            target: target.into(),
        },
    }
}

#[test]
fn valid_manifest_passes() {
    sample_manifest().validate().unwrap();
}

#[test]
fn absolute_path_is_refused() {
    let err = with_entries(vec![file("/etc/passwd", 1)])
        .validate()
        .unwrap_err();
    assert!(
        matches!(&err, ManifestError::BadPath { path, rule: PathRule::Absolute } if path == "/etc/passwd")
    );
    assert!(err.to_string().contains("absolute"), "{err}");
}

#[test]
fn parent_component_is_refused() {
    let err = with_entries(vec![dir("a"), file("a/../../x", 1)])
        .validate()
        .unwrap_err();
    assert!(matches!(
        err,
        ManifestError::BadPath {
            rule: PathRule::ParentComponent,
            ..
        }
    ));
    assert!(err.to_string().contains(".."), "{err}");
}

#[test]
fn dot_and_empty_components_are_refused() {
    let err = with_entries(vec![file("./x", 1)]).validate().unwrap_err();
    assert!(matches!(
        err,
        ManifestError::BadPath {
            rule: PathRule::DotComponent,
            ..
        }
    ));
    let err = with_entries(vec![dir("a"), file("a//x", 1)])
        .validate()
        .unwrap_err();
    assert!(matches!(
        err,
        ManifestError::BadPath {
            rule: PathRule::EmptyComponent,
            ..
        }
    ));
}

#[test]
fn control_characters_and_backslashes_are_refused() {
    let err = with_entries(vec![file("a\\b", 1)]).validate().unwrap_err();
    assert!(matches!(
        err,
        ManifestError::BadPath {
            rule: PathRule::ForbiddenChar('\\'),
            ..
        }
    ));
    let err = with_entries(vec![file("a\u{1b}[2J", 1)])
        .validate()
        .unwrap_err();
    assert!(matches!(
        err,
        ManifestError::BadPath {
            rule: PathRule::ForbiddenChar(_),
            ..
        }
    ));
}

#[test]
fn non_utf8_path_is_refused_at_decode() {
    // Paths are Strings; a manifest whose path bytes are not UTF-8 cannot decode, and the
    // error says so.
    let m = with_entries(vec![file("abc", 1)]);
    let mut bytes = protocol::codec::encode(&m);
    let at = bytes.windows(3).position(|w| w == b"abc").unwrap();
    bytes[at] = 0xff;
    let err = protocol::codec::decode::<Manifest, { 1 << 20 }>(&bytes, "manifest").unwrap_err();
    assert_eq!(err, ManifestError::NotUtf8 { what: "manifest" });
    assert!(err.to_string().contains("UTF-8"));
}

#[test]
fn duplicate_paths_are_refused() {
    let err = with_entries(vec![file("x", 1), file("x", 1)])
        .validate()
        .unwrap_err();
    assert_eq!(err, ManifestError::DuplicatePath("x".into()));
    assert!(err.to_string().contains("twice"));
}

#[test]
fn unsorted_entries_are_refused() {
    let err = with_entries(vec![file("b", 1), file("a", 1)])
        .validate()
        .unwrap_err();
    assert_eq!(err, ManifestError::NotSorted("a".into(), "b".into()));
}

#[test]
fn entry_without_parent_directory_is_refused() {
    let err = with_entries(vec![file("a/x", 1)]).validate().unwrap_err();
    assert_eq!(err, ManifestError::MissingParent("a/x".into()));
}

#[test]
fn entry_under_a_symlink_or_file_is_refused() {
    // Writing `link/x` would write through the symlink: refused.
    let err = with_entries(vec![dir("d"), symlink("link", "d"), file("link/x", 1)])
        .validate()
        .unwrap_err();
    assert_eq!(err, ManifestError::ParentNotDirectory("link/x".into()));
    let err = with_entries(vec![file("f", 1), file("f/x", 1)])
        .validate()
        .unwrap_err();
    assert_eq!(err, ManifestError::ParentNotDirectory("f/x".into()));
}

#[test]
fn symlink_out_of_release_is_refused() {
    let err = with_entries(vec![symlink("escape", "../etc/shadow")])
        .validate()
        .unwrap_err();
    assert!(matches!(
        &err,
        ManifestError::BadSymlink { path, rule: SymlinkRule::Escapes, .. } if path == "escape"
    ));
    assert!(err.to_string().contains("outside the release"), "{err}");
    let err = with_entries(vec![symlink("abs", "/etc/shadow")])
        .validate()
        .unwrap_err();
    assert!(matches!(
        err,
        ManifestError::BadSymlink {
            rule: SymlinkRule::Absolute,
            ..
        }
    ));
}

#[test]
fn symlink_through_another_symlink_is_refused() {
    // `up -> .` then `x -> up/..` is lexically inside but physically the release's parent.
    let err = with_entries(vec![symlink("up", "."), symlink("x", "up/..")])
        .validate()
        .unwrap_err();
    assert!(matches!(
        err,
        ManifestError::BadSymlink {
            rule: SymlinkRule::ThroughNonDirectory(_),
            ..
        }
    ));
}

#[test]
fn symlink_inside_release_is_accepted() {
    with_entries(vec![
        dir("bin"),
        symlink("bin/sh", "../lib/sh"),
        dir("lib"),
        file("lib/sh", 3),
    ])
    .validate()
    .unwrap();
}

#[test]
fn file_size_that_does_not_match_chunks_is_refused() {
    let mut m = sample_manifest();
    if let EntryKind::File { size, .. } = &mut m.entries[0].kind {
        *size = 11;
    }
    let err = m.validate().unwrap_err();
    assert_eq!(
        err,
        ManifestError::FileSizeMismatch {
            path: "README".into(),
            declared: 11,
            actual: 10
        }
    );
    assert!(err.to_string().contains("add up"));
}

#[test]
fn total_size_that_does_not_add_up_is_refused() {
    let mut m = sample_manifest();
    m.total_bytes += 1;
    assert_eq!(
        m.validate().unwrap_err(),
        ManifestError::TotalSizeMismatch {
            declared: 311,
            actual: 310
        }
    );
}

#[test]
fn zero_length_or_oversized_chunk_is_refused() {
    let mut m = sample_manifest();
    if let EntryKind::File { chunks, size, .. } = &mut m.entries[0].kind {
        chunks.push(chunk(4, 0));
        *size = 10;
    }
    assert!(matches!(
        m.validate(),
        Err(ManifestError::BadChunkLength { len: 0, .. })
    ));
    let max = ChunkingParams::default().max_bytes;
    let m = with_entries(vec![file("big", max + 2)]);
    assert!(matches!(
        m.validate(),
        Err(ManifestError::BadChunkLength { .. })
    ));
}

#[test]
fn invalid_mode_is_refused() {
    let mut m = sample_manifest();
    m.entries[1].kind = EntryKind::Dir { mode: 0o40755 };
    assert!(matches!(
        m.validate(),
        Err(ManifestError::BadMode { mode: 0o40755, .. })
    ));
}

#[test]
fn bad_channel_is_refused() {
    let mut m = sample_manifest();
    m.channel = "../x".into();
    assert_eq!(
        m.validate().unwrap_err(),
        ManifestError::BadChannel("../x".into())
    );
}

#[test]
fn expiry_before_creation_is_refused() {
    let mut m = sample_manifest();
    m.expires_unix_s = m.created_unix_s;
    assert!(matches!(
        m.validate(),
        Err(ManifestError::ExpiresBeforeCreated { .. })
    ));
}

#[test]
fn unknown_format_version_is_refused() {
    let mut m = sample_manifest();
    m.format_version = 99;
    assert!(matches!(
        m.validate(),
        Err(ManifestError::UnsupportedFormat { found: 99, .. })
    ));
}

#[test]
fn bad_cvss_and_chunking_are_refused() {
    let mut m = sample_manifest();
    m.cvss = Some(protocol::Cvss(101));
    assert!(matches!(m.validate(), Err(ManifestError::BadCvss(10, 1))));
    let mut m = sample_manifest();
    m.chunking.normalization = 9;
    assert!(matches!(m.validate(), Err(ManifestError::BadChunking(_))));
}

#[test]
fn too_many_entries_or_chunks_are_refused() {
    let mut m = sample_manifest();
    m.entries = (0..=ENTRIES_PER_RELEASE_MAX)
        .map(|i| dir(&format!("d{i:07}")))
        .collect();
    m.total_bytes = 0;
    assert!(matches!(
        m.validate(),
        Err(ManifestError::TooManyEntries { .. })
    ));

    let n = CHUNKS_PER_RELEASE_MAX + 1;
    let m = with_entries(vec![Entry {
        path: "huge".into(),
        kind: EntryKind::File {
            mode: 0o644,
            size: n as u64,
            chunks: vec![chunk(1, 1); n],
        },
    }]);
    assert!(matches!(
        m.validate(),
        Err(ManifestError::TooManyChunks { .. })
    ));
}

#[test]
fn release_windows_are_bounded_and_checked() {
    use protocol::ReleaseWindow;
    use protocol::manifest::{RELEASE_WINDOWS_MAX, WINDOW_CRON_BYTES_MAX, WINDOW_DURATION_S_MAX};
    let window = |cron: &str, duration_s: u32, zone: Option<&str>| ReleaseWindow {
        cron: cron.into(),
        duration_s,
        zone: zone.map(Into::into),
    };
    let mut m = sample_manifest();
    m.emergency = true;
    m.install_windows = vec![window("0 2 * * SAT", 4 * 3600, Some("Asia/Tokyo"))];
    m.download_windows = vec![window("0 22 * * *", 7 * 3600, None)];
    m.validate().unwrap();

    let refused = |install: ReleaseWindow| {
        let mut m = sample_manifest();
        m.install_windows = vec![install];
        match m.validate() {
            Err(ManifestError::BadWindow { kind, .. }) => kind == "install",
            _ => false,
        }
    };
    assert!(refused(window("", 60, None)));
    assert!(refused(window(
        &"1".repeat(WINDOW_CRON_BYTES_MAX + 1),
        60,
        None
    )));
    assert!(refused(window("0 2 * * SAT\n", 60, None)));
    assert!(refused(window("0 2 * * SAT", 0, None)));
    assert!(refused(window(
        "0 2 * * SAT",
        WINDOW_DURATION_S_MAX + 1,
        None
    )));
    assert!(refused(window("0 2 * * SAT", 60, Some(""))));
    assert!(refused(window(
        "0 2 * * SAT",
        60,
        Some("../../etc/passwd x")
    )));

    let mut m = sample_manifest();
    m.download_windows = vec![window("0 2 * * SAT", 60, None); RELEASE_WINDOWS_MAX + 1];
    assert!(matches!(
        m.validate(),
        Err(ManifestError::BadWindow {
            kind: "download",
            ..
        })
    ));
}

/// A patch of `path` from the same path of release `base` (a made-up id), in pieces of
/// these lengths.
pub(crate) fn patch(path: &str, base: u8, pieces: &[u32]) -> protocol::FilePatch {
    protocol::FilePatch {
        path: path.into(),
        base: protocol::ReleaseId([base; 32]),
        base_path: path.into(),
        base_size: 290,
        pieces: pieces
            .iter()
            .enumerate()
            .map(|(i, &len)| chunk(200 + i as u8, len))
            .collect(),
    }
}

#[test]
fn patches_break_no_rule_or_are_refused_naming_it() {
    use protocol::manifest::{PATCH_BASES_MAX, PATCH_FILE_BYTES_MAX, PATCH_PIECE_BYTES_MAX};
    let refused = |patches: Vec<protocol::FilePatch>, why: &str| {
        let mut m = sample_manifest();
        m.patches = patches;
        match m.validate() {
            Err(ManifestError::BadPatch(e)) => assert!(e.contains(why), "{e} (wanted {why})"),
            other => panic!("{other:?} (wanted {why})"),
        }
    };
    let mut m = sample_manifest();
    m.patches = vec![patch("README", 1, &[9]), patch("bin/tool", 1, &[120])];
    m.validate().unwrap();
    // Several bases, up to the bound.
    m.patches = (0..PATCH_BASES_MAX as u8)
        .map(|b| patch("bin/tool", b, &[50]))
        .collect();
    m.validate().unwrap();
    refused(
        (0..=PATCH_BASES_MAX as u8)
            .map(|b| patch("bin/tool", b, &[50]))
            .collect(),
        "base releases",
    );
    refused(
        vec![patch("bin/tool", 1, &[9]), patch("README", 1, &[9])],
        "sorted",
    );
    refused(
        vec![patch("README", 1, &[9]), patch("README", 1, &[8])],
        "sorted",
    );
    refused(vec![patch("bin/link", 1, &[9])], "no such file");
    refused(vec![patch("bin", 1, &[9])], "no such file");
    refused(vec![patch("nothing", 1, &[9])], "no such file");
    let mut bad_base = patch("README", 1, &[9]);
    bad_base.base_path = "../etc/passwd".into();
    refused(vec![bad_base], "base path");
    let mut big_base = patch("README", 1, &[9]);
    big_base.base_size = PATCH_FILE_BYTES_MAX + 1;
    refused(vec![big_base], "moves as chunks");
    refused(vec![patch("README", 1, &[])], "no pieces");
    refused(vec![patch("bin/tool", 1, &[100, 100])], "pieces must be");
    refused(vec![patch("bin/tool", 1, &[0])], "pieces must be");
    refused(vec![patch("README", 1, &[10])], "not smaller than the file");
    // Whole pieces, then a shorter last one, in a file large enough.
    let mut m = sample_manifest();
    let size = u64::from(PATCH_PIECE_BYTES_MAX) * 3;
    let EntryKind::File {
        size: s, chunks, ..
    } = &mut m.entries[3].kind
    else {
        unreachable!()
    };
    *s = size;
    *chunks = (0..12)
        .map(|i| chunk(50 + i, PATCH_PIECE_BYTES_MAX / 4))
        .collect();
    m.total_bytes = size + 10;
    m.patches = vec![patch("bin/tool", 1, &[PATCH_PIECE_BYTES_MAX, 5])];
    m.validate().unwrap();
    m.patches = vec![patch("bin/tool", 1, &[5, PATCH_PIECE_BYTES_MAX])];
    assert!(matches!(m.validate(), Err(ManifestError::BadPatch(_))));
}

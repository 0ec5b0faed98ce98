//! The manifest: everything a node needs to know about a release, before it holds any of it.
//!
//! A manifest names the release (channel and version), says how urgent it is (severity and an
//! optional CVSS score), how long it is valid, how it was chunked, and lists every entry of the
//! released tree: directories, files with their mode, size and ordered chunks, and symlinks.
//! Entries are sorted by path (byte order), which makes the encoding canonical and duplicates
//! easy to see.
//!
//! [`Manifest::validate`] checks everything that does not depend on who signed it or on the
//! time: limits, paths, parents, symlink targets, modes, chunk lengths and sizes.

use crate::codec;
use crate::error::ManifestError;
use crate::ids::{ChunkId, ReleaseId};
use crate::path::{self, check_entry_path, resolve_symlink_target};
use crate::rollout::Rollout;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Version of the manifest layout this build writes. Format 2 appends the [`Rollout`] to
/// format 1's fields, format 3 the [`FilePatch`]es; formats 1 and 2 are still read (their
/// rollout is the default: every node, at once; they carry no patches), so releases
/// published before keep their ids and verify. A decoder refuses any other version.
pub const MANIFEST_FORMAT_VERSION: u16 = 3;

/// The oldest manifest layout this build reads.
pub const MANIFEST_FORMAT_OLDEST: u16 = 1;

/// Decode limit of a format-1 or format-2 manifest with the default rollout's and the empty
/// patch list's few bytes appended.
const OLD_FORMAT_DECODE_MAX: usize = MANIFEST_BYTES_MAX + 64;

/// Largest encoded manifest. 1 Mi chunks at 37 bytes each plus a large tree fit; a bigger
/// release should be split into several.
pub const MANIFEST_BYTES_MAX: usize = 64 << 20;

/// Most entries (files, directories, symlinks) in one release. Large OS images hold ~100k files.
pub const ENTRIES_PER_RELEASE_MAX: usize = 1 << 18;

/// Most chunks in one release: 64 GiB at the default 64 KiB average chunk size.
pub const CHUNKS_PER_RELEASE_MAX: usize = 1 << 20;

/// Most earlier releases one release carries patches from: a node one version behind is the
/// common case, two behind is not rare (WSUS express files serve several bases too); one
/// further behind fetches the changed files' chunks.
pub const PATCH_BASES_MAX: usize = 3;

/// Largest file, base or new, a patch is made for or applied to. Applying holds the base
/// file, the rebuilt one and zstd's window (which covers both) in memory: at this bound
/// about three times 64 MiB, inside a receiver's memory budget. A larger file moves as
/// chunks.
pub const PATCH_FILE_BYTES_MAX: u64 = 64 << 20;

/// Largest piece of a patch: a patch moves in pieces that peers request, serve, verify and
/// announce as they do chunks, so it is the default chunking's largest chunk and every
/// budget made for chunks holds for pieces.
pub const PATCH_PIECE_BYTES_MAX: u32 = 256 << 10;

/// Largest chunk a manifest may declare. A receiver holds one whole chunk in memory while it
/// verifies it, so this bounds memory per in-flight chunk.
pub const CHUNK_BYTES_MAX: u32 = 4 << 20;

/// Longest channel name, in bytes.
pub const CHANNEL_BYTES_MAX: usize = 128;

/// Permission bits a mode may carry (rwx for user/group/other plus setuid, setgid, sticky).
pub const MODE_BITS: u32 = 0o7777;

/// Most download windows, and most install windows, one release may carry. A weekly
/// schedule with one window per day needs seven.
pub const RELEASE_WINDOWS_MAX: usize = 8;

/// Longest cron expression of a release window, in bytes. A 7-field Quartz expression with
/// lists in every field stays well under it.
pub const WINDOW_CRON_BYTES_MAX: usize = 128;

/// Longest time-zone name of a release window, in bytes. The longest IANA name
/// (`America/Argentina/ComodRivadavia`) has 32.
pub const WINDOW_ZONE_BYTES_MAX: usize = 64;

/// Longest window a release may carry: one week, like a node's own windows.
pub const WINDOW_DURATION_S_MAX: u32 = 7 * 86_400;

/// How urgent a release is; orders scheduling and, later, maintenance-window exemptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Routine.
    Low,
    /// Should be applied in the next window.
    Medium,
    /// Important.
    High,
    /// Exploited or trivially exploitable; the 72-hour clock runs.
    Critical,
}

impl Severity {
    /// Lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            _ => Err(format!(
                "unknown severity {s:?}: use critical, high, medium or low"
            )),
        }
    }
}

/// A CVSS base score in tenths (98 is 9.8), so that the encoding stays exact and canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cvss(pub u8);

impl Cvss {
    /// Highest score, 10.0.
    pub const MAX_TENTHS: u8 = 100;

    /// The score as a float, for display.
    pub fn as_f32(&self) -> f32 {
        f32::from(self.0) / 10.0
    }
}

impl fmt::Display for Cvss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

impl FromStr for Cvss {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid CVSS score {s:?}: use a number from 0.0 to 10.0");
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, "0"),
        };
        if frac.len() != 1 {
            return Err(bad());
        }
        let whole: u8 = whole.parse().map_err(|_| bad())?;
        let frac: u8 = frac.parse().map_err(|_| bad())?;
        let tenths = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(bad)?;
        if tenths > Self::MAX_TENTHS {
            return Err(bad());
        }
        Ok(Self(tenths))
    }
}

/// The content-defined chunking algorithm a release was cut with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChunkingAlgorithm {
    /// FastCDC as published in 2020 (crate `fastcdc`, module `v2020`), default gear table.
    FastCdc2020,
}

/// How a release was chunked, recorded so any node can re-cut and re-verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkingParams {
    /// Algorithm.
    pub algorithm: ChunkingAlgorithm,
    /// Smallest chunk, except a file's last.
    pub min_bytes: u32,
    /// Target average chunk size.
    pub avg_bytes: u32,
    /// Largest chunk.
    pub max_bytes: u32,
    /// FastCDC normalization level (0 to 3).
    pub normalization: u8,
}

impl ChunkingParams {
    /// Smallest `min_bytes` the FastCDC implementation accepts.
    pub const MIN_BYTES_FLOOR: u32 = 64;
    /// Smallest `avg_bytes` the FastCDC implementation accepts.
    pub const AVG_BYTES_FLOOR: u32 = 256;
    /// Largest `avg_bytes` the FastCDC implementation accepts.
    pub const AVG_BYTES_CEIL: u32 = 4 << 20;

    /// Checks ranges and ordering.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |why: String| Err(ManifestError::BadChunking(why));
        if self.min_bytes < Self::MIN_BYTES_FLOOR {
            return bad(format!(
                "min {} is below {}",
                self.min_bytes,
                Self::MIN_BYTES_FLOOR
            ));
        }
        if self.avg_bytes < Self::AVG_BYTES_FLOOR || self.avg_bytes > Self::AVG_BYTES_CEIL {
            return bad(format!("avg {} is out of range", self.avg_bytes));
        }
        if self.max_bytes > CHUNK_BYTES_MAX {
            return bad(format!("max {} is above {CHUNK_BYTES_MAX}", self.max_bytes));
        }
        if !(self.min_bytes < self.avg_bytes && self.avg_bytes < self.max_bytes) {
            return bad(format!(
                "need min < avg < max, got {} / {} / {}",
                self.min_bytes, self.avg_bytes, self.max_bytes
            ));
        }
        if self.min_bytes % 2 != 0 || self.avg_bytes % 2 != 0 || self.max_bytes % 2 != 0 {
            return bad("sizes must be even".into());
        }
        if self.normalization > 3 {
            return bad(format!("normalization {} is above 3", self.normalization));
        }
        Ok(())
    }
}

impl Default for ChunkingParams {
    /// 16 KiB / 64 KiB / 256 KiB, normalization 1: casync's and desync's defaults (docs/DESIGN.md).
    fn default() -> Self {
        Self {
            algorithm: ChunkingAlgorithm::FastCdc2020,
            min_bytes: 16 << 10,
            avg_bytes: 64 << 10,
            max_bytes: 256 << 10,
            normalization: 1,
        }
    }
}

/// A maintenance window carried by a release (hawkBit's convention): it opens whenever the
/// cron expression `cron` fires, in time zone `zone`, and stays open `duration_s` seconds.
///
/// Without a zone the window is read in each node's own windows zone, so "Saturday 02:00"
/// means 02:00 local time at every site. The protocol checks only sizes and characters; the
/// node parses the expression and the zone (crate `scheduler`) and refuses a release whose
/// window it cannot read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReleaseWindow {
    /// 5-field cron or 6-7 field Quartz expression, e.g. `0 2 * * SAT`.
    pub cron: String,
    /// How long each window stays open, in seconds (1 to [`WINDOW_DURATION_S_MAX`]).
    pub duration_s: u32,
    /// IANA time zone, e.g. `Asia/Tokyo`; `None`: the node's windows zone.
    pub zone: Option<String>,
}

impl ReleaseWindow {
    fn validate(&self, kind: &'static str) -> Result<(), ManifestError> {
        let bad = |why: String| Err(ManifestError::BadWindow { kind, why });
        let printable = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if self.cron.is_empty() || self.cron.len() > WINDOW_CRON_BYTES_MAX || !printable(&self.cron)
        {
            return bad(format!(
                "cron expression must be 1 to {WINDOW_CRON_BYTES_MAX} printable ASCII bytes"
            ));
        }
        if self.duration_s == 0 || self.duration_s > WINDOW_DURATION_S_MAX {
            return bad(format!(
                "duration {} s is outside 1 s to 7 days",
                self.duration_s
            ));
        }
        if let Some(zone) = &self.zone {
            if zone.is_empty()
                || zone.len() > WINDOW_ZONE_BYTES_MAX
                || !zone
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
            {
                return bad(format!("{zone:?} is not an IANA time-zone name"));
            }
        }
        Ok(())
    }
}

/// One chunk of a file: its id and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's bytes.
    pub id: ChunkId,
    /// Length in bytes.
    pub len: u32,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory (possibly empty).
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file, the concatenation of its chunks.
    File {
        /// Permission bits.
        mode: u32,
        /// Size in bytes.
        size: u64,
        /// Chunks in file order.
        chunks: Vec<ChunkRef>,
    },
    /// A symbolic link whose target stays inside the release (see [`crate::path`]).
    Symlink {
        /// The target, relative to the link's directory.
        target: String,
    },
}

/// One entry of a release tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Release-relative path, `/`-separated.
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
}

/// The description of a release. Its canonical encoding is what publishers sign and what
/// the [`crate::ReleaseId`] hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u16,
    /// Channel, such as `security/openssl`. Versions are ordered per channel.
    pub channel: String,
    /// Version on the channel; each release must be strictly above the last one seen.
    pub version: u64,
    /// Creation time, unix seconds.
    pub created_unix_s: i64,
    /// Expiry time, unix seconds; an expired manifest is refused.
    pub expires_unix_s: i64,
    /// Urgency.
    pub severity: Severity,
    /// Optional CVSS base score.
    pub cvss: Option<Cvss>,
    /// Marked an emergency by its publisher: nodes may download it outside their download
    /// windows (never above their rate ceilings).
    pub emergency: bool,
    /// When the release may download, in addition to each node's own download windows
    /// (both must be open). Empty: the node's windows alone decide.
    pub download_windows: Vec<ReleaseWindow>,
    /// When the release may be installed, in addition to each node's own install windows
    /// (both must be open). Empty: the node's windows alone decide.
    pub install_windows: Vec<ReleaseWindow>,
    /// How the files were chunked.
    pub chunking: ChunkingParams,
    /// The tree, sorted by path.
    pub entries: Vec<Entry>,
    /// Sum of all file sizes.
    pub total_bytes: u64,
    /// Who installs it, after what, in which stages (format 2; the default in format 1).
    pub rollout: Rollout,
    /// Patches that rebuild changed files from files of earlier releases (format 3; none in
    /// formats 1 and 2), sorted by (path, base), each (path, base) once.
    pub patches: Vec<FilePatch>,
}

/// A patch that rebuilds one file of the release from a file of an earlier release of its
/// channel: zstd with the base file as a referenced prefix (`chunking::patch`). A node that
/// holds the base file fetches the patch's pieces instead of the file's chunks, rebuilds
/// the file and verifies every chunk of it by its id, so a patch is trusted no more than a
/// peer is: what it rebuilds either is the signed file or is thrown away.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FilePatch {
    /// The file it rebuilds: a file of this manifest.
    pub path: String,
    /// The release that holds the base file.
    pub base: ReleaseId,
    /// The base file's path in that release.
    pub base_path: String,
    /// The base file's size: a receiver checks it against its own manifest of `base`.
    pub base_size: u64,
    /// The patch's bytes, cut in pieces of at most [`PATCH_PIECE_BYTES_MAX`] (the last may
    /// be shorter), each addressed by its BLAKE3 id like a chunk.
    pub pieces: Vec<ChunkRef>,
}

impl FilePatch {
    /// The patch's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.pieces.iter().map(|p| u64::from(p.len)).sum()
    }
}

/// Whether `name` is a valid channel name: 1 to [`CHANNEL_BYTES_MAX`] bytes of `a-z`, `0-9`,
/// `.`, `_`, `-`, `/`, in `/`-separated segments that are neither empty, `.` nor `..`.
pub fn is_valid_channel(name: &str) -> bool {
    name.len() <= CHANNEL_BYTES_MAX
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/'))
        && name
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

impl Manifest {
    /// Number of chunk references over all files (a chunk used twice counts twice).
    pub fn chunk_count(&self) -> usize {
        self.files().map(|(_, _, chunks)| chunks.len()).sum()
    }

    /// Files as (path, size, chunks).
    pub fn files(&self) -> impl Iterator<Item = (&str, u64, &[ChunkRef])> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::File { size, chunks, .. } => {
                Some((e.path.as_str(), *size, chunks.as_slice()))
            }
            _ => None,
        })
    }

    /// Distinct chunks of the release with their lengths, in first-use order.
    pub fn unique_chunks(&self) -> Vec<ChunkRef> {
        let mut seen = std::collections::HashSet::new();
        self.files()
            .flat_map(|(_, _, chunks)| chunks.iter())
            .filter(|c| seen.insert(c.id))
            .copied()
            .collect()
    }

    /// What peers exchange of the release, in the order its bitmaps number them: its
    /// distinct chunks ([`unique_chunks`](Self::unique_chunks)), then the distinct pieces of
    /// its patches that are not among them. A node completes the release with its chunks;
    /// pieces are a shorter way to some of them.
    pub fn units(&self) -> Vec<ChunkRef> {
        let mut units = self.unique_chunks();
        let mut seen: std::collections::HashSet<ChunkId> = units.iter().map(|c| c.id).collect();
        for p in &self.patches {
            units.extend(p.pieces.iter().filter(|c| seen.insert(c.id)).copied());
        }
        units
    }

    /// The canonical encoding: what is signed and what the release id hashes. An older
    /// format encodes without the fields it lacks, as it was signed (one that claims
    /// rollout rules or patches keeps them, and no reader accepts it).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut bytes = codec::encode(self);
        if self.format_version <= 2 && self.patches.is_empty() {
            bytes.truncate(bytes.len() - codec::encode(&self.patches).len());
            if self.format_version == 1 && self.rollout.is_default() {
                bytes.truncate(bytes.len() - codec::encode(&self.rollout).len());
            }
        }
        bytes
    }

    /// Decodes manifest bytes of any format read (format 1 with the default rollout,
    /// formats 1 and 2 with no patches), within [`MANIFEST_BYTES_MAX`]; refuses any encoding
    /// but the canonical one.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        // The format is the first field, a u16 that bincode writes in one byte below 251.
        let manifest: Self = match bytes.first() {
            Some(v @ (1 | 2)) => {
                if bytes.len() > MANIFEST_BYTES_MAX {
                    return Err(ManifestError::TooLarge {
                        what: "manifest",
                        len: bytes.len(),
                        max: MANIFEST_BYTES_MAX,
                    });
                }
                let mut with_default = bytes.to_vec();
                if *v == 1 {
                    with_default.extend(codec::encode(&Rollout::default()));
                }
                with_default.extend(codec::encode(&Vec::<FilePatch>::new()));
                codec::decode::<_, OLD_FORMAT_DECODE_MAX>(&with_default, "manifest")?
            }
            _ => codec::decode::<_, MANIFEST_BYTES_MAX>(bytes, "manifest")?,
        };
        if !(MANIFEST_FORMAT_OLDEST..=MANIFEST_FORMAT_VERSION).contains(&manifest.format_version) {
            return Err(ManifestError::UnsupportedFormat {
                found: manifest.format_version,
                supported: MANIFEST_FORMAT_VERSION,
            });
        }
        if manifest.canonical_bytes() != bytes {
            return Err(ManifestError::NonCanonical);
        }
        Ok(manifest)
    }

    /// Checks every rule that does not depend on signatures or time. See the module docs.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !(MANIFEST_FORMAT_OLDEST..=MANIFEST_FORMAT_VERSION).contains(&self.format_version) {
            return Err(ManifestError::UnsupportedFormat {
                found: self.format_version,
                supported: MANIFEST_FORMAT_VERSION,
            });
        }
        if self.format_version == 1 && !self.rollout.is_default() {
            return Err(ManifestError::BadRollout(
                "a format-1 manifest carries no rollout rules".into(),
            ));
        }
        if self.format_version <= 2 && !self.patches.is_empty() {
            return Err(ManifestError::BadPatch(format!(
                "a format-{} manifest carries no patches",
                self.format_version
            )));
        }
        self.rollout
            .validate()
            .map_err(|e| ManifestError::BadRollout(e.to_string()))?;
        if !is_valid_channel(&self.channel) {
            return Err(ManifestError::BadChannel(self.channel.clone()));
        }
        if self.expires_unix_s <= self.created_unix_s {
            return Err(ManifestError::ExpiresBeforeCreated {
                created_unix_s: self.created_unix_s,
                expires_unix_s: self.expires_unix_s,
            });
        }
        if let Some(cvss) = self.cvss {
            if cvss.0 > Cvss::MAX_TENTHS {
                return Err(ManifestError::BadCvss(cvss.0 / 10, cvss.0 % 10));
            }
        }
        for (kind, windows) in [
            ("download", &self.download_windows),
            ("install", &self.install_windows),
        ] {
            if windows.len() > RELEASE_WINDOWS_MAX {
                return Err(ManifestError::BadWindow {
                    kind,
                    why: format!(
                        "{} windows, more than the limit of {RELEASE_WINDOWS_MAX}",
                        windows.len()
                    ),
                });
            }
            for w in windows {
                w.validate(kind)?;
            }
        }
        self.chunking.validate()?;
        if self.entries.len() > ENTRIES_PER_RELEASE_MAX {
            return Err(ManifestError::TooManyEntries {
                count: self.entries.len(),
                max: ENTRIES_PER_RELEASE_MAX,
            });
        }
        let pieces: usize = self.patches.iter().map(|p| p.pieces.len()).sum();
        let chunk_count = self.chunk_count().saturating_add(pieces);
        if chunk_count > CHUNKS_PER_RELEASE_MAX {
            return Err(ManifestError::TooManyChunks {
                count: chunk_count,
                max: CHUNKS_PER_RELEASE_MAX,
            });
        }

        // Paths: each valid, strictly increasing (so no duplicates), each parent a directory
        // listed earlier. Sorted order puts every parent before its children.
        let mut kinds: HashMap<&str, &EntryKind> = HashMap::with_capacity(self.entries.len());
        let mut previous: Option<&str> = None;
        for entry in &self.entries {
            let path = entry.path.as_str();
            check_entry_path(path).map_err(|rule| ManifestError::BadPath {
                path: path.to_owned(),
                rule,
            })?;
            if let Some(prev) = previous {
                match prev.cmp(path) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        return Err(ManifestError::DuplicatePath(path.to_owned()));
                    }
                    std::cmp::Ordering::Greater => {
                        return Err(ManifestError::NotSorted(path.to_owned(), prev.to_owned()));
                    }
                }
            }
            previous = Some(path);
            if let Some(parent) = path::parent(path) {
                match kinds.get(parent) {
                    None => return Err(ManifestError::MissingParent(path.to_owned())),
                    Some(EntryKind::Dir { .. }) => {}
                    Some(_) => return Err(ManifestError::ParentNotDirectory(path.to_owned())),
                }
            }
            kinds.insert(path, &entry.kind);
        }

        let mut total: u64 = 0;
        for entry in &self.entries {
            let path = entry.path.as_str();
            match &entry.kind {
                EntryKind::Dir { mode } => check_mode(path, *mode)?,
                EntryKind::File { mode, size, chunks } => {
                    check_mode(path, *mode)?;
                    let mut sum: u64 = 0;
                    for chunk in chunks {
                        if chunk.len == 0 || chunk.len > self.chunking.max_bytes {
                            return Err(ManifestError::BadChunkLength {
                                path: path.to_owned(),
                                len: chunk.len,
                                max: self.chunking.max_bytes,
                            });
                        }
                        sum += u64::from(chunk.len);
                    }
                    if sum != *size {
                        return Err(ManifestError::FileSizeMismatch {
                            path: path.to_owned(),
                            declared: *size,
                            actual: sum,
                        });
                    }
                    total = total.saturating_add(sum);
                }
                EntryKind::Symlink { target } => {
                    let is_dir = |p: &str| matches!(kinds.get(p), Some(EntryKind::Dir { .. }));
                    resolve_symlink_target(path, target, is_dir).map_err(|rule| {
                        ManifestError::BadSymlink {
                            path: path.to_owned(),
                            target: target.clone(),
                            rule,
                        }
                    })?;
                }
            }
        }
        if total != self.total_bytes {
            return Err(ManifestError::TotalSizeMismatch {
                declared: self.total_bytes,
                actual: total,
            });
        }
        self.validate_patches(&kinds)
    }

    /// The patches' rules: each rebuilds a file of this manifest of at most
    /// [`PATCH_FILE_BYTES_MAX`], from a base file of at most that size at a valid path of
    /// one of at most [`PATCH_BASES_MAX`] releases; its pieces are 1 to
    /// [`PATCH_PIECE_BYTES_MAX`] bytes, every one but the last exactly that, and the whole
    /// is smaller than the file it rebuilds; sorted by (path, base), each once.
    fn validate_patches(&self, kinds: &HashMap<&str, &EntryKind>) -> Result<(), ManifestError> {
        let bad = |p: &FilePatch, why: String| {
            Err(ManifestError::BadPatch(format!(
                "{} from {} of {}: {why}",
                p.path,
                p.base_path,
                p.base.short()
            )))
        };
        let mut bases: Vec<&ReleaseId> = Vec::new();
        let mut previous: Option<(&str, &ReleaseId)> = None;
        for p in &self.patches {
            let key = (p.path.as_str(), &p.base);
            if previous.is_some_and(|prev| prev >= key) {
                return bad(
                    p,
                    "patches are not sorted by path and base, or repeat one".into(),
                );
            }
            previous = Some(key);
            if !bases.contains(&&p.base) {
                bases.push(&p.base);
                if bases.len() > PATCH_BASES_MAX {
                    return bad(p, format!("more than {PATCH_BASES_MAX} base releases"));
                }
            }
            let Some(EntryKind::File { size, .. }) = kinds.get(p.path.as_str()) else {
                return bad(p, "no such file in this release".into());
            };
            if let Err(rule) = check_entry_path(&p.base_path) {
                return bad(p, format!("base path: {rule}"));
            }
            if *size > PATCH_FILE_BYTES_MAX || p.base_size > PATCH_FILE_BYTES_MAX {
                return bad(
                    p,
                    format!("a file over {PATCH_FILE_BYTES_MAX} bytes moves as chunks"),
                );
            }
            let Some((last, whole)) = p.pieces.split_last() else {
                return bad(p, "no pieces".into());
            };
            if whole.iter().any(|c| c.len != PATCH_PIECE_BYTES_MAX)
                || last.len == 0
                || last.len > PATCH_PIECE_BYTES_MAX
            {
                return bad(
                    p,
                    format!("pieces must be {PATCH_PIECE_BYTES_MAX} bytes, the last 1 to that"),
                );
            }
            if p.bytes() >= *size {
                return bad(p, format!("{} bytes, not smaller than the file", p.bytes()));
            }
        }
        Ok(())
    }
}

fn check_mode(path: &str, mode: u32) -> Result<(), ManifestError> {
    if mode & !MODE_BITS != 0 {
        return Err(ManifestError::BadMode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_and_cvss_parse() {
        assert_eq!("Critical".parse::<Severity>(), Ok(Severity::Critical));
        assert!("urgent".parse::<Severity>().is_err());
        assert!(Severity::Critical > Severity::High);
        assert_eq!("9.8".parse::<Cvss>(), Ok(Cvss(98)));
        assert_eq!("10".parse::<Cvss>(), Ok(Cvss(100)));
        assert_eq!(Cvss(98).to_string(), "9.8");
        assert!("10.1".parse::<Cvss>().is_err());
        assert!("9.85".parse::<Cvss>().is_err());
        assert!("-1".parse::<Cvss>().is_err());
    }

    #[test]
    fn channel_names_follow_the_rule() {
        assert!(is_valid_channel("security/openssl"));
        assert!(is_valid_channel("win-11_x64.cu"));
        assert!(!is_valid_channel(""));
        assert!(!is_valid_channel("Security"));
        assert!(!is_valid_channel("/abs"));
        assert!(!is_valid_channel("trailing/"));
        assert!(!is_valid_channel("../x"));
        assert!(!is_valid_channel("a//b"));
        assert!(!is_valid_channel(&"a".repeat(129)));
    }

    #[test]
    fn default_chunking_params_are_valid_and_bad_ones_are_not() {
        ChunkingParams::default().validate().unwrap();
        let p = ChunkingParams {
            min_bytes: ChunkingParams::default().avg_bytes,
            ..ChunkingParams::default()
        };
        assert!(matches!(p.validate(), Err(ManifestError::BadChunking(_))));
        let p = ChunkingParams {
            max_bytes: CHUNK_BYTES_MAX + 2,
            ..ChunkingParams::default()
        };
        assert!(matches!(p.validate(), Err(ManifestError::BadChunking(_))));
    }
}

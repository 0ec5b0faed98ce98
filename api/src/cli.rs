//! What `p2pd` and `p2pctl` share: logging set-up, exit codes, and human formatting.

use tracing_subscriber::EnvFilter;

/// Exit codes of both binaries (listed in their `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// The operation failed (IO, store, unexpected answer).
    Failed = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The daemon is not running or its socket cannot be used.
    NoDaemon = 3,
    /// The input was refused: untrusted key, version not newer, invalid path or manifest,
    /// file changed while publishing, destination not empty.
    Refused = 4,
    /// `p2pctl verify` found missing or corrupt chunks, or a bad signature; an export met a
    /// damaged chunk.
    Damaged = 5,
    /// `p2pctl fleet`: nodes failed to fetch or install the release (for scripts and alerts).
    NodesFailed = 6,
}

impl ExitCode {
    /// The process exit status.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Sets up `tracing` to stderr, filtered by `RUST_LOG` (default `info`). Text lines carry
/// colour only when stderr is a terminal and `NO_COLOR` is not set: a log redirected to a
/// file or read by journald gets plain text.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `count(1, "node")` → `1 node`, `count(3, "node")` → `3 nodes`, `count(2, "entry")` →
/// `2 entries`.
pub fn count(n: u64, singular: &str) -> String {
    if n == 1 {
        return format!("1 {singular}");
    }
    match singular.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{n} {stem}ies"),
        _ => format!("{n} {singular}s"),
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(1, "node"), "1 node");
        assert_eq!(count(0, "node"), "0 nodes");
        assert_eq!(count(2, "entry"), "2 entries");
        assert_eq!(count(1, "directory"), "1 directory");
        assert_eq!(count(5, "key"), "5 keys");
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}

//! What `chunking::patch` makes of a version pair, beside the anchor: for every file of NEW
//! that differs from the same path in OLD, a patch against the old file (a new file: the
//! file compressed alone), summed; and the time taken, beside `zstd -19 --long=31
//! --patch-from` on the same files, run here in the same order. Files over
//! `PATCH_FILE_BYTES_MAX` are counted apart (they would move as chunks).
//!
//! Usage: `patch_sizes OLD NEW [--level N] [--no-cli]`; prints JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

fn files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let t = entry.file_type()?;
            if t.is_dir() {
                stack.push(entry.path());
            } else if t.is_file() {
                out.push(entry.path().strip_prefix(root)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: patch_sizes OLD NEW [--level N] [--no-cli]"
    );
    let (old, new) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let level = args
        .iter()
        .position(|a| a == "--level")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(chunking::patch::PATCH_LEVEL_DEFAULT), |l| l.parse())?;
    let cli = !args.iter().any(|a| a == "--no-cli");
    let (mut patch_bytes, mut changed, mut over) = (0u64, 0u64, 0u64);
    let (mut ours_s, mut cli_s, mut cli_bytes) = (0f64, 0f64, 0u64);
    for rel in files(&new)? {
        let n = std::fs::read(new.join(&rel))?;
        let o = std::fs::read(old.join(&rel)).unwrap_or_default();
        if !o.is_empty() && o == n {
            continue;
        }
        changed += 1;
        let max = chunking::patch::PATCH_FILE_BYTES_MAX as usize;
        if n.len() > max || o.len() > max {
            over += 1;
            continue;
        }
        let t = Instant::now();
        let patch = chunking::patch::make(&o, &n, level)?;
        ours_s += t.elapsed().as_secs_f64();
        // Every patch is applied back and compared: a size is only reported for a patch
        // that rebuilds the file.
        anyhow::ensure!(
            chunking::patch::apply(&o, &patch, n.len() as u64)? == n,
            "{}: the patch does not rebuild the file",
            rel.display()
        );
        patch_bytes += patch.len() as u64;
        if cli {
            let mut cmd = std::process::Command::new("zstd");
            cmd.args(["-q", &format!("-{level}"), "--long=31", "-c"]);
            if !o.is_empty() {
                cmd.arg(format!("--patch-from={}", old.join(&rel).display()));
            }
            let t = Instant::now();
            let out = cmd
                .arg(new.join(&rel))
                .stderr(std::process::Stdio::null())
                .output()?;
            cli_s += t.elapsed().as_secs_f64();
            anyhow::ensure!(out.status.success(), "zstd failed on {}", rel.display());
            cli_bytes += out.stdout.len() as u64;
        }
    }
    let report = serde_json::json!({
        "level": level,
        "changed_files": changed,
        "files_over_bound": over,
        "p2pd_patch_bytes": patch_bytes,
        "p2pd_patch_make_s": ours_s,
        "zstd_cli_bytes": cli_bytes,
        "zstd_cli_s": cli_s,
        "time_ratio": if cli_s > 0.0 { ours_s / cli_s } else { 0.0 },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

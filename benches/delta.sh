#!/usr/bin/env bash
# What a new version costs on the WAN, p2pd beside the anchors, measured in one run on two
# versions of a real package (benches/delta-pairs.sh downloads three pairs):
#   tree_bytes                    the new version's files
#   casync_new_raw_bytes          casync's chunks the new version adds to a store holding the
#   casync_new_compressed_bytes   old one (its default chunking), raw and as stored (zstd)
#   rsync_literal_bytes           rsync's literal data updating a copy of OLD to NEW
#   zstd_changed_bytes            each changed or new file compressed alone (zstd -19 --long=31)
#   zstd_patch_from_bytes         each changed file as `zstd -19 --long=31 --patch-from=OLD`
#                                 against the same path in OLD (new files compressed alone):
#                                 the anchor
#   p2pd_new_raw_bytes            p2pd's chunks new to the old version
#   p2pd_wan_bytes                every datagram that crossed the WAN, both ways, while a
#                                 branch node holding OLD fetched NEW from an origin in another
#                                 site (testnet delta: real nodes, manifest and control included)
#   zstd_patch_from_s             seconds the anchor's patches took (the zstd CLI, file by file)
#   p2pd_patch_s                  seconds the publisher spent making its patches (counterparts,
#                                 patches, the check that each rebuilds its file), beside
#   p2pd_publish_s                the whole `p2pctl publish` of NEW, and
#   p2pd_publisher_peak_rss_bytes the publishing daemon's peak memory (VmHWM) after it
#   p2pd_receiver_peak_rss_bytes  the branch node's peak memory after it rebuilt NEW
# Usage: benches/delta.sh OLD NEW [--json]   (needs casync, rsync and zstd: Debian packages)
set -euo pipefail
OLD=$(cd "${1:?usage: benches/delta.sh OLD NEW [--json]}" && pwd)
NEW=$(cd "${2:?usage: benches/delta.sh OLD NEW [--json]}" && pwd)
JSON=${3:-}
cd "$(dirname "$0")/.."
for tool in casync rsync zstd; do
  command -v "$tool" >/dev/null || { echo "delta.sh: $tool is not installed (Debian package $tool)" >&2; exit 2; }
done
cargo build --release -q -p node -p testnet
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# casync: the store after OLD, then the chunks NEW adds to it.
casync make --store="$WORK/store" "$WORK/old.caidx" "$OLD" >/dev/null
find "$WORK/store" -name '*.cacnk' | sort > "$WORK/old.list"
casync make --store="$WORK/store" "$WORK/new.caidx" "$NEW" >/dev/null
find "$WORK/store" -name '*.cacnk' | sort > "$WORK/new.list"
CASYNC_Z=0; CASYNC_RAW=0
for f in $(comm -13 "$WORK/old.list" "$WORK/new.list"); do
  CASYNC_Z=$((CASYNC_Z + $(stat -c %s "$f")))
  CASYNC_RAW=$((CASYNC_RAW + $(zstd -dc "$f" | wc -c)))
done

# rsync: literal data sent to turn a copy of OLD into NEW (delta transfer forced locally).
cp -a "$OLD" "$WORK/rsync-copy"
RSYNC=$(rsync -a --no-whole-file --stats "$NEW/" "$WORK/rsync-copy/" | awk -F': ' '/Literal data/ {gsub(/[ ,a-z]/, "", $2); print $2}')

# zstd per changed file, alone and as a patch against the same path in OLD.
TREE=0; ZSTD=0; PATCH=0; CHANGED=0; PATCH_NS=0
while IFS= read -r -d '' f; do
  rel=${f#"$NEW"/}
  size=$(stat -c %s "$f"); TREE=$((TREE + size))
  if [ -f "$OLD/$rel" ] && cmp -s "$f" "$OLD/$rel"; then continue; fi
  CHANGED=$((CHANGED + 1))
  z=$(zstd -q -19 --long=31 -c "$f" 2>/dev/null | wc -c)
  ZSTD=$((ZSTD + z))
  if [ -f "$OLD/$rel" ]; then
    t0=$(date +%s%N)
    PATCH=$((PATCH + $(zstd -q -19 --long=31 --patch-from="$OLD/$rel" -c "$f" 2>/dev/null | wc -c)))
    PATCH_NS=$((PATCH_NS + $(date +%s%N) - t0))
  else
    PATCH=$((PATCH + z))
  fi
done < <(find "$NEW" -type f -print0)

P2PD=$(target/release/testnet delta "$OLD" "$NEW" --json)
python3 - "$JSON" <<PY
import json, sys
p2pd = json.loads('''$P2PD''')
r = {
    "old": "$OLD", "new": "$NEW",
    "tree_bytes": $TREE, "changed_files": $CHANGED,
    "casync_new_raw_bytes": $CASYNC_RAW, "casync_new_compressed_bytes": $CASYNC_Z,
    "rsync_literal_bytes": $RSYNC,
    "zstd_changed_bytes": $ZSTD, "zstd_patch_from_bytes": $PATCH,
    "p2pd_new_raw_bytes": p2pd["p2pd_new_raw_bytes"], "p2pd_wan_bytes": p2pd["p2pd_wan_bytes"],
    "zstd_patch_from_s": round($PATCH_NS / 1e9, 3),
    "p2pd_patches": p2pd["p2pd_patches"], "p2pd_patch_s": round(p2pd["p2pd_patch_s"], 3),
    "p2pd_publish_s": round(p2pd["p2pd_publish_s"], 3),
    "p2pd_publisher_peak_rss_bytes": p2pd["p2pd_publisher_peak_rss_bytes"],
    "p2pd_receiver_peak_rss_bytes": p2pd["p2pd_receiver_peak_rss_bytes"],
}
r["ratio_patch_time_to_anchor"] = round(r["p2pd_patch_s"] / max(r["zstd_patch_from_s"], 1e-3), 2)
r["ratio_wan_to_anchor"] = round(r["p2pd_wan_bytes"] / max(r["zstd_patch_from_bytes"], 1), 2)
r["bar_bytes"] = int(1.25 * r["zstd_patch_from_bytes"] + 16384)
r["bar_met"] = r["p2pd_wan_bytes"] <= r["bar_bytes"]
if sys.argv[1] == "--json":
    print(json.dumps(r, indent=2))
else:
    mb = lambda b: f"{b / 1e6:.3f} MB"
    print(f"{r['new']}: {r['changed_files']} files changed")
    for k in ["tree_bytes", "casync_new_raw_bytes", "casync_new_compressed_bytes",
              "rsync_literal_bytes", "zstd_changed_bytes", "zstd_patch_from_bytes",
              "p2pd_new_raw_bytes", "p2pd_wan_bytes"]:
        print(f"  {k:<30} {mb(r[k]):>12}")
    print(f"  p2pd WAN / zstd --patch-from: {r['ratio_wan_to_anchor']} "
          f"(bar: <= 1.25 x + 16 KiB = {mb(r['bar_bytes'])}: {'met' if r['bar_met'] else 'NOT met'})")
    print(f"  patches: p2pd {r['p2pd_patches']} in {r['p2pd_patch_s']} s, zstd --patch-from "
          f"{r['zstd_patch_from_s']} s: {r['ratio_patch_time_to_anchor']} x (bar <= 1.25 x); "
          f"publish {r['p2pd_publish_s']} s, publisher peak {r['p2pd_publisher_peak_rss_bytes'] / 2**20:.0f} MiB, "
          f"receiver peak {r['p2pd_receiver_peak_rss_bytes'] / 2**20:.0f} MiB")
PY

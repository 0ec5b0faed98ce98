#!/usr/bin/env bash
# Macro benchmarks of publishing, each against its anchor in the same run:
#   1. durable publish of a 1 GiB file vs `dd bs=4M conv=fsync` on the same disk (median of 5)
#   2. store growth when publishing v2 of a 256 MiB file with 1 MiB rewritten in the middle
#   3. peak RSS of p2pd while publishing a 4 GiB file
# Usage: benches/publish.sh [WORKDIR]   (needs ~6 GiB free in WORKDIR; default: a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p node
BIN=$PWD/target/release
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true' EXIT

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# One daemon for all measurements, trusting one publisher key.
D=$WORK/node
rm -rf "$D" "$WORK/pub.pem"
"$BIN/p2pd" init --data "$D" >/dev/null
PUB=$("$BIN/p2pctl" --json keygen --out "$WORK/pub.pem" | python3 -c 'import json,sys;print(json.load(sys.stdin)["public_key"])')
printf '\n[[trust.publishers]]\nname = "bench"\nkey = "%s"\n' "$PUB" >> "$D/p2pd.toml"
"$BIN/p2pd" run --config "$D/p2pd.toml" 2>"$WORK/p2pd.log" &
echo $! > "$WORK/pid"
export P2PCTL_SOCKET=$D/control.sock
for _ in $(seq 100); do [ -S "$P2PCTL_SOCKET" ] && break; sleep 0.1; done
VERSION=0
publish() { VERSION=$((VERSION + 1)); "$BIN/p2pctl" --json publish "$1" --channel bench/"$2" --version "$VERSION" --key "$WORK/pub.pem" >/dev/null; }

echo "== 1. durable publish of 1 GiB vs dd conv=fsync (median of 5, same disk: $WORK)"
head -c $((1 << 30)) /dev/urandom > "$WORK/src1g.bin"
cat "$WORK/src1g.bin" > /dev/null   # into the page cache
dd_times=(); pub_times=()
for i in 1 2 3 4 5; do
  rm -f "$WORK/dd.out"; sync
  t0=$(date +%s.%N); dd if="$WORK/src1g.bin" of="$WORK/dd.out" bs=4M conv=fsync status=none; t1=$(date +%s.%N)
  dd_times+=("$(echo "$t1 - $t0" | bc -l)")
  rm -f "$WORK/dd.out"; sync
  # Each round publishes into a fresh store, so every chunk is really written (no dedup).
  kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true
  rm -rf "$D/store"
  "$BIN/p2pd" run --config "$D/p2pd.toml" 2>>"$WORK/p2pd.log" &
  echo $! > "$WORK/pid"
  for _ in $(seq 100); do "$BIN/p2pctl" node >/dev/null 2>&1 && break; sleep 0.1; done
  VERSION=0
  t0=$(date +%s.%N); publish "$WORK/src1g.bin" big; t1=$(date +%s.%N)
  pub_times+=("$(echo "$t1 - $t0" | bc -l)")
done
DD=$(printf '%s\n' "${dd_times[@]}" | median)
PUBT=$(printf '%s\n' "${pub_times[@]}" | median)
echo "dd:      ${dd_times[*]}  median ${DD}s  $(echo "1024 / $DD" | bc -l | cut -c1-6) MiB/s"
echo "publish: ${pub_times[*]}  median ${PUBT}s  $(echo "1024 / $PUBT" | bc -l | cut -c1-6) MiB/s"
echo "RATIO publish/dd speed: $(echo "$DD / $PUBT" | bc -l | cut -c1-5)   (bar >= 0.8)"
rm -f "$WORK/src1g.bin"

echo "== 2. store growth for v2 of a 256 MiB file with 1 MiB rewritten in the middle"
head -c $((256 << 20)) /dev/urandom > "$WORK/v.bin"
publish "$WORK/v.bin" delta
B1=$("$BIN/p2pctl" --json node | python3 -c 'import json,sys;print(json.load(sys.stdin)["store"]["pack_bytes"])')
head -c $((1 << 20)) /dev/urandom | dd of="$WORK/v.bin" bs=1M seek=128 conv=notrunc status=none
publish "$WORK/v.bin" delta
B2=$("$BIN/p2pctl" --json node | python3 -c 'import json,sys;print(json.load(sys.stdin)["store"]["pack_bytes"])')
echo "GROWTH: $(( (B2 - B1) )) bytes = $(echo "($B2 - $B1) / 1048576" | bc -l | cut -c1-5) MiB   (bar <= 2 MiB)"
rm -f "$WORK/v.bin"

echo "== 3. peak RSS of p2pd while publishing a 4 GiB file"
kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true
rm -rf "$D/store"
"$BIN/p2pd" run --config "$D/p2pd.toml" 2>>"$WORK/p2pd.log" &
echo $! > "$WORK/pid"
for _ in $(seq 100); do "$BIN/p2pctl" node >/dev/null 2>&1 && break; sleep 0.1; done
head -c $((4 << 30)) /dev/urandom > "$WORK/src4g.bin"
VERSION=0
publish "$WORK/src4g.bin" rss
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$WORK/pid")/status")
echo "PEAK RSS: ${HWM} KiB = $((HWM / 1024)) MiB   (bar <= 256 MiB)"
rm -f "$WORK/src4g.bin"

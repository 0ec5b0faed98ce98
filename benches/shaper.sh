#!/usr/bin/env bash
# Macro benchmark of what bandwidth shaping costs when nothing is limited: two p2pd nodes on
# loopback, stores on tmpfs (so the disk is not the bottleneck and the data plane's CPU is),
# a cold receiver fetching a 512 MiB release, in interleaved rounds:
#   OFF: receiver and origin with [shaping] enabled = false
#   ON:  the default config: shaping on, every class unlimited
#   COST = 1 - median(ON) / median(OFF)                              (bar <= 5 %)
# Usage: benches/shaper.sh [RUNS]   (needs ~2 GiB in /dev/shm; default 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p node
BIN=$PWD/target/release
RUNS=${1:-5}
WORK=$(mktemp -d -p /dev/shm)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

. benches/nodes.sh
bench_key

# init_shaping NAME SHAPING [BOOTSTRAP]: `init`, with [shaping] enabled = SHAPING.
init_shaping() {
  init "$1" "${3:-}"
  sed -i "s/^enabled = true/enabled = $2/" "$WORK/$1/p2pd.toml"
}

# One origin per mode, both holding the same release; a fresh receiver per round.
head -c $((512 << 20)) /dev/urandom > "$WORK/src.bin"
declare -A BOOT REL
for mode in true false; do
  init_shaping "origin-$mode" "$mode"
  start "origin-$mode"
  BOOT[$mode]=$(bootstrap_of "origin-$mode")
  REL[$mode]=$(P2PCTL_SOCKET=$WORK/origin-$mode/control.sock "$BIN/p2pctl" --json publish "$WORK/src.bin" \
    --channel bench/shaper --version 1 --key "$WORK/pub.pem" | json 'v["release"]["id"]')
done
rm -f "$WORK/src.bin"

on=(); off=()
for i in $(seq "$RUNS"); do
  for mode in false true; do
    init_shaping recv "$mode" "${BOOT[$mode]}"
    start recv
    RECV=$STARTED
    el=$(wait_complete recv "${REL[$mode]}" 600)
    rate=$(echo "512 / $el" | bc -l)
    if [ "$mode" = true ]; then on+=("$rate"); else off+=("$rate"); fi
    stop "$RECV"
  done
  echo "round $i: shaping off ${off[-1]%.*} MiB/s, on (unlimited) ${on[-1]%.*} MiB/s"
done
ON=$(printf '%s\n' "${on[@]}" | median)
OFF=$(printf '%s\n' "${off[@]}" | median)
echo "median: shaping off ${OFF%.*} MiB/s, on (unlimited) ${ON%.*} MiB/s"
echo "COST of shaping at unlimited rates: $(python3 -c "print(round(100 * (1 - $ON / $OFF), 1))") %   (bar <= 5 %)"

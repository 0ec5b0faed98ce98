#!/usr/bin/env bash
# Macro benchmark of fleet status (issue 6 bar): the status records of SITES x NODES nodes
# (default 500 x 50 = 25,000) written into a node's store as gossip would leave them, then
#   1. the store's growth for those records                                   (bar <= 16 MiB)
#   2. `p2pctl --json fleet RELEASE` against the running daemon, end to end (process start,
#      socket, aggregation, JSON), median and max of RUNS calls               (bar <= 50 ms)
# Usage: benches/fleet.sh [WORKDIR] [RUNS] [SITES] [NODES]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p node -p benches
BIN=$PWD/target/release
WORK=${1:-$(mktemp -d)}
RUNS=${2:-21}
SITES=${3:-500}
NODES=${4:-50}
mkdir -p "$WORK"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

. benches/nodes.sh
bench_key
init fleet
RELEASE=$(printf 'ab%.0s' $(seq 32))
"$BIN/fleet_records" "$WORK/fleet/store" "$RELEASE" "$SITES" "$NODES"
start fleet
export P2PCTL_SOCKET=$WORK/fleet/control.sock
times=()
for _ in $(seq "$RUNS"); do
  t0=$(date +%s%N)
  "$BIN/p2pctl" --json fleet "$RELEASE" > "$WORK/fleet.json"
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000 )))
done
nodes=$(json 'v["nodes"]' < "$WORK/fleet.json")
holding=$(json 'v["states"]["complete"] + v["states"]["activated"]' < "$WORK/fleet.json")
med=$(printf '%s\n' "${times[@]}" | median)
max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
echo "p2pctl fleet over $nodes nodes ($holding hold it): median $((med / 1000)).$(( (med % 1000) / 100 )) ms, max $((max / 1000)).$(( (max % 1000) / 100 )) ms over $RUNS calls"

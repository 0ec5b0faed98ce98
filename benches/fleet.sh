#!/usr/bin/env bash
# Macro benchmark of fleet status (25,000 records): what a node holds in a fleet of SITES x NODES
# nodes (default 500 x 50 = 25,000): its own site's records and every other site's summary, then
#   1. the store's growth for those records                                   (bar <= 16 MiB)
#   2. `p2pctl --json fleet RELEASE` against the running daemon, end to end (process start,
#      socket, aggregation, JSON), median and max of RUNS calls               (bar <= 50 ms)
#   3. with Chromium installed, a screenshot of the node's dashboard over those records
#      ($WORKDIR/dashboard.png: the picture in the README)
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
PORT=$(free_port)
sed -i -e "s/# metrics_listen = \"127.0.0.1:9464\"/metrics_listen = \"127.0.0.1:$PORT\"/" \
       -e 's/dashboard = false/dashboard = true/' "$WORK/fleet/p2pd.toml"
export P2PCTL_SOCKET=$WORK/fleet/control.sock
# A release of this node's own, for the records to speak of.
mkdir -p "$WORK/payload"
head -c 1048576 /dev/urandom > "$WORK/payload/patch.bin"
start fleet
RELEASE=$("$BIN/p2pctl" --json publish "$WORK/payload" --channel security/openssl \
  --version "$(date +%s)" --severity critical --key "$WORK/pub.pem" | json 'v["release"]["id"]')
stop "$STARTED"
"$BIN/fleet_records" "$WORK/fleet/store" "$RELEASE" "$SITES" "$NODES"
start fleet
times=()
for _ in $(seq "$RUNS"); do
  t0=$(date +%s%N)
  # Exit 6: the records include failed nodes, as a real fleet's do.
  rc=0
  "$BIN/p2pctl" --json fleet "$RELEASE" > "$WORK/fleet.json" || rc=$?
  t1=$(date +%s%N)
  [ "$rc" = 0 ] || [ "$rc" = 6 ] || { echo "p2pctl fleet failed ($rc)" >&2; exit 1; }
  times+=($(( (t1 - t0) / 1000 )))
done
nodes=$(json 'v["nodes"]' < "$WORK/fleet.json")
holding=$(json 'v["states"]["complete"] + v["states"]["activated"]' < "$WORK/fleet.json")
med=$(printf '%s\n' "${times[@]}" | median)
max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
echo "p2pctl fleet over $nodes nodes ($holding hold it): median $((med / 1000)).$(( (med % 1000) / 100 )) ms, max $((max / 1000)).$(( (max % 1000) / 100 )) ms over $RUNS calls"
if command -v chromium >/dev/null; then
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1000 \
    --virtual-time-budget=4000 --user-data-dir="$WORK/chromium" \
    --screenshot="$WORK/dashboard.png" "http://127.0.0.1:$PORT/" 2>/dev/null
  echo "dashboard screenshot: $WORK/dashboard.png"
fi

#!/usr/bin/env bash
# Macro benchmark of what fleet membership costs the data plane: the 2-node 1 GiB fetch of
# benches/swarm.sh, side by side in one run, by a pair of nodes without a root and a pair in
# a fleet with a root (every node enrolled; each new connection checks the peer's
# certificate on both planes). Rounds interleave the two pairs (alternating which goes
# first); the figure is the median throughput of each and their ratio.
#   COST = 1 - rooted / plain                                           (bar <= 2 %)
# Per connection the check itself is timed by `cargo bench -p benches --bench membership`
# (bar <= 1 ms).
# Usage: benches/membership.sh [WORKDIR] [RUNS]  (needs ~4.5 GiB free in WORKDIR; default:
# temp dir, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p node -p benches
BIN=$PWD/target/release
WORK=${1:-$(mktemp -d)}
RUNS=${2:-3}
mkdir -p "$WORK"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

. benches/nodes.sh
bench_key

# The fleet root: one root key, one CA key, the bench publisher.
rm -f "$WORK/root.pem" "$WORK/ca.pem" "$WORK/root.json"
"$BIN/p2pctl" keygen --out "$WORK/root.pem" >/dev/null
"$BIN/p2pctl" keygen --out "$WORK/ca.pem" >/dev/null
"$BIN/p2pctl" root init --fleet bench --root-key "root=$WORK/root.pem" \
  --ca-key "ca=$WORK/ca.pem" --publisher "bench=$PUB" --sign "$WORK/root.pem" \
  --out "$WORK/root.json" >/dev/null

# enrol NAME: a certificate for site bench for node NAME (made by init with ROOT_JSON).
enrol() {
  local d=$WORK/$1
  local id
  id=$("$BIN/p2pd" id --config "$d/p2pd.toml" | sed -n 's/^node id: //p')
  rm -f "$d/node.cert"
  "$BIN/p2pctl" node enroll "$id" --site bench --region bench --ca-key "$WORK/ca.pem" \
    --root "$WORK/root.json" --out "$d/node.cert" >/dev/null
  "$BIN/p2pd" cert install --config "$d/p2pd.toml" "$d/node.cert" >/dev/null
}

echo "== two origins, one in a fleet with a root, each publishing the same 1 GiB release"
head -c $((1 << 30)) /dev/urandom > "$WORK/src1g.bin"
init plain-origin
start plain-origin
PLAIN_BOOT=$(bootstrap_of plain-origin)
ROOT_JSON=$WORK/root.json init rooted-origin
enrol rooted-origin
start rooted-origin
ROOTED_BOOT=$(bootstrap_of rooted-origin)
publish_on() {
  P2PCTL_SOCKET=$WORK/$1/control.sock "$BIN/p2pctl" --json publish "$WORK/src1g.bin" \
    --channel bench/membership --version 1 --key "$WORK/pub.pem" | json 'v["release"]["id"]'
}
PLAIN_RELEASE=$(publish_on plain-origin)
ROOTED_RELEASE=$(publish_on rooted-origin)
rm -f "$WORK/src1g.bin"

# fetch KIND: a fresh receiver of the KIND pair fetches the release; prints MiB/s.
fetch() {
  if [ "$1" = plain ]; then
    init recv "$PLAIN_BOOT"
    release=$PLAIN_RELEASE
  else
    ROOT_JSON=$WORK/root.json init recv "$ROOTED_BOOT"
    enrol recv
    release=$ROOTED_RELEASE
  fi
  start recv
  local pid=$STARTED
  local el
  el=$(wait_complete recv "$release" 2400)
  stop "$pid"
  echo "1024 / $el" | bc -l
}

plain=(); rooted=()
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then
    plain+=("$(fetch plain)"); rooted+=("$(fetch rooted)")
  else
    rooted+=("$(fetch rooted)"); plain+=("$(fetch plain)")
  fi
  echo "round $i: without a root ${plain[-1]%.*} MiB/s, with a root ${rooted[-1]%.*} MiB/s"
done
P=$(printf '%s\n' "${plain[@]}" | median)
R=$(printf '%s\n' "${rooted[@]}" | median)
echo "2-node 1 GiB fetch without a root: ${P%.*} MiB/s, with a root: ${R%.*} MiB/s"
echo "COST of membership: $(python3 -c "print(round((1 - $R / $P) * 100, 2))") %   (bar <= 2 %)"

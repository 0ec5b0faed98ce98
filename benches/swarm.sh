#!/usr/bin/env bash
# Macro benchmark of the data plane, each figure against its anchor in the same run:
#   1. raw quinn: 1 GiB memory to memory over loopback, one connection, one stream
#      (benches/src/bin/quinn_raw.rs)
#   2. dd bs=4M conv=fsync of 1 GiB on the receiver's disk
#   3. two p2pd nodes on loopback: a cold receiver (empty store) fetches a 1 GiB release and
#      stores it durably; throughput = release bytes / (release learned -> complete)
#   RATIO = 3 / min(1, 2), medians of RUNS rounds that interleave 1, 2 and 3   (bar >= 0.7)
#   4. RSS: idle daemons (fresh, and 20 s after serving or fetching) and the receiver's peak (VmHWM)
#      over the whole fetch                                         (bars <= 40 / 200 MiB)
# Usage: benches/swarm.sh [WORKDIR] [RUNS]   (needs ~4 GiB free in WORKDIR; default: temp dir, 3)
# The two nodes share a site, where chunks move raw by default; COMPRESSION=always makes the
# origin try to compress every (incompressible) chunk, what a WAN peer would cost it.
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
rss_kib() { awk "/$2/ {print \$2}" "/proc/$1/status"; }
bench_key

init origin
start origin
ORIGIN=$STARTED
BOOT=$(bootstrap_of origin)
sleep 2
IDLE_ORIGIN=$(rss_kib "$ORIGIN" VmRSS)

echo "== publishing a 1 GiB release on the origin"
head -c $((1 << 30)) /dev/urandom > "$WORK/src1g.bin"
RELEASE=$(P2PCTL_SOCKET=$WORK/origin/control.sock "$BIN/p2pctl" --json publish "$WORK/src1g.bin" \
  --channel bench/swarm --version 1 --key "$WORK/pub.pem" | json 'v["release"]["id"]')
cp "$WORK/src1g.bin" "$WORK/ddsrc.bin"; rm -f "$WORK/src1g.bin"
cat "$WORK/ddsrc.bin" >/dev/null   # into the page cache, as the origin's packs are

quinn_s=(); dd_s=(); fetch_s=(); hwm=(); idle=()
for i in $(seq "$RUNS"); do
  q=$("$BIN/quinn_raw" --mib 1024 --runs 1 --json | json 'v["median_mib_s"]')
  quinn_s+=("$q")

  rm -f "$WORK/dd.out"; sync
  t0=$(date +%s.%N); dd if="$WORK/ddsrc.bin" of="$WORK/dd.out" bs=4M conv=fsync status=none; t1=$(date +%s.%N)
  rm -f "$WORK/dd.out"; sync
  dd_s+=("$(echo "1024 / ($t1 - $t0)" | bc -l)")

  init recv "$BOOT"
  start recv
  RECV=$STARTED
  el=$(wait_complete recv "$RELEASE" 2400)
  fetch_s+=("$(echo "1024 / $el" | bc -l)")
  hwm+=("$(rss_kib "$RECV" VmHWM)")
  sleep 20
  idle+=("$(rss_kib "$RECV" VmRSS)")
  echo "round $i: quinn ${quinn_s[-1]%.*} MiB/s, dd ${dd_s[-1]%.*} MiB/s, p2pd fetch ${fetch_s[-1]%.*} MiB/s (${el} s), receiver peak $(( ${hwm[-1]} / 1024 )) MiB"
  stop "$RECV"
done
IDLE_ORIGIN_AFTER=$(rss_kib "$ORIGIN" VmRSS)

Q=$(printf '%s\n' "${quinn_s[@]}" | median)
D=$(printf '%s\n' "${dd_s[@]}" | median)
F=$(printf '%s\n' "${fetch_s[@]}" | median)
H=$(printf '%s\n' "${hwm[@]}" | sort -n | tail -n 1)
MIN=$(python3 -c "print(min($Q, $D))")
echo "raw quinn:        ${Q%.*} MiB/s ($(python3 -c "print(round($Q * 8 * 1.048576 / 1000, 2))") Gbit/s)"
echo "dd conv=fsync:    ${D%.*} MiB/s"
echo "p2pd 2-node fetch: ${F%.*} MiB/s"
echo "RATIO fetch / min(quinn, dd): $(python3 -c "print(round($F / $MIN, 2))")   (bar >= 0.7)"
echo "IDLE RSS: origin before publishing $((IDLE_ORIGIN / 1024)) MiB, origin after serving $((IDLE_ORIGIN_AFTER / 1024)) MiB, receivers 20 s after completing: $(for k in "${idle[@]}"; do printf '%s ' $((k / 1024)); done)MiB   (bar <= 40 MiB)"
echo "PEAK RSS of the receiver during a 1 GiB fetch: $((H / 1024)) MiB   (bar <= 200 MiB)"
rm -f "$WORK/ddsrc.bin"

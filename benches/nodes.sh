# Helpers the macro benchmarks source: loopback p2pd nodes under $WORK, binaries in $BIN.
# The sourcing script sets BIN and WORK, declares PIDS=() and kills them on exit, and calls
# `bench_key` before `init`.

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
json() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_key: a publisher key every node made by `init` trusts; sets PUB.
bench_key() {
  rm -f "$WORK/pub.pem"
  PUB=$("$BIN/p2pctl" --json keygen --out "$WORK/pub.pem" | json 'v["public_key"]')
}

# init NAME [BOOTSTRAP]: a node on loopback ports, no mDNS, trusting the bench key (with
# ROOT_JSON set, initialised with that fleet root instead; with COMPRESSION set, its
# `network.compression` rule: wan, always or off).
init() {
  local d=$WORK/$1
  rm -rf "$d"
  "$BIN/p2pd" init --data "$d" --site bench ${ROOT_JSON:+--root "$ROOT_JSON"} >/dev/null
  sed -i -e "s/\"0.0.0.0:7401\"/\"127.0.0.1:$(free_port)\"/" \
         -e "s/\"0.0.0.0:7402\"/\"127.0.0.1:$(free_port)\"/" \
         -e 's/mdns = true/mdns = false/' \
         -e "s/compression = \"wan\"/compression = \"${COMPRESSION:-wan}\"/" "$d/p2pd.toml"
  [ -n "${2:-}" ] && sed -i "s|bootstrap = \[\]|bootstrap = [\"$2\"]|" "$d/p2pd.toml"
  printf '\n[[trust.publishers]]\nname = "bench"\nkey = "%s"\n' "$PUB" >> "$d/p2pd.toml"
}

# start NAME: runs the node, waits for its control socket; sets STARTED to its pid.
start() {
  "$BIN/p2pd" run --config "$WORK/$1/p2pd.toml" 2>>"$WORK/$1.log" &
  STARTED=$!
  PIDS+=("$STARTED")
  for _ in $(seq 200); do
    P2PCTL_SOCKET=$WORK/$1/control.sock "$BIN/p2pctl" node >/dev/null 2>&1 && return
    sleep 0.05
  done
  echo "node $1 did not start" >&2; exit 1
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# bootstrap_of NAME: the bootstrap entry other nodes use to join node NAME.
bootstrap_of() {
  "$BIN/p2pd" id --config "$WORK/$1/p2pd.toml" | sed -n 's/.*bootstrap entry for other nodes: "\(.*\)"/\1/p'
}

# wait_complete NAME RELEASE TRIES: polls node NAME every 0.1 s (at most TRIES times) until
# RELEASE is complete; prints the seconds the node took (its `elapsed_s`), or fails.
wait_complete() {
  local st=""
  for _ in $(seq "$3"); do
    st=$(P2PCTL_SOCKET=$WORK/$1/control.sock "$BIN/p2pctl" --json status "$2" 2>/dev/null || true)
    if [ -n "$st" ] && [ "$(echo "$st" | json 'v["state"]')" = complete ]; then
      echo "$st" | json 'v["elapsed_s"]'
      return
    fi
    sleep 0.1
  done
  echo "release $2 did not complete on $1" >&2
  exit 1
}

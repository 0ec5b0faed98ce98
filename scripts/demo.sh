#!/usr/bin/env bash
# The p2pd demo, end to end on this machine: start a daemon in a temporary directory,
# publish a generated release, verify and export it byte for byte, then publish v2 with a
# small change and show that only the changed chunks were stored.
# Needs only the Rust toolchain. Usage: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building (release)..."
cargo build --release -q -p node
BIN=$PWD/target/release
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "p2pd init: data directory, commented config, node key"
"$BIN/p2pd" init --data "$WORK/node" --site branch-001 --region emea

step "p2pctl keygen: a publisher key; the node trusts it"
"$BIN/p2pctl" keygen --out "$WORK/publisher.pem" | tee "$WORK/keygen.txt"
{ echo; grep -A2 '^\[\[trust.publishers\]\]' "$WORK/keygen.txt"; echo 'channels = ["security/"]'; } >> "$WORK/node/p2pd.toml"

step "p2pd run"
"$BIN/p2pd" run --config "$WORK/node/p2pd.toml" 2>"$WORK/p2pd.log" &
PID=$!
export P2PCTL_SOCKET=$WORK/node/control.sock
for _ in $(seq 100); do "$BIN/p2pctl" node >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/p2pctl" node

step "a sample patch tree: 64 MiB image, a script, an empty dir, a symlink"
SRC=$WORK/patch
mkdir -p "$SRC/bin" "$SRC/lib" "$SRC/var/empty"
head -c $((64 << 20)) /dev/urandom > "$SRC/lib/image.bin"
printf '#!/bin/sh\necho patched\n' > "$SRC/bin/apply.sh"; chmod 755 "$SRC/bin/apply.sh"
ln -s ../lib/image.bin "$SRC/bin/image"
echo "openssl 3.0.15 security fix" > "$SRC/README"

step "p2pctl publish v1 (critical, CVSS 9.8)"
"$BIN/p2pctl" publish "$SRC" --channel security/openssl --version 1 \
  --key "$WORK/publisher.pem" --severity critical --cvss 9.8 --expires 30d | tee "$WORK/v1.txt"
V1=$(tail -n1 "$WORK/v1.txt")
"$BIN/p2pctl" releases
"$BIN/p2pctl" show "${V1:0:12}"

step "p2pctl verify: signature and every chunk re-hashed"
"$BIN/p2pctl" verify "$V1"

step "p2pctl export, then compare byte for byte"
"$BIN/p2pctl" export "$V1" "$WORK/out"
diff -r "$SRC" "$WORK/out" && echo "export is identical to the source"

step "v2: rewrite 1 MiB in the middle of the image; only the changed chunks are stored"
head -c $((1 << 20)) /dev/urandom | dd of="$SRC/lib/image.bin" bs=1M seek=32 conv=notrunc status=none
"$BIN/p2pctl" publish "$SRC" --channel security/openssl --version 2 --key "$WORK/publisher.pem" --severity critical

step "a replayed old version is refused"
"$BIN/p2pctl" publish "$SRC" --channel security/openssl --version 1 --key "$WORK/publisher.pem" \
  && exit 1 || echo "(refused as expected, exit $?)"

step "summary"
"$BIN/p2pctl" releases
"$BIN/p2pctl" node

#!/usr/bin/env bash
# Downloads the version pairs benches/delta.sh measures, from public registries, and
# unpacks each into DEST/NAME/old and DEST/NAME/new:
#   typescript   5.5.3 -> 5.5.4               (npm registry; JavaScript, one file rewritten)
#   cryptography 43.0.0 -> 43.0.1             (PyPI manylinux wheel; a rebuilt Rust/OpenSSL .so)
#   libssl3      3.0.20-1~deb12u2 -> 3.0.22-1~deb12u2   (Debian bookworm and bookworm-security;
#                a security patch of the shared libraries)
# Usage: benches/delta-pairs.sh DEST   (needs npm, pip, apt-get download and dpkg-deb)
set -euo pipefail
DEST=${1:?usage: benches/delta-pairs.sh DEST}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

unpack_npm() { # name version dir
  (cd "$TMP" && npm pack --silent "$1@$2" >/dev/null)
  mkdir -p "$3"
  tar -xzf "$TMP/$1-$2.tgz" -C "$3" --strip-components=1
}
unpack_wheel() { # name version dir
  pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 --implementation cp --abi abi3 -d "$TMP/w-$2" "$1==$2"
  mkdir -p "$3"
  python3 -m zipfile -e "$TMP"/w-"$2"/*.whl "$3"
}
unpack_deb() { # package version dir
  (cd "$TMP" && apt-get download -q "$1=$2" >/dev/null)
  mkdir -p "$3"
  dpkg-deb -x "$TMP/$1_$(echo "$2" | sed 's/:/%3a/')_"*.deb "$3"
}

rm -rf "$DEST/typescript" "$DEST/cryptography" "$DEST/libssl3"
unpack_npm typescript 5.5.3 "$DEST/typescript/old"
unpack_npm typescript 5.5.4 "$DEST/typescript/new"
unpack_wheel cryptography 43.0.0 "$DEST/cryptography/old"
unpack_wheel cryptography 43.0.1 "$DEST/cryptography/new"
apt-get update -qq
unpack_deb libssl3 3.0.20-1~deb12u2 "$DEST/libssl3/old"
unpack_deb libssl3 3.0.22-1~deb12u2 "$DEST/libssl3/new"
for p in typescript cryptography libssl3; do
  echo "$p: $(du -sb "$DEST/$p/old" | cut -f1) -> $(du -sb "$DEST/$p/new" | cut -f1) bytes"
done

#!/bin/sh
# Compaction speed against dd conv=fsync on the same disk, and the share reclaimed of what
# only removed releases named. Usage: benches/compaction.sh DIR [ROUNDS] [UNIQUE_MIB]
# (DIR on the disk to measure; emptied). Prints one JSON line per round.
set -eu
dir=${1:?usage: benches/compaction.sh DIR [ROUNDS] [UNIQUE_MIB]}
rounds=${2:-3}
mib=${3:-128}
cargo build --release -q -p benches --bin compaction
i=0
while [ "$i" -lt "$rounds" ]; do
    ./target/release/compaction "$dir" "$mib"
    i=$((i + 1))
done
rm -rf "$dir"

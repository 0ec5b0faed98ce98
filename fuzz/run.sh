#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, from the committed seeds
# (fuzz/seeds/TARGET) and the corpus kept between runs (fuzz/corpus/TARGET, not committed).
# A crash fails the run; its input is in fuzz/artifacts/TARGET/ and becomes a regression
# test. JOBS runs that many fuzzing processes per target at once (a long campaign on a
# machine with cores to spare). Needs the nightly toolchain and cargo-fuzz; CI installs it.
#
#   FUZZ_BUILD=dev fuzz/run.sh 20     # what CI runs: 20 s a target, a quick build
#   JOBS=2 fuzz/run.sh 1800 manifest  # a long campaign of one target
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest wire status trust rollout config api)
jobs=${JOBS:-1}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
rustup toolchain list | grep -q '^nightly' || { echo "fuzz/run.sh: needs the nightly toolchain" >&2; exit 1; }
# No sanitizer: the targets are safe Rust (unsafe code is forbidden in the workspace);
# debug assertions catch overflows. FUZZ_BUILD=dev (what CI runs) builds in half the time
# and runs a few times slower: a smoke run; a campaign uses the default, optimised build.
flags=(--sanitizer none --debug-assertions)
[ "${FUZZ_BUILD:-release}" = dev ] && flags+=(--dev)
cargo +nightly fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
    [ -d "seeds/$t" ] || { echo "fuzz/run.sh: no seeds for $t (fuzz/seeds/$t)" >&2; exit 1; }
    mkdir -p "corpus/$t"
    echo "== fuzz $t: ${seconds}s x $jobs"
    log=$(mktemp)
    if ! cargo +nightly fuzz run "${flags[@]}" --jobs "$jobs" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz/run.sh: $t crashed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    # The last status line (with JOBS > 1, libFuzzer's fork mode: executions, rate, crashes
    # over all processes) and the final counts: the figures a campaign reports.
    grep -hE "^#[0-9]+:? .*exec/s|^stat::number_of_executed_units|^stat::average_exec_per_sec|Done [0-9]+ runs" "$log" | tail -3 || true
    rm -f "$log"
done

#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that see hostile input (docs/fuzzing.md):
# cargo-fuzz + libFuzzer on *stable* Rust, without a sanitizer (`-s none`).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# `-O -a`: optimised, with debug assertions and overflow checks on (the test suite's
# arithmetic semantics: an overflow is a panic, i.e. a finding, not a silent wrap).
#
# Default: 600 s for each of sdp_offer, sip_guard, rtp_packet, one after the other, at
# `nice -n 10` (FUZZ_NICE). Installs what it needs (a C++ compiler for libFuzzer, cargo-fuzz)
# if it is missing. Not part of CI or `cargo test`: the fuzz crate is its own workspace.
#
# Seeds: fuzz/corpus/<target>/ (checked in). Corpus growth: fuzz/corpus-run/<target>/ and
# crashes: fuzz/artifacts/<target>/ (both ignored by git). Logs: fuzz/logs/<target>.log.
# Exit status 1 if any target crashed (panic, failed invariant) or hung.
set -euo pipefail

secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sdp_offer sip_guard rtp_packet)
fi
nice_level=${FUZZ_NICE:-10}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

# Largest input per target: a SIP datagram is read into rsipstack's 8 KiB buffer; SDP bodies
# and RTP packet streams do not need more than 4 KiB to reach every branch.
max_len() {
    case "$1" in
        sip_guard) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# libfuzzer-sys compiles libFuzzer (C++) with the system compiler.
if ! command -v c++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
    echo "fuzz.sh: installing g++ (libFuzzer is C++)" >&2
    as_root apt-get update
    as_root apt-get install -y g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --version '^0.13' --locked
fi

nice -n "$nice_level" cargo fuzz build -s none -O -a

mkdir -p logs
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus-run/$t"
    echo "fuzz.sh: $t for ${secs}s" >&2
    status=0
    # -timeout: an input that takes more than 10 s is reported as a hang.
    nice -n "$nice_level" cargo fuzz run "$t" -s none -O -a "corpus-run/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 \
        -print_final_stats=1 >"logs/$t.log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9]*[a-zA-Z]*' "logs/$t.log" | tail -n 1 || true)
    files=$(find "corpus-run/$t" -type f | wc -l)
    summary+=("$t: exit $status, ${execs:-?} execs in ${secs}s, $cov, corpus-run $files files")
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        grep -A 5 'panicked at\|ERROR: libFuzzer\|SUMMARY' "logs/$t.log" | head -n 20 >&2 || true
    fi
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/logs/)" >&2
    exit 1
fi

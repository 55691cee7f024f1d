#!/usr/bin/env bash
# Conference mixer cost (issue 14): % of one core per mixed participant in conferences of 3
# and 10, stepping the number of participants until a mixer frame is late. Real loopback UDP,
# the media crate's conference I/O shell on a two-worker runtime (SIP signalling excluded:
# it is measured by bench/run.sh). No conferencing peer installs from Debian 12, so the
# figures are absolute. Prints one MIXER_RESULT JSON line per step and saves them under
# bench/results/<stamp>-mixer.txt.
#
#   bench/mixer.sh                         sizes 3,10; totals 30..600; 10 s per step
#   MIXER_SIZES=3 MIXER_TOTALS=300 MIXER_SECS=5 bench/mixer.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
mkdir -p "$HERE/results"
out="$HERE/results/$(date -u +%Y%m%d-%H%M%S)-mixer.txt"
cd "$REPO"
{
  echo "# $(git rev-parse --short HEAD) $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  cargo test --release -q -p hookflash-media --test mixer_perf -- --ignored --nocapture \
    --test-threads 1 2>&1 | grep -E '^MIXER_|test result|panicked|assert'
} | tee "$out"
echo "saved $out"

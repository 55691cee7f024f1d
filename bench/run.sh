#!/usr/bin/env bash
# hookflash bench, one command: installs what it needs (Debian 12: sip-tester, kamailio,
# rtpengine-daemon, tcpdump, espeak-ng), builds hookflash (release) and the bench's RTP generator, then runs
# every scenario for hookflash and for Kamailio + rtpengine in turn on 127.0.0.1 and prints the
# table (also saved under bench/results/). See BENCHMARKS.md.
#
#   bench/run.sh                      full run (~20-30 min on 2 cores)
#   bench/run.sh --profile quick      a 2-3 minute smoke run with tiny loads
#   bench/run.sh --only rate,soak     a subset (rate, media, hold, soak, record, app; and soakmedia,
#                                     which only runs when named: the soak with RTP both ways on
#                                     every call, hookflash only; and app_rcml, also only when
#                                     named: the app scenario with the application in RCML)
#   bench/run.sh --only soakmedia --servers hookflash --set soak_blocks=10 --set soak_block_calls=10000
#                                     issue 17's long run: 100,000 calls with media at the soak
#                                     rate (400/s), packets per call checked against /metrics,
#                                     RSS per block, gauges back to 0 (~8 min)
#   bench/run.sh --servers hookflash  only hookflash (or: peer)
#   BENCH_REV=HEAD bench/run.sh       build hookflash from a commit (git archive) instead of the
#                                     work tree, e.g. while the work tree is mid-edit
#   CARGO_TARGET_DIR=...              where hookflash is built (default: <repo>/target)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
WORK="$HERE/.work"
mkdir -p "$WORK"

say() { printf '[bench] %s\n' "$*"; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v kamailio >/dev/null || need+=(kamailio)
command -v rtpengine >/dev/null || need+=(rtpengine-daemon)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v espeak-ng >/dev/null || need+=(espeak-ng)   # the app scenario's say verb
command -v python3 >/dev/null || need+=(python3)
# the cluster scenario's throwaway PostgreSQL (scripts/pg-test-cluster.sh) and psql
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v kamcmd >/dev/null || need+=(kamailio)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)   # the cluster scenario's bus
if ((${#need[@]})); then
    [ "$(id -u)" = 0 ] || SUDO=sudo
    say "installing ${need[*]}"
    # The bench starts its own Kamailio and rtpengine: keep the packages' services from starting
    # during the install (policy-rc.d, only if none exists), and disable them afterwards.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | ${SUDO:-} tee /usr/sbin/policy-rc.d >/dev/null
        ${SUDO:-} chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    ${SUDO:-} apt-get update -qq
    DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq --no-install-recommends "${need[@]}" >"$WORK/apt.log" 2>&1 \
        || { tail -20 "$WORK/apt.log"; [ -n "$made_policy" ] && ${SUDO:-} rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
    [ -n "$made_policy" ] && ${SUDO:-} rm -f /usr/sbin/policy-rc.d
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        units=(kamailio rtpengine-daemon rtpengine-recording-daemon)
        # PostgreSQL's own service only if this run installed it (an operator's stays up).
        [[ " ${need[*]} " == *" postgresql "* ]] && units+=(postgresql)
        for u in "${units[@]}"; do
            ${SUDO:-} systemctl disable --now "$u" >/dev/null 2>&1 || true
        done
    fi
fi
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"

# ---------------------------------------------------------------- builds
if [ -n "${BENCH_REV:-}" ]; then
    rev=$(git -C "$REPO" rev-parse --short "$BENCH_REV")
    src="$WORK/src-$rev"
    if [ ! -d "$src" ]; then
        say "exporting $BENCH_REV ($rev) to $src"
        mkdir -p "$src.tmp" && git -C "$REPO" archive "$rev" | tar -x -C "$src.tmp" && mv "$src.tmp" "$src"
    fi
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WORK/target}"
else
    src="$REPO"
fi
target="${CARGO_TARGET_DIR:-$src/target}"
say "building hookflash (release) in $src"
(cd "$src" && cargo build --release -p hookflash) 2>&1 | tail -3
hf_bin="$target/release/hookflash"
[ -x "$hf_bin" ] || die "no hookflash binary at $hf_bin"

say "building bench/rtpgen"
(cd "$HERE/rtpgen" && CARGO_TARGET_DIR="$WORK/rtpgen-target" cargo build --release --quiet)
rtpgen="$WORK/rtpgen-target/release/rtpgen"

# ---------------------------------------------------------------- run
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ -n "${BENCH_REV:-}" ]; then
    BENCH_HF_DESC="$rev (git archive of $BENCH_REV)"
else
    BENCH_HF_DESC="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    [ -n "$(git -C "$REPO" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] \
        && BENCH_HF_DESC="$BENCH_HF_DESC + uncommitted changes in crates/"
fi
export BENCH_HF_DESC
say "hookflash $BENCH_HF_DESC; load $(cut -d' ' -f1-3 /proc/loadavg)"
# Hard stop for the whole suite (BENCH_TIME_LIMIT, default 45m: a long soak needs more);
# each scenario is bounded on its own well below this.
exec timeout --signal=TERM --kill-after=30 "${BENCH_TIME_LIMIT:-45m}" \
    python3 "$HERE/bench.py" --hookflash "$hf_bin" --rtpgen "$rtpgen" "$@"

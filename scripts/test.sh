#!/usr/bin/env bash
# Run every test of hookflash: format + lint, the Rust workspace tests, and the
# end-to-end suite (tests/e2e: independent pjsua2 phones and SIPp against a
# real `hookflash serve`). Idempotent on a fresh Debian 12: installs what it
# needs (apt: sip-tester sox espeak-ng baresip pulseaudio pulseaudio-utils postgresql kamailio
# nats-server; a Python
# venv with pinned packages).
#
# Environment knobs (all optional):
#   SKIP_CARGO=1      skip fmt/clippy/build/unit tests (e2e only; needs a built binary)
#   SKIP_E2E=1        skip the end-to-end suite
#   PYTEST_ARGS="..." extra pytest arguments, e.g. PYTEST_ARGS="-k register -x"
#   E2E_WORKERS=N     parallel pytest workers for the e2e suite (default 3; 1 = serial)
#   E2E_POSTGRES=0    skip the e2e suite's third pass (the store-heavy files on PostgreSQL)
#   HOOKFLASH_E2E_DATABASE=postgres  the whole e2e suite on PostgreSQL (then no third pass)
#   HOOKFLASH_KEEP_ARTIFACTS=1  keep tests/e2e/artifacts/<test>/ for passing tests too
# Exits non-zero if any stage fails; pytest collecting no test counts as failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/tests/e2e/.venv"
REQ="$ROOT/tests/e2e/requirements.txt"

SUMMARY=()
FAILED=0
T_ALL=$(date +%s)

stage() { # stage NAME CMD... : run, time and record one stage
  local name=$1
  shift
  local t0 rc
  t0=$(date +%s)
  echo
  echo "=== $name: $*"
  "$@"
  rc=$?
  local dt=$(($(date +%s) - t0))
  if [ "$rc" -eq 0 ]; then
    SUMMARY+=("$(printf '%-26s ok     %4ss' "$name" "$dt")")
  else
    SUMMARY+=("$(printf '%-26s FAILED %4ss (exit %s)' "$name" "$dt" "$rc")")
    FAILED=1
  fi
  return "$rc"
}

finish() {
  echo
  echo "=== summary"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  echo "  total $(($(date +%s) - T_ALL))s"
  if [ "$FAILED" -ne 0 ]; then
    echo "=== FAILED"
    exit 1
  fi
  echo "=== all passed"
  exit 0
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

install_system_packages() {
  local missing=()
  command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
  command -v sox >/dev/null 2>&1 || missing+=(sox)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # test_security_tls.py certificates
  command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
  # baresip, a second independent phone, plays into a PulseAudio null sink (test_playout_hold)
  command -v baresip >/dev/null 2>&1 || missing+=(baresip)
  command -v pulseaudio >/dev/null 2>&1 || missing+=(pulseaudio)
  command -v parec >/dev/null 2>&1 || missing+=(pulseaudio-utils)
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
  # PostgreSQL, the store's second backend: the store's tests and tests/e2e/test_postgres.py
  # start throwaway clusters (scripts/pg-test-cluster.sh) from the server binaries; psql reads
  # the rows behind the server's back.
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  # Kamailio, the SIP front of the cluster tests (test_cluster_front.py runs deploy/kamailio)
  command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
  command -v kamcmd >/dev/null 2>&1 || missing+=(kamailio)
  # NATS (with JetStream), the cluster bus: tests/e2e/twonode.py starts its own nats-server on a
  # free loopback port; the package's service is neither needed nor started by the tests.
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages present"
    return 0
  fi
  echo "installing: ${missing[*]}"
  # The packages' own services (kamailio, postgresql) must not start: the tests start their
  # own instances on free loopback ports. policy-rc.d keeps them down during the install.
  local made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null &&
      $SUDO chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  local rc=0
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" || rc=$?
  [ -n "$made_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
  return $rc
}

setup_venv() {
  local stamp="$VENV/.requirements.sha256"
  local want
  want=$( (python3 --version; cat "$REQ") | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "venv up to date"
    return 0
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" &&
    "$VENV/bin/python" -c 'import pjsua2, pytest, pytest_timeout, requests, xdist' &&
    echo "$want" >"$stamp"
}

# One throwaway PostgreSQL for the Rust tests (the store's tests run on SQLite and on it):
# without it every test process would start its own (nextest runs each test in a process).
# The cluster lives until its stdin (a coprocess pipe) closes: stop_test_postgres.
start_test_postgres() {
  local port url
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || return 1
  coproc TEST_PG { "$ROOT/scripts/pg-test-cluster.sh" "$port"; }
  if ! read -r -t 120 url <&"${TEST_PG[0]}" || [ "${url#postgres://}" = "$url" ]; then
    echo "the test PostgreSQL did not start"
    return 1
  fi
  local ca=""
  read -r -t 10 ca <&"${TEST_PG[0]}" || true
  export HOOKFLASH_TEST_POSTGRES_URL="$url"
  export HOOKFLASH_TEST_POSTGRES_CA="${ca#ca=}"
  echo "test PostgreSQL at $url (TLS CA: ${HOOKFLASH_TEST_POSTGRES_CA:-none})"
}

stop_test_postgres() {
  local pid=${TEST_PG_PID:-}
  [ -n "$pid" ] || return 0
  exec {TEST_PG[1]}>&-
  wait "$pid" 2>/dev/null
  unset HOOKFLASH_TEST_POSTGRES_URL HOOKFLASH_TEST_POSTGRES_CA
}

run_unit_tests() {
  local rc own_pg=0
  if [ -z "${HOOKFLASH_TEST_POSTGRES_URL:-}" ]; then
    start_test_postgres || return 1
    own_pg=1
  fi
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-tests=warn
  else
    cargo test --workspace
  fi
  rc=$?
  if [ "$own_pg" -eq 1 ]; then stop_test_postgres; fi
  return "$rc"
}

# The e2e files that exercise the store most (the native API and its event backlog across a
# restart, recordings, voicemail, applications, registrations, OAuth tokens and RingCentral
# subscriptions, api19 / jambonz / sipgate REST with their call records): the third pass runs
# them again with every server on PostgreSQL (tests/e2e/README.md, "PostgreSQL").
E2E_POSTGRES_FILES=(
  test_api_native.py test_sipgate_sdk.py test_recording.py test_voicemail.py
  test_app_runtime.py test_jambonz_sdk.py test_api19_calls.py test_rcml_record.py
  test_ringcentral_oauth.py test_ringcentral_subscriptions.py test_ringcentral_recovery.py
  test_register.py
)

run_e2e() {
  # Two passes: everything but the machine-loading tests on E2E_WORKERS parallel pytest
  # workers (a test file stays on one worker; each worker has its own ports, see hfserver.py),
  # then the `solo` tests (floods, load, sprays) alone, so that they neither slow nor are
  # slowed by timing-sensitive calls. Both on SQLite unless HOOKFLASH_E2E_DATABASE=postgres.
  # A third pass runs the store-heavy files again on PostgreSQL (E2E_POSTGRES=0 skips it; it
  # is left out when the first two already ran on PostgreSQL).
  local workers=${E2E_WORKERS:-3} rc1 rc2 rc3=5
  # shellcheck disable=SC2086
  timeout 1500 "$VENV/bin/python" -m pytest tests/e2e -q -n "$workers" --dist loadfile \
    -m "not solo" --durations=15 ${PYTEST_ARGS:-}
  rc1=$?
  # shellcheck disable=SC2086
  timeout 600 "$VENV/bin/python" -m pytest tests/e2e -q -m solo ${PYTEST_ARGS:-}
  rc2=$?
  if [ "${E2E_POSTGRES:-1}" != "0" ] && [ "${HOOKFLASH_E2E_DATABASE:-sqlite}" != "postgres" ]; then
    echo
    echo "=== e2e third pass: the store-heavy files on PostgreSQL (HOOKFLASH_E2E_DATABASE=postgres)"
    # shellcheck disable=SC2086
    HOOKFLASH_E2E_DATABASE=postgres timeout 600 "$VENV/bin/python" -m pytest \
      "${E2E_POSTGRES_FILES[@]/#/tests/e2e/}" -q -n "$workers" --dist loadfile \
      -m "not solo" ${PYTEST_ARGS:-}
    rc3=$?
  fi
  # Exit 5 = this pass collected nothing (e.g. PYTEST_ARGS selected only the other kind).
  if [ "$rc1" -eq 5 ] && [ "$rc2" -eq 5 ] && [ "$rc3" -eq 5 ]; then
    echo "pytest collected no tests: counted as a failure"
    return 5
  fi
  if [ "$rc1" -ne 0 ] && [ "$rc1" -ne 5 ]; then return "$rc1"; fi
  if [ "$rc2" -ne 0 ] && [ "$rc2" -ne 5 ]; then return "$rc2"; fi
  if [ "$rc3" -ne 0 ] && [ "$rc3" -ne 5 ]; then return "$rc3"; fi
  return 0
}

# --- Node SDKs of the dialect tests (tests/node: package.json + package-lock.json, pinned).
# Added for issue 3 (sipgateio); `npm ci` installs exactly the lock file.
setup_node_sdks() {
  if ! command -v npm >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm || return 1
  fi
  local stamp="$ROOT/tests/node/node_modules/.lock.sha256"
  local want
  want=$(sha256sum "$ROOT/tests/node/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "node SDKs up to date"
    return 0
  fi
  (cd "$ROOT/tests/node" && npm ci --no-audit --no-fund --loglevel=error) &&
    echo "$want" >"$stamp"
}
# --- end of the Node SDK block

stage "system packages" install_system_packages || finish
stage "python venv" setup_venv || finish
stage "node SDKs" setup_node_sdks || finish

BUILD_OK=1
if [ "${SKIP_CARGO:-0}" != "1" ]; then
  stage "cargo fmt --check" cargo fmt --all -- --check
  stage "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
  if stage "cargo build" cargo build --workspace --all-targets; then
    stage "rust tests" run_unit_tests
  else
    BUILD_OK=0
  fi
fi

if [ "${SKIP_E2E:-0}" != "1" ]; then
  if [ "$BUILD_OK" -eq 1 ]; then
    stage "e2e (pytest tests/e2e)" run_e2e
  else
    SUMMARY+=("$(printf '%-26s SKIPPED (build failed)' "e2e")")
    FAILED=1
  fi
fi

finish

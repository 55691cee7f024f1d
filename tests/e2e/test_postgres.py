"""`hookflash serve` on PostgreSQL (`database_url = "postgres://..."`, issue 18, first part).

A throwaway PostgreSQL (pgcluster.py: the Debian package's server, initdb into a temporary
directory, 127.0.0.1) holds the server's rows. Two independent pjsua2 phones register and call
each other with audio both ways (tones detected in what each phone recorded); the native API
lists the call while it runs; after hangup the call record is in the sipgate history, and psql
finds the same row in PostgreSQL behind the server's back (and no SQLite file was made). The
server talks to PostgreSQL over TLS (verify-full against the cluster's CA; pg_stat_ssl says so).
After a restart the record is still there and the phones, which did not register again, are
still reachable (their registrations came back from PostgreSQL).
"""
import os
import time

import pytest
import requests

from api_support import Native, sipgate_login
from checks import assert_anchored, assert_hears, sip_user
from conftest import F_A, F_B

pytestmark = pytest.mark.server

MIGRATIONS = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "store",
                          "migrations", "postgres")


def registered(phones, server, name, ext):
    p = phones(name)
    # expires 3600: pjsua2 refreshes only near the end, never during the test
    ev = p.register(server, ext, expires=3600)
    assert ev["code"] == 200, "%s (%s) REGISTER: %s" % (name, ext, ev)
    return p


def call_with_audio(server, A, B, tones, artifacts, tag, seconds=3.0):
    """201 (A) calls 202 (B); both hear each other; A hangs up. Returns the native API's view of
    the call while it was up."""
    api = Native(server)
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=300)
    ra = os.path.join(artifacts, "A-%s.wav" % tag)
    rb = os.path.join(artifacts, "B-%s.wav" % tag)
    A.record(ra)
    B.record(rb)
    c = A.call(server.uri("202"))
    inc = B.wait_incoming(timeout=10)
    assert sip_user(inc["from"]) == "201", inc
    A.wait_state("CONFIRMED", call=c, timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"])
    assert_anchored(A.wait_media(lambda e: e["active"], call=c), server)
    assert_anchored(B.wait_media(lambda e: e["active"], call=inc["call"]), server)
    live = api.one_call()
    assert live["state"] == "answered" and live["direction"] == "internal", live
    assert {l["owner_extension"] for l in live["legs"]} == {"201", "202"}, live
    time.sleep(seconds)
    A.stop_record()
    B.stop_record()
    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert_hears(ra, F_B, F_A, what="A hears B (%s)" % tag)
    assert_hears(rb, F_A, F_B, what="B hears A (%s)" % tag)
    server.wait_metric("hookflash_active_calls", 0)
    assert api.calls() == []
    return live


def history_entry(server, token, call_id, timeout=5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = requests.get(server.http + "/v2/history?types=CALL&limit=10", timeout=5,
                         headers={"Authorization": "Bearer " + token})
        assert r.status_code == 200, r.text
        last = r.json()
        for e in last["items"]:
            if e["callId"] == call_id:
                return e
        time.sleep(0.1)
    raise AssertionError("call %s not in the history: %s" % (call_id, last))


def test_serve_on_postgres_call_records_survive_a_restart(pg_cluster, server_factory, phones,
                                                          tones, artifacts):
    # A password in the URL (the test cluster trusts loopback and never asks for it) must
    # not reach the log.
    url = pg_cluster.create_database().replace("hookflash@", "hookflash:e2e-s3cret@", 1)
    db = url.rsplit("/", 1)[1]
    # Over TLS, the server's certificate checked against the cluster's CA.
    assert pg_cluster.ca, "the test PostgreSQL offers no TLS (openssl missing?)"
    server = server_factory(
        database_url=url + "?sslmode=verify-full&sslrootcert=" + pg_cluster.ca)
    tls = pg_cluster.psql(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid "
        "WHERE a.datname = '%s'" % db)
    assert tls and all(r == ["t"] for r in tls), tls
    with open(server.log_path, errors="replace") as f:
        log = f.read()
    assert "database open (PostgreSQL)" in log and "<redacted>" in log, log[-2000:]
    assert "e2e-s3cret" not in log

    # The rows are in PostgreSQL: every migration applied, the provisioned users there, and no
    # SQLite database in data_dir.
    applied = pg_cluster.psql("SELECT count(*) FROM _sqlx_migrations WHERE success", url)
    files = [f for f in os.listdir(MIGRATIONS) if f.endswith(".sql")]
    assert applied == [[str(len(files))]], (applied, files)
    users = pg_cluster.psql(
        "SELECT u.extension FROM users u JOIN accounts a ON a.id = u.account_id "
        "WHERE a.name = 'acme' ORDER BY 1", url)
    assert ["201"] in users and ["202"] in users, users
    assert not os.path.exists(os.path.join(server.data_dir, "hookflash.db"))

    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    regs = pg_cluster.psql(
        "SELECT u.extension FROM registrations r JOIN users u ON u.id = r.user_id ORDER BY 1",
        url)
    assert regs == [["201"], ["202"]], regs

    live = call_with_audio(server, A, B, tones, artifacts, "first", seconds=3.0)
    call_id = live["id"]

    token = sipgate_login(server)
    entry = history_entry(server, token, call_id)
    assert entry["direction"] == "OUTGOING" and entry["status"] == "PICKUP", entry
    assert entry["duration"] >= 3, entry
    rows = pg_cluster.psql(
        "SELECT from_uri, to_uri, direction, end_cause, duration_ms FROM call_records "
        "WHERE id = '%s'" % call_id, url)
    assert len(rows) == 1, rows
    from_uri, to_uri, direction, _cause, duration_ms = rows[0]
    assert "201" in from_uri and "202" in to_uri and direction == "internal", rows
    assert int(duration_ms) >= 3000, rows
    legs = pg_cluster.psql("SELECT count(*) FROM call_legs WHERE call_id = '%s'" % call_id, url)
    assert legs == [["2"]], legs
    assert pg_cluster.psql("SELECT count(*) FROM live_calls", url) == [["0"]]
    # The admin CLI with the same config reads the same database.
    hist = server.cli("calls", "history")
    assert hist.returncode == 0, hist.stderr
    assert "201" in hist.stdout and "202" in hist.stdout, hist.stdout

    server.restart()

    again = history_entry(server, sipgate_login(server), call_id)
    for k in ("callId", "source", "target", "direction", "status", "duration", "created"):
        assert again[k] == entry[k], (k, entry, again)
    # Nobody registered again: the restarted server found both phones in PostgreSQL.
    server.wait_metric("hookflash_active_registrations", 2)
    second = call_with_audio(server, A, B, tones, artifacts, "after-restart", seconds=2.0)
    assert second["id"] != call_id
    m = server.metrics()
    assert (m.value("hookflash_sip_requests_total", method="REGISTER") or 0) == 0, (
        "REGISTERs after restart: %s" % m.series("hookflash_sip_requests_total"))
    history_entry(server, sipgate_login(server), second["id"])
    count = pg_cluster.psql("SELECT count(*) FROM call_records", url)
    assert count == [["2"]], count

import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import audio  # noqa: E402
from hfserver import REPO, Server  # noqa: E402
from phones import PhoneFactory  # noqa: E402

ARTIFACTS = os.path.join(HERE, "artifacts")
KEEP = os.environ.get("HOOKFLASH_KEEP_ARTIFACTS") == "1"

# Tones: A plays 1000 Hz, B plays 1500 Hz, a third party 2000 Hz.
F_A, F_B, F_C = 1000, 1500, 2000


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _safe(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


def _failed(node):
    for when in ("setup", "call", "teardown"):
        rep = getattr(node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture
def artifacts(request):
    """Per-test directory for server/phone logs, recordings, SIPp traces.
    Kept under tests/e2e/artifacts/<test>/ when the test fails."""
    d = os.path.join(ARTIFACTS, _safe(request.node.name))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    yield d
    if not KEEP and not _failed(request.node):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def module_artifacts(request):
    d = os.path.join(ARTIFACTS, _safe(request.module.__name__) + "-module")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    failed_before = request.session.testsfailed
    yield d
    if not KEEP and request.session.testsfailed == failed_before:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def tones(tmp_path_factory):
    d = tmp_path_factory.mktemp("tones")
    out = {}
    for f in (F_A, F_B, F_C):
        out[f] = audio.make_tone(str(d / ("tone%d.wav" % f)), f, seconds=30)
    out["silence"] = audio.make_silence(str(d / "silence.wav"), seconds=5)
    return out


@pytest.fixture(scope="session")
def hookflash_bin():
    path = os.path.join(REPO, "target", "debug", "hookflash")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "-p", "hookflash"], cwd=REPO, check=True)
    assert os.path.exists(path), path
    return path


# HOOKFLASH_E2E_DATABASE=postgres: every server of server_factory / module_server keeps its
# rows in its own database on this worker's throwaway PostgreSQL instead of SQLite.
E2E_POSTGRES = os.environ.get("HOOKFLASH_E2E_DATABASE", "sqlite") == "postgres"


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL on 127.0.0.1 for this worker (pgcluster.py)."""
    from pgcluster import PgCluster

    c = PgCluster()
    yield c
    c.close()


class ServerFactory:
    def __init__(self, binary, base, artifacts, new_database=None):
        self.binary = binary
        self.base = base
        self.artifacts = artifacts
        self.servers = []
        # () -> a fresh database URL, for every server not given one (HOOKFLASH_E2E_DATABASE).
        self.new_database = new_database

    def __call__(self, start=True, **kw):
        n = len(self.servers)
        if self.new_database is not None and "database_url" not in kw:
            kw["database_url"] = self.new_database()
        s = Server(
            self.binary,
            os.path.join(self.base, "server%d" % n),
            self.artifacts if n == 0 else os.path.join(self.artifacts, "server%d" % n),
            **kw
        )
        self.servers.append(s)
        if start:
            s.start()
        return s

    def close_all(self):
        for s in self.servers:
            try:
                s.stop()
            except Exception:
                s.kill()


def _new_database(request):
    if not E2E_POSTGRES:
        return None
    return request.getfixturevalue("pg_cluster").create_database


@pytest.fixture
def server_factory(request, hookflash_bin, tmp_path, artifacts):
    f = ServerFactory(hookflash_bin, str(tmp_path), artifacts, _new_database(request))
    yield f
    f.close_all()


@pytest.fixture
def server(server_factory):
    """A running hookflash with the standard provisioning (hfserver.ACCOUNTS)."""
    return server_factory()


@pytest.fixture(scope="module")
def module_server(request, hookflash_bin, tmp_path_factory, module_artifacts):
    f = ServerFactory(hookflash_bin, str(tmp_path_factory.mktemp("srv")), module_artifacts,
                      _new_database(request))
    s = f()
    yield s
    f.close_all()


@pytest.fixture
def phones(artifacts):
    """phones("A") starts an independent pjsua2 phone process."""
    f = PhoneFactory(artifacts)
    yield f
    f.close_all()

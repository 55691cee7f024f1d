"""Helpers for the RingCentral dialect tests: the OAuth clients provisioned by hfserver, plain
HTTP token requests, and the official SDKs (tests/node: @ringcentral/sdk,
ringcentral-call-control) run as subprocesses that print one JSON line."""
import json
import os
import subprocess

import requests

from api_support import NODE_DIR

ACME_CLIENT = ("rc-acme-client", "rc-acme-secret")
BETA_CLIENT = ("rc-beta-client", "rc-beta-secret")
V1 = "/restapi/v1.0"
PASSWORDS = {"201": "secret201", "202": "secret202", "203": "secret203", "103": "secret103", "301": "secret301"}


def rc_available():
    return os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ringcentral-call-control"))


def token(server, client=ACME_CLIENT, expect=200, **form):
    """POST /restapi/oauth/token with HTTP Basic client credentials; returns the JSON body."""
    r = requests.post(server.http + "/restapi/oauth/token", data=form, auth=client, timeout=10)
    assert r.status_code == expect, "token %s: %s %s" % (form.get("grant_type"), r.status_code, r.text)
    return r.json()


def login(server, ext="201", client=ACME_CLIENT, **extra):
    return token(server, client, grant_type="password", username=ext,
                 password=PASSWORDS[ext], **extra)["access_token"]


class Rc:
    """Plain HTTP against /restapi/v1.0 with one extension's token."""

    def __init__(self, server, ext="201", access_token=None):
        self.base = server.http + V1
        self.token = access_token or login(server, ext)

    def req(self, method, path, expect=None, **kw):
        h = {"Authorization": "Bearer " + self.token}
        r = requests.request(method, self.base + path, headers=h, timeout=10, **kw)
        if expect is not None:
            assert r.status_code == expect, "%s %s -> %s %s" % (method, path, r.status_code, r.text)
        return r

    def presence(self):
        return self.req("GET", "/account/~/extension/~/presence?detailedTelephonyState=true"
                        "&sipData=true", 200).json()

    def session(self, sid, expect=200):
        return self.req("GET", "/account/~/telephony/sessions/%s" % sid, expect).json()


def assert_rc_error(r, status, code=None):
    """A RingCentral REST error: the status, errorCode, message and errors[]."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["message"] and body["errors"] and body["errors"][0]["message"], body
    if code:
        assert body["errorCode"] == code, body
    return body


def node(script, *args, timeout=40):
    p = subprocess.run(["node", os.path.join(NODE_DIR, script)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, cwd=NODE_DIR)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, "%s: no output (rc=%s)\nstdout: %s\nstderr: %s" % (
        script, p.returncode, p.stdout, p.stderr)
    return json.loads(lines[-1]), p.stderr


def sdk_auth(server, login_opts, client=ACME_CLIENT):
    out, err = node("ringcentral_auth.js", server.http, client[0], client[1],
                    json.dumps(login_opts))
    assert out["ok"], "SDK auth failed: %s\nstderr: %s" % (out, err)
    return out


def cc(server, ext, action, session_id="", arg=None, expect_ok=True, client=ACME_CLIENT):
    """Runs one call-control action as extension ``ext``."""
    args = [server.http, client[0], client[1], ext, PASSWORDS[ext], action, session_id]
    if arg is not None:
        args.append(json.dumps(arg))
    out, err = node("ringcentral_cc.js", *args)
    if expect_ok:
        assert out["ok"], "call-control %s failed: %s\nstderr: %s" % (action, out, err)
    return out

"""RingCentral OAuth: the official @ringcentral/sdk (tests/node, pinned) logs in with the
password and JWT grants, refreshes after the server's 401 and revokes on logout; plain HTTP for
the exact statuses and RingCentral error bodies, rotation, revocation and a restart."""
import os
import re
import time

import pytest
import requests

from rc_support import ACME_CLIENT, BETA_CLIENT, V1, Rc, assert_rc_error, login, rc_available, \
    sdk_auth, token

pytestmark = [pytest.mark.server]
needs_sdk = pytest.mark.skipif(
    not rc_available() and os.environ.get("CI") != "true",
    reason="tests/node not installed (scripts/test.sh runs npm ci)",
)


@needs_sdk
def test_sdk_logs_in_with_each_password_form_and_with_a_jwt(server):
    ids = set()
    for username in ("201", "201@acme.local", "+4930123456*201", "+4930123456"):
        out = sdk_auth(server, {"username": username, "password": "secret201"})
        assert out["extension"]["extensionNumber"] == "201", out
        assert out["extension"]["account"]["id"], out
        ids.add(out["extension"]["id"])
    assert len(ids) == 1, ids
    # The SDK's own extension form: username + extension.
    out = sdk_auth(server, {"username": "+4930123456", "extension": "202", "password": "secret202"})
    assert out["extension"]["extensionNumber"] == "202", out

    cli = server.cli("user", "jwt", "202", "--account", "acme", "--days", "2")
    assert cli.returncode == 0, cli.stderr
    jwt = re.search(r"^jwt: (\S+)$", cli.stdout, re.M).group(1)
    out = sdk_auth(server, {"jwt": jwt})
    assert out["extension"]["extensionNumber"] == "202", out
    # The credential is not an access token, and another account's client cannot use it.
    r = requests.get(server.http + V1 + "/account/~/extension/~",
                     headers={"Authorization": "Bearer " + jwt}, timeout=5)
    assert_rc_error(r, 401, "TokenInvalid")
    body = token(server, BETA_CLIENT, 400, grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
                 assertion=jwt)
    assert body["error"] == "invalid_grant", body
    # A password change revokes the credential (both are dated in whole seconds).
    time.sleep(1.1)
    assert server.cli("user", "passwd", "202", "--account", "acme", "--password",
                      "secret202-new").returncode == 0
    body = token(server, ACME_CLIENT, 400, grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
                 assertion=jwt)
    assert body["error"] == "invalid_grant" and body["errors"][0]["errorCode"], body


@needs_sdk
def test_sdk_refreshes_after_a_401_and_revokes_on_logout(server):
    out = sdk_auth(server, {"username": "201", "password": "secret201", "access_token_ttl": 1,
                            "expire_first": 2})
    assert out["second"]["extensionNumber"] == "201", out
    # The server's 401 made the SDK refresh and retry (it also refreshes early by itself
    # when a token has less than a minute left, as this one had).
    assert out["errorStatuses"] == [401], out
    assert out["refreshed"] >= 1, out
    first, second = out["tokens"]
    assert first != second, out
    # Rotated and revoked tokens are refused; logout revoked the last one.
    assert_rc_error(Rc(server, access_token=first).req("GET", "/account/~/extension/~"), 401,
                    "TokenInvalid")
    assert_rc_error(Rc(server, access_token=out["lastToken"]).req("GET", "/account/~"), 401,
                    "TokenInvalid")


def test_token_endpoint_errors_are_oauth_shaped(server):
    def err(client, status, error, **form):
        r = requests.post(server.http + "/restapi/oauth/token", data=form, auth=client, timeout=5)
        assert r.status_code == status, (form, r.status_code, r.text)
        body = r.json()
        assert body["error"] == error, body
        assert body["error_description"] and body["errors"][0]["errorCode"].startswith(("OAU", "CMN")), body
        return body

    err(("rc-acme-client", "wrong"), 401, "invalid_client", grant_type="password",
        username="201", password="secret201")
    err(("nobody", "x"), 401, "invalid_client", grant_type="password", username="201",
        password="secret201")
    r = requests.post(server.http + "/restapi/oauth/token", data={"grant_type": "password"},
                      timeout=5)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    err(ACME_CLIENT, 400, "invalid_grant", grant_type="password", username="201", password="nope")
    # A user of another account through this account's client.
    err(ACME_CLIENT, 400, "invalid_grant", grant_type="password", username="301",
        password="secret301")
    err(ACME_CLIENT, 400, "unsupported_grant_type", grant_type="client_credentials")
    err(ACME_CLIENT, 400, "invalid_request", grant_type="password", username="201")
    err(ACME_CLIENT, 400, "invalid_grant", grant_type="refresh_token", refresh_token="nope")

    # The answer the SDK needs.
    t = token(server, grant_type="password", username="201", password="secret201")
    assert t["token_type"].lower() == "bearer" and t["expires_in"] > 60, t
    assert t["refresh_token_expires_in"] >= t["expires_in"], t
    # Rotation: a refresh token works once.
    t2 = token(server, grant_type="refresh_token", refresh_token=t["refresh_token"])
    assert t2["access_token"] != t["access_token"], t2
    err(ACME_CLIENT, 400, "invalid_grant", grant_type="refresh_token",
        refresh_token=t["refresh_token"])
    assert_rc_error(Rc(server, access_token=t["access_token"]).req("GET", "/account/~"), 401,
                    "TokenInvalid")
    Rc(server, access_token=t2["access_token"]).req("GET", "/account/~", 200)
    # Another client cannot refresh this client's token.
    err(BETA_CLIENT, 400, "invalid_grant", grant_type="refresh_token",
        refresh_token=t2["refresh_token"])


def test_expired_and_revoked_tokens_get_401_and_tokens_survive_a_restart(server):
    short = token(server, grant_type="password", username="201", password="secret201",
                  access_token_ttl="1")
    assert short["expires_in"] <= 1, short
    kept = login(server, "202")
    to_revoke = login(server, "201")
    rc = Rc(server, access_token=to_revoke)
    assert rc.req("GET", "/account/~/extension/~", 200).json()["extensionNumber"] == "201"
    r = requests.post(server.http + "/restapi/oauth/revoke", data={"token": to_revoke},
                      auth=ACME_CLIENT, timeout=5)
    assert r.status_code == 200, r.text
    body = assert_rc_error(rc.req("GET", "/account/~/extension/~"), 401, "TokenInvalid")
    assert body["errors"][0]["errorCode"] == "TokenInvalid", body
    assert_rc_error(requests.get(server.http + V1 + "/account/~", timeout=5), 401)
    time.sleep(1.2)
    assert_rc_error(Rc(server, access_token=short["access_token"]).req("GET", "/account/~"),
                    401, "TokenExpired")
    # Tokens are stored (hashed): a restart keeps them.
    server.restart()
    me = Rc(server, access_token=kept).req("GET", "/account/~/extension/~", 200).json()
    assert me["extensionNumber"] == "202", me
    assert_rc_error(rc.req("GET", "/account/~"), 401, "TokenInvalid")


def test_demo_account_has_an_oauth_client(server_factory):
    s = server_factory(start=False)
    s.accounts = []
    s.write_config()
    with open(s.config_path) as f:
        text = f.read().replace("demo_account = false", "demo_account = true")
    with open(s.config_path, "w") as f:
        f.write(text)
    s.start()
    with open(s.log_path, errors="replace") as f:
        log = f.read()
    m = re.search(r"OAuth client \(RingCentral dialect\): id (\S+)\s+secret (\S+)", log)
    assert m, log[-3000:]
    pw = re.search(r"user 101\s+password (\S+)", log).group(1)
    t = token(s, (m.group(1), m.group(2)), grant_type="password", username="101", password=pw)
    me = Rc(s, access_token=t["access_token"]).req("GET", "/account/~/extension/~", 200).json()
    assert me["extensionNumber"] == "101", me


def test_account_extension_device_and_presence_routes(server, phones):
    a, b = Rc(server, "201"), Rc(server, "202")
    acc = a.req("GET", "/account/~", 200).json()
    assert acc["id"] and acc["mainNumber"] == "+4930123456", acc
    me = a.req("GET", "/account/~/extension/~", 200).json()
    assert me["extensionNumber"] == "201" and me["account"]["id"] == acc["id"], me
    assert a.req("GET", "/account/%s/extension/%s" % (acc["id"], me["id"]), 200).json() == me
    bob = b.req("GET", "/account/~/extension/~", 200).json()
    # A colleague's extension by id; another account's (and another account id) are 404.
    assert a.req("GET", "/account/~/extension/" + bob["id"], 200).json()["extensionNumber"] == "202"
    zed = Rc(server, "301", login(server, "301", client=BETA_CLIENT))
    zed_id = zed.req("GET", "/account/~/extension/~", 200).json()["id"]
    assert_rc_error(a.req("GET", "/account/~/extension/" + zed_id), 404, "CMN-102")
    assert_rc_error(a.req("GET", "/account/nope/extension/~"), 404, "CMN-102")
    # Devices: the registered phones, each with a stable id.
    assert a.req("GET", "/account/~/extension/~/device", 200).json()["records"] == []
    phone = phones("A")
    assert phone.register(server, "201")["code"] == 200
    devices = a.req("GET", "/account/~/extension/~/device", 200).json()["records"]
    assert len(devices) == 1 and len(devices[0]["id"]) == 12 and devices[0]["status"] == "Online"
    assert a.req("GET", "/account/~/extension/~/device", 200).json()["records"][0]["id"] == \
        devices[0]["id"]
    p = a.presence()
    assert p["telephonyStatus"] == "NoCall" and p["activeCalls"] == [], p

#!/usr/bin/env node
// Drives the official @ringcentral/sdk (pinned in package.json) through hookflash's OAuth
// endpoints.
//
//   node ringcentral_auth.js BASE_URL CLIENT_ID CLIENT_SECRET LOGIN_JSON
//
// LOGIN_JSON: the options of platform.login(), e.g. {"username":"201","password":"..."} or
// {"jwt":"..."}; with "access_token_ttl" the access token lives that long (seconds).
// Steps: log in, GET /restapi/v1.0/account/~/extension/~ ; when LOGIN_JSON has
// "expire_first": wait until the access token has expired on the server, make the SDK believe
// it is still valid, and GET again: the server's 401 makes the SDK refresh and retry; then
// logout (revoke). Prints one JSON line: {"ok", "extension", "tokens": [access tokens seen],
// "refreshed", "errorStatuses", "second", "revoked"} or {"ok": false, "error", "status"}.
'use strict';

const { SDK } = require('@ringcentral/sdk');

const [base, clientId, clientSecret, loginJson] = process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  const login = JSON.parse(loginJson);
  const expireFirst = login.expire_first;
  delete login.expire_first;
  const sdk = new SDK({ server: base, clientId, clientSecret });
  const platform = sdk.platform();
  let refreshed = 0;
  const statuses = [];
  platform.on(platform.events.refreshSuccess, () => { refreshed += 1; });
  const client = sdk.client();
  client.on(client.events.requestError, (e) => {
    statuses.push(e.response ? e.response.status : 0);
  });
  await platform.login(login);
  const tokens = [(await platform.auth().data()).access_token];
  const ext = await (await platform.get('/restapi/v1.0/account/~/extension/~')).json();
  const result = { ok: true, extension: ext, tokens, refreshed: 0 };
  if (expireFirst) {
    // The server's token expires; the SDK is told it still has an hour (no early refresh).
    await new Promise((r) => setTimeout(r, expireFirst * 1000));
    await platform.auth().setData({ expires_in: '3600' });
    const again = await (await platform.get('/restapi/v1.0/account/~/extension/~')).json();
    tokens.push((await platform.auth().data()).access_token);
    result.second = again;
  }
  result.refreshed = refreshed;
  result.errorStatuses = statuses;
  result.lastToken = (await platform.auth().data()).access_token;
  await platform.logout();
  result.revoked = true;
  return result;
}

main().then(out, (e) => {
  out({ ok: false, error: e.message, status: e.response ? e.response.status : null });
});

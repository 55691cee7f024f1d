#!/usr/bin/env node
// Creates a WebHook subscription with the official @ringcentral/sdk (pinned in package.json)
// as one extension (password grant): POST /restapi/v1.0/subscription, then reads it back with
// GET /restapi/v1.0/subscription/{id}.
//
//   node ringcentral_webhook.js BASE_URL CLIENT_ID CLIENT_SECRET USERNAME PASSWORD FILTERS_JSON \
//        ADDRESS VERIFICATION_TOKEN
//
// Prints one JSON line: {"ok": true, "created": {...}, "read": {...}} or
// {"ok": false, "error", "status"}.
'use strict';

const { SDK } = require('@ringcentral/sdk');

const [base, clientId, clientSecret, username, password, filtersJson, address, token] =
  process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  const sdk = new SDK({ server: base, clientId, clientSecret });
  const platform = sdk.platform();
  await platform.login({ username, password });
  const created = await (await platform.post('/restapi/v1.0/subscription', {
    eventFilters: JSON.parse(filtersJson),
    deliveryMode: { transportType: 'WebHook', address, verificationToken: token },
    expiresIn: 3600,
  })).json();
  const read = await (await platform.get(`/restapi/v1.0/subscription/${created.id}`)).json();
  out({ ok: true, created, read });
}

main().catch((e) => {
  out({ ok: false, error: e.message, status: e.response ? e.response.status : null });
  process.exit(1);
});

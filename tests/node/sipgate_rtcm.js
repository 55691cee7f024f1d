#!/usr/bin/env node
// Drives the official sipgateio SDK (pinned in package.json) against hookflash.
//
//   node sipgate_rtcm.js BASE_URL CREDENTIALS_JSON ACTION [CALL_ID] [VALUE]
//
// BASE_URL: e.g. http://127.0.0.1:8080 (the SDK's hard-coded https://api.sipgate.com/v2 is
// replaced by BASE_URL/v2 by patching axios.create before the SDK is loaded, as
// shared/reference/dialects.md describes). CREDENTIALS_JSON: {"token": ...} |
// {"tokenId": ..., "token": ...} | {"username": ..., "password": ...}.
// ACTION: list | hold | mute | hangup | announce | record | dtmf | transfer | initiate | history (VALUE:
// true/false for hold and mute; the URL for announce; the options JSON for record, e.g.
// {"value":true,"announcement":false}, and for transfer, e.g.
// {"attended":false,"phoneNumber":"103"}; the sequence for dtmf; for history an optional JSON
// {"filter": {...}, "pagination": {...}} — CALL_ID is ignored. history answers the SDK's
// entries plus "dates": whether each entry's created/lastModified became a Date).
// Prints one JSON line: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
'use strict';

const [base, credsJson, action, callId, value] = process.argv.slice(2);
const axios = require('axios');
const origCreate = axios.create;
axios.create = (cfg = {}) => origCreate.call(axios, { ...cfg, baseURL: base.replace(/\/$/, '') + '/v2' });
const { sipgateIO, createRTCMModule, createHistoryModule, createCallModule } = require('sipgateio');

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  const client = sipgateIO(JSON.parse(credsJson));
  const rtcm = createRTCMModule(client);
  const call = { callId };
  const flag = value === 'true';
  switch (action) {
    case 'list':
      return rtcm.getEstablishedCalls();
    case 'hold':
      await rtcm.hold(call, flag);
      return null;
    case 'mute':
      await rtcm.mute(call, flag);
      return null;
    case 'hangup':
      await rtcm.hangUp(call);
      return null;
    case 'announce':
      await rtcm.announce(call, value);
      return null;
    case 'record':
      await rtcm.record(call, JSON.parse(value));
      return null;
    case 'dtmf':
      await rtcm.sendDTMF(call, value);
      return null;
    case 'transfer':
      await rtcm.transfer(call, JSON.parse(value));
      return null;
    case 'initiate':
      // VALUE: the call data, e.g. {"from":"e0","to":"+4930123456","callerId":"+4930123456"}
      return createCallModule(client).initiate(JSON.parse(value));
    case 'history': {
      const opts = value ? JSON.parse(value) : {};
      const entries = await createHistoryModule(client).fetchAll(opts.filter || {}, opts.pagination);
      return {
        entries,
        dates: entries.map((e) => e.created instanceof Date && e.lastModified instanceof Date),
      };
    }
    default:
      throw new Error('unknown action ' + action);
  }
}

main().then(
  (result) => out({ ok: true, result }),
  (err) => {
    out({ ok: false, error: String((err && err.message) || err) });
    process.exitCode = 1;
  },
);

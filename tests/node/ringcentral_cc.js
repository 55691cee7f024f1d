#!/usr/bin/env node
// Drives ringcentral-call-control (with @ringcentral/sdk; pinned in package.json) against
// hookflash: logs in as one extension (password grant), initialises the call control (which
// loads the extension, its presence's active calls, their sessions and the devices), picks the
// session with id SESSION_ID (or the only one) and runs ACTION on it.
//
//   node ringcentral_cc.js BASE_URL CLIENT_ID CLIENT_SECRET USERNAME PASSWORD ACTION [SESSION_ID] [ARG_JSON]
//
// ACTION: sessions | hold | unhold | mute | unmute | transfer (ARG_JSON: {"extensionNumber":..})
// | forward (ARG_JSON) | reject | drop | park | record | pauseRecord (ARG_JSON: id) | hangupParty
// | callOut (ARG_JSON: {"deviceIndex": 0, "to": {...}}) | flip (ARG_JSON: {"callFlipId"})
// | ignore / answer (ARG_JSON: {"sipUriContains": "..."}: the device whose sipUri contains it)
// | reply (ARG_JSON: the reply body) | bridge (ARG_JSON: {"telephonySessionId", "partyId"})
// | bringIn / supervise (ARG_JSON: the body, sent as the SDK sends it)
// | pickup (ARG_JSON: {"partyId", "sipUriContains"}: the parked party of SESSION_ID is picked up
//   on the device whose sipUri contains it; the SDK has the call only commented out, so it is
//   sent as platform().post; the session need not be the extension's).
// Prints one JSON line: {"ok": true, "result", "extensionId", "party", "sessions", "devices"} or
// {"ok": false, "error", "status"}.
'use strict';

const { SDK } = require('@ringcentral/sdk');
const { RingCentralCallControl } = require('ringcentral-call-control');

const [base, clientId, clientSecret, username, password, action, sessionId, argJson] =
  process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  const sdk = new SDK({ server: base, clientId, clientSecret });
  await sdk.platform().login({ username, password });
  const cc = new RingCentralCallControl({ sdk });
  await new Promise((resolve) => cc.on('initialized', resolve));
  const arg = argJson ? JSON.parse(argJson) : undefined;
  const sessions = cc.sessions.map((s) => s.toJSON());
  const common = { extensionId: cc.extensionId, sessions, devices: cc.devices };
  if (action === 'sessions') {
    return { ok: true, result: sessions, ...common };
  }
  if (action === 'callOut') {
    const device = cc.devices[arg.deviceIndex || 0];
    if (!device) throw new Error('no device');
    const s = await cc.createCall(device.id, arg.to);
    return { ok: true, result: s.toJSON(), ...common };
  }
  if (action === 'pickup') {
    const device = cc.devices.find((d) => (d.sipUri || '').includes(arg.sipUriContains));
    if (!device) throw new Error('no device with ' + arg.sipUriContains);
    const r = await sdk.platform().post(
      `/restapi/v1.0/account/~/telephony/sessions/${sessionId}/parties/${arg.partyId}/pickup`,
      { deviceId: device.id });
    return { ok: true, result: await r.json(), deviceId: device.id, ...common };
  }
  const session = sessionId ? cc.sessionsMap.get(sessionId) : cc.sessions[0];
  if (!session) throw new Error('no session ' + (sessionId || ''));
  if (!session.party) throw new Error('the session has no party of this extension');
  let result;
  switch (action) {
    case 'hold': result = await session.hold(); break;
    case 'unhold': result = await session.unhold(); break;
    case 'mute': result = await session.mute(); break;
    case 'unmute': result = await session.unmute(); break;
    case 'transfer': result = await session.transfer(arg); break;
    case 'forward': result = await session.forward(arg); break;
    case 'reject': result = await session.toVoicemail(); break;
    case 'drop': result = await session.drop(); break;
    case 'park': result = await session.park(); break;
    case 'record': result = await session.createRecord(); break;
    case 'pauseRecord': result = await session.pauseRecord(arg); break;
    case 'resumeRecord': result = await session.resumeRecord(arg); break;
    case 'flip': result = await session.flip(arg); break;
    case 'ignore':
    case 'answer': {
      const device = cc.devices.find((d) => (d.sipUri || '').includes(arg.sipUriContains));
      if (!device) throw new Error('no device with ' + arg.sipUriContains);
      await session[action]({ deviceId: device.id });
      result = device.id;
      break;
    }
    case 'reply': result = await session.reply(arg); break;
    case 'bridge': result = await session.bridge(arg); break;
    case 'bringIn': result = await session.bringInParty(arg); break;
    case 'supervise': result = await session.supervise(arg); break;
    case 'hangupParty': await session.removeParty(session.party.id); result = null; break;
    default: throw new Error('unknown action ' + action);
  }
  return { ok: true, result: result === undefined ? null : result, party: session.party, ...common };
}

main().then(out, (e) => {
  out({ ok: false, error: e.message, status: e.response ? e.response.status : null });
});

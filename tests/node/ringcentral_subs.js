#!/usr/bin/env node
// Subscribes with @ringcentral/subscriptions 5.0.11 (WebSocket; pinned in package.json) as one
// extension (password grant) and prints every notification as a JSON line.
//
//   node ringcentral_subs.js BASE_URL CLIENT_ID CLIENT_SECRET USERNAME PASSWORD FILTERS_JSON SECONDS
//
// Prints {"ready": true, "subscription": {...}} once subscribed, then {"notification": ...}
// per notification; each notification is also fed to a ringcentral-call-control instance
// (its live model, cc.onNotificationEvent), whose view of the extension's party follows as
// {"cc": {"session", "status", "sessions"}}. After SECONDS (or when stdin closes) revokes and
// prints {"done": true}. Lines on stdin: "drop" closes the WebSocket and holds off the SDK's
// auto-recovery ({"dropped": true}); "resume" lets it reconnect with its wsc, which prints
// {"recovered": "Successful" | "Failed", "subscription"}.
// On failure: {"ok": false, "error"}.
'use strict';

const { SDK } = require('@ringcentral/sdk');
const { Subscriptions } = require('@ringcentral/subscriptions');
const { RingCentralCallControl } = require('ringcentral-call-control');

const [base, clientId, clientSecret, username, password, filtersJson, seconds] =
  process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  const sdk = new SDK({ server: base, clientId, clientSecret });
  await sdk.platform().login({ username, password });
  const subscriptions = new Subscriptions({ sdk });
  const cc = new RingCentralCallControl({ sdk, preloadSessions: false, preloadDevices: false });
  await new Promise((resolve) => cc.on('initialized', resolve));
  const subscription = subscriptions.createSubscription();
  subscription.setEventFilters(JSON.parse(filtersJson));
  subscription.on(subscription.events.notification, (event) => {
    out({ notification: event });
    cc.onNotificationEvent(event);
    const session = cc.sessionsMap.get(event.body && event.body.telephonySessionId);
    out({
      cc: {
        session: session ? session.id : null,
        status: session && session.party ? session.party.status.code : null,
        sessions: cc.sessions.length,
      },
    });
  });
  const ws = await subscription.register();
  out({ ready: true, subscription: ws.subscriptionInfo });
  const wse = ws.wse;
  const recovered = (state) => () =>
    out({ recovered: state, subscription: ws.subscriptionInfo, wsc: wse.wsc });
  wse.eventEmitter.on('autoRecoverSuccess', recovered('Successful'));
  wse.eventEmitter.on('autoRecoverFailed', recovered('Failed'));
  let pending = '';
  process.stdin.on('data', (chunk) => {
    pending += chunk.toString();
    let nl;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const cmd = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (cmd === 'drop') {
        wse.options.autoRecover.enabled = false;
        wse.ws.close();
        out({ dropped: true });
      } else if (cmd === 'resume') {
        wse.options.autoRecover.enabled = true;
        out({ resuming: true });
      }
    }
  });
  await new Promise((resolve) => {
    setTimeout(resolve, Number(seconds) * 1000);
    process.stdin.on('end', resolve);
    process.stdin.resume();
  });
  await ws.revoke();
  out({ done: true });
  process.exit(0);
}

main().catch((e) => {
  out({ ok: false, error: e.message, status: e.response ? e.response.status : null });
  process.exit(1);
});

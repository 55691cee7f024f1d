#!/usr/bin/env node
// Drives the official @jambonz/node-client (pinned in package.json) against hookflash.
//
//   node jambonz_client.js BASE_URL ACCOUNT_SID API_KEY ACTION [ARG] [JSON]
//
// ACTION:
//   create JSON            calls.create(JSON) -> the new call sid
//   list                   calls.list()
//   retrieve SID           calls.retrieve(SID)
//   update SID JSON        calls.update(SID, JSON)
//   delete SID             calls.delete(SID)
//   app-create JSON        applications.create(JSON) -> sid
//   app-list | app-retrieve SID | app-delete SID
//   verify JSON            WebhookResponse.verifyJambonzSignature(secret) on a captured hook
//                          request: JSON {"secret", "signature" (the Jambonz-Signature header),
//                          "body" (the raw body as received)}; the body is parsed as
//                          express.json() would before the verifier sees it. -> true, or the
//                          verifier's error.
// Prints one JSON line: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
'use strict';

const [base, accountSid, apiKey, action, arg, json] = process.argv.slice(2);
const jambonz = require('@jambonz/node-client');
const { WebhookResponse } = jambonz;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function verify(spec) {
  const req = {
    url: '/hook',
    body: JSON.parse(spec.body),
    get: (name) => (name.toLowerCase() === 'jambonz-signature' ? spec.signature : undefined),
  };
  let passed = false;
  WebhookResponse.verifyJambonzSignature(spec.secret)(req, {}, () => { passed = true; });
  return passed;
}

async function main() {
  const client = jambonz(accountSid, apiKey, { baseUrl: base });
  const data = (s) => JSON.parse(s);
  switch (action) {
    case 'create':
      return client.calls.create(data(arg));
    case 'list':
      return client.calls.list();
    case 'retrieve':
      return client.calls.retrieve(arg);
    case 'update':
      await client.calls.update(arg, data(json));
      return null;
    case 'delete':
      await client.calls.delete(arg);
      return null;
    case 'app-create':
      return client.applications.create(data(arg));
    case 'app-list':
      return client.applications.list();
    case 'app-retrieve':
      return client.applications.retrieve(arg);
    case 'app-delete':
      await client.applications.delete(arg);
      return null;
    case 'verify':
      return verify(data(arg));
    default:
      throw new Error('unknown action ' + action);
  }
}

main().then(
  (result) => out({ ok: true, result }),
  (err) => {
    out({
      ok: false,
      error: String((err && err.message) || err),
      status: err && err.statusCode,
    });
    process.exitCode = 1;
  },
);

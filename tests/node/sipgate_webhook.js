#!/usr/bin/env node
// The official sipgateio webhook server (createWebhookModule().createServer), printing every
// event it receives (newCall, answer, hangup, dtmf) as one JSON line on stdout ("listening"
// first).
//
//   node sipgate_webhook.js PORT
'use strict';

const { createWebhookModule } = require('sipgateio');

const port = Number(process.argv[2]);
const serverAddress = `http://127.0.0.1:${port}`;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

createWebhookModule()
  .createServer({ port, hostname: '127.0.0.1', serverAddress, skipSignatureVerification: true })
  .then((server) => {
    server.onNewCall((e) => out(e));
    server.onAnswer((e) => out(e));
    server.onHangUp((e) => out(e));
    server.onData((e) => out(e));
    out({ event: 'listening', port });
  })
  .catch((err) => {
    out({ event: 'error', error: String(err) });
    process.exit(1);
  });

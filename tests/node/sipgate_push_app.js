#!/usr/bin/env node
// A sipgate push app on the official sipgateio webhook server: it answers newCall with one of
// the SDK's WebhookResponse builders and prints every event it receives as one JSON line on
// stdout ("listening" first). The onData handler (digits of a Gather) answers hangUpCall().
//
//   node sipgate_push_app.js PORT dial NUMBER [CALLER_ID [anonymous]]
//   node sipgate_push_app.js PORT gather MAX_DIGITS TIMEOUT_MS [ANNOUNCEMENT_URL]
//   node sipgate_push_app.js PORT play ANNOUNCEMENT_URL
//   node sipgate_push_app.js PORT reject busy|rejected
//   node sipgate_push_app.js PORT hangup
//   node sipgate_push_app.js PORT voicemail
//
// PUSH_DIRECTION=out answers the caller's newCall (direction=out) instead of the called user's.
'use strict';

const { createWebhookModule, WebhookResponse } = require('sipgateio');

const port = Number(process.argv[2]);
const mode = process.argv[3];
const args = process.argv.slice(4);
const serverAddress = `http://127.0.0.1:${port}`;
const answered = process.env.PUSH_DIRECTION || 'in';

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function answer() {
  switch (mode) {
    case 'dial':
      return WebhookResponse.redirectCall({
        numbers: [args[0]],
        anonymous: args[2] === 'anonymous',
        callerId: args[1] || '',
      });
    case 'gather':
      return WebhookResponse.gatherDTMF({
        maxDigits: Number(args[0]),
        timeout: Number(args[1]),
        announcement: args[2],
      });
    case 'play':
      return WebhookResponse.playAudio({ announcement: args[0] });
    case 'reject':
      return WebhookResponse.rejectCall({ reason: args[0] });
    case 'hangup':
      return WebhookResponse.hangUpCall();
    case 'voicemail':
      return WebhookResponse.sendToVoicemail();
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

createWebhookModule()
  .createServer({ port, hostname: '127.0.0.1', serverAddress, skipSignatureVerification: true })
  .then((server) => {
    server.onNewCall(async (e) => {
      out(e);
      // Only one side's newCall is answered with the instruction (the called user's unless
      // PUSH_DIRECTION says out).
      if (e.direction !== answered) return undefined;
      try {
        const a = await answer();
        out({ event: 'answered', xml: a });
        return a;
      } catch (err) {
        out({ event: 'error', error: String(err) });
        return undefined;
      }
    });
    server.onAnswer((e) => out(e));
    server.onHangUp((e) => out(e));
    server.onData((e) => {
      out(e);
      return WebhookResponse.hangUpCall();
    });
    out({ event: 'listening', port });
  })
  .catch((err) => {
    out({ event: 'error', error: String(err) });
    process.exit(1);
  });

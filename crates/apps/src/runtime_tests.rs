//! The runtime driven end to end: a scripted call on one side, a real HTTP server playing the
//! application on the other, on tokio's paused clock (times below are virtual).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::time::Instant;

use super::*;
use crate::alert::Alert;
use crate::app::Direction;
use crate::control::Audio;
use crate::control::CallControl;
use crate::delivery::{Delivery, DeliveryError, Method};
use crate::testing::{
    call_ref, delivery, delivery_timing_out_after, launch, FakeCall, HookServer, Op, PlayMode,
    Reply, SECRET,
};

fn tts(text: &str) -> Audio {
    Audio::Tts {
        text: text.into(),
        voice: None,
        language: None,
    }
}

fn play_op(text: &str) -> Op {
    Op::Play {
        audio: tts(text),
        early: false,
    }
}

fn hangup_op() -> Op {
    Op::Hangup {
        headers: Vec::new(),
    }
}

fn runtime(fake: &Arc<FakeCall>) -> (Runtime, Arc<Mutex<Vec<Alert>>>) {
    runtime_with(fake, delivery())
}

fn runtime_with(fake: &Arc<FakeCall>, d: Delivery) -> (Runtime, Arc<Mutex<Vec<Alert>>>) {
    let rt = Runtime::new(d, fake.clone());
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let a = alerts.clone();
    rt.set_alert_sink(Arc::new(move |alert| a.lock().unwrap().push(alert)));
    (rt, alerts)
}

fn kinds(alerts: &Arc<Mutex<Vec<Alert>>>) -> Vec<AlertKind> {
    alerts.lock().unwrap().iter().map(|a| a.kind).collect()
}

/// The `call_status` of each status hook request, after waiting for `n` of them.
async fn statuses(server: &HookServer, n: usize) -> Vec<Value> {
    server
        .wait_for("/status", n)
        .await
        .iter()
        .map(|s| s.json())
        .collect()
}

fn words(st: &[Value]) -> Vec<&str> {
    st.iter()
        .map(|s| s["call_status"].as_str().unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn say_then_hangup() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "say", "text": "Hello", "synthesizer": {"voice": "en-US-1", "language": "en-US"}},
            {"verb": "hangup", "headers": {"X-Reason": "done"}}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::For(Duration::from_secs(2)));
    let (rt, alerts) = runtime(&fake);
    let end = rt.launch(launch(&server)).await.unwrap();
    assert_eq!(end, RunEnd::HungUp);
    assert_eq!(
        fake.ops(),
        vec![
            Op::Play {
                audio: Audio::Tts {
                    text: "Hello".into(),
                    voice: Some("en-US-1".into()),
                    language: Some("en-US".into())
                },
                early: false
            },
            Op::Hangup {
                headers: vec![("X-Reason".into(), "done".into())]
            }
        ]
    );
    let first = &server.seen_at("/call")[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.header("content-type"), Some("application/json"));
    let body = first.json();
    assert_eq!(body["call_sid"], "cs-1");
    assert_eq!(body["direction"], "inbound");
    assert_eq!(body["from"], "+4915111");
    assert_eq!(body["to"], "+4930123");
    assert_eq!(body["call_id"], "abc@10.0.0.1");
    assert_eq!(body["call_status"], "trying");
    assert_eq!(body["sip_status"], 100);
    assert_eq!(body["account_sid"], "acc-sid");
    assert_eq!(body["application_sid"], "app-sid");
    assert_eq!(body["sip"]["headers"]["x-carrier"], "acme");
    assert!(body.get("customerData").is_none());
    // Compact JSON: the bytes are what the SDK re-serialises.
    assert_eq!(first.body, body.to_string());

    let st = statuses(&server, 2).await;
    assert_eq!(words(&st), ["in-progress", "completed"]);
    assert_eq!(st[0]["sip_status"], 200);
    assert_eq!(st[1]["duration"], 2);
    assert!(st[1].get("sip").is_none());
    assert_eq!(rt.running(), 0);
    assert!(kinds(&alerts).is_empty());
}

#[tokio::test(start_paused = true)]
async fn gather_collects_digits_pressed_during_the_prompt_and_the_action_answer_continues() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "gather", "actionHook": "/digits", "numDigits": 3,
             "say": {"text": "Enter your PIN"}},
            {"verb": "say", "text": "not reached"}
        ]))],
    );
    server.route(
        "/digits",
        vec![Reply::json(
            json!([{"verb": "say", "text": "Thanks"}, {"verb": "hangup"}]),
        )],
    );
    let fake = FakeCall::new(PlayMode::Hold);
    let (rt, _) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    fake.wait_plays(1).await;
    fake.press('1').await;
    fake.wait_for("the prompt stopped", |ops| ops.contains(&Op::StopPlay))
        .await;
    fake.press('2').await;
    fake.press('3').await;
    let d = server.wait_for("/digits", 1).await;
    let body = d[0].json();
    assert_eq!(body["digits"], "123");
    assert_eq!(body["reason"], "dtmfDetected");
    assert_eq!(body["call_sid"], "cs-1");
    assert_eq!(body["call_status"], "in-progress");
    assert!(
        body.get("sip").is_none(),
        "sip goes with the first request only"
    );
    fake.wait_plays(2).await;
    fake.finish_playing();
    assert_eq!(handle.await.unwrap(), RunEnd::HungUp);
    assert_eq!(
        fake.ops(),
        vec![
            play_op("Enter your PIN"),
            Op::StopPlay,
            play_op("Thanks"),
            hangup_op()
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn gather_times_out_after_the_prompt_and_an_empty_answer_goes_on() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "gather", "actionHook": "/g", "timeout": 3,
             "play": {"url": "http://media/prompt.wav"}},
            {"verb": "hangup", "headers": {"X-After": "timeout"}}
        ]))],
    );
    server.route("/g", vec![Reply::empty()]);
    let fake = FakeCall::new(PlayMode::For(Duration::from_secs(1)));
    let (rt, _) = runtime(&fake);
    let t0 = Instant::now();
    assert_eq!(rt.launch(launch(&server)).await.unwrap(), RunEnd::HungUp);
    let g = &server.seen_at("/g")[0];
    let body = g.json();
    assert_eq!(body["reason"], "timeout");
    assert!(body.get("digits").is_none());
    let waited = g.at - t0;
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_millis(4500),
        "1 s prompt + 3 s timeout, got {waited:?}"
    );
    assert_eq!(
        fake.ops(),
        vec![
            Op::Play {
                audio: Audio::Url("http://media/prompt.wav".into()),
                early: false
            },
            Op::Hangup {
                headers: vec![("X-After".into(), "timeout".into())]
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn gather_ends_on_finish_on_key() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "gather", "actionHook": "/g", "finishOnKey": "#", "timeout": 10}
        ]))],
    );
    server.route("/g", vec![Reply::json(json!([{"verb": "hangup"}]))]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    // Without a prompt the gather answers the call itself.
    fake.wait_for("answer", |ops| ops.contains(&Op::Answer))
        .await;
    for k in ['4', '2', '#'] {
        fake.press(k).await;
    }
    assert_eq!(handle.await.unwrap(), RunEnd::HungUp);
    let body = server.seen_at("/g")[0].json();
    assert_eq!(body["digits"], "42");
    assert_eq!(body["reason"], "dtmfDetected");
    assert_eq!(fake.ops(), vec![Op::Answer, hangup_op()]);
}

#[tokio::test(start_paused = true)]
async fn gather_ends_after_the_inter_digit_wait_and_ignores_earlier_keys() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "say", "text": "intro"},
            {"verb": "gather", "actionHook": "/g", "interDigitTimeout": 2, "minDigits": 2,
             "timeout": 10}
        ]))],
    );
    server.route("/g", vec![Reply::empty()]);
    let fake = FakeCall::new(PlayMode::For(Duration::from_secs(1)));
    let (rt, _) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    fake.wait_plays(1).await;
    fake.press('9').await; // during the say: not part of the gather
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fake.press('7').await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    fake.press('8').await;
    let last_key = Instant::now();
    assert_eq!(handle.await.unwrap(), RunEnd::HungUp);
    let g = &server.seen_at("/g")[0];
    assert_eq!(g.json()["digits"], "78");
    assert_eq!(g.json()["reason"], "dtmfDetected");
    let waited = g.at - last_key;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn speech_only_gather_reports_an_error_and_the_application_goes_on() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "gather", "input": ["speech"], "actionHook": "/s",
             "say": {"text": "Say something"}},
            {"verb": "say", "text": "after"}
        ]))],
    );
    server.route("/s", vec![Reply::json(json!([]))]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    assert_eq!(rt.launch(launch(&server)).await.unwrap(), RunEnd::HungUp);
    let body = server.seen_at("/s")[0].json();
    assert_eq!(body["reason"], "error");
    assert_eq!(body["details"], "speech input is not supported");
    assert_eq!(fake.ops(), vec![play_op("after"), hangup_op()]);
    assert_eq!(kinds(&alerts), [AlertKind::NotSupported]);
}

#[tokio::test(start_paused = true)]
async fn unknown_unsupported_and_mistyped_verbs_are_skipped() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "frobnicate"},
            {"verb": "transcribe", "recognizer": {}},
            {"verb": "say", "text": 5},
            {"verb": "say", "text": "still here"}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    assert_eq!(rt.launch(launch(&server)).await.unwrap(), RunEnd::HungUp);
    assert_eq!(fake.ops(), vec![play_op("still here"), hangup_op()]);
    assert_eq!(
        kinds(&alerts),
        [
            AlertKind::InvalidVerb,
            AlertKind::NotSupported,
            AlertKind::InvalidVerb
        ]
    );
    let msgs: Vec<String> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.message.clone())
        .collect();
    assert!(msgs[0].contains("frobnicate"), "{msgs:?}");
    assert!(
        msgs[1].contains("transcribe") && msgs[1].contains("not supported yet"),
        "{msgs:?}"
    );
    assert_eq!(alerts.lock().unwrap()[0].call_sid, "cs-1");
}

#[tokio::test(start_paused = true)]
async fn invalid_json_without_fallback_declines_with_480() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::raw(200, "application/json", "{not json")],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    let end = rt.launch(launch(&server)).await.unwrap();
    assert!(
        matches!(end, RunEnd::Failed(AppError::InvalidJson { .. })),
        "{end:?}"
    );
    assert_eq!(
        fake.ops(),
        vec![Op::Decline {
            status: 480,
            reason: Some("Temporarily Unavailable".into()),
            headers: vec![]
        }]
    );
    let st = statuses(&server, 1).await;
    assert_eq!(words(&st), ["failed"]);
    assert_eq!(st[0]["sip_status"], 480);
    assert_eq!(kinds(&alerts), [AlertKind::InvalidApp]);
}

#[tokio::test(start_paused = true)]
async fn invalid_json_with_fallback_runs_the_fallback_and_its_relative_hooks_go_to_it() {
    let server = HookServer::start().await;
    let backup = HookServer::start().await;
    server.route("/call", vec![Reply::raw(200, "application/json", "[{oops")]);
    backup.route(
        "/fb",
        vec![Reply::json(json!([
            {"verb": "say", "text": "from the fallback"},
            {"verb": "redirect", "actionHook": "/more"}
        ]))],
    );
    backup.route("/more", vec![Reply::json(json!([{"verb": "hangup"}]))]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    let mut l = launch(&server);
    l.hooks.fallback = Some(Hook::post(&backup.url("/fb")));
    assert_eq!(rt.launch(l).await.unwrap(), RunEnd::HungUp);
    assert_eq!(fake.ops(), vec![play_op("from the fallback"), hangup_op()]);
    let fb = backup.seen_at("/fb")[0].json();
    assert_eq!(
        fb["sip"]["headers"]["x-carrier"], "acme",
        "the fallback is the first request"
    );
    let more = backup.seen_at("/more")[0].json();
    assert!(more.get("sip").is_none());
    assert_eq!(kinds(&alerts), [AlertKind::InvalidApp]);
}

#[tokio::test(start_paused = true)]
async fn a_500_is_retried_and_the_second_answer_runs() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![
            Reply::raw(500, "text/plain", "busy"),
            Reply::json(json!([{"verb": "say", "text": "ok"}])),
        ],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    assert_eq!(rt.launch(launch(&server)).await.unwrap(), RunEnd::HungUp);
    assert_eq!(server.seen_at("/call").len(), 2);
    assert_eq!(fake.ops(), vec![play_op("ok"), hangup_op()]);
    assert!(kinds(&alerts).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_hook_falls_back() {
    let server = HookServer::start().await;
    let slow = Reply::json(json!([{"verb": "say", "text": "late"}])).after(Duration::from_secs(30));
    server.route("/call", vec![slow.clone(), slow.clone(), slow]);
    server.route("/fb", vec![Reply::json(json!([{"verb": "hangup"}]))]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime_with(&fake, delivery_timing_out_after(Duration::from_secs(2)));
    let mut l = launch(&server);
    l.hooks.fallback = Some(Hook::post(&server.url("/fb")));
    let t0 = Instant::now();
    assert_eq!(rt.launch(l).await.unwrap(), RunEnd::HungUp);
    assert_eq!(server.seen_at("/call").len(), 3, "three attempts");
    let waited = server.seen_at("/fb")[0].at - t0;
    assert!(
        waited >= Duration::from_millis(6300),
        "3 attempts of 2 s and 0.1 s + 0.2 s backoff: {waited:?}"
    );
    assert_eq!(fake.ops(), vec![hangup_op()]);
    assert_eq!(kinds(&alerts), [AlertKind::WebhookFailure]);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_call_hook_without_fallback_declines() {
    // Bound but not listening: connections are refused, and nobody else gets the port
    // while the test runs.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = reserved.local_addr().unwrap();
    let server = HookServer::start().await;
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    let mut l = launch(&server);
    l.hooks.call_hook = Hook::post(&format!("http://{closed}/call"));
    let end = rt.launch(l).await.unwrap();
    assert!(
        matches!(
            &end,
            RunEnd::Failed(AppError::Hook {
                source: DeliveryError::Unreachable { .. },
                ..
            })
        ),
        "{end:?}"
    );
    assert!(matches!(fake.ops()[..], [Op::Decline { status: 480, .. }]));
}

#[tokio::test(start_paused = true)]
async fn a_failing_action_hook_ends_the_answered_call() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "gather", "actionHook": "/nowhere", "numDigits": 1, "say": {"text": "press"}}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    fake.wait_plays(1).await;
    fake.press('5').await;
    let end = handle.await.unwrap();
    assert!(
        matches!(
            &end,
            RunEnd::Failed(AppError::Hook {
                source: DeliveryError::Status { status: 404 },
                ..
            })
        ),
        "{end:?}"
    );
    assert_eq!(fake.ops(), vec![play_op("press"), hangup_op()]);
    assert_eq!(kinds(&alerts), [AlertKind::WebhookFailure]);
    assert_eq!(
        words(&statuses(&server, 2).await),
        ["in-progress", "completed"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_caller_hanging_up_during_a_pause_stops_the_run() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "answer"},
            {"verb": "pause", "length": 30},
            {"verb": "say", "text": "too late", "actionHook": "/never"},
            {"verb": "gather", "actionHook": "/never"}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    fake.wait_for("answer", |ops| ops.contains(&Op::Answer))
        .await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    fake.hang_up(200, "normal").await;
    let end = handle.await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(6), "the pause was cut");
    assert_eq!(
        end,
        RunEnd::CallEnded {
            sip_status: Some(200),
            cause: "normal".into()
        }
    );
    assert_eq!(fake.ops(), vec![Op::Answer]);
    let st = statuses(&server, 2).await;
    assert_eq!(words(&st), ["in-progress", "completed"]);
    assert_eq!(st[1]["duration"], 5);
    // Nothing more, however long we wait.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let paths: Vec<String> = server.seen().iter().map(|s| s.path().to_string()).collect();
    assert_eq!(paths, ["/call", "/status", "/status"]);
}

#[tokio::test(start_paused = true)]
async fn the_caller_hanging_up_while_the_call_hook_is_pending_ends_it_unanswered() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([{"verb": "say", "text": "hi"}])).after(Duration::from_secs(1))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    server.wait_for("/call", 1).await;
    fake.hang_up(487, "cancel").await;
    let end = handle.await.unwrap();
    assert!(matches!(
        end,
        RunEnd::CallEnded {
            sip_status: Some(487),
            ..
        }
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fake.ops().is_empty(), "{:?}", fake.ops());
    let st = statuses(&server, 1).await;
    assert_eq!(words(&st), ["no-answer"]);
    assert_eq!(st[0]["sip_status"], 487);
}

fn hmac_hex(secret: &str, data: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks `Jambonz-Signature: t=<t>,v1=<HMAC-SHA256(secret, "<t>.<body>")>`.
fn assert_signed(seen: &crate::testing::Seen) {
    let sig = seen.header("jambonz-signature").expect("signature header");
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    assert!(t.parse::<u64>().unwrap() > 1_600_000_000);
    assert_eq!(
        v1,
        hmac_hex(SECRET, &format!("{t}.{}", seen.body)),
        "{}",
        seen.target
    );
}

#[tokio::test(start_paused = true)]
async fn requests_are_signed_and_carry_basic_auth() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "play", "url": "http://media/a.wav", "actionHook": "/played"}
        ]))],
    );
    server.route("/played", vec![Reply::empty()]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    let mut l = launch(&server);
    l.hooks.call_hook.basic_auth = Some(("app".into(), "pw".into()));
    assert_eq!(rt.launch(l).await.unwrap(), RunEnd::HungUp);
    statuses(&server, 2).await;
    for s in server.seen() {
        assert_signed(&s);
    }
    let call = &server.seen_at("/call")[0];
    assert_eq!(call.header("authorization"), Some("Basic YXBwOnB3"));
    // The relative actionHook goes to the same origin: the application's credentials too.
    let played = &server.seen_at("/played")[0];
    assert_eq!(played.header("authorization"), Some("Basic YXBwOnB3"));
    // The status hook has its own (none).
    assert_eq!(server.seen_at("/status")[0].header("authorization"), None);
}

#[tokio::test(start_paused = true)]
async fn a_get_call_hook_carries_the_fields_in_the_query() {
    let server = HookServer::start().await;
    server.route("/call", vec![Reply::json(json!([{"verb": "hangup"}]))]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    let mut l = launch(&server);
    l.hooks.call_hook.method = Method::Get;
    assert_eq!(rt.launch(l).await.unwrap(), RunEnd::HungUp);
    let s = &server.seen_at("/call")[0];
    assert_eq!(s.method, "GET");
    assert!(s.target.contains("call_sid=cs-1"), "{}", s.target);
    assert!(s.target.contains("direction=inbound"), "{}", s.target);
    assert!(
        !s.target.contains("sip%5B") && !s.target.contains("sip["),
        "{}",
        s.target
    );
    assert_eq!(s.body, "");
    assert_signed(s);
}

#[tokio::test(start_paused = true)]
async fn sip_decline_first_declines_the_call() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "sip:decline", "status": 486, "reason": "Busy Here",
             "headers": {"X-Why": "busy"}}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    assert_eq!(
        rt.launch(launch(&server)).await.unwrap(),
        RunEnd::Declined(486)
    );
    assert_eq!(
        fake.ops(),
        vec![Op::Decline {
            status: 486,
            reason: Some("Busy Here".into()),
            headers: vec![("X-Why".into(), "busy".into())]
        }]
    );
    let st = statuses(&server, 1).await;
    assert_eq!(words(&st), ["busy"]);
    assert_eq!(st[0]["sip_status"], 486);
}

#[tokio::test(start_paused = true)]
async fn tag_config_dtmf_and_redirect() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "tag", "data": {"team": "blue", "n": 1}},
            {"verb": "config", "synthesizer": {"voice": "v2", "language": "de-DE"},
             "recognizer": {"vendor": "google"}},
            {"verb": "say", "text": "hallo"},
            {"verb": "dtmf", "dtmf": "12#"},
            {"verb": "redirect", "actionHook": "/next"},
            {"verb": "say", "text": "skipped"}
        ]))],
    );
    server.route("/next", vec![Reply::json(json!([{"hangup": {}}]))]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    assert_eq!(rt.launch(launch(&server)).await.unwrap(), RunEnd::HungUp);
    assert_eq!(
        fake.ops(),
        vec![
            Op::Play {
                audio: Audio::Tts {
                    text: "hallo".into(),
                    voice: Some("v2".into()),
                    language: Some("de-DE".into())
                },
                early: false
            },
            Op::SendDtmf("12#".into()),
            hangup_op()
        ]
    );
    assert!(server.seen_at("/call")[0]
        .json()
        .get("customerData")
        .is_none());
    let next = server.seen_at("/next")[0].json();
    assert_eq!(next["customerData"], json!({"team": "blue", "n": 1}));
    let st = statuses(&server, 2).await;
    assert_eq!(st[1]["customerData"]["team"], "blue");
    assert_eq!(kinds(&alerts), [AlertKind::NotSupported]);
    assert!(alerts.lock().unwrap()[0].message.contains("recognizer"));
}

#[tokio::test(start_paused = true)]
async fn play_reports_its_playback_and_failures_to_the_action_hook() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "play", "url": "http://media/ok.wav", "actionHook": "/played"},
            {"verb": "play", "url": ["http://media/missing.wav"], "actionHook": "/played"}
        ]))],
    );
    server.route("/played", vec![Reply::empty(), Reply::empty()]);
    let fake = FakeCall::new(PlayMode::For(Duration::from_secs(3)));
    fake.fail_audio("http://media/missing.wav");
    let (rt, alerts) = runtime(&fake);
    assert_eq!(rt.launch(launch(&server)).await.unwrap(), RunEnd::HungUp);
    let p = server.seen_at("/played");
    assert_eq!(p[0].json()["reason"], "playCompleted");
    assert_eq!(p[0].json()["playback_seconds"], 3);
    assert_eq!(p[0].json()["playback_milliseconds"], 3000);
    assert_eq!(p[1].json()["reason"], "playFailed");
    assert_eq!(p[1].json()["status"], "fail");
    assert_eq!(kinds(&alerts), [AlertKind::PlayFailed]);
}

#[tokio::test(start_paused = true)]
async fn early_media_then_decline() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "play", "url": "http://media/ring.wav", "earlyMedia": true},
            {"verb": "sip:decline", "status": 480}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    assert_eq!(
        rt.launch(launch(&server)).await.unwrap(),
        RunEnd::Declined(480)
    );
    assert_eq!(
        fake.ops(),
        vec![
            Op::Play {
                audio: Audio::Url("http://media/ring.wav".into()),
                early: true
            },
            Op::Decline {
                status: 480,
                reason: None,
                headers: vec![]
            }
        ]
    );
    let st = statuses(&server, 2).await;
    assert_eq!(words(&st), ["early-media", "failed"]);
    assert_eq!(st[0]["sip_status"], 183);
}

#[tokio::test(start_paused = true)]
async fn statuses_go_out_once_each_and_in_order() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([{"verb": "say", "text": "hi"}]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    let call = call_ref();
    // A leg without an application.
    assert!(!rt.status(&call, StatusUpdate::new(CallStatus::Ringing, Some(180))));

    let prepared = rt.prepare(launch(&server));
    assert_eq!(rt.running(), 1);
    assert!(rt.status(&call, StatusUpdate::new(CallStatus::Ringing, Some(180))));
    assert!(
        !rt.status(&call, StatusUpdate::new(CallStatus::Ringing, Some(180))),
        "twice"
    );
    assert!(
        !rt.status(&call, StatusUpdate::new(CallStatus::Trying, Some(100))),
        "backwards"
    );
    assert_eq!(prepared.start().await.unwrap(), RunEnd::HungUp);
    assert!(!rt.status(&call, StatusUpdate::new(CallStatus::Completed, Some(200))));
    let st = statuses(&server, 3).await;
    assert_eq!(words(&st), ["ringing", "in-progress", "completed"]);
    assert_eq!(st[0]["sip_status"], 180);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(server.seen_at("/status").len(), 3);

    // Prepared and dropped: forgotten.
    drop(rt.prepare(launch(&server)));
    assert_eq!(rt.running(), 0);
    // Prepared, then failed before it started (an outbound call that was not answered).
    let p = rt.prepare(launch(&server));
    assert!(rt.status(&call, StatusUpdate::new(CallStatus::NoAnswer, Some(487))));
    assert_eq!(rt.running(), 0);
    drop(p);
}

#[tokio::test(start_paused = true)]
async fn an_outbound_call_launched_answered_reports_in_progress_itself() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([{"verb": "say", "text": "hi"}]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    let mut l = launch(&server);
    l.fields.direction = Direction::Outbound;
    l.fields.call_status = CallStatus::InProgress;
    l.fields.sip_status = 200;
    l.fields.sip = None;
    l.fields.customer_data = Some(serde_json::Map::from_iter([("a".to_string(), json!("b"))]));
    assert_eq!(rt.launch(l).await.unwrap(), RunEnd::HungUp);
    assert_eq!(fake.ops(), vec![play_op("hi"), hangup_op()]);
    let body = server.seen_at("/call")[0].json();
    assert_eq!(body["direction"], "outbound");
    assert_eq!(body["customerData"]["a"], "b");
    assert_eq!(
        words(&statuses(&server, 2).await),
        ["in-progress", "completed"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_live_redirect_replaces_the_running_list_at_once() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "say", "text": "long"},
            {"verb": "say", "text": "never"}
        ]))],
    );
    server.route(
        "/new",
        vec![Reply::json(
            json!([{"verb": "say", "text": "redirected"}, {"verb": "hangup"}]),
        )],
    );
    let fake = FakeCall::new(PlayMode::Hold);
    let (rt, _) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    fake.wait_plays(1).await;
    let spec: HookSpec = serde_json::from_value(json!("/new")).unwrap();
    assert_eq!(rt.redirect(&call_ref(), &spec), Ok(true));
    fake.wait_plays(2).await;
    fake.finish_playing();
    assert_eq!(handle.await.unwrap(), RunEnd::HungUp);
    assert_eq!(
        fake.ops(),
        vec![
            play_op("long"),
            Op::StopPlay,
            play_op("redirected"),
            hangup_op()
        ]
    );
    assert_eq!(server.seen_at("/new")[0].json()["call_sid"], "cs-1");
    assert_eq!(
        rt.redirect(&call_ref(), &spec),
        Ok(false),
        "no application any more"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leg_answered_behind_the_runtimes_back_is_hung_up_on_failure() {
    let server = HookServer::start().await;
    server.route("/call", vec![Reply::raw(200, "application/json", "nope")]);
    let fake = FakeCall::new(PlayMode::Instant);
    // The engine answered it, but nobody told the runtime (no in-progress status).
    fake.answer(&call_ref()).await.unwrap();
    let (rt, _) = runtime(&fake);
    let end = rt.launch(launch(&server)).await.unwrap();
    assert!(matches!(end, RunEnd::Failed(_)), "{end:?}");
    assert_eq!(fake.ops(), vec![Op::Answer, hangup_op()], "never left up");
}

#[tokio::test(start_paused = true)]
async fn sip_decline_on_an_answered_call_hangs_up() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "answer"},
            {"verb": "sip:decline", "status": 603, "headers": {"X-Why": "late"}}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, _) = runtime(&fake);
    assert_eq!(rt.launch(launch(&server)).await.unwrap(), RunEnd::HungUp);
    assert_eq!(
        fake.ops(),
        vec![
            Op::Answer,
            Op::Hangup {
                headers: vec![("X-Why".into(), "late".into())]
            }
        ]
    );
    assert_eq!(
        words(&statuses(&server, 2).await),
        ["in-progress", "completed"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_caller_hanging_up_during_a_say_runs_nothing_after_it() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "say", "text": "long"},
            {"verb": "tag", "data": {"a": 1}},
            {"verb": "redirect", "actionHook": "/never"}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::Hold);
    let (rt, _) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    fake.wait_plays(1).await;
    fake.hang_up(200, "normal").await;
    let end = handle.await.unwrap();
    assert_eq!(
        end,
        RunEnd::CallEnded {
            sip_status: Some(200),
            cause: "normal".into()
        }
    );
    assert_eq!(fake.ops(), vec![play_op("long")]);
    statuses(&server, 2).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(server.seen_at("/never").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_playback_ending_with_the_call_stops_the_run_without_an_end_signal() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "gather", "actionHook": "/never", "say": {"text": "prompt"}},
            {"verb": "say", "text": "never"}
        ]))],
    );
    let fake = FakeCall::new(PlayMode::Hold);
    let (rt, _) = runtime(&fake);
    let handle = rt.launch(launch(&server));
    fake.wait_plays(1).await;
    fake.end_playback_with_the_call();
    let end = handle.await.unwrap();
    assert_eq!(
        end,
        RunEnd::CallEnded {
            sip_status: None,
            cause: "gone".into()
        }
    );
    assert_eq!(fake.ops(), vec![play_op("prompt")]);
    assert!(server.seen_at("/never").is_empty());
    assert_eq!(
        words(&statuses(&server, 2).await),
        ["in-progress", "completed"]
    );
}

/// An RCML launch whose call_hook answers `xml`; recordings are linked under `/rec/`.
fn rcml_run(
    fake: &Arc<FakeCall>,
    server: &HookServer,
    xml: &str,
) -> tokio::task::JoinHandle<RunEnd> {
    server.route("/call", vec![Reply::raw(200, "application/xml", xml)]);
    let (rt, _alerts) = runtime(fake);
    rt.set_recording_links(Arc::new(|account, id| {
        format!("http://api.test/{account}/rec/{id}.wav")
    }));
    let mut l = launch(server);
    l.language = crate::app::Language::Rcml(Default::default());
    rt.launch(l)
}

fn form_of(seen: &crate::testing::Seen) -> std::collections::HashMap<String, String> {
    serde_urlencoded::from_str(&seen.body).unwrap()
}

fn loud_frame() -> crate::control::ListenFrame {
    let mut f = crate::control::ListenFrame::default();
    for (i, s) in f.a.iter_mut().enumerate() {
        *s = if i % 2 == 0 { 4000 } else { -4000 };
    }
    f
}

#[tokio::test(start_paused = true)]
async fn rcml_record_ends_on_its_finish_key_and_reports_the_recording() {
    let server = HookServer::start().await;
    server.route(
        "/rec",
        vec![Reply::raw(
            200,
            "application/xml",
            "<Response><Hangup/></Response>",
        )],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let run = rcml_run(
        &fake,
        &server,
        r##"<Response><Record action="/rec" finishOnKey="#" maxLength="60"/></Response>"##,
    );
    fake.wait_for("the recording", |ops| ops.contains(&Op::ListenStart))
        .await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Sound keeps the silence limit (5 s) away; a key that is not a finish key is ignored.
    for _ in 0..150 {
        assert!(fake.tap_frame(loud_frame()).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.press('5').await;
    fake.press('#').await;
    let seen = server.wait_for("/rec", 1).await;
    let form = form_of(&seen[0]);
    assert_eq!(form["Digits"], "#");
    assert_eq!(form["RecordingUrl"], "http://api.test/acc-1/rec/rec-1.wav");
    assert_eq!(form["RecordingDuration"], "6");
    assert_eq!(form["CallSid"], "CAcs-1");
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert_eq!(run.await.unwrap(), RunEnd::HungUp);
    let ops = fake.ops();
    let order: Vec<&Op> = ops
        .iter()
        .filter(|o| {
            matches!(
                o,
                Op::PlayStream | Op::RecordStart | Op::RecordStop(_) | Op::ListenStop
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            &Op::PlayStream,
            &Op::RecordStart,
            &Op::ListenStop,
            &Op::RecordStop("rec-1".into())
        ],
        "beep, record, then stop"
    );
    // The beep: 0.3 s of a loud tone.
    assert_eq!(fake.streamed().len(), 15);
}

#[tokio::test(start_paused = true)]
async fn rcml_record_ends_on_silence_or_max_length() {
    // Silence: 2 s of sound, then the 3 s silence limit ends it (no beep asked for).
    let server = HookServer::start().await;
    server.route(
        "/rec",
        vec![Reply::raw(200, "application/xml", "<Response/>")],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let run = rcml_run(
        &fake,
        &server,
        r#"<Response><Record action="/rec" timeout="3" playBeep="false"/></Response>"#,
    );
    fake.wait_for("the recording", |ops| ops.contains(&Op::ListenStart))
        .await;
    for _ in 0..100 {
        fake.tap_frame(loud_frame()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let form = form_of(&server.wait_for("/rec", 1).await[0]);
    assert_eq!(form["Digits"], "");
    assert_eq!(
        form["RecordingDuration"], "5",
        "2 s of sound + 3 s of silence"
    );
    assert_eq!(run.await.unwrap(), RunEnd::HungUp);
    assert!(!fake.ops().contains(&Op::PlayStream));

    // maxLength: sound all along; no action: the document's own URL gets the results.
    let server = HookServer::start().await;
    let fake = FakeCall::new(PlayMode::Instant);
    server.route(
        "/call",
        vec![
            Reply::raw(
                200,
                "application/xml",
                r#"<Response><Record maxLength="2" timeout="0"/></Response>"#,
            ),
            Reply::raw(200, "application/xml", "<Response/>"),
        ],
    );
    let (rt, _alerts) = runtime(&fake);
    let mut l = launch(&server);
    l.language = crate::app::Language::Rcml(Default::default());
    let run = rt.launch(l);
    let seen = server.wait_for("/call", 2).await;
    let form = form_of(&seen[1]);
    assert_eq!(form["RecordingDuration"], "2");
    assert!(
        !form.contains_key("RecordingUrl"),
        "no API links recordings here"
    );
    assert_eq!(run.await.unwrap(), RunEnd::HungUp);
}

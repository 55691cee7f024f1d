//! The `listen` verb end to end in the runtime: a scripted call, the application's HTTP
//! server, and a real WebSocket server on loopback (real clock: the socket is real).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::alert::{Alert, AlertKind};
use crate::control::ListenFrame;
use crate::runtime::{RunEnd, Runtime};
use crate::testing::{delivery, launch, FakeCall, HookServer, Op, PlayMode, Reply};

fn runtime(fake: &Arc<FakeCall>) -> (Runtime, Arc<Mutex<Vec<Alert>>>) {
    let rt = Runtime::new(delivery(), fake.clone());
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let a = alerts.clone();
    rt.set_alert_sink(Arc::new(move |alert| a.lock().unwrap().push(alert)));
    (rt, alerts)
}

async fn next(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Message {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("no message: {other:?}"),
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn listen_streams_audio_and_dtmf_plays_audio_back_and_reports_the_close() {
    let ws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_url = format!("ws://{}/stream", ws_listener.local_addr().unwrap());
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([{
            "verb": "listen", "url": ws_url, "actionHook": "/listen-done",
            "mixType": "stereo", "sampleRate": 16000, "passDtmf": true,
            "metadata": {"tenant": "t1"},
            "bidirectionalAudio": {"enabled": true, "streaming": true, "sampleRate": 16000}
        }]))],
    );
    server.route(
        "/listen-done",
        vec![Reply::json(json!([{"verb": "hangup"}]))],
    );
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    let run = {
        let launch = launch(&server);
        tokio::spawn(async move { rt.launch(launch).await })
    };

    let (tcp, _) = ws_listener.accept().await.unwrap();
    let protocol = Arc::new(Mutex::new(None));
    let p = protocol.clone();
    let mut ws =
        tokio_tungstenite::accept_hdr_async(tcp, move |req: &Request, mut resp: Response| {
            *p.lock().unwrap() = req
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("audio.jambonz.org"),
            );
            Ok(resp)
        })
        .await
        .unwrap();
    assert_eq!(
        protocol.lock().unwrap().as_deref(),
        Some("audio.jambonz.org")
    );

    // The metadata text frame comes first.
    let Message::Text(meta) = next(&mut ws).await else {
        panic!("the first frame is not text");
    };
    let meta: Value = serde_json::from_str(meta.as_str()).unwrap();
    assert_eq!(meta["callSid"], "cs-1");
    assert_eq!(meta["from"], "+4915111");
    assert_eq!(meta["to"], "+4930123");
    assert_eq!(meta["accountSid"], "acc-sid");
    assert_eq!(meta["sampleRate"], 16000);
    assert_eq!(meta["mixType"], "stereo");
    assert_eq!(meta["tenant"], "t1");
    assert!(meta.get("sip").is_none());

    // Tapped audio: stereo (caller, other party) at 16 kHz, L16 little-endian.
    wait_until("the tap", || fake.ops().contains(&Op::ListenStart)).await;
    let mut frame = ListenFrame::default();
    frame.a.fill(1000);
    frame.b.fill(-1000);
    for _ in 0..2 {
        assert!(fake.tap_frame(frame.clone()).await);
    }
    for i in 0..2 {
        let Message::Binary(b) = next(&mut ws).await else {
            panic!("audio is not binary");
        };
        assert_eq!(b.len(), 160 * 2 * 2 * 2);
        let s: Vec<i16> = b
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        // After the interpolation's first sample: caller left, other party right.
        let skip = if i == 0 { 4 } else { 0 };
        assert!(
            s[skip..].chunks(2).all(|p| p == [1000, -1000]),
            "{:?}",
            &s[..8]
        );
    }

    // A key press goes out as a text frame.
    assert!(fake.tap_dtmf('5', 160).await);
    let Message::Text(d) = next(&mut ws).await else {
        panic!("dtmf is not text");
    };
    let d: Value = serde_json::from_str(d.as_str()).unwrap();
    assert_eq!(d, json!({"event": "dtmf", "dtmf": "5", "duration": 160}));

    // Audio sent back (16 kHz L16) is played to the caller at 8 kHz.
    let back: Vec<u8> = std::iter::repeat_n(700i16, 640)
        .flat_map(|s| s.to_le_bytes())
        .collect();
    ws.send(Message::binary(back)).await.unwrap();
    wait_until("streamed playback", || fake.streamed().len() == 2).await;
    assert!(fake.streamed().iter().flatten().all(|s| *s == 700));

    // The server closes: the actionHook reports it, its answer runs.
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(end, RunEnd::HungUp);
    let done = server.wait_for("/listen-done", 1).await[0].json();
    assert_eq!(done["reason"], "socketClosed");
    assert_eq!(done["call_sid"], "cs-1");
    assert!(done["duration"].as_u64().is_some());
    let ops = fake.ops();
    assert_eq!(ops[0], Op::Answer);
    assert!(ops.contains(&Op::PlayStream));
    assert!(ops.contains(&Op::ListenStop));
    assert!(alerts.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_socket_is_reported_and_the_application_goes_on() {
    // A port with nothing listening: refused at once.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "listen", "url": format!("ws://127.0.0.1:{port}/"), "actionHook": "/done"},
            {"verb": "hangup"}
        ]))],
    );
    server.route("/done", vec![Reply::json(json!([]))]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    let end = tokio::time::timeout(Duration::from_secs(10), rt.launch(launch(&server)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, RunEnd::HungUp);
    let done = server.wait_for("/done", 1).await[0].json();
    assert_eq!(done["reason"], "connectFailed");
    assert_eq!(done["status"], "fail");
    assert!(!fake.ops().contains(&Op::ListenStart));
    let kinds: Vec<AlertKind> = alerts.lock().unwrap().iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [AlertKind::CallControl]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_the_policy_refuses_is_not_connected() {
    let server = HookServer::start().await;
    server.route(
        "/call",
        vec![Reply::json(json!([
            {"verb": "listen", "url": "ws://127.0.0.1:1/", "actionHook": "/done"}
        ]))],
    );
    server.route("/done", vec![Reply::json(json!([{"verb": "hangup"}]))]);
    let fake = FakeCall::new(PlayMode::Instant);
    let (rt, alerts) = runtime(&fake);
    let end = tokio::time::timeout(Duration::from_secs(10), rt.launch(launch(&server)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, RunEnd::HungUp);
    let done = server.wait_for("/done", 1).await[0].json();
    assert_eq!(done["reason"], "connectFailed");
    let alerts = alerts.lock().unwrap();
    assert!(
        alerts[0].message.contains("not allowed"),
        "{:?}",
        alerts[0].message
    );
}

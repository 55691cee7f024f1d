//! The jambonz dialect against a real server over real HTTP and real SIP dialogs: auth
//! failures and another account's path, create-call validation with the api-server's
//! messages, unknown calls, update combinations, a plain call's two legs (list, retrieve,
//! mute, no-answer on an answered call, delete), an outbound application call to user 201
//! (created, listed, redirected to a new call_hook, hung up), and applications / phone
//! numbers CRUD in the api-server's shapes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::routing::post;
use axum::Router;
use reqwest::Method;
use serde_json::{json, Value};
use support::sip_ua::{is_request, Answer};
use support::{basic, bearer, TestServer, API_KEY_A, API_KEY_B};

fn a() -> String {
    bearer(API_KEY_A)
}

fn calls(s: &TestServer) -> String {
    format!("/v1/Accounts/{}/Calls", s.acme)
}

fn assert_msg(status: u16, body: &Value, want: u16, msg: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["msg"], msg, "{body}");
}

/// The application's web server: every request (path, JSON body) is recorded; every path
/// answers a long pause, so the call stays up.
#[derive(Clone, Default)]
struct Hooks {
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn hook(State(h): State<Hooks>, uri: Uri, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    h.got.lock().unwrap().push((uri.path().to_string(), v));
    (
        [("content-type", "application/json")],
        r#"[{"verb": "pause", "length": 30}]"#,
    )
        .into_response()
}

async fn hook_server() -> (String, Hooks) {
    let hooks = Hooks::default();
    let app = Router::new()
        .route("/call", post(hook))
        .route("/status", post(hook))
        .route("/next", post(hook))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hooks)
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn auth_failures_and_another_accounts_path() {
    let s = TestServer::start(Answer::Answer).await;
    let path = calls(&s);

    let (st, body, headers) = s.req(Method::GET, &path, None, None).await;
    assert_msg(
        st,
        &body,
        401,
        "missing credentials: send Authorization: Bearer <api key>",
    );
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"jambonz\"");

    let (st, body, _) = s
        .req(
            Method::GET,
            &path,
            Some(&basic("201@acme.local", "secret201")),
            None,
        )
        .await;
    assert_msg(
        st,
        &body,
        401,
        "unsupported Authorization header: send Authorization: Bearer <api key>",
    );

    let (st, body, _) = s.req(Method::GET, &path, Some(&bearer("nope")), None).await;
    assert_msg(st, &body, 401, "invalid api key");

    // Account B's key on account A's path, and a made-up account sid.
    for (key, p) in [
        (bearer(API_KEY_B), path.clone()),
        (a(), format!("/v1/Accounts/{}/Calls", s.beta)),
        (a(), "/v1/Accounts/not-an-account/Calls".to_string()),
        (a(), format!("/v1/Accounts/{}/Calls/x", s.beta)),
        (a(), format!("/v1/Accounts/{}/Applications", s.beta)),
    ] {
        let (st, body, _) = s.req(Method::GET, &p, Some(&key), None).await;
        assert_msg(st, &body, 403, "insufficient privileges");
    }
    let (st, body, _) = s
        .req(Method::POST, &path, Some(&bearer(API_KEY_B)), Some("{}"))
        .await;
    assert_msg(st, &body, 403, "insufficient privileges");

    let (st, body, _) = s.req(Method::GET, &path, Some(&a()), None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!([]));
    // The node-client lists with a trailing slash.
    let (st, body, _) = s
        .req(Method::GET, &format!("{path}/"), Some(&a()), None)
        .await;
    assert_eq!((st, body), (200, json!([])));
    s.shutdown().await;
}

#[tokio::test]
async fn create_call_validation_and_unknown_calls() {
    let s = TestServer::start(Answer::Answer).await;
    let path = calls(&s);
    let hook = json!({"url": "http://127.0.0.1:9/call"});
    let to = json!({"type": "user", "name": "201@acme.local"});
    let cases = [
        ("not json".to_string(), "invalid JSON body"),
        ("[]".to_string(), "the body must be a JSON object"),
        (
            json!({"to": to, "call_hook": hook}).to_string(),
            "missing from parameter",
        ),
        (
            json!({"from": "201", "call_hook": hook}).to_string(),
            "missing or invalid to property: undefined",
        ),
        (
            json!({"from": "201", "to": {"type": "fax"}, "call_hook": hook}).to_string(),
            r#"missing or invalid to property: {"type":"fax"}"#,
        ),
        (
            json!({"from": "201", "to": to}).to_string(),
            "either call_hook or application_sid required",
        ),
        (
            json!({"from": "201", "to": to, "call_hook": {"url": "/relative"}}).to_string(),
            "call_hook url must be an absolute url",
        ),
        (
            json!({"from": "201", "to": to, "call_hook": hook,
                   "call_status_hook": "status"})
            .to_string(),
            "call_status_hook url must be an absolute url",
        ),
        (
            json!({"from": "201", "to": to, "application_sid": "0e06a1b0-d49f-4fb8-b973-b5a3c6758de1"})
                .to_string(),
            "application_sid not found 0e06a1b0-d49f-4fb8-b973-b5a3c6758de1",
        ),
        (
            json!({"from": "201", "to": {"type": "user", "name": "201@beta.local"},
                   "call_hook": hook})
            .to_string(),
            "user 201@beta.local is not in this account's sip realm (acme.local)",
        ),
        (
            json!({"from": "201", "to": to, "call_hook": hook, "timeout": "soon"}).to_string(),
            "timeout must be a whole number of seconds from 1 to 3600",
        ),
    ];
    for (body, want) in cases {
        let (st, resp, _) = s.req(Method::POST, &path, Some(&a()), Some(&body)).await;
        assert_eq!(st, 400, "{body} -> {resp}");
        let msg = resp["msg"].as_str().unwrap_or_default();
        assert!(msg.starts_with(want), "{body} -> {resp}");
    }
    // The engine's refusals: an unknown extension, a caller id that is not the account's.
    for (to, from) in [
        (json!({"type": "user", "name": "999@acme.local"}), "201"),
        (json!({"type": "user", "name": "201"}), "+4917000000"),
    ] {
        let body = json!({"from": from, "to": to, "call_hook": hook}).to_string();
        let (st, resp, _) = s.req(Method::POST, &path, Some(&a()), Some(&body)).await;
        assert_eq!(st, 400, "{to} from {from}: {resp}");
        assert!(
            resp["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{resp}"
        );
    }
    assert!(s.engine.calls(&s.acme).is_empty());

    let unknown = format!("{path}/1b9a8d8d-bd55-4c53-a373-929e85c6db22");
    let (st, body, _) = s.req(Method::GET, &unknown, Some(&a()), None).await;
    assert_msg(st, &body, 404, "call not found");
    let (st, body, _) = s.req(Method::DELETE, &unknown, Some(&a()), None).await;
    assert_msg(st, &body, 404, "call not found");
    for m in [Method::PUT, Method::POST] {
        let (st, body, _) = s
            .req(
                m,
                &unknown,
                Some(&a()),
                Some(r#"{"call_status": "completed"}"#),
            )
            .await;
        assert_msg(st, &body, 404, "call not found");
    }
    // A body is checked before the call is looked up (as the api-server does).
    let (st, body, _) = s
        .req(
            Method::PUT,
            &unknown,
            Some(&a()),
            Some(r#"{"call_status": "completed", "mute_status": "mute"}"#),
        )
        .await;
    assert_msg(
        st,
        &body,
        400,
        "multiple options are not allowed in updateCall",
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_plain_call_is_two_jambonz_calls() {
    let s = TestServer::start(Answer::Answer).await;
    let call = s.place_call().await;
    let (leg_a, leg_b) = (call.legs[0].id.clone(), call.legs[1].id.clone());
    let path = calls(&s);

    let (st, list, _) = s.req(Method::GET, &path, Some(&a()), None).await;
    assert_eq!(st, 200, "{list}");
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let a_view = &list[0];
    assert_eq!(a_view["call_sid"], leg_a.as_str());
    assert_eq!(a_view["account_sid"], s.acme.as_str());
    assert_eq!(a_view["direction"], "inbound");
    assert_eq!(a_view["from"], support::CALLER);
    assert_eq!(a_view["to"], support::DID);
    assert_eq!(a_view["call_status"], "in-progress");
    assert_eq!(a_view["sip_status"], 200);
    assert_eq!(a_view["call_id"], call.id.as_str());
    assert!(a_view.get("parent_call_sid").is_none(), "{a_view}");
    assert!(a_view.get("application_sid").is_none(), "{a_view}");
    assert!(a_view["duration"].is_i64());
    let b_view = &list[1];
    assert_eq!(b_view["call_sid"], leg_b.as_str());
    assert_eq!(b_view["parent_call_sid"], leg_a.as_str());
    assert_eq!(b_view["direction"], "outbound");

    // Filters.
    for (q, n) in [
        ("direction=inbound", 1),
        ("direction=outbound", 1),
        ("callStatus=in-progress", 2),
        ("callStatus=ringing", 0),
        (
            &format!("from={}", support::CALLER.replace('+', "%2B")) as &str,
            2,
        ),
        ("to=nobody", 0),
    ] {
        let (_, l, _) = s
            .req(Method::GET, &format!("{path}?{q}"), Some(&a()), None)
            .await;
        assert_eq!(l.as_array().map(Vec::len), Some(n), "{q}: {l}");
    }

    let (st, one, _) = s
        .req(Method::GET, &format!("{path}/{leg_b}"), Some(&a()), None)
        .await;
    assert_eq!(st, 200, "{one}");
    // The same object (duration may tick between the two requests).
    let without_duration = |v: &Value| {
        let mut v = v.clone();
        v["duration"] = json!(0);
        v
    };
    assert_eq!(without_duration(&one), without_duration(b_view));
    // Another account never sees it.
    let (st, _, _) = s
        .req(
            Method::GET,
            &format!("/v1/Accounts/{}/Calls/{leg_b}", s.beta),
            Some(&bearer(API_KEY_B)),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // mute_status mutes that leg.
    let leg_path = format!("{path}/{leg_b}");
    let (st, body, _) = s
        .req(
            Method::PUT,
            &leg_path,
            Some(&a()),
            Some(r#"{"mute_status": "mute"}"#),
        )
        .await;
    assert_eq!(st, 204, "{body}");
    let info = s.engine.call(&s.acme, &call.id).unwrap();
    assert!(info.leg(&leg_b).unwrap().muted);
    assert!(!info.leg(&leg_a).unwrap().muted);
    let (st, _, _) = s
        .req(
            Method::POST,
            &leg_path,
            Some(&a()),
            Some(r#"{"mute_status": "unmute"}"#),
        )
        .await;
    assert_eq!(st, 204);
    assert!(!s.engine.call(&s.acme, &call.id).unwrap().muted());

    // Conflicts and refusals leave the call as it was.
    for (body, want, msg) in [
        (
            json!({"call_status": "completed", "whisper": {"verb": "say", "text": "hi"}}),
            400,
            "whisper may only be combined with mute_status or listen_status",
        ),
        (
            json!({"call_hook": {"url": "/x"}, "mute_status": "mute"}),
            400,
            "multiple options are not allowed in updateCall",
        ),
        (json!({}), 400, "no valid options supplied to updateCall"),
        (json!({"call_status": "busy"}), 400, "invalid call_status"),
        (
            json!({"listen_status": "pause"}),
            400,
            "no listen stream is active on this call",
        ),
        (
            json!({"call_status": "no-answer"}),
            422,
            "call_status no-answer is for a ringing call; use completed",
        ),
        (
            json!({"call_hook": {"url": "http://127.0.0.1:9/x"}}),
            422,
            "the call is not running an application",
        ),
        (
            json!({"whisper": {"verb": "play", "url": "http://127.0.0.1:9/none.wav"}}),
            400,
            "",
        ),
    ] {
        let (st, resp, _) = s
            .req(Method::PUT, &leg_path, Some(&a()), Some(&body.to_string()))
            .await;
        assert_eq!(st, want, "{body} -> {resp}");
        if !msg.is_empty() {
            assert_eq!(resp["msg"], msg, "{body}");
        }
    }
    assert_eq!(s.engine.calls(&s.acme).len(), 1);

    // dtmf and record reach the engine.
    let (st, body, _) = s
        .req(
            Method::PUT,
            &leg_path,
            Some(&a()),
            Some(r#"{"dtmf": {"digit": "12"}}"#),
        )
        .await;
    assert_eq!(st, 204, "{body}");
    let (st, body, _) = s
        .req(
            Method::PUT,
            &leg_path,
            Some(&a()),
            Some(r#"{"record": {"action": "startCallRecording"}}"#),
        )
        .await;
    assert_eq!(st, 204, "{body}");
    assert!(s.engine.call(&s.acme, &call.id).unwrap().recording());
    let (st, body, _) = s
        .req(
            Method::PUT,
            &leg_path,
            Some(&a()),
            Some(r#"{"record": {"action": "stopCallRecording"}}"#),
        )
        .await;
    assert_eq!(st, 204, "{body}");

    // DELETE ends the call (a documented difference from jambonz).
    let mark = s.phone.mark();
    let (st, body, _) = s.req(Method::DELETE, &leg_path, Some(&a()), None).await;
    assert_eq!(st, 204, "{body}");
    s.phone
        .wait(mark, Duration::from_secs(5), |m| is_request(m, "BYE"))
        .await;
    s.wait_no_calls().await;
    let (st, body, _) = s.req(Method::GET, &leg_path, Some(&a()), None).await;
    assert_msg(st, &body, 404, "call not found");
    s.shutdown().await;
}

#[tokio::test]
async fn an_outbound_application_call() {
    let s = TestServer::start(Answer::Answer).await;
    let (base, hooks) = hook_server().await;
    let path = calls(&s);
    let mark = s.phone.mark();
    let body = json!({
        "from": "202",
        "to": {"type": "user", "name": "201@acme.local"},
        "call_hook": {"url": format!("{base}/call"), "method": "POST"},
        "call_status_hook": format!("{base}/status"),
        "tag": {"accountCode": "288fe284"},
    });
    let (st, created, _) = s
        .req(Method::POST, &path, Some(&a()), Some(&body.to_string()))
        .await;
    assert_eq!(st, 201, "{created}");
    let sid = created["sid"].as_str().unwrap().to_string();
    assert_eq!(created, json!({"sid": sid}));
    s.phone
        .wait(mark, Duration::from_secs(5), |m| is_request(m, "INVITE"))
        .await;
    // Answered: the application's call_hook is asked, with the tag as customerData.
    let first = wait_for("the call_hook", || {
        hooks
            .got
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p == "/call")
            .cloned()
    })
    .await;
    assert_eq!(first.1["call_sid"], sid.as_str());
    assert_eq!(first.1["customerData"]["accountCode"], "288fe284");

    let (st, list, _) = s.req(Method::GET, &path, Some(&a()), None).await;
    assert_eq!(st, 200);
    let list = list.as_array().unwrap().clone();
    assert_eq!(
        list.len(),
        1,
        "the application's side is not a call: {list:?}"
    );
    let v = &list[0];
    assert_eq!(v["call_sid"], sid.as_str());
    assert_eq!(v["direction"], "outbound");
    assert_eq!(v["from"], "202");
    assert_eq!(v["to"], "201");
    assert_eq!(v["call_status"], "in-progress");

    // A new call_hook (relative: resolved against the application's) takes over.
    let (st, body, _) = s
        .req(
            Method::PUT,
            &format!("{path}/{sid}"),
            Some(&a()),
            Some(r#"{"call_hook": {"url": "/next"}}"#),
        )
        .await;
    assert_eq!(st, 204, "{body}");
    wait_for("the redirect", || {
        hooks
            .got
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p == "/next")
            .then_some(())
    })
    .await;
    let (st, body, _) = s
        .req(
            Method::PUT,
            &format!("{path}/{sid}"),
            Some(&a()),
            Some(r#"{"call_hook": {"url": "/next"}, "call_status_hook": {"url": "/s"}}"#),
        )
        .await;
    // A new status hook must be absolute (nothing changes).
    assert_msg(
        st,
        &body,
        400,
        "call_status_hook url must be an absolute url",
    );

    let mark = s.phone.mark();
    let (st, _, _) = s
        .req(
            Method::POST,
            &format!("{path}/{sid}"),
            Some(&a()),
            Some(r#"{"call_status": "completed"}"#),
        )
        .await;
    assert_eq!(st, 204);
    s.phone
        .wait(mark, Duration::from_secs(5), |m| is_request(m, "BYE"))
        .await;
    s.wait_no_calls().await;
    // The status hook hears the end: an answered call that was hung up is `completed`, after
    // `in-progress`, each once.
    wait_for("a final status", || {
        hooks
            .got
            .lock()
            .unwrap()
            .iter()
            .any(|(p, b)| p == "/status" && b["call_status"] == "completed")
            .then_some(())
    })
    .await;
    let statuses: Vec<String> = hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/status")
        .map(|(_, b)| b["call_status"].as_str().unwrap_or_default().to_string())
        .collect();
    let finals = statuses
        .iter()
        .filter(|s| ["completed", "no-answer", "failed", "busy"].contains(&s.as_str()))
        .count();
    assert_eq!(finals, 1, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| *s == "in-progress").count(),
        1,
        "{statuses:?}"
    );
    // The call_hook request made on answer says the call is in progress.
    let first_call_hook = hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| p == "/call")
        .map(|(_, b)| b["call_status"].clone());
    assert_eq!(first_call_hook, Some(json!("in-progress")));
    s.shutdown().await;
}

#[tokio::test]
async fn applications_and_phone_numbers() {
    let s = TestServer::start(Answer::Answer).await;
    let apps = format!("/v1/Accounts/{}/Applications", s.acme);
    let body = json!({
        "name": "ivr",
        "account_sid": s.acme,
        "call_hook": {"url": "http://127.0.0.1:9/call", "method": "get",
                      "username": "u", "password": "p"},
        "call_status_hook": {"url": "http://127.0.0.1:9/status", "method": "POST"},
        "speech_synthesis_vendor": "google",
    });
    let (st, created, _) = s
        .req(Method::POST, &apps, Some(&a()), Some(&body.to_string()))
        .await;
    assert_eq!(st, 201, "{created}");
    let sid = created["sid"].as_str().unwrap().to_string();

    let want = json!({
        "application_sid": sid,
        "name": "ivr",
        "account_sid": s.acme,
        "call_hook": {"url": "http://127.0.0.1:9/call", "method": "GET", "username": "u"},
        "call_status_hook": {"url": "http://127.0.0.1:9/status", "method": "POST"},
        "messaging_hook": null,
    });
    for p in [format!("{apps}/{sid}"), format!("/v1/Applications/{sid}")] {
        let (st, got, _) = s.req(Method::GET, &p, Some(&a()), None).await;
        assert_eq!((st, &got), (200, &want), "{p}");
    }
    for p in [apps.clone(), format!("{apps}/"), "/v1/Applications".into()] {
        let (st, got, _) = s.req(Method::GET, &p, Some(&a()), None).await;
        assert_eq!((st, got), (200, json!([want.clone()])), "{p}");
    }
    // Account B sees none of it.
    let (_, got, _) = s
        .req(
            Method::GET,
            "/v1/Applications",
            Some(&bearer(API_KEY_B)),
            None,
        )
        .await;
    assert_eq!(got, json!([]));
    let (st, _, _) = s
        .req(
            Method::GET,
            &format!("/v1/Applications/{sid}"),
            Some(&bearer(API_KEY_B)),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // Bad bodies and a duplicate name.
    for (body, want_st, msg) in [
        (
            json!({"call_hook": {"url": "http://h/x"}}),
            400,
            "name is required",
        ),
        (json!({"name": "x"}), 400, "call_hook is required"),
        (
            json!({"name": "x", "call_hook": 5}),
            400,
            "call_hook must be an object containing a url property",
        ),
        (
            json!({"name": "x", "call_hook": {"url": "http://h/x"}, "account_sid": s.beta}),
            403,
            "insufficient privileges",
        ),
        (
            json!({"name": "ivr", "call_hook": {"url": "http://h/x"}}),
            422,
            "",
        ),
        (
            json!({"name": "x", "call_hook": {"url": "ftp://h/x"}}),
            400,
            "",
        ),
    ] {
        let (st, resp, _) = s
            .req(Method::POST, &apps, Some(&a()), Some(&body.to_string()))
            .await;
        assert_eq!(st, want_st, "{body} -> {resp}");
        if msg.is_empty() {
            assert!(
                resp["msg"].as_str().is_some_and(|m| !m.is_empty()),
                "{resp}"
            );
        } else {
            assert_eq!(resp["msg"], msg);
        }
    }

    // PUT changes only what it names.
    let (st, body, _) = s
        .req(
            Method::PUT,
            &format!("/v1/Applications/{sid}"),
            Some(&a()),
            Some(r#"{"name": "ivr2", "call_status_hook": null}"#),
        )
        .await;
    assert_eq!(st, 204, "{body}");
    let (_, got, _) = s
        .req(Method::GET, &format!("{apps}/{sid}"), Some(&a()), None)
        .await;
    assert_eq!(got["name"], "ivr2");
    assert_eq!(got["call_hook"]["url"], "http://127.0.0.1:9/call");
    assert_eq!(got["call_status_hook"], Value::Null);
    let (st, body, _) = s
        .req(
            Method::PUT,
            &format!("{apps}/0e06a1b0-d49f-4fb8-b973-b5a3c6758de1"),
            Some(&a()),
            Some(r#"{"name": "x"}"#),
        )
        .await;
    assert_msg(st, &body, 404, "application not found");

    // Phone numbers.
    let (st, body, _) = s
        .req(
            Method::POST,
            "/v1/PhoneNumbers",
            Some(&a()),
            Some(
                &json!({"number": "+49 30 999 000", "account_sid": s.acme,
                         "application_sid": sid, "voip_carrier_sid": null})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let nsid = body["sid"].as_str().unwrap().to_string();
    let number = json!({"phone_number_sid": nsid, "number": "+4930999000",
        "voip_carrier_sid": null, "account_sid": s.acme, "application_sid": sid});
    let (st, got, _) = s
        .req(Method::GET, "/v1/PhoneNumbers", Some(&a()), None)
        .await;
    assert_eq!((st, got), (200, json!([number.clone()])));
    let (st, got, _) = s
        .req(
            Method::GET,
            &format!("/v1/PhoneNumbers/{nsid}"),
            Some(&a()),
            None,
        )
        .await;
    assert_eq!((st, got), (200, number));
    let (_, got, _) = s
        .req(
            Method::GET,
            "/v1/PhoneNumbers",
            Some(&bearer(API_KEY_B)),
            None,
        )
        .await;
    assert_eq!(got, json!([]));
    for (body, want_st) in [
        (
            json!({"number": "+4930999000", "application_sid": sid}),
            422,
        ),
        (
            json!({"number": "+4930123456", "application_sid": sid}),
            422,
        ),
        (json!({"number": "abc", "application_sid": sid}), 400),
        (json!({"number": "+4930999001"}), 400),
        (
            json!({"number": "+4930999001", "application_sid": "0e06a1b0-d49f-4fb8-b973-b5a3c6758de1"}),
            400,
        ),
        (
            json!({"number": "+4930999001", "application_sid": sid, "account_sid": s.beta}),
            403,
        ),
    ] {
        let (st, resp, _) = s
            .req(
                Method::POST,
                "/v1/PhoneNumbers",
                Some(&a()),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(st, want_st, "{body} -> {resp}");
        assert!(
            resp["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{resp}"
        );
    }
    let (st, _, _) = s
        .req(
            Method::DELETE,
            &format!("/v1/PhoneNumbers/{nsid}"),
            Some(&bearer(API_KEY_B)),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _, _) = s
        .req(
            Method::DELETE,
            &format!("/v1/PhoneNumbers/{nsid}"),
            Some(&a()),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, body, _) = s
        .req(
            Method::DELETE,
            &format!("/v1/PhoneNumbers/{nsid}"),
            Some(&a()),
            None,
        )
        .await;
    assert_msg(st, &body, 404, "phone number not found");

    // Delete the application.
    let (st, _, _) = s
        .req(Method::DELETE, &format!("{apps}/{sid}"), Some(&a()), None)
        .await;
    assert_eq!(st, 204);
    let (st, body, _) = s
        .req(
            Method::DELETE,
            &format!("/v1/Applications/{sid}"),
            Some(&a()),
            None,
        )
        .await;
    assert_msg(st, &body, 404, "application not found");
    s.shutdown().await;
}

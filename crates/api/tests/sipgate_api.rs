//! The sipgate dialect against a real engine and real SIP dialogs: the token endpoint, every
//! auth scheme (Bearer token, Basic PAT, Basic login:password), expiry, the /v2/calls routes
//! with their exact shapes and errors, isolation between accounts, tokens surviving a restart,
//! and the push webhooks (newCall/answer/hangup, retried with backoff).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use hookflash_engine::CallState;
use reqwest::Method;
use serde_json::Value;
use support::sip_ua::{is_request, Answer};
use support::{basic, bearer, TestServer, CALLER, DID};

const TOKEN_PATH: &str = "/login/sipgate-apps/protocol/openid-connect/token";
const NOT_FOUND: &str = "The requested Call could not be found";

async fn login(s: &TestServer, user: &str, pw: &str) -> (u16, Value) {
    let resp = s
        .client
        .post(s.url(TOKEN_PATH))
        .form(&[
            ("client_id", "sipgate-app-web"),
            ("grant_type", "password"),
            ("username", user),
            ("password", pw),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn token(s: &TestServer, user: &str, pw: &str) -> String {
    let (status, body) = login(s, user, pw).await;
    assert_eq!(status, 200, "{body}");
    bearer(body["token"].as_str().unwrap())
}

fn assert_sipgate_error(status: u16, body: &Value, want: u16) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["status"], want, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Every call route with a valid body.
fn call_routes(call: &str) -> Vec<(Method, String, Option<&'static str>)> {
    vec![
        (
            Method::PUT,
            format!("/v2/calls/{call}/hold"),
            Some(r#"{"value": true}"#),
        ),
        (
            Method::PUT,
            format!("/v2/calls/{call}/muted"),
            Some(r#"{"value": true}"#),
        ),
        (Method::DELETE, format!("/v2/calls/{call}"), None),
        (
            Method::POST,
            format!("/v2/calls/{call}/transfer"),
            Some(r#"{"attended": false, "phoneNumber": "nobody"}"#),
        ),
        (
            Method::PUT,
            format!("/v2/calls/{call}/recording"),
            Some(r#"{"value": true, "announcement": false}"#),
        ),
        (
            Method::POST,
            format!("/v2/calls/{call}/dtmf"),
            Some(r#"{"sequence": "*12#"}"#),
        ),
        (
            Method::POST,
            format!("/v2/calls/{call}/announcements"),
            Some(r#"{"url": "http://127.0.0.1:9/example.wav"}"#),
        ),
    ]
}

#[tokio::test]
async fn token_endpoint_issues_jwt_shaped_tokens_and_refuses_bad_logins() {
    let s = TestServer::start(Answer::Answer).await;
    let (status, body) = login(&s, "201@acme.local", "secret201").await;
    assert_eq!(status, 200, "{body}");
    let t = body["token"].as_str().unwrap();
    assert_eq!(body["access_token"], t);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let parts: Vec<&str> = t.split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["preferred_username"], "201@acme.local");
    assert!(payload["exp"].as_i64().unwrap() > payload["iat"].as_i64().unwrap());

    for (user, pw) in [
        ("201@acme.local", "wrong"),
        ("201@beta.local", "secret201"),
        ("999@acme.local", "secret201"),
        ("201", "secret201"),
        ("201@acme.local", ""),
    ] {
        let (status, body) = login(&s, user, pw).await;
        assert_eq!(status, 401, "{user}: {body}");
        assert_eq!(body["error"], "invalid_grant");
    }
    let resp = s
        .client
        .post(s.url(TOKEN_PATH))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    let resp = s
        .client
        .post(s.url(TOKEN_PATH))
        .form(&[("grant_type", "password"), ("username", "201@acme.local")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn every_auth_scheme_and_every_bad_credential() {
    // 14 failures from one address: more than the password guessing defence allows by
    // default (tests/auth_guard.rs covers it).
    let options = hookflash_api::HttpOptions {
        auth_guard: hookflash_api::guard::GuardConfig {
            source_max_failures: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    let s = TestServer::start_opts(Answer::Answer, options).await;
    let good = token(&s, "201@acme.local", "secret201").await;
    let (pat, secret) = s.store.create_pat(&s.acme, "201", "sdk").await.unwrap();
    let keys = hookflash_api::user_token::KeyCell::default();
    let alice = s
        .store
        .user_by_extension(&s.acme, "201")
        .await
        .unwrap()
        .unwrap();
    let expired =
        hookflash_api::sipgate::auth::issue_token(&s.engine, &keys, &alice, "acme.local", -5)
            .await
            .unwrap();
    let forged = {
        let claims = hookflash_api::user_token::Claims {
            iss: "hookflash".into(),
            sub: alice.id.clone(),
            acc: s.acme.clone(),
            preferred_username: "201@acme.local".into(),
            iat: 0,
            exp: i64::MAX / 2,
            jti: "x".into(),
        };
        hookflash_api::user_token::sign(&claims, b"not the server's key")
    };
    for auth in [
        good.clone(),
        basic(&pat.id, &secret),
        basic("201@acme.local", "secret201"),
    ] {
        let (status, body, _) = s.req(Method::GET, "/v2/calls", Some(&auth), None).await;
        assert_eq!(status, 200, "{auth}: {body}");
        assert_eq!(body, serde_json::json!({"data": []}));
    }
    let bad = vec![
        None,
        Some(bearer("not-a-token")),
        Some(bearer(&expired)),
        Some(bearer(&forged)),
        Some(basic(&pat.id, "00000000-0000-4000-8000-000000000000")),
        Some(basic("token-ZZZZZZ", &secret)),
        Some(basic("201@acme.local", "wrong")),
        Some(basic("201", "secret201")),
        Some("Basic %%%".to_string()),
        Some(bearer(API_KEY_AS_TOKEN)),
    ];
    for auth in bad {
        let (status, body, headers) = s.req(Method::GET, "/v2/calls", auth.as_deref(), None).await;
        assert_sipgate_error(status, &body, 401);
        assert!(headers.get("www-authenticate").is_some());
        // The same on a call route (auth comes before the call lookup).
        let (status, body, _) = s
            .req(
                Method::PUT,
                "/v2/calls/x/hold",
                auth.as_deref(),
                Some(r#"{"value":true}"#),
            )
            .await;
        assert_sipgate_error(status, &body, 401);
    }
    let (_, body, _) = s
        .req(Method::GET, "/v2/calls", Some(&bearer(&expired)), None)
        .await;
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // A removed user's token stops working.
    s.store.remove_user(&s.acme, "201").await.unwrap();
    let (status, body, _) = s.req(Method::GET, "/v2/calls", Some(&good), None).await;
    assert_sipgate_error(status, &body, 401);
    s.shutdown().await;
}

const API_KEY_AS_TOKEN: &str = support::API_KEY_A;

#[tokio::test]
async fn calls_routes_shapes_effects_errors_and_isolation() {
    let s = TestServer::start(Answer::Answer).await;
    let alice = token(&s, "201@acme.local", "secret201").await;
    let bob = token(&s, "202@acme.local", "secret202").await;
    let zed = token(&s, "301@beta.local", "secret301").await;

    for (m, p, body) in call_routes("no-such-call") {
        let (status, json, _) = s.req(m, &p, Some(&alice), body).await;
        assert_sipgate_error(status, &json, 404);
        assert_eq!(json["message"], NOT_FOUND);
    }

    let call = s.place_call().await;
    let (status, list, _) = s.req(Method::GET, "/v2/calls", Some(&alice), None).await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    let c = &data[0];
    assert_eq!(c["callId"], call.id.as_str());
    assert_eq!(
        (
            c["muted"].clone(),
            c["recording"].clone(),
            c["hold"].clone()
        ),
        (false.into(), false.into(), false.into())
    );
    let parts = c["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    let by_number = |n: &str| {
        parts
            .iter()
            .find(|p| p["phoneNumber"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n} in {list}"))
    };
    let own = by_number(DID);
    let other = by_number(CALLER);
    assert_eq!(own["owner"], true);
    assert_eq!(other["owner"], false);
    for p in [&own, &other] {
        assert!(p["participantId"].is_string());
        assert_eq!(p["muted"], false);
        assert_eq!(p["hold"], false);
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5, "{p}");
    }
    // Bob (same account, not on the call) sees it without an own participant.
    let (_, list_b, _) = s.req(Method::GET, "/v2/calls", Some(&bob), None).await;
    assert!(list_b["data"][0]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["owner"] == false));

    // Isolation: account beta gets 404 on every route and an empty list.
    let (status, list_z, _) = s.req(Method::GET, "/v2/calls", Some(&zed), None).await;
    assert_eq!((status, list_z), (200, serde_json::json!({"data": []})));
    for (m, p, body) in call_routes(&call.id) {
        let (status, json, _) = s.req(m, &p, Some(&zed), body).await;
        assert_sipgate_error(status, &json, 404);
        assert_eq!(json["message"], NOT_FOUND, "{p}");
    }

    // Bad bodies: 400, nothing changes.
    let hold_url = format!("/v2/calls/{}/hold", call.id);
    let muted_url = format!("/v2/calls/{}/muted", call.id);
    for body in [
        "{",
        r#"{"value": "yes"}"#,
        r#"{"value": 1}"#,
        "{}",
        "",
        "null",
    ] {
        for url in [&hold_url, &muted_url] {
            let (status, json, _) = s.req(Method::PUT, url, Some(&alice), Some(body)).await;
            assert_sipgate_error(status, &json, 400);
        }
    }
    let now = s.engine.call(&s.acme, &call.id).unwrap();
    assert!(!now.held() && !now.muted());

    // Hold: every participant gets a=sendonly; retrieve: a=sendrecv.
    let (pm, cm) = (s.phone.mark(), s.carrier.mark());
    let (status, _, _) = s
        .req(
            Method::PUT,
            &hold_url,
            Some(&alice),
            Some(r#"{ "value": true }"#),
        )
        .await;
    assert_eq!(status, 200);
    for (ua, mark) in [(&s.phone, pm), (&s.carrier, cm)] {
        let m = ua
            .wait(mark, Duration::from_secs(5), |m| is_request(m, "INVITE"))
            .await;
        assert_eq!(m.sdp_direction(), "sendonly");
    }
    let (_, list, _) = s.req(Method::GET, "/v2/calls", Some(&alice), None).await;
    assert_eq!(list["data"][0]["hold"], true);
    assert!(list["data"][0]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["hold"] == true));
    let (pm, cm) = (s.phone.mark(), s.carrier.mark());
    let (status, _, _) = s
        .req(
            Method::PUT,
            &hold_url,
            Some(&alice),
            Some(r#"{ "value": false }"#),
        )
        .await;
    assert_eq!(status, 200);
    for (ua, mark) in [(&s.phone, pm), (&s.carrier, cm)] {
        let m = ua
            .wait(mark, Duration::from_secs(5), |m| is_request(m, "INVITE"))
            .await;
        assert_eq!(m.sdp_direction(), "sendrecv");
    }

    // Mute: the token user's own participant only.
    let (status, _, _) = s
        .req(
            Method::PUT,
            &muted_url,
            Some(&alice),
            Some(r#"{"value": true}"#),
        )
        .await;
    assert_eq!(status, 200);
    let info = s.engine.call(&s.acme, &call.id).unwrap();
    for l in &info.legs {
        assert_eq!(
            l.muted,
            l.owner_extension.as_deref() == Some("201"),
            "{l:?}"
        );
    }
    let (_, list, _) = s.req(Method::GET, "/v2/calls", Some(&alice), None).await;
    assert_eq!(list["data"][0]["muted"], true);
    // Bob is not a party to this call: for his credential it does not exist.
    let (status, json, _) = s
        .req(
            Method::PUT,
            &muted_url,
            Some(&bob),
            Some(r#"{"value": true}"#),
        )
        .await;
    assert_sipgate_error(status, &json, 404);
    let (status, _, _) = s
        .req(
            Method::PUT,
            &muted_url,
            Some(&alice),
            Some(r#"{"value": false}"#),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!s.engine.call(&s.acme, &call.id).unwrap().muted());

    // A transfer to a target that names nobody is a 400 in the error shape; so is an
    // announcement from an unreachable URL; in both cases the call is untouched. Recording
    // and DTMF work (their effects are checked below).
    for (m, p, body) in call_routes(&call.id).into_iter().skip(3) {
        let (status, json, _) = s.req(m, &p, Some(&alice), body).await;
        if p.ends_with("/recording") || p.ends_with("/dtmf") {
            assert_eq!(status, 200, "{p}: {json}");
            continue;
        }
        if p.ends_with("/announcements") {
            assert_sipgate_error(status, &json, 400);
            assert!(
                json["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("could not reach"),
                "{json}"
            );
            continue;
        }
        assert!(p.ends_with("/transfer"), "{p}");
        assert_sipgate_error(status, &json, 400);
        assert!(
            json["message"].as_str().unwrap_or("").contains("nobody"),
            "{json}"
        );
    }
    let now = s.engine.call(&s.acme, &call.id).unwrap();
    assert_eq!(now.state, CallState::Answered);
    assert!(now.recording(), "PUT recording true started it");

    // Recording: PUT is idempotent; false stops it; bad bodies are 400.
    let rec_url = format!("/v2/calls/{}/recording", call.id);
    for (body, want) in [
        (r#"{"value": true}"#, true),
        (r#"{"value": false, "announcement": false}"#, false),
        (r#"{"value": false}"#, false),
    ] {
        let (status, json, _) = s.req(Method::PUT, &rec_url, Some(&alice), Some(body)).await;
        assert_eq!(status, 200, "{body}: {json}");
        assert_eq!(s.engine.call(&s.acme, &call.id).unwrap().recording(), want);
    }
    for body in ["{", r#"{"value": "yes"}"#, "{}", ""] {
        let (status, json, _) = s.req(Method::PUT, &rec_url, Some(&alice), Some(body)).await;
        assert_sipgate_error(status, &json, 400);
    }
    let (_, list, _) = s.req(Method::GET, "/v2/calls", Some(&alice), None).await;
    assert_eq!(list["data"][0]["recording"], false);
    let recs = s
        .store
        .recordings(&s.acme, Some(&call.id), 10)
        .await
        .unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].state, "complete");

    // DTMF goes to the remote party of the token user; invalid characters are a 400; a user
    // who is not on the call gets a 409.
    let dtmf_url = format!("/v2/calls/{}/dtmf", call.id);
    for body in [
        r#"{"sequence": "12X"}"#,
        r#"{"sequence": ""}"#,
        r#"{"digits": "1"}"#,
        "{",
    ] {
        let (status, json, _) = s
            .req(Method::POST, &dtmf_url, Some(&alice), Some(body))
            .await;
        assert_sipgate_error(status, &json, 400);
    }
    let (status, json, _) = s
        .req(
            Method::POST,
            &dtmf_url,
            Some(&bob),
            Some(r#"{"sequence": "1"}"#),
        )
        .await;
    assert_sipgate_error(status, &json, 404);
    let (status, _, _) = s
        .req(
            Method::POST,
            &dtmf_url,
            Some(&alice),
            Some(r#"{"sequence": "*12345#abcd"}"#),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.engine.call(&s.acme, &call.id).unwrap().state,
        CallState::Answered
    );

    // Hangup: BYE to both, then 404.
    let (pm, cm) = (s.phone.mark(), s.carrier.mark());
    let (status, _, _) = s
        .req(
            Method::DELETE,
            &format!("/v2/calls/{}", call.id),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    s.phone
        .wait(pm, Duration::from_secs(5), |m| is_request(m, "BYE"))
        .await;
    s.carrier
        .wait(cm, Duration::from_secs(5), |m| is_request(m, "BYE"))
        .await;
    s.wait_no_calls().await;
    let (status, json, _) = s
        .req(
            Method::PUT,
            &hold_url,
            Some(&alice),
            Some(r#"{"value": true}"#),
        )
        .await;
    assert_sipgate_error(status, &json, 404);
    assert_eq!(json["message"], NOT_FOUND);
    s.shutdown().await;
}

#[tokio::test]
async fn ringing_call_hold_conflicts_and_hangup_cancels() {
    let s = TestServer::start(Answer::Ring).await;
    let alice = token(&s, "201@acme.local", "secret201").await;
    let call = s.place_call().await;
    let (_, list, _) = s.req(Method::GET, "/v2/calls", Some(&alice), None).await;
    assert_eq!(list["data"][0]["callId"], call.id.as_str());
    let (status, json, _) = s
        .req(
            Method::PUT,
            &format!("/v2/calls/{}/hold", call.id),
            Some(&alice),
            Some(r#"{"value": true}"#),
        )
        .await;
    assert_sipgate_error(status, &json, 409);
    let mark = s.phone.mark();
    let (status, _, _) = s
        .req(
            Method::DELETE,
            &format!("/v2/calls/{}", call.id),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    s.phone
        .wait(mark, Duration::from_secs(5), |m| is_request(m, "CANCEL"))
        .await;
    s.wait_no_calls().await;
    s.shutdown().await;
}

#[tokio::test]
async fn tokens_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("hookflash-api-restart-{}", uuid::Uuid::new_v4()));
    let s = TestServer::start_in(&dir, Answer::Answer).await;
    let t = token(&s, "201@acme.local", "secret201").await;
    s.shutdown().await;
    s.store.close().await;
    drop(s);
    let s = TestServer::start_in(&dir, Answer::Answer).await;
    let (status, body, _) = s.req(Method::GET, "/v2/calls", Some(&t), None).await;
    assert_eq!(status, 200, "{body}");
    s.shutdown().await;
    s.store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

type Form = Vec<(String, String)>;

#[derive(Clone, Default)]
struct Hooks {
    got: Arc<Mutex<Vec<Form>>>,
    base: Arc<Mutex<String>>,
    /// newCall answers 503 this many times first.
    fail_first: Arc<Mutex<u32>>,
}

async fn hook(State(h): State<Hooks>, body: axum::body::Bytes) -> axum::response::Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let event = form
        .iter()
        .find(|(k, _)| k == "event")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if event == "newCall" {
        let mut f = h.fail_first.lock().unwrap();
        if *f > 0 {
            *f -= 1;
            h.got.lock().unwrap().push(vec![("failed".into(), event)]);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    h.got.lock().unwrap().push(form);
    let base = h.base.lock().unwrap().clone();
    (
        [("content-type", "application/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onAnswer=\"{base}/follow\" onHangup=\"{base}/follow\"/>"
        ),
    )
        .into_response()
}

#[tokio::test]
async fn push_webhooks_newcall_answer_hangup() {
    let s = TestServer::start(Answer::Answer).await;
    let hooks = Hooks::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/follow", post(hook))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *hooks.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert!(s
        .store
        .set_user_webhook(&s.acme, "201", Some(&format!("{base}/hook")))
        .await
        .unwrap());

    let call = s.place_call().await;
    let alice = token(&s, "201@acme.local", "secret201").await;
    // Wait until newCall (awaited before the call rang) and answer arrived, then hang up.
    let wait_events = |n: usize| {
        let hooks = hooks.clone();
        async move {
            for _ in 0..100 {
                let got = hooks.got.lock().unwrap().clone();
                if got
                    .iter()
                    .filter(|f| !f.iter().any(|(k, _)| k == "failed"))
                    .count()
                    >= n
                {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            hooks.got.lock().unwrap().clone()
        }
    };
    let got = wait_events(2).await;
    let (status, _, _) = s
        .req(
            Method::DELETE,
            &format!("/v2/calls/{}", call.id),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let got_all = wait_events(3).await;
    assert!(got.len() >= 2, "{got:?}");
    let get =
        |f: &Vec<(String, String)>, k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let events: Vec<&Vec<(String, String)>> = got_all.iter().collect();
    let kinds: Vec<String> = events.iter().map(|f| get(f, "event").unwrap()).collect();
    assert_eq!(kinds, vec!["newCall", "answer", "hangup"], "{got_all:?}");
    let new_call = events[0];
    assert_eq!(get(new_call, "direction").as_deref(), Some("in"));
    assert_eq!(get(new_call, "from").as_deref(), Some("4915799912345"));
    assert_eq!(get(new_call, "to").as_deref(), Some("4930123456"));
    assert_eq!(get(new_call, "callId").as_deref(), Some(call.id.as_str()));
    assert_eq!(get(new_call, "user[]").as_deref(), Some("Alice"));
    assert_eq!(get(new_call, "userId[]").as_deref(), Some("201"));
    assert_eq!(
        get(new_call, "fullUserId[]").as_deref(),
        Some("201@acme.local")
    );
    assert!(get(new_call, "origCallId").is_some() && get(new_call, "xcid").is_some());
    assert_eq!(
        get(events[1], "answeringNumber").as_deref(),
        Some("4930123456")
    );
    assert_eq!(get(events[1], "user").as_deref(), Some("Alice"));
    assert_eq!(get(events[2], "cause").as_deref(), Some("normalClearing"));
    assert!(events
        .iter()
        .all(|f| f.iter().all(|(_, v)| !v.starts_with('+'))));
    s.shutdown().await;
}

#[tokio::test]
async fn a_failing_newcall_answer_is_not_retried_and_the_call_rings() {
    let s = TestServer::start(Answer::Answer).await;
    let hooks = Hooks::default();
    *hooks.fail_first.lock().unwrap() = 5;
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *hooks.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert!(s
        .store
        .set_user_webhook(&s.acme, "201", Some(&format!("{base}/hook")))
        .await
        .unwrap());
    // The phone rings (place_call waits for its INVITE) although newCall answered 503.
    let call = s.place_call().await;
    let alice = token(&s, "201@acme.local", "secret201").await;
    let (status, _, _) = s
        .req(
            Method::DELETE,
            &format!("/v2/calls/{}", call.id),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    s.wait_no_calls().await;
    // One attempt: a ringing call does not wait for retries.
    assert_eq!(
        hooks.got.lock().unwrap().clone(),
        vec![vec![("failed".to_string(), "newCall".to_string())]]
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_dead_webhook_never_delays_calls() {
    let s = TestServer::start(Answer::Answer).await;
    // Nothing listens there: every delivery fails and is retried in the background.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    s.store
        .set_user_webhook(&s.acme, "201", Some(&url))
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let call = s.place_call().await;
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let alice = token(&s, "201@acme.local", "secret201").await;
    let (status, _, _) = s
        .req(
            Method::DELETE,
            &format!("/v2/calls/{}", call.id),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    s.wait_no_calls().await;
    s.shutdown().await;
}

#[tokio::test]
async fn history_lists_the_users_calls_with_downloadable_recordings() {
    let s = TestServer::start(Answer::Answer).await;
    let alice = token(&s, "201@acme.local", "secret201").await;
    let bob = token(&s, "202@acme.local", "secret202").await;
    let zed = token(&s, "301@beta.local", "secret301").await;
    let call = s.place_call().await;
    let rec_url = format!("/v2/calls/{}/recording", call.id);
    let (status, _, _) = s
        .req(
            Method::PUT,
            &rec_url,
            Some(&alice),
            Some(r#"{"value": true, "announcement": false}"#),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The recording stops with the call.
    let (status, _, _) = s
        .req(
            Method::DELETE,
            &format!("/v2/calls/{}", call.id),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    s.wait_no_calls().await;
    let mut page = Value::Null;
    for _ in 0..100 {
        let (status, p, _) = s.req(Method::GET, "/v2/history", Some(&alice), None).await;
        assert_eq!(status, 200, "{p}");
        let done = p["items"][0]["recordings"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        page = p;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(page["totalCount"], 1, "{page}");
    let item = &page["items"][0];
    assert_eq!(item["type"], "CALL");
    assert_eq!(item["callId"], call.id.as_str());
    assert_eq!(item["id"], call.id.as_str());
    assert_eq!(item["direction"], "INCOMING");
    assert_eq!(item["incoming"], true);
    assert_eq!(item["status"], "PICKUP");
    assert_eq!(item["callStatus"], "SUCCESS");
    assert_eq!(item["source"], CALLER);
    assert_eq!(item["target"], DID);
    assert_eq!(item["targetAlias"], "Alice");
    assert!(item["duration"].is_i64(), "{item}");
    for k in ["created", "lastModified"] {
        let v = item[k].as_str().unwrap();
        assert!(
            v.len() == 24 && v.ends_with('Z') && v.as_bytes()[10] == b'T',
            "{k}: {v}"
        );
    }
    let recs = item["recordings"].as_array().unwrap();
    assert_eq!(recs.len(), 1, "{item}");
    let url = recs[0]["url"].as_str().unwrap();
    let id = recs[0]["id"].as_str().unwrap();
    assert_eq!(url, format!("{}/v2/recordings/{id}", s.http), "{item}");
    assert_eq!(item["recordingUrl"], url);

    // The same through /v2/{userId}/history (extension or user id); not another user's.
    let (status, same, _) = s
        .req(
            Method::GET,
            "/v2/201/history?types=CALL",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!((status, &same["items"][0]["id"]), (200, &item["id"]));
    let (status, json, _) = s
        .req(Method::GET, "/v2/202/history", Some(&alice), None)
        .await;
    assert_sipgate_error(status, &json, 403);
    // Filters and pagination.
    for (q, n) in [
        ("types=SMS", 0),
        ("types=CALL&types=SMS", 1),
        ("directions=OUTGOING", 0),
        ("directions=INCOMING&directions=MISSED_INCOMING", 1),
        ("offset=1", 0),
        ("limit=1&offset=0", 1),
        ("from=2999-01-01T00:00:00.000Z", 0),
        ("to=2999-01-01T00:00:00.000Z", 1),
    ] {
        let (status, p, _) = s
            .req(Method::GET, &format!("/v2/history?{q}"), Some(&alice), None)
            .await;
        assert_eq!(status, 200, "{q}: {p}");
        assert_eq!(p["items"].as_array().unwrap().len(), n, "{q}: {p}");
    }
    for q in ["limit=0", "types=CALLS", "from=yesterday", "offset=-2"] {
        let (status, json, _) = s
            .req(Method::GET, &format!("/v2/history?{q}"), Some(&alice), None)
            .await;
        assert_sipgate_error(status, &json, 400);
    }
    // Bob was not on the call: empty history, and the recording is not his.
    let (_, p, _) = s.req(Method::GET, "/v2/history", Some(&bob), None).await;
    assert_eq!(p["totalCount"], 0, "{p}");

    // Download: a WAV for Alice; 404 for Bob, for another account and for unknown ids; 401
    // without credentials.
    let path = format!("/v2/recordings/{id}");
    let resp = s
        .client
        .get(url)
        .header("Authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    let wav = resp.bytes().await.unwrap();
    assert!(wav.len() >= 44 && &wav[..4] == b"RIFF" && &wav[8..12] == b"WAVE");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "stereo");
    for who in [&bob, &zed] {
        let (status, json, _) = s.req(Method::GET, &path, Some(who), None).await;
        assert_sipgate_error(status, &json, 404);
    }
    let (status, json, _) = s
        .req(Method::GET, "/v2/recordings/nope", Some(&alice), None)
        .await;
    assert_sipgate_error(status, &json, 404);
    let (status, json, _) = s.req(Method::GET, &path, None, None).await;
    assert_sipgate_error(status, &json, 401);
    s.shutdown().await;
}

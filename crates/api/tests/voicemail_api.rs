//! The native API's voicemail and flip-target routes against a real engine and a store on disk:
//! mailbox on/off, greeting upload (converted to 8 kHz mono, 400 for non-WAV, 413 for too
//! large), the messages (list, get, audio, delete with the file), forwardings (validation,
//! replace), auth and account isolation.

mod support;

use std::path::PathBuf;

use hookflash_media::wav::{encode_pcm16, Pcm16Spec};
use hookflash_store::VoicemailMessage;
use reqwest::Method;
use serde_json::{json, Value};
use support::sip_ua::Answer;
use support::{bearer, TestServer, API_KEY_A, API_KEY_B};

fn a() -> String {
    bearer(API_KEY_A)
}

fn b() -> String {
    bearer(API_KEY_B)
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("hookflash-vm-test-{}", uuid::Uuid::new_v4()))
}

/// A 16-bit PCM WAV of a sine, `rate` Hz, `channels` channels, `frames` frames.
fn wav(rate: u32, channels: u16, frames: usize) -> Vec<u8> {
    let samples: Vec<i16> = (0..frames)
        .flat_map(|i| {
            let v = ((i as f32 * 0.05).sin() * 6000.0) as i16;
            std::iter::repeat_n(v, channels as usize)
        })
        .collect();
    let spec = Pcm16Spec {
        channels,
        sample_rate: rate,
    };
    encode_pcm16(spec, &samples).unwrap()
}

async fn put_bytes(s: &TestServer, path: &str, auth: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = s
        .client
        .put(s.url(path))
        .header("Authorization", auth)
        .header("Content-Type", "audio/wav")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn greetings_in(dir: &std::path::Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir.join("greetings")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn mailbox_switch_and_greeting_upload() {
    let dir = temp_dir();
    let s = TestServer::start_in(&dir, Answer::Answer).await;
    let alice = s
        .store
        .user_by_extension(&s.acme, "201")
        .await
        .unwrap()
        .unwrap();

    let (status, body, _) = s
        .req(Method::GET, "/api/v1/users/201/voicemail", Some(&a()), None)
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"enabled": false, "greeting": "default"}))
    );
    let (status, body, _) = s
        .req(
            Method::PUT,
            "/api/v1/users/201/voicemail",
            Some(&a()),
            Some(r#"{"enabled": true}"#),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"enabled": true, "greeting": "default"}))
    );
    assert!(s.store.mailbox(&alice.id).await.unwrap().unwrap().enabled);

    // Bad bodies, unknown users, other accounts, no key.
    for body in [
        "",
        "{}",
        r#"{"enabled": "yes"}"#,
        r#"{"enabled": true, "x": 1}"#,
    ] {
        let (status, json, _) = s
            .req(
                Method::PUT,
                "/api/v1/users/201/voicemail",
                Some(&a()),
                Some(body),
            )
            .await;
        assert_error(status, &json, 400, "invalid_request");
    }
    let (status, json, _) = s
        .req(Method::GET, "/api/v1/users/999/voicemail", Some(&a()), None)
        .await;
    assert_error(status, &json, 404, "not_found");
    let (status, json, _) = s
        .req(Method::GET, "/api/v1/users/201/voicemail", Some(&b()), None)
        .await;
    assert_error(status, &json, 404, "not_found");
    let (status, json, _) = s
        .req(Method::GET, "/api/v1/users/201/voicemail", None, None)
        .await;
    assert_error(status, &json, 401, "unauthorized");

    // Greeting: a 16 kHz stereo WAV is stored as 8 kHz mono under data_dir/greetings.
    let (status, body) = put_bytes(
        &s,
        "/api/v1/users/201/voicemail/greeting",
        &a(),
        wav(16000, 2, 16000),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"enabled": true, "greeting": "custom"}))
    );
    let path = s
        .store
        .mailbox(&alice.id)
        .await
        .unwrap()
        .unwrap()
        .greeting_path
        .unwrap();
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(u16::from_le_bytes([stored[22], stored[23]]), 1, "mono");
    assert_eq!(
        u32::from_le_bytes([stored[24], stored[25], stored[26], stored[27]]),
        8000
    );
    assert_eq!(greetings_in(&dir), vec![PathBuf::from(&path)]);

    // A new upload replaces the file.
    let (status, _) = put_bytes(
        &s,
        "/api/v1/users/201/voicemail/greeting",
        &a(),
        wav(8000, 1, 4000),
    )
    .await;
    assert_eq!(status, 200);
    let new_path = s
        .store
        .mailbox(&alice.id)
        .await
        .unwrap()
        .unwrap()
        .greeting_path
        .unwrap();
    assert_ne!(new_path, path);
    assert_eq!(greetings_in(&dir), vec![PathBuf::from(&new_path)]);

    // Not a WAV, empty, too large; the greeting stays.
    let (status, json) = put_bytes(
        &s,
        "/api/v1/users/201/voicemail/greeting",
        &a(),
        b"ID3 this is an mp3".to_vec(),
    )
    .await;
    assert_error(status, &json, 400, "invalid_request");
    assert!(
        json["error"]["message"].as_str().unwrap().contains("WAV"),
        "{json}"
    );
    let (status, json) =
        put_bytes(&s, "/api/v1/users/201/voicemail/greeting", &a(), Vec::new()).await;
    assert_error(status, &json, 400, "invalid_request");
    let (status, json) = put_bytes(
        &s,
        "/api/v1/users/201/voicemail/greeting",
        &a(),
        vec![0u8; 10 * 1024 * 1024 + 1],
    )
    .await;
    assert_error(status, &json, 413, "payload_too_large");
    let (status, json) = put_bytes(
        &s,
        "/api/v1/users/999/voicemail/greeting",
        &a(),
        wav(8000, 1, 800),
    )
    .await;
    assert_error(status, &json, 404, "not_found");
    let (status, json) = put_bytes(
        &s,
        "/api/v1/users/201/voicemail/greeting",
        &b(),
        wav(8000, 1, 800),
    )
    .await;
    assert_error(status, &json, 404, "not_found");
    assert_eq!(
        s.store
            .mailbox(&alice.id)
            .await
            .unwrap()
            .unwrap()
            .greeting_path,
        Some(new_path.clone())
    );

    // Switching off keeps the greeting; deleting it goes back to the default and removes the
    // file.
    let (status, body, _) = s
        .req(
            Method::PUT,
            "/api/v1/users/201/voicemail",
            Some(&a()),
            Some(r#"{"enabled": false}"#),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"enabled": false, "greeting": "custom"}))
    );
    let (status, body, _) = s
        .req(
            Method::DELETE,
            "/api/v1/users/201/voicemail/greeting",
            Some(&a()),
            None,
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"enabled": false, "greeting": "default"}))
    );
    assert!(greetings_in(&dir).is_empty());
    // Idempotent.
    let (status, _, _) = s
        .req(
            Method::DELETE,
            "/api/v1/users/201/voicemail/greeting",
            Some(&a()),
            None,
        )
        .await;
    assert_eq!(status, 200);

    s.shutdown().await;
    s.store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn voicemail_messages_list_get_audio_delete() {
    let dir = temp_dir();
    let s = TestServer::start_in(&dir, Answer::Answer).await;
    let alice = s
        .store
        .user_by_extension(&s.acme, "201")
        .await
        .unwrap()
        .unwrap();
    let bob = s
        .store
        .user_by_extension(&s.acme, "202")
        .await
        .unwrap()
        .unwrap();
    std::fs::create_dir_all(dir.join("voicemail")).unwrap();
    let audio = wav(8000, 1, 800);
    let msg = |id: &str, user: &str, created: i64, state: &str| {
        let path = dir.join("voicemail").join(format!("{id}.wav"));
        std::fs::write(&path, &audio).unwrap();
        VoicemailMessage {
            id: id.into(),
            account_id: s.acme.clone(),
            user_id: user.into(),
            call_id: format!("call-{id}"),
            caller: "+4915799912345".into(),
            caller_name: Some("Carol".into()),
            path: path.to_string_lossy().into_owned(),
            state: state.into(),
            created_at: created,
            duration_ms: (state != "recording").then_some(100),
            bytes: (state != "recording").then_some(audio.len() as i64),
        }
    };
    let m1 = msg("m1", &alice.id, 1_000, "complete");
    let m2 = msg("m2", &bob.id, 2_000, "complete");
    let m3 = msg("m3", &alice.id, 3_000, "recording");
    for m in [&m1, &m2, &m3] {
        s.store.insert_voicemail(m).await.unwrap();
    }

    let (status, list, _) = s
        .req(Method::GET, "/api/v1/voicemail", Some(&a()), None)
        .await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["m3", "m2", "m1"]);
    assert_eq!(
        list["messages"][2],
        json!({
            "id": "m1",
            "user_extension": "201",
            "call_id": "call-m1",
            "caller": "+4915799912345",
            "caller_name": "Carol",
            "state": "complete",
            "created_at_ms": 1000,
            "duration_ms": 100,
            "bytes": audio.len(),
            "audio_url": "/api/v1/voicemail/m1/audio",
        })
    );
    assert_eq!(list["messages"][1]["user_extension"], "202");
    let (status, list, _) = s
        .req(
            Method::GET,
            "/api/v1/voicemail?user=201&limit=1",
            Some(&a()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["messages"].as_array().unwrap().len(), 1);
    assert_eq!(list["messages"][0]["id"], "m3");
    for bad in ["?limit=0", "?limit=1001", "?limit=x", "?bogus=1"] {
        let (status, json, _) = s
            .req(
                Method::GET,
                &format!("/api/v1/voicemail{bad}"),
                Some(&a()),
                None,
            )
            .await;
        assert_error(status, &json, 400, "invalid_request");
    }
    let (status, json, _) = s
        .req(Method::GET, "/api/v1/voicemail?user=999", Some(&a()), None)
        .await;
    assert_error(status, &json, 404, "not_found");
    // The other account sees nothing of it.
    let (status, list, _) = s
        .req(Method::GET, "/api/v1/voicemail", Some(&b()), None)
        .await;
    assert_eq!((status, list), (200, json!({"messages": []})));
    for (m, p) in [
        (Method::GET, "/api/v1/voicemail/m1"),
        (Method::GET, "/api/v1/voicemail/m1/audio"),
        (Method::DELETE, "/api/v1/voicemail/m1"),
    ] {
        let (status, json, _) = s.req(m, p, Some(&b()), None).await;
        assert_error(status, &json, 404, "not_found");
    }

    let (status, one, _) = s
        .req(Method::GET, "/api/v1/voicemail/m2", Some(&a()), None)
        .await;
    assert_eq!((status, one["user_extension"].as_str()), (200, Some("202")));

    // Audio: the WAV, once complete.
    let resp = s
        .client
        .get(s.url("/api/v1/voicemail/m1/audio"))
        .header("Authorization", a())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), audio);
    let (status, json, _) = s
        .req(Method::GET, "/api/v1/voicemail/m3/audio", Some(&a()), None)
        .await;
    assert_error(status, &json, 409, "wrong_state");

    // Delete: 204 and the file is gone; a message being left cannot be deleted.
    let (status, _, _) = s
        .req(Method::DELETE, "/api/v1/voicemail/m1", Some(&a()), None)
        .await;
    assert_eq!(status, 204);
    assert!(!std::path::Path::new(&m1.path).exists());
    for (m, p) in [
        (Method::GET, "/api/v1/voicemail/m1"),
        (Method::GET, "/api/v1/voicemail/m1/audio"),
        (Method::DELETE, "/api/v1/voicemail/m1"),
    ] {
        let (status, json, _) = s.req(m, p, Some(&a()), None).await;
        assert_error(status, &json, 404, "not_found");
    }
    let (status, json, _) = s
        .req(Method::DELETE, "/api/v1/voicemail/m3", Some(&a()), None)
        .await;
    assert_error(status, &json, 409, "wrong_state");
    assert!(std::path::Path::new(&m3.path).exists());

    // A message whose file is gone: listed, but its audio is a 404; deleting it works.
    std::fs::remove_file(&m2.path).unwrap();
    let (status, json, _) = s
        .req(Method::GET, "/api/v1/voicemail/m2/audio", Some(&a()), None)
        .await;
    assert_error(status, &json, 404, "not_found");
    let (status, _, _) = s
        .req(Method::DELETE, "/api/v1/voicemail/m2", Some(&a()), None)
        .await;
    assert_eq!(status, 204);

    s.shutdown().await;
    s.store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn forwardings_are_validated_and_replaced() {
    let s = TestServer::start(Answer::Answer).await;
    let path = "/api/v1/users/201/forwardings";
    let (status, body, _) = s.req(Method::GET, path, Some(&a()), None).await;
    assert_eq!((status, body), (200, json!({"forwardings": []})));

    let (status, body, _) = s
        .req(
            Method::PUT,
            path,
            Some(&a()),
            Some(
                r#"{"forwardings": [
                    {"flip_id": "mobile", "number": "+49 170 123-4567", "label": "Mobile"},
                    {"flip_id": "home", "number": "030 123456"}
                ]}"#,
            ),
        )
        .await;
    let want = json!({"forwardings": [
        {"flip_id": "home", "number": "030123456", "label": null},
        {"flip_id": "mobile", "number": "+491701234567", "label": "Mobile"},
    ]});
    assert_eq!((status, &body), (200, &want));
    let (status, body, _) = s.req(Method::GET, path, Some(&a()), None).await;
    assert_eq!((status, body), (200, want));
    let alice = s
        .store
        .user_by_extension(&s.acme, "201")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.store
            .forwarding(&alice.id, "mobile")
            .await
            .unwrap()
            .unwrap()
            .number,
        "+491701234567"
    );

    // Every invalid list is a 400 and changes nothing.
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"flip_id": format!("f{i}"), "number": "1"}))
        .collect();
    let eleven = json!({ "forwardings": eleven }).to_string();
    for bad in [
        "",
        "{}",
        r#"{"forwardings": [{"flip_id": "", "number": "1"}]}"#,
        r#"{"forwardings": [{"flip_id": "seventeen-chars-x", "number": "1"}]}"#,
        r#"{"forwardings": [{"flip_id": "a b", "number": "1"}]}"#,
        r#"{"forwardings": [{"flip_id": "a", "number": "sip:x@y"}]}"#,
        r#"{"forwardings": [{"flip_id": "a", "number": "1"}, {"flip_id": "a", "number": "2"}]}"#,
        r#"{"forwardings": [{"flip_id": "a", "number": "1", "extra": true}]}"#,
        eleven.as_str(),
    ] {
        let (status, json, _) = s.req(Method::PUT, path, Some(&a()), Some(bad)).await;
        assert_error(status, &json, 400, "invalid_request");
    }
    assert_eq!(s.store.forwardings(&alice.id).await.unwrap().len(), 2);

    // Replace with an empty list.
    let (status, body, _) = s
        .req(
            Method::PUT,
            path,
            Some(&a()),
            Some(r#"{"forwardings": []}"#),
        )
        .await;
    assert_eq!((status, body), (200, json!({"forwardings": []})));

    // Unknown user, other account.
    let (status, json, _) = s
        .req(
            Method::GET,
            "/api/v1/users/999/forwardings",
            Some(&a()),
            None,
        )
        .await;
    assert_error(status, &json, 404, "not_found");
    let (status, json, _) = s
        .req(
            Method::PUT,
            path,
            Some(&b()),
            Some(r#"{"forwardings": []}"#),
        )
        .await;
    assert_error(status, &json, 404, "not_found");
    s.shutdown().await;
}

#[tokio::test]
async fn openapi_documents_the_voicemail_routes() {
    let s = TestServer::start(Answer::Answer).await;
    let (status, doc, _) = s.req(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    for (path, methods) in [
        ("/api/v1/users/{extension}/voicemail", &["get", "put"][..]),
        (
            "/api/v1/users/{extension}/voicemail/greeting",
            &["put", "delete"][..],
        ),
        ("/api/v1/voicemail", &["get"][..]),
        ("/api/v1/voicemail/{message_id}", &["get", "delete"][..]),
        ("/api/v1/voicemail/{message_id}/audio", &["get"][..]),
        ("/api/v1/users/{extension}/forwardings", &["get", "put"][..]),
    ] {
        for m in methods {
            assert!(doc["paths"][path][m].is_object(), "{m} {path} missing");
        }
    }
    for schema in [
        "MailboxView",
        "Voicemail",
        "VoicemailList",
        "ForwardingList",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    s.shutdown().await;
}

//! The account and applications routes of the native API against a real server over real
//! HTTP: CRUD, numbers routed to applications, validation, conflicts, isolation between
//! accounts, and the OpenAPI description of them.

mod support;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};
use support::sip_ua::Answer;
use support::{bearer, TestServer, API_KEY_A, API_KEY_B, DID};

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

fn app_body(name: &str) -> String {
    json!({
        "name": name,
        "call_hook": {"url": "http://127.0.0.1:9/call"},
        "call_status_hook": {"url": "http://127.0.0.1:9/status", "method": "GET",
                             "username": "hf", "password": "s3cret"},
        "fallback": null,
    })
    .to_string()
}

#[tokio::test]
async fn account_shows_the_keys_account_and_a_stable_webhook_secret() {
    let s = TestServer::start(Answer::Answer).await;
    let (status, acc, _) = s
        .req(Method::GET, "/api/v1/account", Some(&a()), None)
        .await;
    assert_eq!(status, 200, "{acc}");
    assert_eq!(acc["id"], s.acme.as_str());
    assert_eq!(acc["name"], "acme");
    assert_eq!(acc["realm"], "acme.local");
    let secret = acc["webhook_secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32, "{acc}");
    let (_, again, _) = s
        .req(Method::GET, "/api/v1/account", Some(&a()), None)
        .await;
    assert_eq!(again["webhook_secret"], secret.as_str());
    assert_eq!(
        s.store.account_webhook_secret(&s.acme).await.unwrap(),
        secret
    );
    let (_, other, _) = s
        .req(Method::GET, "/api/v1/account", Some(&b()), None)
        .await;
    assert_eq!(other["name"], "beta");
    assert_ne!(other["webhook_secret"], secret.as_str());
    let (status, body, _) = s.req(Method::GET, "/api/v1/account", None, None).await;
    assert_error(status, &body, 401, "unauthorized");
    s.shutdown().await;
}

#[tokio::test]
async fn applications_crud_and_numbers() {
    let s = TestServer::start(Answer::Answer).await;
    let (status, list, _) = s
        .req(Method::GET, "/api/v1/applications", Some(&a()), None)
        .await;
    assert_eq!((status, list), (200, json!({"applications": []})));

    let (status, app, _) = s
        .req(
            Method::POST,
            "/api/v1/applications",
            Some(&a()),
            Some(&app_body(" ivr ")),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let id = app["id"].as_str().unwrap().to_string();
    assert_eq!(app["name"], "ivr");
    assert_eq!(
        app["call_hook"],
        json!({"url": "http://127.0.0.1:9/call", "method": "POST", "username": null,
               "password_set": false})
    );
    assert_eq!(
        app["call_status_hook"],
        json!({"url": "http://127.0.0.1:9/status", "method": "GET", "username": "hf",
               "password_set": true})
    );
    assert_eq!(app["fallback"], Value::Null);
    assert!(app["created_at"].as_i64().unwrap() > 0);
    assert!(!app.to_string().contains("s3cret"), "{app}");
    // The store has the password (the runtime needs it).
    let stored = s.store.application(&s.acme, &id).await.unwrap().unwrap();
    assert_eq!(
        stored.call_status_hook.unwrap().password.as_deref(),
        Some("s3cret")
    );

    let (status, got, _) = s
        .req(
            Method::GET,
            &format!("/api/v1/applications/{id}"),
            Some(&a()),
            None,
        )
        .await;
    assert_eq!((status, &got), (200, &app));
    let (_, list, _) = s
        .req(Method::GET, "/api/v1/applications", Some(&a()), None)
        .await;
    assert_eq!(list["applications"], json!([app]));

    // Same name: 409.
    let (status, body, _) = s
        .req(
            Method::POST,
            "/api/v1/applications",
            Some(&a()),
            Some(&app_body("ivr")),
        )
        .await;
    assert_error(status, &body, 409, "conflict");

    // PUT replaces: the status hook goes, a fallback comes.
    let put =
        json!({"name": "ivr2", "call_hook": {"url": "https://app.example/call", "method": "GET"},
                     "fallback": {"url": "https://app.example/fb"}})
        .to_string();
    let (status, upd, _) = s
        .req(
            Method::PUT,
            &format!("/api/v1/applications/{id}"),
            Some(&a()),
            Some(&put),
        )
        .await;
    assert_eq!(status, 200, "{upd}");
    assert_eq!(upd["name"], "ivr2");
    assert_eq!(upd["call_hook"]["method"], "GET");
    assert_eq!(upd["call_status_hook"], Value::Null);
    assert_eq!(upd["fallback"]["url"], "https://app.example/fb");
    assert_eq!(upd["created_at"], app["created_at"]);

    // Numbers.
    let numbers_path = format!("/api/v1/applications/{id}/numbers");
    let (status, n, _) = s
        .req(
            Method::POST,
            &numbers_path,
            Some(&a()),
            Some(r#"{"number": "+49 30 999-000"}"#),
        )
        .await;
    assert_eq!(status, 201, "{n}");
    assert_eq!(n["number"], "+4930999000");
    assert_eq!(n["application_id"], id.as_str());
    let number_id = n["id"].as_str().unwrap().to_string();
    let routed = s.store.application_for_number("4930999000").await.unwrap();
    assert_eq!(routed.map(|x| x.id), Some(id.clone()));
    let (status, list, _) = s.req(Method::GET, &numbers_path, Some(&a()), None).await;
    assert_eq!((status, list), (200, json!({"numbers": [n]})));

    // Taken: by this application, by a user (the DID rings 201), by another account.
    for number in ["4930999000", DID] {
        let (status, body, _) = s
            .req(
                Method::POST,
                &numbers_path,
                Some(&a()),
                Some(&json!({ "number": number }).to_string()),
            )
            .await;
        assert_error(status, &body, 409, "conflict");
    }
    for bad in [
        r#"{"number": "abc"}"#,
        r#"{"number": "+123456789012345678901"}"#,
        r#"{"number": 4930}"#,
        r#"{}"#,
        r#"{"number": "4930", "x": 1}"#,
        "",
    ] {
        let (status, body, _) = s
            .req(Method::POST, &numbers_path, Some(&a()), Some(bad))
            .await;
        assert_error(status, &body, 400, "invalid_request");
    }

    // Unroute: unknown number ids are 404; a second delete too.
    let (status, body, _) = s
        .req(
            Method::DELETE,
            &format!("{numbers_path}/no-such-number"),
            Some(&a()),
            None,
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, _, _) = s
        .req(
            Method::DELETE,
            &format!("{numbers_path}/{number_id}"),
            Some(&a()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        s.store.application_for_number("4930999000").await.unwrap(),
        None
    );
    let (status, body, _) = s
        .req(
            Method::DELETE,
            &format!("{numbers_path}/{number_id}"),
            Some(&a()),
            None,
        )
        .await;
    assert_error(status, &body, 404, "not_found");

    // Delete the application: its numbers are freed.
    let (status, _, _) = s
        .req(
            Method::POST,
            &numbers_path,
            Some(&a()),
            Some(r#"{"number": "4930999001"}"#),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, _) = s
        .req(
            Method::DELETE,
            &format!("/api/v1/applications/{id}"),
            Some(&a()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        s.store.application_for_number("4930999001").await.unwrap(),
        None
    );
    for (m, body) in [
        (Method::GET, None),
        (Method::PUT, Some(put.as_str())),
        (Method::DELETE, None),
    ] {
        let (status, json, _) = s
            .req(
                m.clone(),
                &format!("/api/v1/applications/{id}"),
                Some(&a()),
                body,
            )
            .await;
        assert_error(status, &json, 404, "not_found");
    }
    let (status, json, _) = s.req(Method::GET, &numbers_path, Some(&a()), None).await;
    assert_error(status, &json, 404, "not_found");
    s.shutdown().await;
}

#[tokio::test]
async fn bad_application_bodies_are_400() {
    let s = TestServer::start(Answer::Answer).await;
    let hook = json!({"url": "http://127.0.0.1:9/call"});
    let bad = [
        json!({"call_hook": hook}),
        json!({"name": "x"}),
        json!({"name": "", "call_hook": hook}),
        json!({"name": "   ", "call_hook": hook}),
        json!({"name": "a\u{1}b", "call_hook": hook}),
        json!({"name": "x".repeat(129), "call_hook": hook}),
        json!({"name": "x", "call_hook": hook, "extra": 1}),
        json!({"name": "x", "call_hook": {"url": "ftp://h/"}}),
        json!({"name": "x", "call_hook": {"url": "http:///path"}}),
        json!({"name": "x", "call_hook": {"url": "http://h/ x"}}),
        json!({"name": "x", "call_hook": {"url": "http://h/", "method": "PUT"}}),
        json!({"name": "x", "call_hook": {"url": "http://h/", "method": "get"}}),
        json!({"name": "x", "call_hook": {"url": "http://h/", "password": "p"}}),
        json!({"name": "x", "call_hook": {"url": "http://h/", "username": "a:b", "password": "p"}}),
        json!({"name": "x", "call_hook": {"url": "http://h/", "username": ""}}),
        json!({"name": "x", "call_hook": {"url": "http://h/", "headers": {}}}),
        json!({"name": "x", "call_hook": hook, "fallback": "http://h/"}),
        json!({"name": "x", "call_hook": hook, "call_status_hook": {"url": "nope"}}),
        json!([]),
    ];
    for body in &bad {
        let (status, json, _) = s
            .req(
                Method::POST,
                "/api/v1/applications",
                Some(&a()),
                Some(&body.to_string()),
            )
            .await;
        assert_error(status, &json, 400, "invalid_request");
    }
    let (status, json, _) = s
        .req(Method::POST, "/api/v1/applications", Some(&a()), Some("{"))
        .await;
    assert_error(status, &json, 400, "invalid_request");
    assert!(s.store.applications(&s.acme).await.unwrap().is_empty());

    // The largest valid values are accepted.
    let long_url = format!("http://h/{}", "x".repeat(2048 - 9));
    let body = json!({"name": "ä".repeat(128), "call_hook": {"url": long_url,
                      "username": "u".repeat(256), "password": "p".repeat(256)}});
    let (status, json, _) = s
        .req(
            Method::POST,
            "/api/v1/applications",
            Some(&a()),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 201, "{json}");
    let too_long = json!({"name": "y", "call_hook": {"url": format!("{long_url}x")}});
    let (status, json, _) = s
        .req(
            Method::POST,
            "/api/v1/applications",
            Some(&a()),
            Some(&too_long.to_string()),
        )
        .await;
    assert_error(status, &json, 400, "invalid_request");
    s.shutdown().await;
}

#[tokio::test]
async fn applications_are_isolated_between_accounts() {
    let s = TestServer::start(Answer::Answer).await;
    let (status, app, _) = s
        .req(
            Method::POST,
            "/api/v1/applications",
            Some(&a()),
            Some(&app_body("ivr")),
        )
        .await;
    assert_eq!(status, 201);
    let id = app["id"].as_str().unwrap();
    let (status, n, _) = s
        .req(
            Method::POST,
            &format!("/api/v1/applications/{id}/numbers"),
            Some(&a()),
            Some(r#"{"number": "+4930999100"}"#),
        )
        .await;
    assert_eq!(status, 201);
    let number_id = n["id"].as_str().unwrap();

    // Account B sees none of it, cannot touch it, and may use the same name.
    let (_, list, _) = s
        .req(Method::GET, "/api/v1/applications", Some(&b()), None)
        .await;
    assert_eq!(list, json!({"applications": []}));
    let app_path = format!("/api/v1/applications/{id}");
    let put = app_body("stolen");
    for (m, path, body) in [
        (Method::GET, app_path.clone(), None),
        (Method::PUT, app_path.clone(), Some(put.as_str())),
        (Method::DELETE, app_path.clone(), None),
        (Method::GET, format!("{app_path}/numbers"), None),
        (
            Method::POST,
            format!("{app_path}/numbers"),
            Some(r#"{"number": "+4930999101"}"#),
        ),
        (
            Method::DELETE,
            format!("{app_path}/numbers/{number_id}"),
            None,
        ),
    ] {
        let (status, json, _) = s.req(m.clone(), &path, Some(&b()), body).await;
        assert_error(status, &json, 404, "not_found");
    }
    let (status, other, _) = s
        .req(
            Method::POST,
            "/api/v1/applications",
            Some(&b()),
            Some(&app_body("ivr")),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    // ... but not a number account A routed.
    let (status, json, _) = s
        .req(
            Method::POST,
            &format!(
                "/api/v1/applications/{}/numbers",
                other["id"].as_str().unwrap()
            ),
            Some(&b()),
            Some(r#"{"number": "4930999100"}"#),
        )
        .await;
    assert_error(status, &json, 409, "conflict");
    // A's application is unchanged.
    let (_, got, _) = s.req(Method::GET, &app_path, Some(&a()), None).await;
    assert_eq!(got, app);
    s.shutdown().await;
}

/// The document describes these routes precisely (schemathesis checks them in the e2e run).
#[test]
fn openapi_describes_the_application_routes() {
    let doc = serde_json::to_value(hookflash_api::native::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let statuses = |method: &str, path: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}"))
            .keys()
            .cloned()
            .collect()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let common = ["401", "403", "429", "500"];
    for (method, path, own) in [
        ("get", "/api/v1/account", &["200", "404"][..]),
        ("get", "/api/v1/applications", &["200"][..]),
        ("post", "/api/v1/applications", &["201", "400", "409"][..]),
        (
            "get",
            "/api/v1/applications/{application_id}",
            &["200", "404"][..],
        ),
        (
            "put",
            "/api/v1/applications/{application_id}",
            &["200", "400", "404", "409"][..],
        ),
        (
            "delete",
            "/api/v1/applications/{application_id}",
            &["204", "404"][..],
        ),
        (
            "get",
            "/api/v1/applications/{application_id}/numbers",
            &["200", "404"][..],
        ),
        (
            "post",
            "/api/v1/applications/{application_id}/numbers",
            &["201", "400", "404", "409"][..],
        ),
        (
            "delete",
            "/api/v1/applications/{application_id}/numbers/{number_id}",
            &["204", "404"][..],
        ),
    ] {
        let want: BTreeSet<String> = own
            .iter()
            .chain(common.iter())
            .map(|s| s.to_string())
            .collect();
        assert_eq!(statuses(method, path), want, "{method} {path}");
    }
    assert!(
        doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("conflict"))
    );

    let req = &schemas["ApplicationRequest"];
    assert_eq!(req["additionalProperties"], false);
    assert_eq!(
        req["required"].as_array().unwrap().len(),
        2,
        "name and call_hook: {req}"
    );
    assert_eq!(req["properties"]["name"]["maxLength"], 128);
    assert_eq!(req["properties"]["name"]["minLength"], 1);
    let hook = &schemas["HookRequest"]["oneOf"];
    assert_eq!(hook.as_array().unwrap().len(), 2, "{hook}");
    for variant in hook.as_array().unwrap() {
        assert_eq!(variant["additionalProperties"], false);
        assert_eq!(variant["properties"]["url"]["maxLength"], 2048);
        assert!(variant["properties"]["url"]["pattern"].is_string());
        assert_eq!(variant["properties"]["username"]["maxLength"], 256);
    }
    assert_eq!(
        set(&["url", "username", "password"]),
        hook[1]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    );
    assert!(schemas["NumberRequest"]["properties"]["number"]["pattern"].is_string());
    let view = &schemas["ApplicationView"]["properties"];
    assert!(view["call_hook"].is_object());
    let hook_view = &schemas["HookView"]["properties"];
    assert!(
        hook_view["password"].is_null(),
        "the password is never returned"
    );
    assert!(hook_view["password_set"].is_object());
    assert!(schemas["AccountView"]["properties"]["webhook_secret"].is_object());
}

//! Password guessing defence, token rules and the header read timeout over real HTTP:
//! failed logins ban the client's address (429 + Retry-After in each dialect's error shape,
//! without looking at the password), a login is locked across addresses, tokens issued before
//! a password change and tokens living longer than the maximum are refused, and a client that
//! sends its headers too slowly is disconnected.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use hookflash_api::guard::GuardConfig;
use hookflash_api::user_token::{self as jwt, Claims, MAX_TOKEN_LIFETIME_SECS};
use hookflash_api::HttpOptions;
use reqwest::Method;
use serde_json::Value;
use support::sip_ua::Answer;
use support::{basic, bearer, TestServer, API_KEY_A};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN_PATH: &str = "/login/sipgate-apps/protocol/openid-connect/token";

async fn login_from(
    s: &TestServer,
    client: &reqwest::Client,
    user: &str,
    pw: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = client
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
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

async fn login(s: &TestServer, user: &str, pw: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    login_from(s, &s.client, user, pw).await
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client whose connections come from `ip` (any 127/8 address is local on Linux).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn eleven_wrong_passwords_ban_the_source_even_for_the_right_password() {
    let s = TestServer::start(Answer::Answer).await;
    for i in 0..10 {
        let (status, body, _) = login(&s, "201@acme.local", &format!("wrong{i}")).await;
        assert_eq!(status, 401, "attempt {i}: {body}");
        assert_eq!(body["error"], "invalid_grant");
    }
    // The 11th failure within 60 s starts the ban.
    let (status, body, headers) = login(&s, "201@acme.local", "wrong10").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    let after = retry_after(&headers);
    assert!(after > 0 && after <= 300, "{after}");
    // The right password during the ban: still 429, the password is not looked at.
    let (status, body, headers) = login(&s, "201@acme.local", "secret201").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(retry_after(&headers) <= 300);
    // Also another user, and the other auth schemes and dialects from this address.
    let (status, _, _) = login(&s, "202@acme.local", "secret202").await;
    assert_eq!(status, 429);
    let (status, body, headers) = s
        .req(
            Method::GET,
            "/v2/calls",
            Some(&basic("202@acme.local", "secret202")),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].as_u64()),
        (429, Some(429)),
        "{body}"
    );
    assert!(retry_after(&headers) > 0);
    let (status, body, headers) = s
        .req(Method::GET, "/api/v1/calls", Some(&bearer(API_KEY_A)), None)
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(retry_after(&headers) > 0);
    // Another address is not banned.
    let other = client_from("127.0.0.2");
    let (status, body, _) = login_from(&s, &other, "201@acme.local", "secret201").await;
    assert_eq!(status, 200, "{body}");
    // The counters are on /metrics.
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("hookflash_http_auth_failures_total 11"),
        "{text}"
    );
    assert!(
        text.contains("hookflash_http_auth_bans_total{scope=\"source\"} 1"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    s.shutdown().await;
}

#[tokio::test]
async fn a_login_is_locked_across_addresses_and_others_stay_usable() {
    // Only the identity limit applies here.
    let options = HttpOptions {
        auth_guard: GuardConfig {
            source_max_failures: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    let s = TestServer::start_opts(Answer::Answer, options).await;
    // 20 failures: Basic auth and the token endpoint count against the same login.
    for i in 0..10 {
        let (status, _, _) = s
            .req(
                Method::GET,
                "/v2/calls",
                Some(&basic("201@acme.local", &format!("w{i}"))),
                None,
            )
            .await;
        assert_eq!(status, 401);
        let (status, _, _) = login(&s, "201@acme.local", &format!("x{i}")).await;
        assert_eq!(status, 401);
    }
    let (status, _, headers) = login(&s, "201@ACME.local", "y").await;
    assert_eq!(status, 429);
    assert!(retry_after(&headers) <= 300);
    // Locked from another address too, with the right password.
    let other = client_from("127.0.0.3");
    let (status, _, _) = login_from(&s, &other, "201@acme.local", "secret201").await;
    assert_eq!(status, 429);
    // Another login from the first address works, and a success clears its own count only.
    let (status, body, _) = login(&s, "202@acme.local", "secret202").await;
    assert_eq!(status, 200, "{body}");
    s.shutdown().await;
}

#[tokio::test]
async fn wrong_api_keys_ban_the_source_on_the_native_api() {
    let s = TestServer::start(Answer::Answer).await;
    for i in 0..10 {
        let (status, body, _) = s
            .req(
                Method::GET,
                "/api/v1/calls",
                Some(&bearer(&format!("hf_guess_{i}"))),
                None,
            )
            .await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body, headers) = s
        .req(
            Method::GET,
            "/api/v1/calls",
            Some(&bearer("hf_guess_x")),
            None,
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(retry_after(&headers) > 0);
    // The right key during the ban: 429 too.
    let (status, _, _) = s
        .req(Method::GET, "/api/v1/calls", Some(&bearer(API_KEY_A)), None)
        .await;
    assert_eq!(status, 429);
    // Missing credentials are not guesses and get their 401 as before.
    let other = client_from("127.0.0.4");
    let resp = other.get(s.url("/api/v1/calls")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    s.shutdown().await;
}

#[tokio::test]
async fn a_token_issued_before_a_password_change_is_refused() {
    let s = TestServer::start(Answer::Answer).await;
    let (status, body, _) = login(&s, "201@acme.local", "secret201").await;
    assert_eq!(status, 200, "{body}");
    let old = bearer(body["token"].as_str().unwrap());
    let (status, _, _) = s.req(Method::GET, "/v2/calls", Some(&old), None).await;
    assert_eq!(status, 200);
    // The change lands in a later second than the token's iat.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(s
        .store
        .set_user_password(&s.acme, "201", "brand-new-201")
        .await
        .unwrap());
    let (status, body, headers) = s.req(Method::GET, "/v2/calls", Some(&old), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("password"),
        "{body}"
    );
    assert!(headers.get("www-authenticate").is_some());
    // A token with the new password works.
    let (status, body, _) = login(&s, "201@acme.local", "brand-new-201").await;
    assert_eq!(status, 200, "{body}");
    let new = bearer(body["token"].as_str().unwrap());
    let (status, _, _) = s.req(Method::GET, "/v2/calls", Some(&new), None).await;
    assert_eq!(status, 200);
    // Setting the same password again (as provisioning does at every start) revokes nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(s
        .store
        .set_user_password(&s.acme, "201", "brand-new-201")
        .await
        .unwrap());
    let (status, _, _) = s.req(Method::GET, "/v2/calls", Some(&new), None).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn tokens_live_at_most_the_maximum() {
    let s = TestServer::start(Answer::Answer).await;
    let alice = s
        .store
        .user_by_extension(&s.acme, "201")
        .await
        .unwrap()
        .unwrap();
    // Issued tokens: exp - iat <= the maximum, even when asked for more.
    let (status, body, _) = login(&s, "201@acme.local", "secret201").await;
    assert_eq!(status, 200);
    let claims = jwt::unverified_claims(body["token"].as_str().unwrap()).unwrap();
    assert!(claims.exp - claims.iat <= MAX_TOKEN_LIFETIME_SECS);
    assert!(body["expires_in"].as_i64().unwrap() <= MAX_TOKEN_LIFETIME_SECS);
    let keys = hookflash_api::user_token::KeyCell::default();
    let long =
        hookflash_api::sipgate::auth::issue_token(&s.engine, &keys, &alice, "acme.local", 86_400)
            .await
            .unwrap();
    let claims = jwt::unverified_claims(&long).unwrap();
    assert_eq!(claims.exp - claims.iat, MAX_TOKEN_LIFETIME_SECS);

    // A token signed with the server's own key but living longer: refused. (iat is now: the
    // user's password was set when the server started, and older tokens are refused anyway.)
    let key = s.store.server_secret(jwt::SECRET_NAME).await.unwrap();
    let make = |lifetime: i64| {
        let now = now_secs();
        jwt::sign(
            &Claims {
                iss: jwt::ISSUER.into(),
                sub: alice.id.clone(),
                acc: s.acme.clone(),
                preferred_username: "201@acme.local".into(),
                iat: now,
                exp: now + lifetime,
                jti: uuid::Uuid::new_v4().to_string(),
            },
            key.as_bytes(),
        )
    };
    let (status, _, _) = s
        .req(
            Method::GET,
            "/v2/calls",
            Some(&bearer(&make(MAX_TOKEN_LIFETIME_SECS))),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for lifetime in [MAX_TOKEN_LIFETIME_SECS + 1, 30 * 86_400] {
        let (status, body, _) = s
            .req(
                Method::GET,
                "/v2/calls",
                Some(&bearer(&make(lifetime))),
                None,
            )
            .await;
        assert_eq!(status, 401, "{lifetime}: {body}");
        // Nor is it a credential for the native API (401, not 403).
        let (status, body, _) = s
            .req(
                Method::GET,
                "/api/v1/calls",
                Some(&bearer(&make(lifetime))),
                None,
            )
            .await;
        assert_eq!(status, 401, "{lifetime}: {body}");
    }
    s.shutdown().await;
}

/// Reads until the server closes the connection; false if it is still open after `wait`.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A 408 before closing is fine too.
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(wait, read_all).await.is_ok()
}

#[tokio::test]
async fn a_client_sending_headers_too_slowly_is_disconnected() {
    let options = HttpOptions {
        header_read_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let s = TestServer::start_opts(Answer::Answer, options).await;
    let addr = s.http.trim_start_matches("http://").to_string();
    // Half a request line, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HT").await.unwrap();
    // Nothing at all.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A complete request on a third connection is answered meanwhile.
    let mut ok = tokio::net::TcpStream::connect(&addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), ok.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed_within(&mut slow, Duration::from_secs(30)).await,
        "slow client still connected"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(30)).await,
        "silent client still connected"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn the_default_header_timeout_applies_to_the_default_server() {
    // The production default (10 s) with the real `bind`: a silent client is cut off.
    let s = TestServer::start(Answer::Answer).await;
    let addr = s.http.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /login").await.unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(30)).await,
        "slow client still connected"
    );
    s.shutdown().await;
}

//! `eventfold serve`'s HTTP edge as a black box: control characters, wrong methods, rate
//! limits, deadlines and CORS against a real server on a random port.

mod support;

use std::time::Duration;

use support::*;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_routes_refuse_control_characters_and_wrong_methods_in_the_error_shape() {
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let mut server = Server::start(Some(db.url()));
    let client = Client::new();
    for path in [
        "/api/v1/orders/%00",
        "/api/v1/workouts/%00",
        "/api/v1/workouts/%00/route",
        "/api/v1/users/u%001/reminders",
        "/api/v1/users/u%001/reminders/due",
        "/api/v1/users/u1/workouts?from=%00",
        "/api/v1/leaderboards/run%01ning",
    ] {
        let (s, body) = get(&client, &server, path, "service").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["code"], 400, "{path}: not the error shape: {body}");
    }
    for path in [
        "/api/v1/users/u1/workouts?from=%2B262142-12-31T23:59:59Z",
        "/api/v1/users/u1/reminders/due?at=1969-12-31T23:59:59Z",
    ] {
        let (s, body) = get(&client, &server, path, "service").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let response = client
        .delete(server.url("/api/v1/users/u1/reminders"))
        .header("x-api-key", SERVICE_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().contains_key("allow"));
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_gets_429_with_retry_after_and_others_go_on() {
    let mut server = Server::start_with(
        None,
        &[
            ("EVENTFOLD_RATE_QUERIES", "1"),
            ("EVENTFOLD_BURST_QUERIES", "3"),
            ("EVENTFOLD_RATE_COMMANDS", "1"),
        ],
    );
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("queries 1/s per caller (burst 3)")),
        "{:?}",
        server.startup
    );
    let client = Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let response = client
            .get(server.url("/api/v1/users/u1/reminders"))
            .bearer_auth(token("u1"))
            .send()
            .await
            .expect("send");
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            limited = Some((retry, response.json::<Value>().await.unwrap_or(Value::Null)));
        }
    }
    assert_eq!(statuses[..3], [StatusCode::OK; 3], "{statuses:?}");
    let (retry, body) = limited.expect("the fourth request in a second is over the burst");
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {retry:?}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(body["code"], 429, "{body}");
    assert_eq!(body["details"]["class"], "queries", "{body}");
    // Another caller has a bucket of its own; operations are never limited.
    let (s, _) = get(&client, &server, "/api/v1/users/u2/reminders", "u2").await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..20 {
        let (s, _) = get(&client, &server, "/healthz", "nobody").await;
        assert_eq!(s, StatusCode::OK);
    }
    // Commands are a class of their own: u1's queries did not spend them, and the
    // second command in a second is refused without appending.
    let activation = json!({"user_id": "u1"});
    let (s, body, _) = post(
        &client,
        &server,
        "/api/v1/devices/d1/activations",
        "u1",
        activation.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body, _) = post(
        &client,
        &server,
        "/api/v1/devices/d1/activations",
        "u1",
        activation,
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["details"]["class"], "commands", "{body}");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_route_answers_within_its_deadline_when_redis_stalls_or_the_wait_is_long() {
    let redis = OwnRedis::start();
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let prefix = format!("eventfold-test:{}:", uuid::Uuid::new_v4().simple());
    let mut server = Server::start_with(
        Some(db.url()),
        &[
            ("REDIS_URL", redis.url.as_str()),
            ("EVENTFOLD_REDIS_PREFIX", prefix.as_str()),
            ("EVENTFOLD_TIMEOUT_VOICE_MS", "150"),
        ],
    );
    let client = Client::new();
    let (s, body) = get(&client, &server, "/api/v1/users/u1/reminders/due", "u1").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "redis", "{body}");

    // Redis stops answering (the process is frozen, its socket still accepts).
    redis.freeze();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let (s, body) = get(&client, &server, "/api/v1/users/u1/reminders/due", "u1").await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(300),
            "took {took:?}: {s} {body}"
        );
        // Redis gets a third of the deadline; the relational model answers in the rest.
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["source"], "relational", "{body}");
    }
    redis.thaw();

    // A read-your-writes wait longer than the deadline is cut at the deadline: with
    // Redis frozen the voice model cannot apply a new event, so a voice query that asks
    // to see it waits, and the deadline answers in time (or, if the runner has already
    // given up on Redis, the relational model answers).
    redis.freeze();
    let (s, body, token) = post(
        &client,
        &server,
        "/api/v1/devices/d9/activations",
        "u1",
        json!({"user_id": "u1"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let token = token.expect("a consistency token");
    let started = std::time::Instant::now();
    let (s, body) = get(
        &client,
        &server,
        &format!("/api/v1/users/u1/reminders/due?after={token}"),
        "u1",
    )
    .await;
    let took = started.elapsed();
    redis.thaw();
    assert!(
        took < Duration::from_millis(400),
        "took {took:?}: {s} {body}"
    );
    if s == StatusCode::OK {
        assert_eq!(body["source"], "relational", "{body}");
        assert!(server.terminate().success());
        return;
    }
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "deadline_exceeded", "{body}");
    assert_eq!(body["details"]["deadline_ms"], 150, "{body}");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_answers_only_the_configured_origins() {
    let preflight = |server: &Server, origin: &str| {
        Client::new()
            .request(reqwest::Method::OPTIONS, server.url("/api/v1/purchases"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let server = Server::start(None);
    let response = preflight(&server, "https://app.example")
        .await
        .expect("send");
    assert_eq!(allowed(&response), None);
    drop(server);

    let server = Server::start_with(None, &[("EVENTFOLD_CORS_ORIGINS", "https://app.example")]);
    let response = preflight(&server, "https://app.example")
        .await
        .expect("send");
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(allowed(&response).as_deref(), Some("https://app.example"));
    let methods = response
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let response = preflight(&server, "https://evil.example")
        .await
        .expect("send");
    assert_eq!(allowed(&response), None);
    // A real request from the allowed origin sees the consistency token.
    let response = Client::new()
        .get(server.url("/api/v1/users/u1/reminders"))
        .header("origin", "https://app.example")
        .bearer_auth(token("u1"))
        .send()
        .await
        .expect("send");
    assert_eq!(allowed(&response).as_deref(), Some("https://app.example"));
}

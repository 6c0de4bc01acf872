//! The ClickHouse analytics through `serve`, against a ClickHouse of the test's own that
//! is stopped mid-test: analytics answer 503 while it is down, everything else works,
//! and the models catch up when it is back.

mod support;

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::*;

/// A completed 5 km run of `user` with two GPS fixes; the completion's token.
async fn run_5k(client: &Client, server: &Server, user: &str) -> String {
    let (s, started, _) = post(
        client,
        server,
        "/api/v1/workouts",
        user,
        json!({"user_id": user, "sport": "running"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{started}");
    let w = started["workout_id"].as_str().expect("id").to_owned();
    let now = chrono::Utc::now().to_rfc3339();
    let (s, body, _) = post(
        client,
        server,
        &format!("/api/v1/workouts/{w}/updates"),
        user,
        json!({"distance_m": 2500, "points": [{"lat": 55.7, "lon": 37.6, "at": now}, {"lat": 55.71, "lon": 37.61, "at": now}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body, token) = post(
        client,
        server,
        &format!("/api/v1/workouts/{w}/complete"),
        user,
        json!({"distance_m": 5000}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    token.expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_answer_503_while_clickhouse_is_down_and_catch_up_when_it_returns() {
    let mut ch = OwnClickHouse::start();
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let ch_url = ch.url.clone();
    let server = Server::start_with(Some(db.url()), &[("CLICKHOUSE_URL", ch_url.as_str())]);
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.starts_with("clickhouse: ") && l.contains("analytics on")),
        "{:?}",
        server.startup
    );
    let client = Client::new();
    let token = run_5k(&client, &server, "a1").await;
    let (s, weekly) = get(
        &client,
        &server,
        &format!("/api/v1/analytics/users/a1/weekly-activity?after={token}"),
        "a1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{weekly}");
    assert_eq!(weekly["items"][0]["workouts"], 1, "{weekly}");
    assert_eq!(weekly["items"][0]["distance_m"], 5000.0, "{weekly}");
    let (s, _) = get(
        &client,
        &server,
        "/api/v1/analytics/users/a1/weekly-activity",
        "a2",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "another user's analytics");
    let (s, _) = get(&client, &server, "/api/v1/analytics/funnel", "a1").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the funnel is for services");
    let (s, funnel) = get(&client, &server, "/api/v1/analytics/funnel", "service").await;
    assert_eq!(s, StatusCode::OK, "{funnel}");

    // ClickHouse dies: analytics say so, the rest goes on.
    ch.down();
    let (s, body) = get(
        &client,
        &server,
        "/api/v1/analytics/users/a1/weekly-activity",
        "a1",
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str(), body["code"].as_i64()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("unavailable"),
            Some(503)
        ),
        "{body}"
    );
    let (s, ready) = get(&client, &server, "/readyz", "nobody").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "analytics down leaves the service ready: {ready}"
    );
    assert_eq!(ready["stores"]["clickhouse"], "unreachable", "{ready}");
    let token = run_5k(&client, &server, "a1").await;
    let (s, listed) = get(
        &client,
        &server,
        &format!("/api/v1/users/a1/workouts?after={token}"),
        "a1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));

    // Back: the model catches up by itself.
    ch.up();
    let mut weekly = Value::Null;
    for _ in 0..200 {
        let (s, body) = get(
            &client,
            &server,
            "/api/v1/analytics/users/a1/weekly-activity",
            "a1",
        )
        .await;
        if s == StatusCode::OK && body["items"][0]["workouts"] == 2 {
            weekly = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(weekly["items"][0]["distance_m"], 10_000.0, "{weekly}");
    let (_, ready) = get(&client, &server, "/readyz", "nobody").await;
    assert_eq!(ready["stores"]["clickhouse"], "ok", "{ready}");
    drop(server);
}

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

/// A number or week outside what the document states is refused with the range in the
/// message, on every query route that takes one — never clamped into range and
/// answered (`limit=0` on the voice route used to answer as `limit=1`) — and before
/// any store is asked (here neither Redis nor ClickHouse is configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_and_weeks_outside_their_documented_ranges_are_refused_not_clamped() {
    let mut server = Server::start(None);
    let client = Client::new();
    for (path, range) in [
        ("/api/v1/users/u1/reminders/due?limit=0", "1-20"),
        ("/api/v1/users/u1/reminders/due?limit=21", "1-20"),
        ("/api/v1/users/u1/reminders?limit=501", "1-500"),
        ("/api/v1/users/u1/reminders?offset=-1", "0-1000000000"),
        ("/api/v1/users/u1/orders?limit=0", "1-500"),
        (
            "/api/v1/users/u1/purchases?offset=1000000001",
            "0-1000000000",
        ),
        ("/api/v1/users/u1/workouts?limit=0", "1-500"),
        ("/api/v1/leaderboards/running?limit=0", "1-100"),
        ("/api/v1/leaderboards/running?limit=101", "1-100"),
        ("/api/v1/leaderboards/running?week=2026-W99", "1970-9999"),
        ("/api/v1/leaderboards/running?week=0000-W01", "1970-9999"),
        ("/api/v1/leaderboards/running?week=2026-48", "1970-9999"),
        (
            "/api/v1/analytics/users/u1/weekly-activity?weeks=0",
            "1-520",
        ),
        (
            "/api/v1/analytics/users/u1/weekly-activity?weeks=521",
            "1-520",
        ),
        ("/api/v1/analytics/users/u1/workouts?limit=1001", "1-1000"),
        (
            "/api/v1/analytics/leaderboards/running/weeks/2026-W48?limit=0",
            "1-100",
        ),
        (
            "/api/v1/analytics/leaderboards/running/weeks/2026-W00",
            "1970-9999",
        ),
        (
            "/api/v1/analytics/leaderboards/running/weeks/2026-W54",
            "1970-9999",
        ),
    ] {
        let (s, body) = get(&client, &server, path, "service").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"], "validation_failed", "{path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(range),
            "{path}: {message:?} does not say {range}"
        );
    }
    // The shape is right but the year has 52 weeks: a rule no pattern states, 422.
    for path in [
        "/api/v1/leaderboards/running?week=2025-W53",
        "/api/v1/analytics/leaderboards/running/weeks/2025-W53",
    ] {
        let (s, body) = get(&client, &server, path, "service").await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["error"], "no_such_week", "{path}: {body}");
    }
    // The edges of each range are accepted (2026 has 53 ISO weeks); the store that is
    // not configured is then the answer.
    for (path, status) in [
        ("/api/v1/users/u1/reminders/due?limit=20", StatusCode::OK),
        (
            "/api/v1/users/u1/reminders?limit=500&offset=1000000000",
            StatusCode::OK,
        ),
        (
            "/api/v1/leaderboards/running?week=2026-W53&limit=100",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            "/api/v1/analytics/leaderboards/running/weeks/9999-W52?limit=100",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let (s, body) = get(&client, &server, path, "service").await;
        assert_eq!(s, status, "{path}: {body}");
    }
    assert!(server.terminate().success());
}

/// An order or workout id that is not a UUID is malformed input (400 naming the
/// field), not a search that finds nothing; a UUID in capitals is the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_are_not_uuids_are_400_on_every_query_route() {
    let mut server = Server::start(None);
    let client = Client::new();
    for (path, field) in [
        ("/api/v1/orders/not-a-uuid", "order_id"),
        ("/api/v1/workouts/not-a-uuid", "workout_id"),
        ("/api/v1/workouts/1234/route", "workout_id"),
        ("/api/v1/analytics/workouts/x/route", "workout_id"),
    ] {
        let (s, body) = get(&client, &server, path, "service").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"], "invalid_path", "{path}: {body}");
        assert_eq!(body["details"]["field"], field, "{path}: {body}");
    }
    let upper = uuid::Uuid::new_v4().to_string().to_uppercase();
    let (s, body) = get(
        &client,
        &server,
        &format!("/api/v1/workouts/{upper}"),
        "service",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
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
    let (redis, _db, mut server) =
        serve_with_own_redis(&[("EVENTFOLD_TIMEOUT_VOICE_MS", "150")]).await;
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

/// A header the API reads is taken only when sent once, and an id header only when it
/// is an id: two `X-Api-Key`s, an API key beside a bearer token, two idempotency keys
/// or consistency tokens are 400 — never "the first one wins", which let a second
/// credential be ignored — and a malformed correlation id is 400, not replaced. The
/// refused command appends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_or_ambiguous_headers_are_refused_not_read_as_their_first_value() {
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let mut server = Server::start(Some(db.url()));
    let client = Client::new();
    let purchase = json!({
        "user_id": "alice", "sku": "caps", "title": "Caps", "category": "coffee",
        "quantity": 1, "unit_price": 100
    });
    let bob = token("bob");
    let send = |extra: &[(&str, &str)]| {
        let mut request = client.post(server.url("/api/v1/purchases")).json(&purchase);
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send()
    };
    // (headers sent, error, what the message names)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 6] = [
        (
            &[("x-api-key", SERVICE_KEY), ("x-api-key", "another")],
            "invalid_header",
            "x-api-key",
        ),
        (
            &[
                ("x-api-key", SERVICE_KEY),
                ("authorization", &format!("Bearer {bob}")),
            ],
            "ambiguous_credentials",
            "different callers",
        ),
        (
            &[
                ("x-api-key", SERVICE_KEY),
                ("idempotency-key", "k-1"),
                ("idempotency-key", "k-2"),
            ],
            "invalid_header",
            "idempotency-key",
        ),
        (
            &[
                ("x-api-key", SERVICE_KEY),
                ("x-correlation-id", "not a visible id"),
            ],
            "invalid_header",
            "x-correlation-id",
        ),
        (
            &[("x-api-key", SERVICE_KEY), ("x-causation-id", "42")],
            "invalid_header",
            "x-causation-id",
        ),
        (
            &[
                ("x-api-key", SERVICE_KEY),
                ("content-type", "application/json"),
                ("content-type", "text/plain"),
            ],
            "invalid_header",
            "content-type",
        ),
    ];
    for (headers, error, names) in cases {
        let response = send(headers).await.expect("send");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}: {body}");
        assert_eq!(body["error"], error, "{headers:?}: {body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(names),
            "{headers:?}: {body}"
        );
    }
    // Nothing was appended by the refused commands; one well-formed request is.
    let (s, body) = get(&client, &server, "/api/v1/users/alice/purchases", "service").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body["items"],
        json!([]),
        "a refused command appended: {body}"
    );
    let response = send(&[
        ("x-api-key", SERVICE_KEY),
        ("x-correlation-id", &uuid::Uuid::new_v4().to_string()),
    ])
    .await
    .expect("send");
    assert!(response.status().is_success(), "{}", response.status());
    // A gateway's own format (Kong's `uuid#counter`) is taken, as a stable UUID.
    let mut echoed = Vec::new();
    for _ in 0..2 {
        let response = send(&[
            ("x-api-key", SERVICE_KEY),
            (
                "x-correlation-id",
                "3e9a2c4f-0b1d-4e5f-9a8b-7c6d5e4f3a2b#17",
            ),
        ])
        .await
        .expect("send");
        assert!(response.status().is_success(), "{}", response.status());
        let id = response.headers()["x-correlation-id"]
            .to_str()
            .map(str::to_owned);
        echoed.push(id.expect("echoed"));
    }
    assert_eq!(echoed[0], echoed[1]);
    assert!(uuid::Uuid::parse_str(&echoed[0]).is_ok(), "{echoed:?}");
    // Beside an API key, a bearer token that proves nothing is not read (the key
    // decides: schemathesis sends both); only one that proves another caller is refused.
    for bearer in ["Bearer not-a-token", "Basic eA=="] {
        let response = send(&[("x-api-key", SERVICE_KEY), ("authorization", bearer)])
            .await
            .expect("send");
        assert!(
            response.status().is_success(),
            "{bearer}: {}",
            response.status()
        );
    }
    // The same on the query side: a consistency token or key sent twice.
    for headers in [
        [("x-api-key", SERVICE_KEY), ("x-api-key", SERVICE_KEY)],
        [("x-consistency-token", "1"), ("x-consistency-token", "2")],
    ] {
        let mut request = client
            .get(server.url("/api/v1/users/alice/purchases"))
            .header("x-api-key", SERVICE_KEY);
        if headers[0].0 == "x-consistency-token" {
            for (name, value) in headers {
                request = request.header(name, value);
            }
        } else {
            request = request.header("x-api-key", SERVICE_KEY);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}: {body}");
        assert_eq!(body["error"], "invalid_header", "{headers:?}: {body}");
    }
    assert!(server.terminate().success());
}

/// A key a command body repeats is refused (400 naming it) and appends nothing: parsed
/// into a plain JSON value the last one won silently, so `{"quantity":1,
/// "quantity":1000}` bought 1,000 while a proxy or a log read 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_repeats_a_key_is_refused_and_appends_nothing() {
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let mut server = Server::start(Some(db.url()));
    let client = Client::new();
    let body = r#"{"user_id":"alice","sku":"caps","title":"Caps","category":"coffee",
        "quantity":1,"unit_price":100,"quantity":1000}"#;
    let response = client
        .post(server.url("/api/v1/purchases"))
        .header("x-api-key", SERVICE_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains(r#""quantity" is repeated"#)),
        "{answer}"
    );
    let (s, listed) = get(&client, &server, "/api/v1/users/alice/purchases", "service").await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["items"],
        json!([]),
        "a refused command appended: {listed}"
    );
    assert!(server.terminate().success());
}

/// A query parameter a route does not define is refused with 400 on every route of the
/// OpenAPI document — commands included, which take none: a client sending
/// `?dry_run=true` or `?idempotency_key=…` to a command had it carried out as an
/// ordinary, unkeyed command — and nothing is appended. (`/healthz`, `/readyz` and
/// `/metrics` take whatever probes and scrapers add.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_query_parameter_is_refused_on_every_route_and_appends_nothing() {
    let mut server = Server::start(None);
    let client = Client::new();
    let mut tried = 0;
    for (template, method) in operations(&client, &server).await {
        if matches!(template.as_str(), "/healthz" | "/readyz" | "/metrics") {
            continue;
        }
        let path = format!("{}?dry_run=true", concrete(&template));
        let (status, body) = call_documented(&client, &server, &method, &path).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {template}: {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("dry_run")),
            "{method} {template}: the parameter is not named: {body}"
        );
        tried += 1;
    }
    assert!(tried >= 30, "only {tried} operations in the document");
    nothing_appended(&client, &server).await;
    assert!(server.terminate().success());
}

/// The voice route asked to read one's own write while projector workers feed its
/// Redis model from Kafka answers from the relational models (which this process
/// follows), not 422 `fed_from_kafka`: a spoken "yes" is followed by "what is due".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_route_reads_your_writes_from_the_relational_models_when_redis_is_fed_from_kafka()
{
    let prefix = format!("eventfold-test:{}:", uuid::Uuid::new_v4().simple());
    let (redis, _db, mut server) =
        serve_with_own_redis(&[("EVENTFOLD_REDIS_PREFIX", prefix.as_str())]).await;
    let client = Client::new();
    assert!(ready_within(&client, &server, Duration::from_secs(30)).await);
    // Workers take the Redis voice model over (what `project --from kafka` does).
    let mut conn = redis::Client::open(redis.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("{prefix}checkpoint:voice_due.v1");
    let at: Option<i64> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("checkpoint");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(-1 - at.unwrap_or(0))
        .query_async(&mut conn)
        .await
        .expect("hand over");
    // A write; the Redis model's runner finds its checkpoint handed over and stands by.
    let (s, body, token) = post(
        &client,
        &server,
        "/api/v1/devices/d7/activations",
        "u1",
        json!({"user_id": "u1"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let token = token.expect("a consistency token");
    let mut answer = (StatusCode::OK, Value::Null);
    for _ in 0..50 {
        answer = get(
            &client,
            &server,
            &format!("/api/v1/users/u1/reminders/due?after={token}"),
            "u1",
        )
        .await;
        if answer.1["source"] == "relational" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, body) = answer;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "relational", "{body}");
    assert!(server.terminate().success());
}

/// A path segment or a query that is not UTF-8 once percent-decoded (`%FF`) is a 400
/// in the error shape on every documented operation: axum's own `Path` answered it in
/// plain text ("Invalid URL: Invalid UTF-8 in `user_id`") on eleven query routes and the
/// device activation, outside the error shape. Nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_in_a_path_or_query_are_refused_in_the_error_shape() {
    let mut server = Server::start(None);
    let client = Client::new();
    let mut tried = 0;
    for (template, method) in operations(&client, &server).await {
        let mut cases = vec![(format!("{}?x=%FF", concrete(&template)), "invalid_query")];
        if template.contains('{') {
            let path = template
                .split('/')
                .map(|s| if s.starts_with('{') { "a%FFb" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            cases.push((path, "invalid_path"));
        }
        for (path, error) in cases {
            let (status, body) = call_documented(&client, &server, &method, &path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {body}");
            assert_eq!(body["error"], error, "{method} {path}: {body}");
            assert_eq!(body["code"], 400, "{method} {path}: {body}");
            tried += 1;
        }
    }
    assert!(tried >= 50, "only {tried} requests");
    nothing_appended(&client, &server).await;
    assert!(server.terminate().success());
}

/// The log's head, as `/api/v1/projections` tells it, is still 0.
async fn nothing_appended(client: &Client, server: &Server) {
    let (s, status) = get(client, server, "/api/v1/projections", "service").await;
    assert_eq!(s, StatusCode::OK, "{status}");
    for item in status["items"].as_array().expect("items") {
        assert_eq!(item["head"], 0, "something was appended: {status}");
    }
}

/// Every operation of the served OpenAPI document: (path template, method).
async fn operations(client: &Client, server: &Server) -> Vec<(String, String)> {
    let (_, document) = get(client, server, "/api/v1/openapi.json", "service").await;
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(template, operations)| {
            let methods = operations.as_object().expect("operations").keys();
            methods.map(|method| (template.clone(), method.clone()))
        })
        .collect()
}

//! `eventfold serve` as a black box: a real server on a random port, driven over HTTP.

mod support;

use std::time::Duration;

use support::*;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn voice_flow_and_workouts(server: &Server) {
    let client = Client::new();
    let (s, _, _) = post(
        &client,
        server,
        "/api/v1/catalog/prices",
        "service",
        json!({"sku": "SKU-CAPS", "title": "Capsules", "unit_price": 1100, "delivery_days": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    for days in [70, 40] {
        let at = (chrono_like_now() - days * 86_400).to_string();
        let (s, body, _) = post(&client, server, "/api/v1/purchases", "u1", json!({
            "user_id": "u1", "sku": "SKU-CAPS", "title": "Capsules", "category": "coffee", "quantity": 1,
            "unit_price": 1000, "purchased_at": rfc3339(&at)
        }))
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    // Read your writes: the reminder list reflects the last purchase at once.
    let (_, body, token) = post(
        &client,
        server,
        "/api/v1/devices/spk-1/activations",
        "u1",
        json!({"user_id": "u1"}),
    )
    .await;
    assert!(body["consistency_token"].is_number());
    let token = token.expect("token header");
    let (s, reminders) = get(
        &client,
        server,
        &format!("/api/v1/users/u1/reminders?after={token}"),
        "u1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{reminders}");
    let open = reminders["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["status"] == "scheduled")
        .expect("a scheduled reminder")
        .clone();
    let reminder = open["reminder_id"].as_str().expect("id").to_owned();
    let due = open["due_at"].as_str().expect("due").to_owned();

    let (s, answer) = get(
        &client,
        server,
        &format!(
            "/api/v1/users/u1/reminders/due?at={}&after={token}",
            due.replace('+', "%2B")
        ),
        "u1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["offers"][0]["reminder_id"], reminder.as_str());
    assert_eq!(
        answer["offers"][0]["unit_price"], 1100,
        "the voice answer quotes the current price"
    );
    assert!(answer["offers"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .contains("Capsules"));

    let (s, _, _) = post(
        &client,
        server,
        &format!("/api/v1/reminders/{reminder}/offer"),
        "u1",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, yes, _) = post(
        &client,
        server,
        &format!("/api/v1/reminders/{reminder}/accept"),
        "u1",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{yes}");
    let order = yes["order_id"].as_str().expect("order").to_owned();
    let (s, placed, token) = post(
        &client,
        server,
        &format!("/api/v1/orders/{order}/confirm"),
        "u1",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{placed}");
    let (s, view) = get(
        &client,
        server,
        &format!("/api/v1/orders/{order}?after={}", token.expect("token")),
        "u1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(
        (view["status"].as_str(), view["payment_requested"].as_bool()),
        (Some("placed"), Some(true))
    );
    let (s, _) = get(&client, server, &format!("/api/v1/orders/{order}"), "u2").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "another user may not read it");

    // Workouts: start, update with a point, complete; then details, route, stats, paging.
    let mut last_token = String::new();
    for n in 0..3 {
        let (s, started, _) = post(
            &client,
            server,
            "/api/v1/workouts",
            "u3",
            json!({"user_id": "u3", "sport": "running"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{started}");
        let w = started["workout_id"].as_str().expect("id").to_owned();
        let point =
            json!({"lat": 55.7, "lon": 37.6, "at": rfc3339(&chrono_like_now().to_string())});
        let (s, _, _) = post(
            &client,
            server,
            &format!("/api/v1/workouts/{w}/updates"),
            "u3",
            json!({"distance_m": 500.0, "points": [point]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, token) = post(
            &client,
            server,
            &format!("/api/v1/workouts/{w}/complete"),
            "u3",
            json!({"distance_m": 1000.0 * (n + 1) as f64}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        last_token = token.expect("token");
        if n == 0 {
            let (s, route) = get(
                &client,
                server,
                &format!("/api/v1/workouts/{w}/route?after={last_token}"),
                "u3",
            )
            .await;
            assert_eq!(
                (s, route["points"].as_array().map(Vec::len)),
                (StatusCode::OK, Some(1))
            );
        }
    }
    let (s, stats) = get(
        &client,
        server,
        &format!("/api/v1/users/u3/workout-stats?after={last_token}"),
        "u3",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{stats}");
    assert_eq!(
        (
            stats["stats"]["workouts"].as_i64(),
            stats["stats"]["total_distance_m"].as_f64()
        ),
        (Some(3), Some(6000.0))
    );
    let (_, page1) = get(&client, server, "/api/v1/users/u3/workouts?limit=2", "u3").await;
    assert_eq!(
        (
            page1["items"].as_array().map(Vec::len),
            page1["next_offset"].as_i64()
        ),
        (Some(2), Some(2))
    );
    let (_, page2) = get(
        &client,
        server,
        "/api/v1/users/u3/workouts?limit=2&offset=2",
        "u3",
    )
    .await;
    assert_eq!(
        (
            page2["items"].as_array().map(Vec::len),
            page2["next_offset"].as_i64()
        ),
        (Some(1), None)
    );
    let (s, bad) = get(&client, server, "/api/v1/users/u3/workouts?limit=0", "u3").await;
    assert_eq!(
        (s, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("validation_failed"))
    );
}

/// Seconds since the epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_and_workout_flows_work_end_to_end_on_sqlite() {
    let mut server = Server::start(None);
    voice_flow_and_workouts(&server).await;
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown on SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_and_workout_flows_work_end_to_end_on_postgres() {
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let mut server = Server::start(Some(db.url()));
    voice_flow_and_workouts(&server).await;
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_health_metrics_and_the_openapi_document() {
    let server = Server::start(None);
    let client = Client::new();
    let (s, body) = get(&client, &server, "/api/v1/users/u1/reminders", "nobody").await;
    assert_eq!(
        (s, body["error"].as_str(), body["code"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"), Some(401))
    );
    let (s, _) = get(&client, &server, "/api/v1/users/u1/reminders", "u2").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = get(&client, &server, "/api/v1/users/u1/reminders", "service").await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = get(&client, &server, "/api/v1/analytics/funnel", "service").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
        "no ClickHouse: said clearly"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("CLICKHOUSE_URL")),
        "{body}"
    );
    let (s, body) = get(&client, &server, "/api/v1/leaderboards/running", "u1").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
        "no Redis: said clearly"
    );
    let (s, body) = get(
        &client,
        &server,
        "/api/v1/users/u1/reminders?after=999999",
        "u1",
    )
    .await;
    // A token the log never issued is refused at once instead of waited for.
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("token_ahead_of_log")),
        "{body}"
    );
    assert!(body["details"]["head"].is_number(), "{body}");

    assert_eq!(
        get(&client, &server, "/healthz", "nobody").await.0,
        StatusCode::OK
    );
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        ready = get(&client, &server, "/readyz", "nobody").await.0;
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, StatusCode::OK);
    let response = client
        .get(server.url("/metrics"))
        .header("x-correlation-id", "0b9c2f7e-5a51-4d8e-9a43-1f6d2c9e8b10")
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        response
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some("0b9c2f7e-5a51-4d8e-9a43-1f6d2c9e8b10")
    );
    let text = response.text().await.expect("text");
    assert!(
        text.contains("eventfold_http_request_duration_seconds"),
        "{text}"
    );
    assert!(text.contains("eventfold_projection_lag_events"), "{text}");

    let (s, doc) = get(&client, &server, "/api/v1/openapi.json", "nobody").await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/purchases",
        "/api/v1/reminders/{id}/accept",
        "/api/v1/users/{user_id}/reminders/due",
        "/api/v1/workouts/{workout_id}/route",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    // Every documented route answers (no fallback 404).
    for (path, item) in paths {
        for method in item.as_object().expect("methods").keys() {
            let (status, body) = call_documented(&client, &server, method, &concrete(path)).await;
            assert!(
                body["error"] != "not_found"
                    || status != StatusCode::NOT_FOUND
                    || body["message"] != "no such route",
                "{method} {path} is documented but not served"
            );
        }
    }
}

/// A purchase whose request died between its append and its reminder's (the events of
/// the purchase are in the log, no reminder is) gets its reminder from the
/// `reminder_planner.v1` reaction; replaying the reaction from the start (its checkpoint
/// lost) plans nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reminder_planner_reaction_heals_a_purchase_split_from_its_reminder() {
    use eventfold_domain::consumables::ConsumablePolicy;
    use eventfold_domain::purchases::{PurchaseHistory, RecordPurchase};
    use eventfold_domain::Aggregate;
    use eventfold_event_log::{EventReader, EventWriter};
    use eventfold_event_schemas::catalogue::PurchaseRecorded;
    use eventfold_event_schemas::{EventMetadata, ExpectedVersion, Position, StreamId};

    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let mut server = Server::start(Some(db.url()));
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("reminder_planner.v1")),
        "{:?}",
        server.startup
    );
    // What the purchase command appends first, appended here without its second step.
    let purchase = PurchaseRecorded {
        user_id: "split1".into(),
        sku: "CAPS".into(),
        title: "Capsules".into(),
        category: "coffee".into(),
        quantity: 1,
        unit_price: 100,
        currency: "RUB".into(),
        purchased_at: chrono_now(),
    };
    let events = PurchaseHistory::decide(
        &Default::default(),
        RecordPurchase {
            purchase,
            policy: ConsumablePolicy::default(),
        },
    )
    .expect("a valid purchase");
    assert!(events
        .iter()
        .any(|e| e.event_type() == "ConsumableDetected"));
    let new: Vec<_> = events
        .iter()
        .map(|e| e.to_new_event(uuid::Uuid::new_v4(), EventMetadata::default()))
        .collect();
    db.store
        .append(
            &StreamId::new("purchases-split1").expect("stream"),
            ExpectedVersion::NoStream,
            &new,
        )
        .await
        .expect("append");

    let client = Client::new();
    let mut found = Value::Null;
    for _ in 0..100 {
        let (s, body) = get(&client, &server, "/api/v1/users/split1/reminders", "split1").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        if body["items"].as_array().is_some_and(|i| !i.is_empty()) {
            found = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    let scheduled = |events: &[eventfold_event_schemas::RecordedEvent]| {
        events
            .iter()
            .filter(|e| e.event_type == "ReminderScheduled")
            .count()
    };
    let before = db
        .store
        .read_all(Position::START, None, 10_000)
        .await
        .expect("read");
    assert_eq!(scheduled(&before), 1);
    assert!(server.terminate().success());

    // `projections status` lists the reaction beside the read models.
    let status = succeeds(&db.url(), &["projections", "status", "--json"]);
    let rows: Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let planner = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "reminder_planner.v1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(planner["store"], "reaction", "{rows}");
    assert_eq!(planner["state"], "caught_up", "{rows}");

    // The reaction's checkpoint is lost: it runs over every purchase again.
    let pool = sqlx::PgPool::connect(&db.url()).await.expect("connect");
    sqlx::query("UPDATE eventfold_reaction_checkpoints SET position = 0")
        .execute(&pool)
        .await
        .expect("reset");
    let mut server = Server::start(Some(db.url()));
    let client = Client::new();
    for _ in 0..100 {
        let (_, body) = get(&client, &server, "/api/v1/projections", "service").await;
        let caught_up = body["items"].as_array().is_some_and(|items| {
            items.iter().any(|p| {
                p["name"] == "reminder_planner.v1"
                    && p["checkpoint"].as_i64() >= before.last().map(|e| e.global_position.0)
            })
        });
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = db
        .store
        .read_all(Position::START, None, 10_000)
        .await
        .expect("read");
    assert_eq!(
        after.len(),
        before.len(),
        "the replayed reaction appended again"
    );
    assert!(server.terminate().success());
    pool.close().await;
}

/// Twenty clients buy consumables (each retrying with its Idempotency-Key until it gets
/// an answer) while `serve` is killed with SIGKILL and started again: afterwards every
/// consumable purchase has exactly one reminder, planned by the reaction wherever the
/// request died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consumable_purchase_has_exactly_one_reminder_across_a_kill_9() {
    use eventfold_event_log::EventReader;
    use eventfold_event_schemas::Position;
    use std::sync::{Arc, RwLock};

    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let server = Server::start(Some(db.url()));
    let base = Arc::new(RwLock::new(server.base.clone()));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = Client::new();
    let mut tasks = Vec::new();
    for c in 0..20 {
        let (client, base, answered) = (client.clone(), base.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let user = format!("k{c}-{i}");
                let body = json!({"user_id": user, "sku": "CAPS", "title": "Capsules", "category": "coffee",
                                  "quantity": 1, "unit_price": 100});
                let key = format!("buy-{user}");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 400, "{user}: no answer after {attempts} attempts");
                    let url = format!("{}/api/v1/purchases", base.read().map(|b| b.clone()).unwrap_or_default());
                    let sent = client
                        .post(url)
                        .bearer_auth(token(&user))
                        .header("idempotency-key", &key)
                        .json(&body)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            break;
                        }
                        Ok(r) if r.status().is_client_error() => {
                            panic!("{user}: {}", r.status())
                        }
                        _ => tokio::time::sleep(Duration::from_millis(25)).await,
                    }
                }
            }
        }));
    }
    // Kill it a fifth of the way in.
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 60 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut server = server;
    let _ = server.child.kill(); // SIGKILL: no graceful anything
    let _ = server.child.wait();
    let at_kill = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(at_kill < 300, "the kill came after the load");
    let restarted = Server::start(Some(db.url()));
    if let Ok(mut b) = base.write() {
        *b = restarted.base.clone();
    }
    for t in tasks {
        t.await.expect("a client panicked");
    }
    // Let the reaction finish what the killed process left.
    let head = db.store.head().await.expect("head");
    for _ in 0..200 {
        let (_, body) = get(&client, &restarted, "/api/v1/projections", "service").await;
        let done = body["items"].as_array().is_some_and(|items| {
            items.iter().any(|p| {
                p["name"] == "reminder_planner.v1" && p["checkpoint"].as_i64() >= Some(head.0)
            })
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = db
        .store
        .read_all(Position::START, None, 100_000)
        .await
        .expect("read");
    let mut consumables = std::collections::BTreeMap::<String, usize>::new();
    let mut reminders = std::collections::BTreeMap::<String, usize>::new();
    for e in &events {
        let user = e.data.to_value().expect("json")["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match e.event_type.as_str() {
            "ConsumableDetected" => *consumables.entry(user).or_default() += 1,
            "ReminderScheduled" => *reminders.entry(user).or_default() += 1,
            _ => {}
        }
    }
    assert_eq!(consumables.len(), 300, "every purchase was recorded once");
    assert!(consumables.values().all(|n| *n == 1));
    for user in consumables.keys() {
        assert_eq!(
            reminders.get(user),
            Some(&1),
            "{user}: not exactly one reminder"
        );
    }
    drop(restarted);
}

/// A model projector workers took over (its live checkpoint is a hand-over marker) is
/// reported as fed from Kafka, with no lag, by `projections status`,
/// `/api/v1/projections` and `/metrics` — before, the marker was read as a position and
/// the model showed the whole log (and more) behind, which an alert on lag would page on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_fed_from_kafka_is_reported_as_such_not_as_behind() {
    let (dir, url) = demo_store("kafka-status");
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    let at: i64 = sqlx::query_scalar(
        "SELECT position FROM eventfold_checkpoints WHERE name = 'reminders.v1'",
    )
    .fetch_one(&pool)
    .await
    .expect("checkpoint");
    assert!(at > 0, "the demo applied nothing");
    // What `eventfold project --from kafka` does when it takes the model over.
    sqlx::query("UPDATE eventfold_checkpoints SET position = $1 WHERE name = 'reminders.v1'")
        .bind(-1 - at)
        .execute(&pool)
        .await
        .expect("hand over");
    // One partition's feed, as a worker keeps it.
    sqlx::query(
        "INSERT INTO eventfold_checkpoints (name, position, updated_at) \
         VALUES ('reminders.v1@eventfold.reminder#0', $1, 0)",
    )
    .bind(at + 7)
    .execute(&pool)
    .await
    .expect("a partition's checkpoint");
    pool.close().await;

    let row = status_row(&url, "reminders.v1");
    assert_eq!(row["state"], "fed_from_kafka", "{row}");
    assert_eq!(
        row["partitions"],
        json!({"eventfold.reminder#0": at + 7}),
        "{row}"
    );
    assert_eq!(row["fed_from_kafka_since"], at, "{row}");
    assert_eq!(row["checkpoint"], at, "{row}");
    assert!(row["lag_events"].is_null(), "{row}");

    let server = Server::start(Some(url.clone()));
    let client = Client::new();
    let mut item = Value::Null;
    for _ in 0..100 {
        let (s, body) = get(&client, &server, "/api/v1/projections", "service").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        item = body["items"]
            .as_array()
            .and_then(|i| i.iter().find(|p| p["name"] == "reminders.v1"))
            .cloned()
            .unwrap_or(Value::Null);
        if item["state"] == "standby" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(item["state"], "standby", "{item}");
    assert_eq!(item["fed_from_kafka_since"], at, "{item}");
    assert_eq!(item["checkpoint"], at, "{item}");
    assert!(item["lag_events"].is_null(), "{item}");
    // Its progress, per partition, as the workers stored it.
    assert_eq!(
        item["partitions"],
        json!({"eventfold.reminder#0": at + 7}),
        "{item}"
    );
    let scrape = || async {
        let response = client.get(server.url("/metrics")).send().await;
        response.expect("metrics").text().await.expect("text")
    };
    let partition_line = |metrics: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("eventfold_projection_partition_position{")
                    && l.contains("projection=\"reminders.v1\"")
                    && l.contains("partition=\"eventfold.reminder#0\"")
            })
            .map(str::to_owned)
    };
    let metrics = scrape().await;
    let partition = partition_line(&metrics).expect("a partition line");
    assert!(
        partition.ends_with(&format!("}} {}", at + 7)),
        "{partition}"
    );
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{projection=\"reminders.v1\"}}")))
            .map(str::to_owned)
    };
    assert_eq!(
        line("eventfold_projection_fed_from_kafka").as_deref(),
        Some("eventfold_projection_fed_from_kafka{projection=\"reminders.v1\"} 1"),
        "{metrics}"
    );
    let lag = line("eventfold_projection_lag_events").expect("a lag line");
    assert!(lag.ends_with("NaN"), "{lag}");
    // Read-your-writes cannot be told for it: said at once, not after the bounded wait.
    let started = std::time::Instant::now();
    let (s, body) = get(&client, &server, "/api/v1/users/u1/reminders?after=1", "u1").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "fed_from_kafka", "{body}");
    assert_eq!(body["details"]["fed_from_kafka_since"], at, "{body}");
    assert!(started.elapsed() < Duration::from_millis(500), "it waited");
    // Without a token it answers from the workers' model.
    let (s, body) = get(&client, &server, "/api/v1/users/u1/reminders", "u1").await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // Handed back to the log: its partitions are no longer reported at their last
    // position (an alert on a stalled partition would fire for ever).
    succeeds(&url, &["projections", "reset", "reminders.v1", "--yes"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = scrape().await;
        let partition = partition_line(&metrics).expect("the partition's line");
        if partition.ends_with("NaN") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{partition}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

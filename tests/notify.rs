//! Notifications over NATS JetStream, against a `nats-server -js` of the test's own:
//! each `PaymentPushRequested` and `WorkoutGoalReached` arrives exactly once on its
//! subject, across a `kill -9` of `serve` mid-batch and a NATS stop and restart.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use eventfold_event_log::EventReader;
use eventfold_event_schemas::Position;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::*;

/// One workout that meets its goal: two commands, one `WorkoutGoalReached`.
async fn reach_a_goal(client: &Client, base: &RwLock<String>, user: &str, n: usize) {
    let workout = uuid::Uuid::new_v4();
    post_until_answered(
        client,
        base,
        "/api/v1/workouts",
        user,
        &format!("start-{user}-{n}"),
        &json!({"workout_id": workout, "user_id": user, "sport": "running", "goal_distance_m": 1000}),
    )
    .await;
    post_until_answered(
        client,
        base,
        &format!("/api/v1/workouts/{workout}/updates"),
        user,
        &format!("update-{user}-{n}"),
        &json!({"distance_m": 1200}),
    )
    .await;
}

/// The voice flow to its end: purchase → reminder → accept → confirm → a payment push.
async fn request_a_payment(client: &Client, base: &RwLock<String>, user: &str) {
    let bought = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let purchase = post_until_answered(
        client,
        base,
        "/api/v1/purchases",
        user,
        &format!("buy-{user}"),
        &json!({"user_id": user, "sku": "CAPS", "title": "Capsules", "category": "coffee",
                "quantity": 1, "unit_price": 500, "purchased_at": bought}),
    )
    .await;
    let reminder = match purchase["reminder"]["reminder_id"].as_str() {
        Some(id) => id.to_owned(),
        // The planner had not planned it within the answer's bounded wait (a loaded
        // machine): it does in the background, and the user's reminders show it.
        None => planned_reminder(client, base, user)
            .await
            .unwrap_or_else(|| panic!("{user}: no reminder after {purchase}")),
    };
    post_until_answered(
        client,
        base,
        &format!("/api/v1/reminders/{reminder}/offer"),
        user,
        &format!("offer-{user}"),
        &json!({}),
    )
    .await;
    let accepted = post_until_answered(
        client,
        base,
        &format!("/api/v1/reminders/{reminder}/accept"),
        user,
        &format!("accept-{user}"),
        &json!({}),
    )
    .await;
    let order = accepted["order_id"].as_str().expect("order id").to_owned();
    post_until_answered(
        client,
        base,
        &format!("/api/v1/orders/{order}/confirm"),
        user,
        &format!("confirm-{user}"),
        &json!({}),
    )
    .await;
}

/// The user's first reminder, once the planner has planned it (or `None` after 20 s).
async fn planned_reminder(client: &Client, base: &RwLock<String>, user: &str) -> Option<String> {
    for _ in 0..200 {
        let url = format!(
            "{}/api/v1/users/{user}/reminders",
            base.read().map(|b| b.clone()).unwrap_or_default()
        );
        let answer = client.get(url).bearer_auth(token(user)).send().await;
        if let Ok(response) = answer {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if let Some(id) = body["items"][0]["reminder_id"].as_str() {
                return Some(id.to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn dispatcher_status(client: &Client, server: &Server) -> Value {
    let (_, body) = get(client, server, "/api/v1/projections", "service").await;
    body["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|p| p["name"] == "notifications.v1")
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// Waits until the stream holds `n` messages (or 20 s pass).
async fn wait_for_messages(url: &str, stream: &str, n: usize) -> Vec<(String, String, Value)> {
    let mut messages = Vec::new();
    for _ in 0..200 {
        messages = stream_messages(url, stream).await;
        if messages.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_arrives_once_across_a_kill_9_and_a_nats_restart() {
    let mut nats = OwnNats::start();
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let stream = format!("T{tag}");
    let subject = format!("t{tag}.notifications");
    let nats_url = nats.url.clone();
    let env = [
        ("NATS_URL", nats_url.as_str()),
        ("EVENTFOLD_NATS_STREAM", stream.as_str()),
        ("EVENTFOLD_NATS_SUBJECT", subject.as_str()),
    ];
    let server = Server::start_with(Some(db.url()), &env);
    assert!(
        server.startup.iter().any(|l| l.starts_with("nats: ")
            && l.contains(&stream)
            && l.contains("notifications on")),
        "{:?}",
        server.startup
    );
    let client = Client::new();
    let base = Arc::new(RwLock::new(server.base.clone()));

    let (s, _, _) = post(
        &client,
        &server,
        "/api/v1/catalog/prices",
        "service",
        json!({"sku": "CAPS", "title": "Capsules", "unit_price": 550, "delivery_days": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    // Payment pushes and goals, the dispatcher killed with SIGKILL while it works.
    for i in 0..4 {
        request_a_payment(&client, &base, &format!("p{i}")).await;
    }
    let mut tasks = Vec::new();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for c in 0..6 {
        let (client, base, done) = (client.clone(), base.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                reach_a_goal(&client, &base, &format!("g{c}"), n).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    while done.load(std::sync::atomic::Ordering::SeqCst) < 15 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut server = server;
    let _ = server.child.kill();
    let _ = server.child.wait();
    let restarted = Server::start_with(Some(db.url()), &env);
    if let Ok(mut b) = base.write() {
        *b = restarted.base.clone();
    }
    for t in tasks {
        t.await.expect("a client panicked");
    }
    let expected_before_outage = 4 + 60;
    let messages = wait_for_messages(&nats.url, &stream, expected_before_outage).await;
    assert_eq!(messages.len(), expected_before_outage, "before the outage");

    // NATS stops: commands keep working, the dispatcher retries and reports it.
    nats.down();
    for n in 0..5 {
        reach_a_goal(&client, &base, "late", n).await;
    }
    request_a_payment(&client, &base, "p-late").await;
    let mut retrying = Value::Null;
    for _ in 0..100 {
        retrying = dispatcher_status(&client, &restarted).await;
        if retrying["state"] == "retrying" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(retrying["state"], "retrying", "{retrying}");
    assert!(
        retrying["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("nats")),
        "{retrying}"
    );
    let (ready, body) = get(&client, &restarted, "/readyz", "nobody").await;
    assert_eq!(
        ready,
        StatusCode::OK,
        "NATS down does not make the service unready: {body}"
    );
    assert_eq!(body["stores"]["nats"], "unreachable", "{body}");
    let lag_head = db.store.head().await.expect("head");
    assert!(
        retrying["checkpoint"].as_i64() < Some(lag_head.0),
        "the lag shows: {retrying}"
    );

    nats.up();
    let expected = expected_before_outage + 6;
    let messages = wait_for_messages(&nats.url, &stream, expected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = if messages.len() < expected {
        messages
    } else {
        stream_messages(&nats.url, &stream).await
    };

    // Exactly once each, on its subject, in log order.
    let events = db
        .store
        .read_all(Position::START, None, 100_000)
        .await
        .expect("read");
    let wanted: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e.event_type.as_str(),
                "PaymentPushRequested" | "WorkoutGoalReached"
            )
        })
        .collect();
    assert_eq!(wanted.len(), expected, "events in the log");
    let mut seen = BTreeMap::<String, usize>::new();
    for (_, id, _) in &messages {
        *seen.entry(id.clone()).or_default() += 1;
    }
    assert_eq!(messages.len(), expected, "no duplicates, none missing");
    for (event, (subject_got, id, payload)) in wanted.iter().zip(&messages) {
        let data = event.data.to_value().expect("json");
        let user = data["user_id"].as_str().expect("user");
        let kind = if event.event_type == "PaymentPushRequested" {
            "push"
        } else {
            "goal"
        };
        assert_eq!(id, &event.event_id.to_string(), "in log order");
        assert_eq!(subject_got, &format!("{subject}.{kind}.{user}"));
        assert_eq!(payload["global_position"], event.global_position.0);
        assert_eq!(payload["data"], event.data);
        assert_eq!(seen.get(id), Some(&1));
    }
    let (_, body) = get(&client, &restarted, "/readyz", "nobody").await;
    assert_eq!(body["stores"]["nats"], "ok", "{body}");

    // A dispatcher that lost its checkpoint (a crash after every publish, before any
    // checkpoint) republishes nothing: it resumes after the stream's last message.
    let mut restarted = restarted;
    assert!(restarted.terminate().success());
    let pool = sqlx::PgPool::connect(&db.url()).await.expect("connect");
    sqlx::query(
        "UPDATE eventfold_reaction_checkpoints SET position = 0 WHERE name = 'notifications.v1'",
    )
    .execute(&pool)
    .await
    .expect("reset the checkpoint");
    let again = Server::start_with(Some(db.url()), &env);
    let head = db.store.head().await.expect("head");
    for _ in 0..100 {
        let status = dispatcher_status(&client, &again).await;
        if status["checkpoint"].as_i64() >= Some(head.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stream_messages(&nats.url, &stream).await.len(), expected);
    drop(again);
}

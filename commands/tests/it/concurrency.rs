//! Against PostgreSQL: many "yes" at once never make two orders; workout updates are
//! never lost.

use std::collections::HashSet;

use axum::http::StatusCode;
use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::{EventReader, ReadDirection};
use eventfold_event_schemas::StreamId;
use serde_json::{json, Value};

use crate::support::{app, call, offered_reminder, As};

async fn count(db: &PgTestDb, stream: &str, event_type: &str) -> anyhow::Result<usize> {
    let events = db
        .store
        .read_stream(&StreamId::new(stream)?, ReadDirection::Forwards, 0, 10_000)
        .await?;
    Ok(events.iter().filter(|e| e.event_type == event_type).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_identical_yes_make_one_order() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    let reminder = offered_reminder(&app, "u1", 1100).await;
    let path = format!("/api/v1/reminders/{reminder}/accept");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (app, path) = (app.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            call(&app, As::User("u1"), &path, json!({}), Some("yes-1")).await
        }));
    }
    let mut orders = HashSet::new();
    for t in tasks {
        let a = t.await?;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        orders.insert(a.body["order_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(orders.len(), 1, "every retry answers with the same order");
    let order = orders.into_iter().next().unwrap_or_default();
    assert_eq!(
        count(&db, &format!("reminder-{reminder}"), "ReorderAccepted").await?,
        1
    );
    assert_eq!(
        count(&db, &format!("order-{order}"), "OrderDrafted").await?,
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_different_yes_make_one_order_and_thirty_one_conflicts() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    let reminder = offered_reminder(&app, "u1", 1000).await;
    let path = format!("/api/v1/reminders/{reminder}/accept");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (app, path) = (app.clone(), path.clone());
        let key = format!("yes-{i}");
        tasks.push(tokio::spawn(async move {
            call(&app, As::User("u1"), &path, json!({}), Some(&key)).await
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        let a = t.await?;
        match a.status {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {
                assert_eq!(a.body["error"], "reminder_already_accepted", "{}", a.body);
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    assert_eq!((ok, conflicts), (1, 31));
    assert_eq!(
        count(&db, &format!("reminder-{reminder}"), "ReorderAccepted").await?,
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workout_updates_are_never_lost() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    let started = call(
        &app,
        As::User("u7"),
        "/api/v1/workouts",
        json!({"user_id": "u7", "sport": "running"}),
        None,
    )
    .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    let workout = started.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = format!("/api/v1/workouts/{workout}/updates");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (app, path) = (app.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            call(
                &app,
                As::User("u7"),
                &path,
                json!({"heart_rate": 100 + i}),
                None,
            )
            .await
        }));
    }
    for t in tasks {
        let a = t.await?;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    assert_eq!(
        count(&db, &format!("workout-{workout}"), "WorkoutUpdated").await?,
        32
    );
    Ok(())
}

/// Two processes — two services, each with its own slot book, on one database — place
/// 2,000 reminders into one shared window at once: no slot ever holds more than the
/// capacity (counted per slot from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_placing_2000_reminders_never_overfill_a_slot() -> anyhow::Result<()> {
    use eventfold_commands::{CommandContext, CommandService, SlotBook};
    use eventfold_domain::slotting::SlotPlanner;
    use eventfold_event_schemas::catalogue::PurchaseRecorded;
    use std::sync::Arc;

    let db = PgTestDb::new().await?;
    sqlx::any::install_default_drivers();
    // 18:00-21:00 holds 6 slots a day; 15 days of them at 25 each hold 2,250.
    let planner = SlotPlanner {
        capacity: 25,
        ..SlotPlanner::default()
    };
    let mut services = Vec::new();
    for _ in 0..2 {
        let pool = sqlx::AnyPool::connect(&db.url()).await?;
        let book = if std::env::var("SLOTS_IN_MEMORY").is_ok() {
            SlotBook::new(planner)
        } else {
            SlotBook::shared(planner, pool).await?
        };
        services.push(Arc::new(
            CommandService::with(
                db.store.clone(),
                Default::default(),
                planner,
                Arc::new(chrono::Utc::now),
            )
            .with_slot_book(book),
        ));
    }
    let at: chrono::DateTime<chrono::Utc> = "2027-03-01T07:00:00Z".parse()?;
    let mut tasks = Vec::new();
    for worker in 0..16usize {
        let service = services[worker % 2].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..125usize {
                let user = format!("p{worker}-{i}");
                let ctx = CommandContext::new(eventfold_http::Principal::service("load-test"));
                let purchase = PurchaseRecorded {
                    user_id: user,
                    sku: "CAPS".into(),
                    title: "Capsules".into(),
                    category: "coffee".into(),
                    quantity: 1,
                    unit_price: 100,
                    currency: "RUB".into(),
                    purchased_at: at,
                };
                service.record_purchase(&ctx, purchase).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let events = db
        .store
        .read_all(
            eventfold_event_schemas::Position::START,
            Some("reminder"),
            100_000,
        )
        .await?;
    let mut per_slot = std::collections::HashMap::<i64, u32>::new();
    let mut scheduled = 0;
    for e in &events {
        if e.event_type == "ReminderScheduled" {
            scheduled += 1;
            let slot = e.data.to_value().expect("json")["slot"]
                .as_i64()
                .unwrap_or_default();
            *per_slot.entry(slot).or_default() += 1;
        }
    }
    assert_eq!(scheduled, 2000);
    let busiest = per_slot.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= 25,
        "a slot holds {busiest} reminders; capacity 25"
    );
    Ok(())
}

/// Thirty-two prices for one sku at once, none saying when: each is stamped by the
/// server and every one is stored (201), the sku's times never going back. Before, a
/// request stamped before another that was stored first heard 422 `time_travel` — for
/// the server's own clock, not anything the caller sent. A caller's own `changed_at`
/// before the current price is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prices_set_at_once_without_a_time_are_all_stored_in_order() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let app = app(db.store.clone());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            call(
                &app,
                As::Service,
                "/api/v1/catalog/prices",
                json!({"sku": "CAPS", "title": "Capsules", "unit_price": 1000 + i}),
                None,
            )
            .await
        }));
    }
    for t in tasks {
        let a = t.await?;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let events = db
        .store
        .read_stream(
            &StreamId::new("price-CAPS")?,
            ReadDirection::Forwards,
            0,
            100,
        )
        .await?;
    assert_eq!(events.len(), 32);
    let times: Vec<String> = events
        .iter()
        .map(|e| {
            Ok(e.data.to_value()?["changed_at"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        })
        .collect::<anyhow::Result<_>>()?;
    let parsed: Vec<chrono::DateTime<chrono::Utc>> = times
        .iter()
        .map(|t| Ok(chrono::DateTime::parse_from_rfc3339(t)?.to_utc()))
        .collect::<anyhow::Result<_>>()?;
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let early = call(
        &app,
        As::Service,
        "/api/v1/catalog/prices",
        json!({"sku": "CAPS", "title": "Capsules", "unit_price": 1, "changed_at": "2000-01-01T00:00:00Z"}),
        None,
    )
    .await;
    assert_eq!(
        early.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        early.body
    );
    assert_eq!(early.body["error"], "time_travel");
    Ok(())
}

/// One keyed command sent at once to many processes (a client retrying into several
/// `serve`s behind a balancer), for every route whose events the server stamps: every
/// attempt answers the one stored answer. Before, an attempt whose append lost the race
/// on the event id (not on the stream version: PostgreSQL may report either unique
/// violation first) answered 422 `idempotency_key_reused`, its stamped time differing
/// from the stored one — for a key used for nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_keyed_command_raced_into_many_processes_answers_one_answer() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    // Separate services: no shared state cache, as in separate processes.
    let apps: Vec<_> = (0..8).map(|_| app(db.store.clone())).collect();
    let requests = [
        (
            As::Service,
            "/api/v1/catalog/prices".to_owned(),
            json!({"sku": "CAPS", "title": "Capsules", "unit_price": 1000}),
        ),
        (
            As::User("u1"),
            "/api/v1/devices/spk/activations".to_owned(),
            json!({"user_id": "u1"}),
        ),
        (
            As::User("u1"),
            "/api/v1/purchases".to_owned(),
            json!({"user_id": "u1", "sku": "CAPS", "title": "Capsules", "category": "coffee",
                   "quantity": 1, "unit_price": 1000}),
        ),
        (
            As::User("u1"),
            "/api/v1/workouts".to_owned(),
            json!({"user_id": "u1", "sport": "running"}),
        ),
    ];
    for (round, user) in ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"]
        .into_iter()
        .enumerate()
    {
        // And a "yes" (its order drafted inside the request), to an offered reminder.
        let reminder = offered_reminder(&apps[0], user, 1200).await;
        let mut requests = requests.to_vec();
        requests.push((
            As::User(user),
            format!("/api/v1/reminders/{reminder}/accept"),
            json!({}),
        ));
        for (who, path, body) in &requests {
            let key = format!("race-{round}-{path}");
            let mut tasks = Vec::new();
            let mut noise = Vec::new();
            for app in &apps {
                let (app, who, path, body, key) = (
                    app.clone(),
                    who.clone(),
                    path.clone(),
                    body.clone(),
                    key.clone(),
                );
                tasks.push(tokio::spawn({
                    let (app, who, path, body) =
                        (app.clone(), who.clone(), path.clone(), body.clone());
                    async move { call(&app, who, &path, body, Some(&key)).await }
                }));
                // Other writers on the same stream, so that a losing attempt may find
                // the winner's event at a version its expectation could not produce.
                noise.push(tokio::spawn(async move {
                    call(&app, who, &path, body, None).await
                }));
            }
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await?);
            }
            for task in noise {
                task.await?;
            }
            for answer in &answers {
                // (`accept` with other writers: an unkeyed "yes" may win; then the
                // keyed ones are refused alike, 409 reminder_already_accepted.)
                assert!(
                    answer.status.is_success() || path.ends_with("/accept"),
                    "{path}: {} {}",
                    answer.status,
                    answer.body
                );
                assert_eq!(
                    without_late_reminder(&answer.body, &answers[0].body),
                    without_late_reminder(&answers[0].body, &answer.body),
                    "{path}"
                );
            }
        }
    }
    Ok(())
}

/// `body` as it must equal `other`: a purchase answered `"reminder": null` (its step
/// found a later purchase of the same product, from the other writers, and planned
/// nothing) while a racing attempt, whose step came first, planned it — the one
/// answer that may grow (README, "Idempotency-Key") — is compared without its reminder
/// and the token that follows it. Every other field, and two planned reminders, must
/// be equal.
fn without_late_reminder(body: &Value, other: &Value) -> Value {
    let mut body = body.clone();
    if body["reminder"].is_null() || other["reminder"].is_null() {
        if let Some(fields) = body.as_object_mut() {
            fields.remove("reminder");
            fields.remove("consistency_token");
        }
    }
    body
}

//! Against PostgreSQL: many "yes" at once never make two orders; workout updates are
//! never lost.

use std::collections::HashSet;

use axum::http::StatusCode;
use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::{EventReader, ReadDirection};
use eventfold_event_schemas::StreamId;
use serde_json::json;

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

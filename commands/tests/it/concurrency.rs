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

//! A command reads only what its stream gained since the last command on it in this
//! process (the folded state is kept), against PostgreSQL: what it reads stays small as
//! the stream grows, another process's events are never missed, and a keyed retry still
//! answers its first outcome however far the stream has moved on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::{EventReader, EventWriter, PgEventStore, ReadDirection};
use eventfold_event_schemas::{
    ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId, StreamVersion,
};
use serde_json::json;
use tokio::sync::watch;

use crate::support::{app, call, As};

/// The log, counting the events the command side reads from streams.
#[derive(Clone)]
struct Counting {
    inner: PgEventStore,
    read: Arc<AtomicUsize>,
}

impl EventReader for Counting {
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: ReadDirection,
        from: StreamVersion,
        max: usize,
    ) -> eventfold_event_log::Result<Vec<RecordedEvent>> {
        let page = self.inner.read_stream(stream, direction, from, max).await?;
        self.read.fetch_add(page.len(), Ordering::SeqCst);
        Ok(page)
    }

    async fn read_all(
        &self,
        after: Position,
        category: Option<&str>,
        max: usize,
    ) -> eventfold_event_log::Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, category, max).await
    }

    async fn version_of_event(
        &self,
        stream: &StreamId,
        event_id: uuid::Uuid,
    ) -> eventfold_event_log::Result<Option<StreamVersion>> {
        self.inner.version_of_event(stream, event_id).await
    }

    async fn stream_version(
        &self,
        stream: &StreamId,
    ) -> eventfold_event_log::Result<Option<StreamVersion>> {
        self.inner.stream_version(stream).await
    }

    async fn head(&self) -> eventfold_event_log::Result<Position> {
        self.inner.head().await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }
}

impl EventWriter for Counting {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> eventfold_event_log::Result<eventfold_event_log::AppendResult> {
        self.inner.append(stream, expected, events).await
    }
}

async fn start(app: &axum::Router) -> String {
    let started = call(
        app,
        As::User("u1"),
        "/api/v1/workouts",
        json!({"user_id": "u1", "sport": "running"}),
        None,
    )
    .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    started.body["workout_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn update(i: u32) -> serde_json::Value {
    json!({"heart_rate": 100 + i % 100})
}

/// 600 updates to one workout: after the first command each reads the one event the
/// stream gained (its own last append), not the whole stream — which made every
/// update slower as the workout went on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reads_only_what_its_stream_gained() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let read = Arc::new(AtomicUsize::new(0));
    let app = app(Counting {
        inner: db.store.clone(),
        read: Arc::clone(&read),
    });
    let workout = start(&app).await;
    let path = format!("/api/v1/workouts/{workout}/updates");
    for i in 0..600 {
        let a = call(&app, As::User("u1"), &path, update(i), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let before = read.load(Ordering::SeqCst);
    let a = call(&app, As::User("u1"), &path, update(600), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let last = read.load(Ordering::SeqCst) - before;
    assert!(last <= 2, "the 602nd event's command read {last} events");
    // Over the whole run: about one event a command, not 600 × 600 / 2.
    assert!(
        before < 2_000,
        "601 commands read {before} events from the stream"
    );
    Ok(())
}

/// Two processes (two services, each keeping its own states) on one workout: each
/// decides on the whole stream, the other's events included — an update after the
/// other process completed the workout is refused (409), not appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_s_events_are_never_missed() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let (a, b) = (app(db.store.clone()), app(db.store.clone()));
    let workout = start(&a).await;
    let path = format!("/api/v1/workouts/{workout}/updates");
    for i in 0..20 {
        let which = if i % 2 == 0 { &a } else { &b };
        let answer = call(which, As::User("u1"), &path, update(i), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let done = call(
        &b,
        As::User("u1"),
        &format!("/api/v1/workouts/{workout}/complete"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let late = call(&a, As::User("u1"), &path, update(99), None).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    let events = db
        .store
        .read_stream(
            &StreamId::new(format!("workout-{workout}"))?,
            ReadDirection::Forwards,
            0,
            1000,
        )
        .await?;
    assert_eq!(
        events.last().map(|e| e.event_type.as_str()),
        Some("WorkoutCompleted")
    );
    Ok(())
}

/// A keyed command retried after its stream moved on — other updates, then the
/// workout completed — answers its first outcome (the same versions, replayed), in
/// this process and in another one; a retried completion is not a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_answers_its_first_outcome_however_far_the_stream_moved() -> anyhow::Result<()>
{
    let db = PgTestDb::new().await?;
    let (a, b) = (app(db.store.clone()), app(db.store.clone()));
    let workout = start(&a).await;
    let path = format!("/api/v1/workouts/{workout}/updates");
    let first = call(&a, As::User("u1"), &path, update(1), Some("update-1")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    for i in 0..30 {
        let answer = call(&a, As::User("u1"), &path, update(i), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let complete = format!("/api/v1/workouts/{workout}/complete");
    let done = call(&a, As::User("u1"), &complete, json!({}), Some("done")).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    for app in [&a, &b] {
        let again = call(app, As::User("u1"), &path, update(1), Some("update-1")).await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.body, first.body);
        assert!(again.replayed);
        let again = call(app, As::User("u1"), &complete, json!({}), Some("done")).await;
        assert_eq!(again.status, done.status, "{}", again.body);
        assert_eq!(again.body, done.body);
        assert!(again.replayed);
    }
    Ok(())
}

/// A purchase reads the user's purchase history as a command does — what it gained —
/// also where the reminder's planning needs the history and the purchase as stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_reads_only_what_the_history_gained() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let read = Arc::new(AtomicUsize::new(0));
    let app = app(Counting {
        inner: db.store.clone(),
        read: Arc::clone(&read),
    });
    let purchase = |sku: String| {
        json!({"user_id": "u1", "sku": sku, "title": "Capsules", "category": "coffee",
               "quantity": 1, "unit_price": 1000})
    };
    for i in 0..150 {
        let a = call(
            &app,
            As::User("u1"),
            "/api/v1/purchases",
            purchase(format!("SKU-{i}")),
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let before = read.load(Ordering::SeqCst);
    let a = call(
        &app,
        As::User("u1"),
        "/api/v1/purchases",
        purchase("SKU-LAST".to_owned()),
        Some("last"),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let last = read.load(Ordering::SeqCst) - before;
    assert!(
        last <= 10,
        "a purchase on a 150-purchase history read {last} events"
    );
    Ok(())
}

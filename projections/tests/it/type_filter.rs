//! A model reads only the event types it handles from the log, and its checkpoint still
//! moves past the others: to the head when the log ends with events it does not handle,
//! catching up and live alike.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::EventStore;
use eventfold_event_schemas::catalogue::WorkoutStarted;
use eventfold_event_schemas::{DomainEvent, EventMetadata, ExpectedVersion, StreamId};
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::{ReadDb, RelationalSink, Runner, RunnerOptions, Sink, StatusBoard};
use uuid::Uuid;

async fn append(store: &impl EventStore, stream: String, event: DomainEvent) -> anyhow::Result<()> {
    let new = event.to_new_event(Uuid::new_v4(), EventMetadata::default());
    store
        .append(&StreamId::new(stream)?, ExpectedVersion::Any, &[new])
        .await?;
    Ok(())
}

/// Events of a type `reminders.v1` does not handle.
async fn workouts(store: &impl EventStore, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        let workout_id = Uuid::new_v4();
        let started = WorkoutStarted {
            workout_id,
            user_id: "athlete".into(),
            sport: "running".into(),
            goal_distance_m: None,
            started_at: Utc
                .with_ymd_and_hms(2026, 11, 2, 7, 0, 0)
                .single()
                .unwrap_or_default(),
        };
        append(store, format!("workout-{workout_id}"), started.into()).await?;
    }
    Ok(())
}

async fn reminders_count(db: &ReadDb) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM rm_reminders")
        .fetch_one(db.pool())
        .await?)
}

async fn checkpoint_reaches_the_head_past_other_types<S: EventStore>(
    store: S,
    url: &str,
) -> anyhow::Result<()> {
    for i in 0..30u32 {
        crate::support::schedule_reminder(&store, i).await?;
        workouts(&store, 2).await?;
    }
    // The log ends with 50 events the model does not handle.
    workouts(&store, 50).await?;
    let head = store.head().await?;
    let db = ReadDb::connect(url).await?;
    let options = RunnerOptions {
        batch_size: 7,
        poll_interval: Duration::from_millis(100),
        ..RunnerOptions::default()
    };
    let runner = Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), RemindersProjection),
        options,
        StatusBoard::default(),
    );
    runner.run_until(Some(head)).await?;
    assert_eq!(runner.sink().checkpoint().await?, head, "catching up");
    assert_eq!(reminders_count(&db).await?, 30);

    // Live: only other types arrive; the checkpoint follows them to the head.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    workouts(&store, 5).await?;
    let head = store.head().await?;
    let sink = RelationalSink::new(db.clone(), RemindersProjection);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.checkpoint().await? < head {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live: the checkpoint stayed at {} below the head {head}",
            sink.checkpoint().await?
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    live.await??;
    assert_eq!(sink.checkpoint().await?, head);
    assert_eq!(reminders_count(&db).await?, 30);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_moves_past_the_types_it_does_not_handle_on_postgres() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    checkpoint_reaches_the_head_past_other_types(db.store.clone(), &db.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_moves_past_the_types_it_does_not_handle_on_sqlite() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    checkpoint_reaches_the_head_past_other_types(db.store.clone(), &db.url).await
}

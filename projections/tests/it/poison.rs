//! An event that keeps failing is parked, visibly; the projection stops or skips it.

use eventfold_event_log::testing::SqliteTestDb;
use eventfold_event_log::{EventReader, EventWriter};
use eventfold_event_schemas::{ExpectedVersion, NewEvent, Position, StreamId};
use eventfold_projections::models::workouts::{self, WorkoutsProjection};
use eventfold_projections::{
    Error, PoisonPolicy, ReadDb, RelationalSink, Runner, RunnerOptions, Sink, StatusBoard,
};
use serde_json::json;
use sqlx::Row;

use crate::support::append_completed_workouts;

/// Two good workouts, then an undecodable update and an update of a workout that never
/// started, then one more good workout.
async fn log_with_poison(db: &SqliteTestDb) -> anyhow::Result<(Position, Position)> {
    append_completed_workouts(&db.store, 2, 1).await?;
    let bad_shape = NewEvent::new("WorkoutUpdated", json!({"workout_id": "not a uuid"}));
    let first = db
        .store
        .append(
            &StreamId::new("workout-bad1")?,
            ExpectedVersion::Any,
            &[bad_shape],
        )
        .await?;
    let orphan = NewEvent::new(
        "WorkoutUpdated",
        json!({"workout_id": uuid::Uuid::new_v4(), "distance_m": 5.0, "heart_rate": null, "speed_mps": null,
               "points": [], "updated_at": "2026-11-23T10:00:00Z"}),
    );
    let second = db
        .store
        .append(
            &StreamId::new("workout-bad2")?,
            ExpectedVersion::Any,
            &[orphan],
        )
        .await?;
    append_completed_workouts(&db.store, 1, 1).await?;
    Ok((first.last_position, second.last_position))
}

async fn parked(db: &ReadDb) -> anyhow::Result<Vec<(i64, String)>> {
    let rows = sqlx::query("SELECT position, error FROM eventfold_parked_events ORDER BY position")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("position")?, r.try_get("error")?)))
        .collect()
}

#[tokio::test]
async fn with_stop_a_poison_event_is_parked_and_the_projection_stops_before_it(
) -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let (bad, _) = log_with_poison(&db).await?;
    let read = ReadDb::connect(&db.url).await?;
    let board = StatusBoard::default();
    let runner = Runner::new(
        db.store.clone(),
        RelationalSink::new(read.clone(), WorkoutsProjection),
        RunnerOptions::default(),
        board.clone(),
    );
    let stopped = runner.run_until(Some(db.store.head().await?)).await;
    assert!(
        matches!(stopped, Err(Error::Stopped { position, .. }) if position == bad.0),
        "{stopped:?}"
    );
    assert_eq!(runner.sink().checkpoint().await?, Position(bad.0 - 1));
    let parked = parked(&read).await?;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].0, bad.0);
    assert!(parked[0].1.contains("WorkoutUpdated"), "{}", parked[0].1);
    let status = board.status("workouts.v2").expect("status");
    assert_eq!(
        (status.parked, status.state),
        (1, eventfold_projections::ProjectionState::Stopped)
    );
    // The good workouts before it are there; the one after it is not.
    assert_eq!(
        workouts::stats(&read, "runner0").await?.map(|s| s.workouts),
        Some(2)
    );
    Ok(())
}

#[tokio::test]
async fn with_skip_poison_events_are_parked_and_the_rest_is_applied() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let (bad, orphan) = log_with_poison(&db).await?;
    let read = ReadDb::connect(&db.url).await?;
    let options = RunnerOptions {
        poison: PoisonPolicy::Skip,
        backoff: std::time::Duration::from_millis(1),
        ..RunnerOptions::default()
    };
    let runner = Runner::new(
        db.store.clone(),
        RelationalSink::new(read.clone(), WorkoutsProjection),
        options,
        StatusBoard::default(),
    );
    runner.run_until(Some(db.store.head().await?)).await?;
    assert_eq!(runner.sink().checkpoint().await?, db.store.head().await?);
    let parked: Vec<i64> = parked(&read).await?.into_iter().map(|p| p.0).collect();
    assert_eq!(
        parked,
        vec![bad.0, orphan.0],
        "both the undecodable and the orphan update are parked"
    );
    assert_eq!(
        workouts::stats(&read, "runner0").await?.map(|s| s.workouts),
        Some(3)
    );
    Ok(())
}

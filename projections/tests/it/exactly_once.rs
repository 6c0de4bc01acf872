//! A projector that dies between its writes and its checkpoint resumes with nothing
//! duplicated and nothing missing.

use std::time::Duration;

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::{EventReader, EventStore};
use eventfold_projections::models::workouts::{self, WorkoutsProjection};
use eventfold_projections::{ReadDb, RelationalSink, Runner, RunnerOptions, Sink, StatusBoard};

use crate::support::append_completed_workouts;

const WORKOUTS: usize = 120;
const USERS: usize = 4;

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 7,
        backoff: Duration::from_millis(1),
        ..RunnerOptions::default()
    }
}

async fn assert_totals(db: &ReadDb) -> anyhow::Result<()> {
    for u in 0..USERS {
        let stats = workouts::stats(db, &format!("runner{u}"))
            .await?
            .expect("stats");
        let per_user = (WORKOUTS / USERS) as i64;
        assert_eq!(
            stats.workouts, per_user,
            "runner{u}: duplicated or missing workouts"
        );
        assert_eq!(stats.total_distance_m, per_user as f64 * 1000.0);
        assert_eq!(stats.total_seconds, per_user * 300);
    }
    Ok(())
}

async fn injected_failures_leave_no_trace<S: EventStore>(
    store: S,
    url: &str,
) -> anyhow::Result<()> {
    append_completed_workouts(&store, WORKOUTS, USERS).await?;
    let db = ReadDb::connect(url).await?;
    let sink = RelationalSink::new(db.clone(), WorkoutsProjection);
    // Every one of the first 10 batches fails after writing, before its checkpoint.
    let fail_point = sink.fail_point();
    fail_point.arm(10);
    let runner = Runner::new(store.clone(), sink, options(), StatusBoard::default());
    runner.run_until(Some(store.head().await?)).await?;
    assert_eq!(
        fail_point.fired(),
        10,
        "the fail point did not fire: nothing was tested"
    );
    assert_eq!(runner.sink().checkpoint().await?, store.head().await?);
    assert_totals(&db).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_between_writes_and_checkpoint_duplicate_nothing_on_postgres() -> anyhow::Result<()>
{
    let db = PgTestDb::new().await?;
    injected_failures_leave_no_trace(db.store.clone(), &db.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_between_writes_and_checkpoint_duplicate_nothing_on_sqlite() -> anyhow::Result<()>
{
    let db = SqliteTestDb::new().await?;
    injected_failures_leave_no_trace(db.store.clone(), &db.url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_again_and_again_ends_exactly_where_a_clean_one_does(
) -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    let store = pg.store.clone();
    append_completed_workouts(&store, WORKOUTS, USERS).await?;
    let head = store.head().await?;
    let db = ReadDb::connect(&pg.url()).await?;
    // Kill the runner task at arbitrary moments (mid-transaction included), restart.
    for round in 0..15u64 {
        let (store, db) = (store.clone(), db.clone());
        let task = tokio::spawn(async move {
            let runner = Runner::new(
                store,
                RelationalSink::new(db, WorkoutsProjection),
                options(),
                StatusBoard::default(),
            );
            runner.run_until(Some(head)).await
        });
        tokio::time::sleep(Duration::from_millis(3 + round * 2)).await;
        task.abort();
        let _ = task.await;
    }
    let runner = Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), WorkoutsProjection),
        options(),
        StatusBoard::default(),
    );
    runner.run_until(Some(head)).await?;
    assert_totals(&db).await
}

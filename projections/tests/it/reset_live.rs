//! `projections reset` beside a running `serve`: the reset of a relational model reads
//! (whether each table exists, its rows) before it drops and forgets. On SQLite, a
//! deferred transaction that reads first fails at its first write, whatever the busy
//! timeout, when anyone else wrote meanwhile (`SQLITE_BUSY_SNAPSHOT`, "database is
//! locked"): with appends and a live runner writing, resets failed (found by
//! `scripts/stateful-load --replay-every`). On PostgreSQL the reset dropped the tables
//! before it deleted the checkpoint, the reverse of a runner's batch: "deadlock
//! detected" (in CI, under the first test here; the second shows it step by step).
//! Each reset must go through, and the model be built again by its runner.

use std::time::Duration;

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::{EventReader as _, EventStore};
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::{
    ProjectionSet, ReadDb, RelationalSink, Runner, RunnerOptions, Sink, StatusBoard,
};

async fn resets_beside_writers_go_through<S: EventStore>(
    store: S,
    url: &str,
) -> anyhow::Result<()> {
    let db = ReadDb::connect(url).await?;
    let options = RunnerOptions {
        poll_interval: Duration::from_millis(10),
        ..RunnerOptions::default()
    };
    let runner = Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), RemindersProjection),
        options.clone(),
        StatusBoard::default(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let live = {
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            runner
                .run(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let writer = {
        let store = store.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut user = 0;
            while !*stopped.borrow_and_update() {
                crate::support::schedule_reminder(&store, user).await?;
                user += 1;
            }
            anyhow::Ok(user)
        })
    };
    let set = ProjectionSet::new(
        store.clone(),
        db.clone(),
        None,
        options,
        StatusBoard::default(),
    );
    for attempt in 0..150 {
        if let Err(error) = set.reset("reminders.v1").await {
            panic!("reset {attempt} beside the writers: {error}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = stop.send(true);
    let written = writer.await??;
    assert!(written > 0, "nothing was written beside the resets");
    live.await??;
    // Built again from the log by a runner after the last reset: every reminder.
    let head = store.head().await?;
    let runner = Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), RemindersProjection),
        RunnerOptions::default(),
        StatusBoard::default(),
    );
    runner.run_until(Some(head)).await?;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_reminders")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(rows, i64::from(written));
    assert_eq!(
        RelationalSink::new(db, RemindersProjection)
            .checkpoint()
            .await?,
        head
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_beside_writers_go_through_on_sqlite() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    resets_beside_writers_go_through(db.store.clone(), &db.url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_beside_writers_go_through_on_postgres() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    resets_beside_writers_go_through(db.store.clone(), &db.url()).await
}

/// The lock order, step by step: a runner's batch takes its checkpoint's row, then
/// writes the model's table. A reset started between the two must wait for the batch
/// rather than drop the table first: the other way round the batch waited for the
/// dropped table and the reset for the row, and PostgreSQL broke the deadlock by
/// failing one of them ("deadlock detected", seen in CI under the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_waits_for_the_batch_under_way_on_postgres() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let read = ReadDb::connect(&db.url()).await?;
    crate::support::schedule_reminder(&db.store, 0).await?;
    Runner::new(
        db.store.clone(),
        RelationalSink::new(read.clone(), RemindersProjection),
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .run_until(Some(db.store.head().await?))
    .await?;
    let mut batch = read.pool().begin().await?;
    sqlx::query("UPDATE eventfold_checkpoints SET updated_at = updated_at WHERE name = $1")
        .bind("reminders.v1")
        .execute(&mut *batch)
        .await?;
    let set = ProjectionSet::new(
        db.store.clone(),
        read.clone(),
        None,
        RunnerOptions::default(),
        StatusBoard::default(),
    );
    let reset = tokio::spawn(async move { set.reset("reminders.v1").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The batch's write and commit: the reset has taken nothing the batch needs.
    sqlx::query("DELETE FROM rm_reminders WHERE 1 = 0")
        .execute(&mut *batch)
        .await?;
    batch.commit().await?;
    let (rows, _) = reset.await??;
    assert_eq!(rows, 1, "the reset counts the model's rows");
    Ok(())
}

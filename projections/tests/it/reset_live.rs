//! `projections reset` beside a running `serve`: the reset of a relational model reads
//! (whether each table exists, its rows) before it drops and forgets. On SQLite, a
//! deferred transaction that reads first fails at its first write, whatever the busy
//! timeout, when anyone else wrote meanwhile (`SQLITE_BUSY_SNAPSHOT`, "database is
//! locked"): with appends and a live runner writing, resets failed (found by
//! `scripts/stateful-load --replay-every`). Each reset must go through, and the model
//! be built again by its runner.

use std::time::Duration;

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::EventStore;
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
    for attempt in 0..40 {
        if let Err(error) = set.reset("reminders.v1").await {
            panic!("reset {attempt} beside the writers: {error}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
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

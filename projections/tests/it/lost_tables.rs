//! A model's table dropped under it (by hand, or lost in a partial restore) is not the
//! events' fault: nothing is parked, and the model is rebuilt from the log — live, while
//! its runner runs, and by a runner started after the loss — instead of going on, its
//! table created again empty, from where its checkpoint was.

use std::time::Duration;

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::EventStore;
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::{ReadDb, RelationalSink, Runner, RunnerOptions, Sink, StatusBoard};

async fn remind(store: &impl EventStore, n: u32) -> anyhow::Result<()> {
    for i in 0..n {
        crate::support::schedule_reminder(store, i).await?;
    }
    Ok(())
}

/// Rows of `rm_reminders`, or `None` while the table does not exist.
async fn reminders(db: &ReadDb) -> Option<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM rm_reminders")
        .fetch_one(db.pool())
        .await
        .ok()
}

async fn parked(db: &ReadDb) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM eventfold_parked_events WHERE projection = 'reminders.v1'",
    )
    .fetch_one(db.pool())
    .await?)
}

/// Waits until the model holds `rows` reminders with its checkpoint at `head`.
async fn settles(db: &ReadDb, rows: i64, head: eventfold_event_schemas::Position, when: &str) {
    let sink = RelationalSink::new(db.clone(), RemindersProjection);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let count = reminders(db).await;
        let checkpoint = sink.checkpoint().await.ok();
        if count == Some(rows) && checkpoint == Some(head) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{when}: {count:?} reminders at checkpoint {checkpoint:?}, not {rows} at {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_dropped_table_is_rebuilt_from_the_log<S: EventStore>(
    store: S,
    url: &str,
) -> anyhow::Result<()> {
    let db = ReadDb::connect(url).await?;
    let options = RunnerOptions {
        poll_interval: Duration::from_millis(50),
        max_attempts: 2,
        ..RunnerOptions::default()
    };
    let runner = Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), RemindersProjection),
        options.clone(),
        StatusBoard::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    remind(&store, 10).await?;
    settles(&db, 10, store.head().await?, "before the drop").await;

    // Dropped under the running runner; events keep arriving.
    sqlx::query("DROP TABLE rm_reminders")
        .execute(db.pool())
        .await?;
    remind(&store, 5).await?;
    settles(&db, 15, store.head().await?, "after the drop, live").await;
    assert_eq!(parked(&db).await?, 0, "a dropped table parked events");
    let _ = stop.send(());
    live.await??;

    // Dropped while no runner runs: the next one rebuilds it rather than going on empty.
    sqlx::query("DROP TABLE rm_reminders")
        .execute(db.pool())
        .await?;
    remind(&store, 2).await?;
    let head = store.head().await?;
    let runner = Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), RemindersProjection),
        options,
        StatusBoard::default(),
    );
    runner.run_until(Some(head)).await?;
    settles(&db, 17, head, "after a drop while stopped").await;
    assert_eq!(parked(&db).await?, 0);
    Ok(())
}

/// A model Kafka-fed workers took over (its checkpoint a hand-over marker, its progress
/// in per-partition checkpoints) whose table is lost is handed back to the log, its
/// partition checkpoints gone: a worker taking it over again starts from the
/// partitions' first offsets (or refuses), instead of going on from where the lost rows
/// ended.
async fn a_kafka_fed_model_that_lost_its_table_goes_back_to_the_log<S: EventStore>(
    store: S,
    url: &str,
) -> anyhow::Result<()> {
    let db = ReadDb::connect(url).await?;
    let sink = RelationalSink::new(db.clone(), RemindersProjection);
    sink.setup().await?;
    remind(&store, 3).await?;
    Runner::new(
        store.clone(),
        sink.clone(),
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .run_until(Some(store.head().await?))
    .await?;
    // Taken over at 3; a partition feed applied through 9.
    let marker = eventfold_projections::handed_over(eventfold_event_schemas::Position(3));
    sqlx::query("UPDATE eventfold_checkpoints SET position = $1 WHERE name = 'reminders.v1'")
        .bind(marker.0)
        .execute(db.pool())
        .await?;
    sqlx::query(
        "INSERT INTO eventfold_checkpoints (name, position, updated_at) \
         VALUES ('reminders.v1@eventfold.reminder#0', 9, 0)",
    )
    .execute(db.pool())
    .await?;
    sqlx::query("DROP TABLE rm_reminders")
        .execute(db.pool())
        .await?;

    sink.setup().await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, position FROM eventfold_checkpoints ORDER BY name")
            .fetch_all(db.pool())
            .await?;
    assert_eq!(rows, [("reminders.v1".to_owned(), 0)]);
    assert_eq!(reminders(&db).await, Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_fed_model_that_lost_its_table_goes_back_to_the_log_on_postgres(
) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    a_kafka_fed_model_that_lost_its_table_goes_back_to_the_log(db.store.clone(), &db.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_fed_model_that_lost_its_table_goes_back_to_the_log_on_sqlite() -> anyhow::Result<()>
{
    let db = SqliteTestDb::new().await?;
    a_kafka_fed_model_that_lost_its_table_goes_back_to_the_log(db.store.clone(), &db.url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_is_rebuilt_from_the_log_on_postgres() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    a_dropped_table_is_rebuilt_from_the_log(db.store.clone(), &db.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_is_rebuilt_from_the_log_on_sqlite() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    a_dropped_table_is_rebuilt_from_the_log(db.store.clone(), &db.url).await
}

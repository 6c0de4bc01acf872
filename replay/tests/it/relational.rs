//! Relational read models: rebuild, verify, swap; batching; as-of builds.

use std::time::Duration;

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::{EventReader, EventStore};
use eventfold_projections::models::catalog::CatalogProjection;
use eventfold_projections::models::orders::OrdersProjection;
use eventfold_projections::models::purchases::PurchasesProjection;
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::models::workouts::WorkoutsProjection;
use eventfold_projections::{
    ProjectionSet, ReadDb, RelationalProjection, RelationalSink, Runner, RunnerOptions, StatusBoard,
};
use eventfold_replay::{rebuild, table_checksum, Error, Target};

use crate::support::{checksums, populate, prefixed_checksums};

async fn rebuilds_equal<S: EventStore, P: RelationalProjection + Clone>(
    store: &S,
    db: &ReadDb,
    projection: P,
) -> anyhow::Result<()> {
    let before = checksums(db, &projection).await?;
    assert!(
        before.iter().any(|c| c.rows > 0),
        "{} is empty: the test proves nothing",
        projection.name()
    );
    let report = rebuild(
        store,
        db,
        projection.clone(),
        Target::Swap { keep_old: false },
        |_| {},
        std::future::pending(),
    )
    .await?;
    let report = report.expect("a swap report");
    assert!(
        report.verified_against_live,
        "{} was not compared with the live model",
        projection.name()
    );
    assert_eq!(
        checksums(db, &projection).await?,
        before,
        "{} changed in the rebuild",
        projection.name()
    );
    Ok(())
}

async fn every_projection<S: EventStore>(store: S, url: &str) -> anyhow::Result<()> {
    populate(store.clone(), "u", 6, 2).await?;
    let db = ReadDb::connect(url).await?;
    ProjectionSet::new(
        store.clone(),
        db.clone(),
        None,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .catch_up()
    .await?;
    rebuilds_equal(&store, &db, RemindersProjection).await?;
    rebuilds_equal(&store, &db, OrdersProjection).await?;
    rebuilds_equal(&store, &db, PurchasesProjection).await?;
    rebuilds_equal(&store, &db, CatalogProjection).await?;
    rebuilds_equal(&store, &db, WorkoutsProjection).await?;
    // A second rebuild works too (no left-over names in the way).
    rebuilds_equal(&store, &db, WorkoutsProjection).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rebuilt_model_equals_the_live_one_on_postgres() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    every_projection(db.store.clone(), &db.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rebuilt_model_equals_the_live_one_on_sqlite() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    every_projection(db.store.clone(), &db.url).await
}

/// Batched applies (one read and one multi-row write per table per batch) must equal
/// one event per transaction, whatever the batch boundaries.
async fn batched_equals_one_by_one<S: EventStore, P: RelationalProjection + Clone>(
    store: &S,
    db: &ReadDb,
    projection: P,
) -> anyhow::Result<()> {
    let head = store.head().await?;
    let mut results = Vec::new();
    for (prefix, batch_size) in [("one_", 1), ("seven_", 7), ("big_", 5000)] {
        let sink = RelationalSink::with_prefix(db.clone(), projection.clone(), prefix);
        let options = RunnerOptions {
            batch_size,
            ..RunnerOptions::default()
        };
        Runner::new(store.clone(), sink, options, StatusBoard::default())
            .run_until(Some(head))
            .await?;
        results.push(prefixed_checksums(db, &projection, prefix).await?);
    }
    assert!(
        results[0].iter().all(|c| c.rows > 0),
        "empty: proves nothing"
    );
    assert_eq!(
        results[0],
        results[1],
        "{}: batches of 7",
        projection.name()
    );
    assert_eq!(
        results[0],
        results[2],
        "{}: batches of 5000",
        projection.name()
    );
    Ok(())
}

/// Optional doubles travel as NaN and are stored as NULL: none is lost or invented.
async fn goals_keep_their_nulls(db: &ReadDb) -> anyhow::Result<()> {
    for table in ["one_rm_workouts", "big_rm_workouts"] {
        let nulls: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE goal_distance_m IS NULL"
        ))
        .fetch_one(db.pool())
        .await?;
        let goals: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE goal_distance_m = 5000"
        ))
        .fetch_one(db.pool())
        .await?;
        // populate: 5 users x 6 workouts, every other one with a goal.
        assert_eq!((nulls, goals), (15, 15), "{table}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_applies_equal_one_event_at_a_time_on_postgres_and_sqlite() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    populate(pg.store.clone(), "u", 5, 6).await?;
    let db = ReadDb::connect(&pg.url()).await?;
    batched_equals_one_by_one(&pg.store, &db, WorkoutsProjection).await?;
    goals_keep_their_nulls(&db).await?;
    batched_equals_one_by_one(&pg.store, &db, RemindersProjection).await?;
    let lite = SqliteTestDb::new().await?;
    populate(lite.store.clone(), "u", 5, 6).await?;
    let db = ReadDb::connect(&lite.url).await?;
    batched_equals_one_by_one(&lite.store, &db, WorkoutsProjection).await?;
    goals_keep_their_nulls(&db).await?;
    batched_equals_one_by_one(&lite.store, &db, RemindersProjection).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_resumes_and_ends_the_same() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    populate(pg.store.clone(), "u", 10, 100).await?;
    let db = ReadDb::connect(&pg.url()).await?;
    ProjectionSet::new(
        pg.store.clone(),
        db.clone(),
        None,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .catch_up()
    .await?;
    let before = checksums(&db, &WorkoutsProjection).await?;
    let head = pg.store.head().await?;
    // Ctrl-C: the rebuild stops at once, saying where its shadow stands.
    let stopped = rebuild(
        &pg.store,
        &db,
        WorkoutsProjection,
        Target::Swap { keep_old: false },
        |_| {},
        std::future::ready(()),
    )
    .await;
    assert!(
        matches!(stopped, Err(Error::Interrupted(at)) if at < head.0),
        "{stopped:?}"
    );
    // A crash half-way leaves shadow tables at their own checkpoint (built here exactly
    // as the rebuild builds them, to half the log; a deterministic stand-in for killing
    // the process at a random moment).
    let half = eventfold_event_schemas::Position(head.0 / 2);
    let shadow = RelationalSink::with_prefix(db.clone(), WorkoutsProjection, "shadow_");
    Runner::new(
        pg.store.clone(),
        shadow,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .run_until(Some(half))
    .await?;
    let partial = prefixed_checksums(&db, &WorkoutsProjection, "shadow_").await?;
    assert!(partial != before && partial[0].rows > 0, "not half-way");
    let resumed = rebuild(
        &pg.store,
        &db,
        WorkoutsProjection,
        Target::Swap { keep_old: false },
        |_| {},
        std::future::pending(),
    )
    .await?;
    assert!(resumed.is_some_and(|r| r.verified_against_live));
    assert_eq!(checksums(&db, &WorkoutsProjection).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_commands_arrive_misses_and_duplicates_nothing() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    rebuild_while_commands_arrive(pg.store.clone(), &pg.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_commands_arrive_on_sqlite_misses_and_duplicates_nothing(
) -> anyhow::Result<()> {
    let lite = SqliteTestDb::new().await?;
    rebuild_while_commands_arrive(lite.store.clone(), &lite.url).await
}

async fn rebuild_while_commands_arrive<S: EventStore>(store: S, url: &str) -> anyhow::Result<()> {
    populate(store.clone(), "u", 4, 10).await?;
    let db = ReadDb::connect(url).await?;
    let board = StatusBoard::default();
    let set = ProjectionSet::new(
        store.clone(),
        db.clone(),
        None,
        RunnerOptions {
            poll_interval: Duration::from_millis(50),
            ..RunnerOptions::default()
        },
        board.clone(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut live = set.spawn(stopped);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { populate(store, "late", 4, 10).await })
    };
    let report = rebuild(
        &store,
        &db,
        WorkoutsProjection,
        Target::Swap { keep_old: true },
        |_| {},
        std::future::pending(),
    )
    .await?;
    assert!(report.is_some());
    writer.await??;
    // The live runner follows the swapped-in tables to the head.
    let head = store.head().await?;
    for _ in 0..200 {
        if board.checkpoint_of("workouts.v2") >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        board.checkpoint_of("workouts.v2") >= head,
        "the live runner did not follow the swap"
    );
    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM rm_workouts WHERE status = 'completed'")
            .fetch_one(db.pool())
            .await?;
    // A workout's counters are folded from its events: an update applied twice
    // counts its points twice, while its points' rows are keyed.
    let counted: i64 = sqlx::query_scalar("SELECT CAST(SUM(points) AS BIGINT) FROM rm_workouts")
        .fetch_one(db.pool())
        .await?;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_workout_points")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(completed, 80, "every workout once");
    assert!(stored > 0, "no route points");
    assert_eq!(counted, stored, "no update applied twice");
    stop.send(true)?;
    while let Some(done) = live.join_next().await {
        done??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_as_of_build_stops_exactly_at_its_position_and_leaves_live_alone() -> anyhow::Result<()>
{
    let db = SqliteTestDb::new().await?;
    populate(db.store.clone(), "u", 3, 5).await?;
    let read = ReadDb::connect(&db.url).await?;
    ProjectionSet::new(
        db.store.clone(),
        read.clone(),
        None,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .catch_up()
    .await?;
    let live_before = checksums(&read, &WorkoutsProjection).await?;
    let to = eventfold_event_schemas::Position(db.store.head().await?.0 / 2);
    let target = Target::AsOf {
        label: "half".parse().expect("label"),
        from: eventfold_event_schemas::Position::START,
        to,
    };
    assert!(rebuild(
        &db.store,
        &read,
        WorkoutsProjection,
        target,
        |_| {},
        std::future::pending()
    )
    .await?
    .is_none());
    let at: i64 = sqlx::query_scalar(
        "SELECT position FROM eventfold_checkpoints WHERE name = 'asof_half_workouts.v2'",
    )
    .fetch_one(read.pool())
    .await?;
    assert_eq!(at, to.0, "applied past the as-of position");
    let as_of: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM asof_half_rm_workouts")
        .fetch_one(read.pool())
        .await?;
    let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_workouts")
        .fetch_one(read.pool())
        .await?;
    assert!(as_of > 0 && as_of < live, "as-of {as_of}, live {live}");
    assert_eq!(checksums(&read, &WorkoutsProjection).await?, live_before);
    Ok(())
}

/// The checksum sees one changed value and ignores row order, on both engines.
async fn checksums_see_changes(url: &str) -> anyhow::Result<()> {
    let db = ReadDb::connect(url).await?;
    let mut conn = db.pool().acquire().await?;
    for (table, rows) in [
        ("ck_a", "('x', 1, 0.1), ('y', 2, NULL)"),
        ("ck_b", "('y', 2, NULL), ('x', 1, 0.1)"),
        ("ck_c", "('x', 1, 0.1), ('y', 2, 0.30000000000000004)"),
    ] {
        sqlx::query(&format!(
            "CREATE TABLE {table} (k TEXT PRIMARY KEY, n BIGINT, f DOUBLE PRECISION)"
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!("INSERT INTO {table} VALUES {rows}"))
            .execute(&mut *conn)
            .await?;
    }
    let a = table_checksum(&mut conn, "ck_a").await?;
    let b = table_checksum(&mut conn, "ck_b").await?;
    let c = table_checksum(&mut conn, "ck_c").await?;
    assert_eq!(a, b, "row order must not matter");
    assert_eq!(a.rows, 2);
    assert_ne!(a, c, "a changed value must change the checksum");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_checksums_see_one_changed_value_on_postgres_and_sqlite() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    checksums_see_changes(&pg.url()).await?;
    let lite = SqliteTestDb::new().await?;
    checksums_see_changes(&lite.url).await
}

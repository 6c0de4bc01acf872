//! Rebuilds equal the live models, survive concurrent writes and resume after a stop.
#![allow(missing_debug_implementations)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use eventfold_commands::{CommandContext, CommandService, Principal};
use eventfold_domain::consumables::ConsumablePolicy;
use eventfold_domain::slotting::SlotPlanner;
use eventfold_domain::workout::WorkoutCommand;
use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::{EventReader, EventStore};
use eventfold_event_schemas::catalogue::{GeoPoint, PriceChanged, PurchaseRecorded};
use eventfold_projections::models::catalog::CatalogProjection;
use eventfold_projections::models::leaderboard::LeaderboardProjection;
use eventfold_projections::models::orders::OrdersProjection;
use eventfold_projections::models::purchases::PurchasesProjection;
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::models::voice::VoiceDueProjection;
use eventfold_projections::models::workouts::WorkoutsProjection;
use eventfold_projections::{
    ProjectionSet, ReadDb, RedisKeys, RedisProjection, RedisSink, RedisTarget,
    RelationalProjection, RelationalSink, Runner, RunnerOptions, StatusBoard,
};
use eventfold_replay::{
    rebuild, rebuild_redis, snapshot, table_checksum, Error, TableChecksum, Target,
};
use uuid::Uuid;

async fn populate<S: EventStore>(
    store: S,
    tag: &str,
    users: usize,
    workouts_each: usize,
) -> anyhow::Result<()> {
    let service = CommandService::with(
        store,
        ConsumablePolicy::default(),
        SlotPlanner::default(),
        Arc::new(Utc::now),
    );
    let ctx = CommandContext::new(Principal::service("test"));
    let now = Utc::now();
    service
        .set_price(
            &ctx,
            PriceChanged {
                sku: "SKU".into(),
                title: "Tea".into(),
                unit_price: 500,
                currency: "RUB".into(),
                available: true,
                delivery_days: 1,
                changed_at: now - Span::days(1),
            },
        )
        .await?;
    for u in 0..users {
        let user = format!("{tag}{u}");
        let mut planned = None;
        for d in [90, 60, 30] {
            let p = PurchaseRecorded {
                user_id: user.clone(),
                sku: "SKU".into(),
                title: "Tea".into(),
                category: "tea".into(),
                quantity: 1,
                unit_price: 450,
                currency: "RUB".into(),
                purchased_at: now - Span::days(d),
            };
            planned = service
                .record_purchase(&ctx, p)
                .await?
                .reminder
                .map(|r| r.reminder_id);
        }
        // Every reminder path: accepted, declined, snoozed, left scheduled.
        match (planned, u % 4) {
            (Some(reminder), 0) => {
                service.offer(&ctx, reminder, None).await?;
                let accepted = service.accept(&ctx, reminder).await?;
                service.confirm_order(&ctx, accepted.order_id).await?;
            }
            (Some(reminder), 1) => {
                service.offer(&ctx, reminder, None).await?;
                service.decline(&ctx, reminder).await?;
            }
            (Some(reminder), 2) => {
                service.offer(&ctx, reminder, None).await?;
                service.snooze(&ctx, reminder, now + Span::days(2)).await?;
            }
            _ => {}
        }
        for i in 0..workouts_each {
            let w = Uuid::new_v4();
            // Goals with and without: NULL and non-NULL doubles in one statement.
            let goal = (i % 2 == 1).then_some(5000.0);
            service
                .start_workout(&ctx, w, user.clone(), "running".into(), goal)
                .await?;
            service
                .workout_command(&ctx, w, |at| WorkoutCommand::Update {
                    distance_m: Some(800.0),
                    heart_rate: Some(140),
                    speed_mps: None,
                    points: vec![
                        GeoPoint {
                            lat: 55.75,
                            lon: 37.61,
                            at,
                        },
                        GeoPoint {
                            lat: 55.76,
                            lon: 37.62,
                            at,
                        },
                    ],
                    at,
                })
                .await?;
            service
                .workout_command(&ctx, w, |at| WorkoutCommand::Update {
                    distance_m: None,
                    heart_rate: Some(150),
                    speed_mps: Some(3.1),
                    points: vec![],
                    at,
                })
                .await?;
            service
                .workout_command(&ctx, w, |at| WorkoutCommand::Complete {
                    distance_m: Some(1000.0),
                    at,
                })
                .await?;
        }
    }
    Ok(())
}

async fn checksums<P: RelationalProjection>(
    db: &ReadDb,
    projection: &P,
) -> anyhow::Result<Vec<TableChecksum>> {
    let mut conn = db.pool().acquire().await?;
    let mut out = Vec::new();
    for table in projection.tables() {
        out.push(table_checksum(&mut conn, table).await?);
    }
    Ok(out)
}

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

/// Checksums of `projection`'s tables under `prefix`.
async fn prefixed_checksums<P: RelationalProjection>(
    db: &ReadDb,
    projection: &P,
    prefix: &str,
) -> anyhow::Result<Vec<TableChecksum>> {
    let mut conn = db.pool().acquire().await?;
    let mut out = Vec::new();
    for table in projection.tables() {
        out.push(table_checksum(&mut conn, &format!("{prefix}{table}")).await?);
    }
    Ok(out)
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
        if board.checkpoint_of("workouts.v1") >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        board.checkpoint_of("workouts.v1") >= head,
        "the live runner did not follow the swap"
    );
    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM rm_workouts WHERE status = 'completed'")
            .fetch_one(db.pool())
            .await?;
    let totals: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(workouts) AS BIGINT) FROM rm_workout_stats")
            .fetch_one(db.pool())
            .await?;
    assert_eq!(
        (completed, totals),
        (80, 80),
        "every workout once, none twice"
    );
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
        label: "half".into(),
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
        "SELECT position FROM eventfold_checkpoints WHERE name = 'asof_half_workouts.v1'",
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

// ---- Redis models -------------------------------------------------------------------

/// A Redis namespace of its own, deleted when dropped.
struct RedisSpace {
    client: redis::Client,
    keys: RedisKeys,
}

impl RedisSpace {
    fn new() -> anyhow::Result<Self> {
        let url = std::env::var("EVENTFOLD_TEST_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        Ok(Self {
            client: redis::Client::open(url)?,
            keys: RedisKeys::new(format!("replay-test:{}:", Uuid::new_v4().simple())),
        })
    }

    fn target(&self) -> RedisTarget {
        RedisTarget {
            client: self.client.clone(),
            keys: self.keys.clone(),
        }
    }

    async fn conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }

    /// Every key under the namespace.
    async fn all_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("KEYS")
            .arg(format!("{}*", self.keys.prefix()))
            .query_async(&mut conn)
            .await?)
    }
}

impl Drop for RedisSpace {
    fn drop(&mut self) {
        let (client, prefix) = (self.client.clone(), self.keys.prefix().to_owned());
        // Best effort, synchronously: the runtime may be shutting down.
        if let Ok(mut conn) = client.get_connection() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut conn)
                .unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        }
    }
}

async fn redis_rebuilds_equal<S: EventStore, P: RedisProjection + Clone>(
    store: &S,
    space: &RedisSpace,
    projection: P,
) -> anyhow::Result<()> {
    let families = projection.key_families();
    let mut conn = space.conn().await?;
    let before = snapshot(&mut conn, &space.keys, families).await?;
    assert!(
        !before.is_empty(),
        "{} is empty: the test proves nothing",
        projection.name()
    );
    let report = rebuild_redis(
        store,
        &space.client,
        &space.keys,
        projection.clone(),
        Target::Swap { keep_old: false },
        |_| {},
        std::future::pending(),
    )
    .await?
    .expect("a swap report");
    assert!(
        report.verified_against_live,
        "{} was not compared",
        projection.name()
    );
    let after = snapshot(&mut conn, &space.keys, families).await?;
    // Key by key, value by value.
    assert_eq!(
        after,
        before,
        "{} changed in the rebuild",
        projection.name()
    );
    let leftovers: Vec<String> = space
        .all_keys()
        .await?
        .into_iter()
        .filter(|k| k.contains(":shadow:") || k.contains(":hold:"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    Ok(())
}

async fn every_redis_projection<S: EventStore>(store: S, url: &str) -> anyhow::Result<()> {
    populate(store.clone(), "u", 6, 2).await?;
    let db = ReadDb::connect(url).await?;
    let space = RedisSpace::new()?;
    ProjectionSet::new(
        store.clone(),
        db,
        Some(space.target()),
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .catch_up()
    .await?;
    redis_rebuilds_equal(&store, &space, VoiceDueProjection).await?;
    redis_rebuilds_equal(&store, &space, LeaderboardProjection).await?;
    // Again: nothing in the way the second time.
    redis_rebuilds_equal(&store, &space, VoiceDueProjection).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rebuilt_redis_model_equals_the_live_one_on_postgres() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    every_redis_projection(db.store.clone(), &db.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rebuilt_redis_model_equals_the_live_one_on_sqlite() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    every_redis_projection(db.store.clone(), &db.url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_rebuild_while_commands_arrive_misses_and_duplicates_nothing() -> anyhow::Result<()>
{
    let pg = PgTestDb::new().await?;
    populate(pg.store.clone(), "u", 4, 10).await?;
    let db = ReadDb::connect(&pg.url()).await?;
    let space = RedisSpace::new()?;
    let board = StatusBoard::default();
    let set = ProjectionSet::new(
        pg.store.clone(),
        db.clone(),
        Some(space.target()),
        RunnerOptions {
            poll_interval: Duration::from_millis(50),
            ..RunnerOptions::default()
        },
        board.clone(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut live = set.spawn(stopped);
    let writer = {
        let store = pg.store.clone();
        tokio::spawn(async move { populate(store, "late", 6, 10).await })
    };
    for keep_old in [true, false] {
        let voice = rebuild_redis(
            &pg.store,
            &space.client,
            &space.keys,
            VoiceDueProjection,
            Target::Swap { keep_old },
            |_| {},
            std::future::pending(),
        );
        let boards = rebuild_redis(
            &pg.store,
            &space.client,
            &space.keys,
            LeaderboardProjection,
            Target::Swap { keep_old },
            |_| {},
            std::future::pending(),
        );
        let (voice, boards) = tokio::join!(voice, boards);
        assert!(voice?.is_some() && boards?.is_some());
    }
    writer.await??;
    let head = pg.store.head().await?;
    for _ in 0..200 {
        if board.checkpoint_of("voice_due.v1") >= head
            && board.checkpoint_of("leaderboards.v1") >= head
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true)?;
    while let Some(done) = live.join_next().await {
        done??;
    }
    // The live models (rebuilt twice while events arrived, then followed live) equal
    // a build from scratch to the same head, key by key.
    let mut conn = space.conn().await?;
    for (name, families) in [
        ("voice_due.v1", VoiceDueProjection.key_families()),
        ("leaderboards.v1", LeaderboardProjection.key_families()),
    ] {
        let target = Target::AsOf {
            label: "scratch".into(),
            from: eventfold_event_schemas::Position::START,
            to: head,
        };
        if name == "voice_due.v1" {
            let ns = space.keys.nested("asof:scratch:");
            rebuild_redis(
                &pg.store,
                &space.client,
                &space.keys,
                VoiceDueProjection,
                target,
                |_| {},
                std::future::pending(),
            )
            .await?;
            assert_eq!(
                snapshot(&mut conn, &space.keys, families).await?,
                snapshot(&mut conn, &ns, families).await?,
                "{name}"
            );
        } else {
            let ns = space.keys.nested("asof:scratch:");
            rebuild_redis(
                &pg.store,
                &space.client,
                &space.keys,
                LeaderboardProjection,
                target,
                |_| {},
                std::future::pending(),
            )
            .await?;
            let live = snapshot(&mut conn, &space.keys, families).await?;
            assert_eq!(live, snapshot(&mut conn, &ns, families).await?, "{name}");
            // 10 workouts of 1000 m for each of 10 users, each counted once.
            let total: f64 = {
                let mut sum = 0.0;
                for key in live.keys() {
                    let scores: Vec<(String, f64)> = redis::cmd("ZRANGE")
                        .arg(space.keys.key(key))
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(&mut conn)
                        .await?;
                    sum += scores.iter().map(|(_, s)| s).sum::<f64>();
                }
                sum
            };
            assert_eq!(total, 100.0 * 1000.0, "a workout missing or counted twice");
        }
    }
    let held: Vec<String> = space
        .all_keys()
        .await?
        .into_iter()
        .filter(|k| k.contains(":hold:") || k.contains(":shadow:"))
        .collect();
    assert!(held.is_empty(), "left behind: {held:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_redis_rebuild_resumes_and_ends_the_same() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    populate(pg.store.clone(), "u", 10, 100).await?;
    let db = ReadDb::connect(&pg.url()).await?;
    let space = RedisSpace::new()?;
    ProjectionSet::new(
        pg.store.clone(),
        db,
        Some(space.target()),
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .catch_up()
    .await?;
    let families = LeaderboardProjection.key_families();
    let mut conn = space.conn().await?;
    let before = snapshot(&mut conn, &space.keys, families).await?;
    let head = pg.store.head().await?;
    // Ctrl-C: the rebuild stops at once, saying where its shadow stands.
    let stopped = rebuild_redis(
        &pg.store,
        &space.client,
        &space.keys,
        LeaderboardProjection,
        Target::Swap { keep_old: false },
        |_| {},
        std::future::ready(()),
    )
    .await;
    assert!(
        matches!(stopped, Err(Error::Interrupted(at)) if at < head.0),
        "{stopped:?}"
    );
    // A crash half-way leaves a shadow namespace at its own checkpoint (built here
    // exactly as the rebuild builds it, to half the log).
    let shadow = RedisSink::new(
        space.client.clone(),
        space.keys.nested("shadow:"),
        LeaderboardProjection,
    );
    let half = eventfold_event_schemas::Position(head.0 / 2);
    Runner::new(
        pg.store.clone(),
        shadow,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .run_until(Some(half))
    .await?;
    let partial = snapshot(&mut conn, &space.keys.nested("shadow:"), families).await?;
    assert!(!partial.is_empty() && partial != before, "not half-way");
    let resumed = rebuild_redis(
        &pg.store,
        &space.client,
        &space.keys,
        LeaderboardProjection,
        Target::Swap { keep_old: false },
        |_| {},
        std::future::pending(),
    )
    .await?;
    assert!(resumed.is_some_and(|r| r.verified_against_live));
    assert_eq!(snapshot(&mut conn, &space.keys, families).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_build_folds_only_the_events_between_from_and_to() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    populate(db.store.clone(), "u", 4, 5).await?;
    let space = RedisSpace::new()?;
    let head = db.store.head().await?;
    let from = eventfold_event_schemas::Position(head.0 / 3);
    let to = eventfold_event_schemas::Position(head.0 * 2 / 3);
    let window = || Target::AsOf {
        label: "window".into(),
        from,
        to,
    };
    let build = rebuild_redis(
        &db.store,
        &space.client,
        &space.keys,
        LeaderboardProjection,
        window(),
        |_| {},
        std::future::pending(),
    )
    .await?;
    assert!(build.is_none(), "a window build is never swapped");
    // Expected: the distance of the workouts completed inside the window.
    let events = db
        .store
        .read_all(eventfold_event_schemas::Position::START, None, 100_000)
        .await?;
    let expected: f64 = events
        .iter()
        .filter(|e| e.global_position > from && e.global_position <= to)
        .filter(|e| e.event_type == "WorkoutCompleted")
        .map(|e| e.data["distance_m"].as_f64().unwrap_or_default())
        .sum();
    assert!(
        expected > 0.0,
        "no workout completed in the window: proves nothing"
    );
    let mut conn = space.conn().await?;
    let ns = space.keys.nested("asof:window:");
    let mut total = 0.0;
    for key in snapshot(&mut conn, &ns, LeaderboardProjection.key_families())
        .await?
        .keys()
    {
        let scores: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(ns.key(key))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        total += scores.iter().map(|(_, s)| s).sum::<f64>();
    }
    assert_eq!(total, expected);
    // Rerun: already there, nothing applied twice.
    rebuild_redis(
        &db.store,
        &space.client,
        &space.keys,
        LeaderboardProjection,
        window(),
        |_| {},
        std::future::pending(),
    )
    .await?;
    // The same label asked to start after where it stands is refused, not mixed.
    let beyond = Target::AsOf {
        label: "window".into(),
        from: eventfold_event_schemas::Position(to.0 + 1),
        to: head,
    };
    let refused = rebuild_redis(
        &db.store,
        &space.client,
        &space.keys,
        LeaderboardProjection,
        beyond,
        |_| {},
        std::future::pending(),
    )
    .await;
    assert!(matches!(refused, Err(Error::TargetInUse(_))), "{refused:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_redis_model_version_is_reported_as_a_bump_and_forgotten_after(
) -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let read = ReadDb::connect(&db.url).await?;
    let space = RedisSpace::new()?;
    let set = ProjectionSet::new(
        db.store.clone(),
        read,
        Some(space.target()),
        RunnerOptions::default(),
        StatusBoard::default(),
    );
    assert!(
        set.version_bumps().await?.is_empty(),
        "a fresh store has no bumps"
    );
    let mut conn = space.conn().await?;
    let _: () = redis::cmd("SET")
        .arg(space.keys.checkpoint("voice_due.v0"))
        .arg(7)
        .query_async(&mut conn)
        .await?;
    // A newer version's checkpoint (another build running beside this one) is no bump.
    let _: () = redis::cmd("SET")
        .arg(space.keys.checkpoint("leaderboards.v9"))
        .arg(7)
        .query_async(&mut conn)
        .await?;
    let bumps = set.version_bumps().await?;
    assert_eq!(bumps.len(), 1, "{bumps:?}");
    assert_eq!(
        (bumps[0].name, bumps[0].previous.clone(), bumps[0].store),
        ("voice_due.v1", vec!["voice_due.v0".to_owned()], "redis")
    );
    set.forget_previous(&bumps[0]).await?;
    assert!(set.version_bumps().await?.is_empty());
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

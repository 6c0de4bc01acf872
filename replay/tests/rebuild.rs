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
use eventfold_event_schemas::catalogue::{PriceChanged, PurchaseRecorded};
use eventfold_projections::models::catalog::CatalogProjection;
use eventfold_projections::models::orders::OrdersProjection;
use eventfold_projections::models::purchases::PurchasesProjection;
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::models::workouts::WorkoutsProjection;
use eventfold_projections::{
    ProjectionSet, ReadDb, RelationalProjection, RunnerOptions, StatusBoard,
};
use eventfold_replay::{rebuild, table_checksum, Error, TableChecksum, Target};
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
        if let (Some(reminder), true) = (planned, u % 2 == 0) {
            service.offer(&ctx, reminder, None).await?;
            let accepted = service.accept(&ctx, reminder).await?;
            service.confirm_order(&ctx, accepted.order_id).await?;
        }
        for _ in 0..workouts_each {
            let w = Uuid::new_v4();
            service
                .start_workout(&ctx, w, user.clone(), "running".into(), None)
                .await?;
            service
                .workout_command(&ctx, w, |at| WorkoutCommand::Update {
                    distance_m: Some(800.0),
                    heart_rate: Some(140),
                    speed_mps: None,
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
    // Stop as soon as the first batch (2000 events) is committed: mid-rebuild.
    let first_batch = async {
        loop {
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT position FROM eventfold_checkpoints WHERE name = 'shadow_workouts.v1'",
            )
            .fetch_optional(db.pool())
            .await
            .ok()
            .flatten();
            if at.unwrap_or(0) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let stopped = rebuild(
        &pg.store,
        &db,
        WorkoutsProjection,
        Target::Swap { keep_old: false },
        |_| {},
        first_batch,
    )
    .await;
    match stopped {
        Err(Error::Interrupted(at)) => assert!(
            at < head.0,
            "stopped at {at} of {head}: make the log longer"
        ),
        other => panic!("expected an interruption, got {other:?}"),
    }
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
    populate(pg.store.clone(), "u", 4, 10).await?;
    let db = ReadDb::connect(&pg.url()).await?;
    let board = StatusBoard::default();
    let set = ProjectionSet::new(
        pg.store.clone(),
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
        let store = pg.store.clone();
        tokio::spawn(async move { populate(store, "late", 4, 10).await })
    };
    let report = rebuild(
        &pg.store,
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
    let head = pg.store.head().await?;
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

//! Redis read models: rebuild into a shadow namespace, hold, verify, swap; windows.

use std::time::Duration;

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::{EventReader, EventStore};
use eventfold_projections::models::leaderboard::LeaderboardProjection;
use eventfold_projections::models::voice::VoiceDueProjection;
use eventfold_projections::{
    ProjectionSet, ReadDb, RedisProjection, RedisSink, Runner, RunnerOptions, StatusBoard,
};
use eventfold_replay::{rebuild_redis, snapshot, Error, Target};

use crate::support::{populate, RedisSpace};

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
            && board.checkpoint_of("leaderboards.v2") >= head
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
        ("leaderboards.v2", LeaderboardProjection.key_families()),
    ] {
        let target = Target::AsOf {
            label: "scratch".parse().expect("label"),
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
            // Scores are whole millimetres.
            assert_eq!(
                total,
                100.0 * 1000.0 * 1000.0,
                "a workout missing or counted twice"
            );
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
        label: "window".parse().expect("label"),
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
        .map(|e| {
            e.data.to_value().expect("json")["distance_m"]
                .as_f64()
                .unwrap_or_default()
        })
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
    // Scores are whole millimetres.
    assert_eq!(total, expected * 1000.0);
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
        label: "window".parse().expect("label"),
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
        (
            bumps[0].name,
            bumps[0].previous.clone(),
            bumps[0].store.as_str()
        ),
        ("voice_due.v1", vec!["voice_due.v0".to_owned()], "redis")
    );
    set.forget_previous(&bumps[0]).await?;
    assert!(set.version_bumps().await?.is_empty());
    Ok(())
}

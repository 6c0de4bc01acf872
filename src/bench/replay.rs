//! `eventfold bench replay`: full rebuilds from a log of a million events, beside the
//! raw read speed of the same log.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use eventfold_event_log::{Limits, PgEventStore};
use eventfold_event_schemas::Position;
use eventfold_projections::models::leaderboard::LeaderboardProjection;
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::models::voice::VoiceDueProjection;
use eventfold_projections::models::workouts::WorkoutsProjection;
use eventfold_projections::{
    ReadDb, RedisKeys, RedisSink, RelationalProjection, Runner, RunnerOptions, StatusBoard,
};
use eventfold_replay::{rebuild, Progress, Target};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use super::project::{prefill, raw_read};
use super::{admin_url, ScratchDb};

#[derive(Debug, Args)]
pub(crate) struct ReplayBenchArgs {
    /// Events in the pre-filled log.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// PostgreSQL server: a scratch database is created there and dropped afterwards.
    #[arg(long, env = "EVENTFOLD_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Redis for the Redis models (keys under a scratch prefix, deleted afterwards).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

pub(crate) async fn run(
    database_url: &str,
    args: ReplayBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let scratch = ScratchDb::create(&admin_url(args.postgres.as_deref(), database_url)).await?;
    let result = run_in(scratch.options.clone(), &scratch.url, &args, out).await;
    scratch.remove().await?;
    result
}

/// Rebuilds `projection` (shadow build, then verify and swap); returns (build, total).
async fn relational<P: RelationalProjection + Clone>(
    store: &PgEventStore,
    db: &ReadDb,
    projection: P,
) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let built = Mutex::new(None);
    let progress = |p: Progress| {
        if p.position >= p.target {
            let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
            built.get_or_insert(started.elapsed());
        }
    };
    rebuild(
        store,
        db,
        projection,
        Target::Swap { keep_old: false },
        progress,
        std::future::pending(),
    )
    .await?;
    let total = started.elapsed();
    let build = built
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(total);
    Ok((build, total))
}

async fn run_in(
    options: PgConnectOptions,
    url: &str,
    args: &ReplayBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(12)
        .connect_with(options)
        .await?;
    let store = PgEventStore::from_pool(pool, Limits::default());
    store.migrate().await?;
    let head = prefill(&store, args.events, out).await?;
    let (read, read_time) = raw_read(&store, head, 5000).await?;
    let raw = read as f64 / read_time.as_secs_f64();
    writeln!(
        out,
        "raw read of the log: {read} events in {:.1} s = {raw:.0} events/s (pages of 5000)",
        read_time.as_secs_f64()
    )?;
    writeln!(
        out,
        "{:<18} {:<9} {:>9} {:>12} {:>7} {:>10}",
        "full rebuild", "store", "build s", "events/s", "ratio", "+swap s"
    )?;
    let db = ReadDb::connect(url).await?;
    let row = |name: &str,
               store_name: &str,
               build: Duration,
               total: Duration,
               out: &mut dyn Write|
     -> anyhow::Result<()> {
        let rate = read as f64 / build.as_secs_f64();
        writeln!(
            out,
            "{name:<18} {store_name:<9} {:>9.1} {rate:>12.0} {:>7.2} {:>10.1}",
            build.as_secs_f64(),
            rate / raw,
            (total - build).as_secs_f64()
        )?;
        Ok(())
    };
    let (build, total) = relational(&store, &db, RemindersProjection).await?;
    row("reminders.v1", "postgres", build, total, out)?;
    let (build, total) = relational(&store, &db, WorkoutsProjection).await?;
    row("workouts.v1", "postgres", build, total, out)?;
    let client = redis::Client::open(args.redis.as_str())?;
    let prefix = format!("eventfold-bench:{}:", Uuid::new_v4().simple());
    match client.get_multiplexed_async_connection().await {
        Ok(mut conn) => {
            for which in ["voice_due.v1", "leaderboards.v1"] {
                let keys = RedisKeys::new(prefix.clone());
                let options = RunnerOptions {
                    batch_size: 5000,
                    ..RunnerOptions::default()
                };
                let started = Instant::now();
                let target = Some(Position(head.0));
                if which == "voice_due.v1" {
                    Runner::new(
                        store.clone(),
                        RedisSink::new(client.clone(), keys, VoiceDueProjection),
                        options,
                        StatusBoard::default(),
                    )
                    .run_until(target)
                    .await?;
                } else {
                    Runner::new(
                        store.clone(),
                        RedisSink::new(client.clone(), keys, LeaderboardProjection),
                        options,
                        StatusBoard::default(),
                    )
                    .run_until(target)
                    .await?;
                }
                let took = started.elapsed();
                row(which, "redis", took, took, out)?;
            }
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut conn)
                .await?;
            for chunk in keys.chunks(1000) {
                let _: i64 = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
            }
        }
        Err(error) => writeln!(
            out,
            "redis at {} unreachable ({error}): Redis models skipped",
            args.redis
        )?,
    }
    writeln!(out, "(Redis models rebuild from an empty namespace; relational ones build shadow tables, then verify and swap)")?;
    db.pool().close().await;
    Ok(())
}

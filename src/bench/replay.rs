//! `eventfold bench replay`: full rebuilds from a log of a million events, beside the
//! raw read speed of the same log.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use eventfold_event_log::PgEventStore;
use eventfold_event_schemas::Position;
use eventfold_projections::models::leaderboard::LeaderboardProjection;
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::models::voice::VoiceDueProjection;
use eventfold_projections::models::workouts::WorkoutsProjection;
use eventfold_projections::{
    ReadDb, ReadStore, RedisKeys, RedisSink, RelationalSink, Runner, RunnerOptions, StatusBoard,
};
use eventfold_replay::{rebuild, rebuild_model, rebuild_redis, Progress, Target};
use sqlx::postgres::PgConnectOptions;

use super::project::{direct_route_points, filled_log, read_and_copy_workouts, scratch_clickhouse};
use super::{admin_url, ScratchDb};

#[derive(Debug, Args)]
pub(crate) struct ReplayBenchArgs {
    /// Events in the pre-filled log.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    events: usize,
    /// PostgreSQL server: a scratch database is created there and dropped afterwards.
    #[arg(long, env = "EVENTFOLD_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Redis for the Redis models (keys under a scratch prefix, deleted afterwards).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// ClickHouse for the analytics models (a scratch database, dropped afterwards).
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
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

/// Times a rebuild: `(build, total)` — the shadow build up to the head, and with the
/// verification against the live model and the swap.
async fn timed<F>(
    rebuild: impl FnOnce(Box<dyn Fn(Progress) + Sync + Send>) -> F,
) -> anyhow::Result<(Duration, Duration)>
where
    F: std::future::Future<Output = eventfold_replay::Result<Option<eventfold_replay::SwapReport>>>,
{
    let started = Instant::now();
    let built = std::sync::Arc::new(Mutex::new(None));
    let progress = {
        let built = built.clone();
        Box::new(move |p: Progress| {
            if p.position >= p.target {
                let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
                built.get_or_insert(started.elapsed());
            }
        })
    };
    let report = rebuild(progress).await?;
    let total = started.elapsed();
    if !report.is_some_and(|r| r.verified_against_live) {
        anyhow::bail!("the rebuild was not verified against the live model");
    }
    let build = built
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(total);
    Ok((build, total))
}

/// Brings a live model to `head` (what a running `serve` keeps), so the rebuild has
/// something to be verified against.
async fn live<K: eventfold_projections::Sink>(
    store: &PgEventStore,
    sink: K,
    head: Position,
) -> anyhow::Result<()> {
    let options = RunnerOptions {
        batch_size: 2000,
        ..RunnerOptions::default()
    };
    Runner::new(store.clone(), sink, options, StatusBoard::default())
        .run_until(Some(head))
        .await?;
    Ok(())
}

/// Prints one rebuild's row of the table.
type RowPrinter<'a> =
    dyn Fn(&str, &str, Duration, Duration, &mut dyn Write) -> anyhow::Result<()> + 'a;

/// The ClickHouse models rebuilt (shadow tables, checksums, RENAME), beside inserting
/// their rows straight into a table with the crate.
async fn clickhouse_models(
    store: &PgEventStore,
    head: Position,
    events: usize,
    args: &ReplayBenchArgs,
    row: &RowPrinter<'_>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use eventfold_projections::models::analytics::{RoutePointsProjection, WorkoutFactsProjection};
    use eventfold_projections::{ClickHouseProjection, ClickHouseSink, ClickHouseStore, Model};
    let Some(target) = scratch_clickhouse(&args.clickhouse, out).await? else {
        return Ok(());
    };
    let result = async {
        let ch = ClickHouseStore::new(target.clone());
        let models: [Arc<dyn ClickHouseProjection>; 2] =
            [Arc::new(RoutePointsProjection), Arc::new(WorkoutFactsProjection)];
        let mut route_build = None;
        for projection in models {
            let model = Model::ClickHouse(projection.clone());
            live(
                store,
                ClickHouseSink::new(target.clone(), projection, ""),
                head,
            )
            .await?;
            let (build, total) = timed(|p| {
                rebuild_model(
                    store,
                    &ch,
                    &model,
                    Target::Swap { keep_old: false },
                    p,
                    std::future::pending::<()>(),
                )
            })
            .await?;
            row(model.name(), "clickhouse", build, total, out)?;
            route_build.get_or_insert(build);
        }
        let (rows, inserts, direct) =
            direct_route_points(store, head, &target, ch.batch_size()).await?;
        writeln!(
            out,
            "direct insert of the same {rows} rows (route points and their workouts) with the clickhouse crate ({inserts} inserts): {:.2} s = {:.0} events/s; route_points.v1 rebuilds at {:.2}x that (goal >= 0.8x; the rebuild reads the log, the direct insert does not)",
            direct.as_secs_f64(),
            events as f64 / direct.as_secs_f64(),
            direct.as_secs_f64() / route_build.unwrap_or(direct).as_secs_f64()
        )?;
        anyhow::Ok(())
    }
    .await;
    super::drop_clickhouse(&target).await;
    result
}

async fn run_in(
    options: PgConnectOptions,
    url: &str,
    args: &ReplayBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Cold and warm; the ratio is taken against the warm read, the one a rebuild
    // competes with.
    let (store, head, read, cold_time, read_time) =
        filled_log(options, 12, args.events, 5000, out).await?;
    let raw = read as f64 / read_time.as_secs_f64();
    let cold = read as f64 / cold_time.as_secs_f64();
    writeln!(
        out,
        "raw read of the log: {read} events in {:.1} s = {raw:.0} events/s warm, {cold:.0} events/s cold (pages of 5000)",
        read_time.as_secs_f64()
    )?;
    writeln!(
        out,
        "{:<18} {:<9} {:>9} {:>12} {:>7} {:>8} {:>10}",
        "full rebuild", "store", "build s", "events/s", "ratio", "vs cold", "+swap s"
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
            "{name:<18} {store_name:<9} {:>9.1} {rate:>12.0} {:>7.2} {:>8.2} {:>10.1}",
            build.as_secs_f64(),
            rate / raw,
            rate / cold,
            (total - build).as_secs_f64()
        )?;
        Ok(())
    };
    let never = std::future::pending::<()>;
    let swap = || Target::Swap { keep_old: false };
    live(
        &store,
        RelationalSink::new(db.clone(), RemindersProjection),
        head,
    )
    .await?;
    let (build, total) =
        timed(|p| rebuild(&store, &db, RemindersProjection, swap(), p, never())).await?;
    row("reminders.v1", "postgres", build, total, out)?;
    live(
        &store,
        RelationalSink::new(db.clone(), WorkoutsProjection),
        head,
    )
    .await?;
    let (build, total) =
        timed(|p| rebuild(&store, &db, WorkoutsProjection, swap(), p, never())).await?;
    row("workouts.v2", "postgres", build, total, out)?;
    // The least a rebuild of it does: the log read and its rows copied (the rebuild's
    // batches of 2,000 events), nothing else.
    let took = read_and_copy_workouts(&store, head, 2000).await?;
    row("(read + COPY)", "postgres", took, took, out)?;
    let client = redis::Client::open(args.redis.as_str())?;
    let scratch = super::ScratchRedis::new(&args.redis);
    let keys = RedisKeys::new(scratch.prefix.clone());
    match client.get_multiplexed_async_connection().await {
        Ok(_) => {
            let sink = RedisSink::new(client.clone(), keys.clone(), VoiceDueProjection);
            live(&store, sink, head).await?;
            let (build, total) = timed(|p| {
                rebuild_redis(
                    &store,
                    &client,
                    &keys,
                    VoiceDueProjection,
                    swap(),
                    p,
                    never(),
                )
            })
            .await?;
            row("voice_due.v1", "redis", build, total, out)?;
            let sink = RedisSink::new(client.clone(), keys.clone(), LeaderboardProjection);
            live(&store, sink, head).await?;
            let (build, total) = timed(|p| {
                rebuild_redis(
                    &store,
                    &client,
                    &keys,
                    LeaderboardProjection,
                    swap(),
                    p,
                    never(),
                )
            })
            .await?;
            row("leaderboards.v2", "redis", build, total, out)?;
            scratch.remove().await?;
        }
        Err(error) => writeln!(
            out,
            "redis at {} unreachable ({error}): Redis models skipped",
            args.redis
        )?,
    }
    clickhouse_models(&store, head, read, args, &row, out).await?;
    writeln!(out, "(each model is first built live to the head; then the rebuild writes shadow tables / a shadow Redis namespace, is compared with the live model row by row / key by key, and swapped in: \"+swap s\")")?;
    db.pool().close().await;
    Ok(())
}

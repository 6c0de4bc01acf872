//! `eventfold bench project`: how fast the log folds into the read models, beside how
//! fast the log can merely be read, in the same run.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use clap::Args;
use eventfold_event_log::{EventReader, EventWriter, Limits, PgEventStore};
use eventfold_event_schemas::catalogue::{
    GeoPoint, ReminderOffered, ReminderScheduled, WorkoutCompleted, WorkoutStarted, WorkoutUpdated,
};
use eventfold_event_schemas::{
    DomainEvent, EventMetadata, ExpectedVersion, Position, RecordedEvent, StreamId,
};
use eventfold_projections::models::leaderboard::LeaderboardProjection;
use eventfold_projections::models::reminders::RemindersProjection;
use eventfold_projections::models::voice::VoiceDueProjection;
use eventfold_projections::models::workouts::WorkoutsProjection;
use eventfold_projections::{
    FailPoint, Projection, ReadDb, RedisKeys, RedisSink, RelationalSink, Runner, RunnerOptions,
    Sink, StatusBoard,
};
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use super::{admin_url, ScratchDb};

#[derive(Debug, Args)]
pub(crate) struct ProjectBenchArgs {
    /// Events in the pre-filled log (at least this many).
    #[arg(long, default_value_t = 200_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    events: usize,
    /// Events per projection transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    batch: usize,
    /// PostgreSQL server: a scratch database is created there and dropped afterwards.
    #[arg(long, env = "EVENTFOLD_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Redis for the Redis models (keys under a scratch prefix, deleted afterwards).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// ClickHouse for the analytics models (a scratch database, dropped afterwards).
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
    /// Events per ClickHouse batch (the store's default), for the models and the direct
    /// insert alike.
    #[arg(long, default_value_t = 5000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    clickhouse_batch: usize,
}

pub(crate) async fn run(
    database_url: &str,
    args: ProjectBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let scratch = ScratchDb::create(&admin_url(args.postgres.as_deref(), database_url)).await?;
    let result = run_in(scratch.options.clone(), &scratch.url, &args, out).await;
    scratch.remove().await?;
    result
}

/// One workout: started, three updates with GPS points, completed (5 events); every
/// fourth workout's user also gets a reminder scheduled and offered (2 events).
fn history(i: usize) -> Vec<(String, Vec<DomainEvent>)> {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 2, 7, 0, 0)
        .single()
        .unwrap_or_default()
        + chrono::Duration::minutes(i as i64);
    let workout_id = Uuid::new_v4();
    let user = format!("u{}", i % 5000);
    let mut events: Vec<DomainEvent> = vec![WorkoutStarted {
        workout_id,
        user_id: user.clone(),
        sport: if i.is_multiple_of(3) {
            "cycling"
        } else {
            "running"
        }
        .into(),
        goal_distance_m: None,
        started_at: at,
    }
    .into()];
    for k in 1..=3 {
        events.push(
            WorkoutUpdated {
                workout_id,
                distance_m: Some(k as f64 * 1000.0),
                heart_rate: Some(120 + k),
                speed_mps: Some(3.0),
                points: vec![GeoPoint {
                    lat: 55.7 + k as f64 * 0.001,
                    lon: 37.6,
                    at,
                }],
                updated_at: at,
            }
            .into(),
        );
    }
    events.push(
        WorkoutCompleted {
            workout_id,
            user_id: user.clone(),
            sport: "running".into(),
            distance_m: 3000.0,
            active_seconds: 1000,
            avg_speed_mps: 3.0,
            max_heart_rate: Some(123),
            completed_at: at,
        }
        .into(),
    );
    let mut streams = vec![(format!("workout-{workout_id}"), events)];
    if i.is_multiple_of(4) {
        let reminder_id = Uuid::new_v4();
        streams.push((
            format!("reminder-{reminder_id}"),
            vec![
                ReminderScheduled {
                    reminder_id,
                    user_id: user.clone(),
                    sku: format!("SKU-{}", i % 50),
                    title: "Coffee capsules".into(),
                    quantity: 1,
                    last_unit_price: 1000,
                    currency: "RUB".into(),
                    due_at: at,
                    slot: 0,
                }
                .into(),
                ReminderOffered {
                    reminder_id,
                    user_id: user,
                    device_id: None,
                    offered_at: at,
                }
                .into(),
            ],
        ));
    }
    streams
}

pub(crate) async fn prefill(
    store: &PgEventStore,
    target: usize,
    out: &mut impl Write,
) -> anyhow::Result<Position> {
    let started = Instant::now();
    let writers = 8;
    let per_writer = target.div_ceil(writers);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = 0;
            let mut i = w;
            while written < per_writer {
                for (stream, events) in history(i) {
                    let new: Vec<_> = events
                        .iter()
                        .map(|e| e.to_new_event(Uuid::new_v4(), EventMetadata::default()))
                        .collect();
                    store
                        .append(&StreamId::new(stream)?, ExpectedVersion::NoStream, &new)
                        .await?;
                    written += new.len();
                }
                i += writers;
            }
            anyhow::Ok(written)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let head = store.head().await?;
    writeln!(
        out,
        "pre-filled {total} events in {:.1} s (head {head})",
        started.elapsed().as_secs_f64()
    )?;
    Ok(head)
}

pub(crate) async fn raw_read(
    store: &PgEventStore,
    head: Position,
    page: usize,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let mut after = Position::START;
    let mut read = 0;
    while after < head {
        let events = store.read_all(after, None, page).await?;
        let Some(last) = events.last() else { break };
        after = last.global_position;
        read += events.len();
    }
    Ok((read, started.elapsed()))
}

/// A sink that takes the events `workouts.v2` takes and writes nothing: what the runner
/// itself costs a model — the log read through the subscription, the decoding, the
/// batches — before any write (the floor under `workouts.v2`'s row).
#[derive(Debug, Default)]
struct ReadOnly {
    checkpoint: std::sync::atomic::AtomicI64,
}

#[eventfold_projections::async_trait]
impl Sink for ReadOnly {
    fn name(&self) -> &'static str {
        "runner_alone"
    }

    fn handles(&self, event_type: &str) -> bool {
        WorkoutsProjection.handles(event_type)
    }

    async fn setup(&self) -> eventfold_projections::Result<()> {
        Ok(())
    }

    async fn checkpoint(&self) -> eventfold_projections::Result<Position> {
        Ok(Position(
            self.checkpoint.load(std::sync::atomic::Ordering::Acquire),
        ))
    }

    async fn apply(
        &self,
        _from: Position,
        _events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> eventfold_projections::Result<()> {
        self.checkpoint
            .store(to.0, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    async fn park(
        &self,
        _record: &RecordedEvent,
        _error: &str,
    ) -> eventfold_projections::Result<()> {
        Ok(())
    }

    fn fail_point(&self) -> FailPoint {
        FailPoint::default()
    }
}

async fn fold<K: Sink>(
    store: &PgEventStore,
    sink: K,
    head: Position,
    batch: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let options = RunnerOptions {
        batch_size: batch,
        ..RunnerOptions::default()
    };
    Runner::new(store.clone(), sink, options, StatusBoard::default())
        .run_until(Some(head))
        .await?;
    Ok(started.elapsed())
}

async fn run_in(
    options: PgConnectOptions,
    url: &str,
    args: &ProjectBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Read twice: the projections read a warm log, and the ratio is taken against the
    // warm read. The cold one is shown too.
    let (store, head, read, cold_time, read_time) =
        filled_log(options, 12, args.events, args.batch, out).await?;
    let raw_rate = read as f64 / read_time.as_secs_f64();
    let cold_rate = read as f64 / cold_time.as_secs_f64();
    writeln!(
        out,
        "raw read of the log: {read} events in {:.2} s = {raw_rate:.0} events/s warm, {cold_rate:.0} events/s cold (pages of {})",
        read_time.as_secs_f64(),
        args.batch
    )?;
    writeln!(
        out,
        "{:<18} {:<9} {:>10} {:>14} {:>8} {:>8}",
        "projection", "store", "seconds", "events/s", "ratio", "vs cold"
    )?;
    let db = ReadDb::connect(url).await?;
    let row =
        |name: &str, store_name: &str, took: Duration, out: &mut dyn Write| -> anyhow::Result<()> {
            let rate = read as f64 / took.as_secs_f64();
            writeln!(
                out,
                "{name:<18} {store_name:<9} {:>10.2} {rate:>14.0} {:>8.2} {:>8.2}",
                took.as_secs_f64(),
                rate / raw_rate,
                rate / cold_rate
            )?;
            Ok(())
        };
    let took = fold(
        &store,
        RelationalSink::new(db.clone(), WorkoutsProjection),
        head,
        args.batch,
    )
    .await?;
    row("workouts.v2", "postgres", took, out)?;
    let took = read_and_copy_workouts(&store, head, args.batch).await?;
    row("(read + COPY)", "postgres", took, out)?;
    let took = fold(&store, ReadOnly::default(), head, args.batch).await?;
    row("(runner alone)", "none", took, out)?;
    let took = fold(
        &store,
        RelationalSink::new(db.clone(), RemindersProjection),
        head,
        args.batch,
    )
    .await?;
    row("reminders.v1", "postgres", took, out)?;
    let client = redis::Client::open(args.redis.as_str())?;
    let scratch = super::ScratchRedis::new(&args.redis);
    let keys = RedisKeys::new(scratch.prefix.clone());
    match client.get_multiplexed_async_connection().await {
        Ok(_) => {
            let took = fold(
                &store,
                RedisSink::new(client.clone(), keys.clone(), VoiceDueProjection),
                head,
                args.batch,
            )
            .await?;
            row("voice_due.v1", "redis", took, out)?;
            let took = fold(
                &store,
                RedisSink::new(client.clone(), keys, LeaderboardProjection),
                head,
                args.batch,
            )
            .await?;
            row("leaderboards.v2", "redis", took, out)?;
            scratch.remove().await?;
        }
        Err(error) => writeln!(
            out,
            "redis at {} unreachable ({error}): Redis models skipped",
            args.redis
        )?,
    }
    clickhouse_models(&store, head, read, args, &row, out).await?;
    db.pool().close().await;
    store.pool().close().await;
    Ok(())
}

/// A scratch ClickHouse database for one bench run (the caller drops it), or `None`
/// (said on `out`) when ClickHouse does not answer.
pub(crate) async fn scratch_clickhouse(
    url: &str,
    out: &mut impl Write,
) -> anyhow::Result<Option<eventfold_projections::ClickHouseTarget>> {
    let database = format!("eventfold_bench_{}", Uuid::new_v4().simple());
    let target = eventfold_projections::ClickHouseTarget::new(url, &database)?;
    super::clickhouse_made(&target);
    if let Err(error) = target.ensure().await {
        super::drop_clickhouse(&target).await;
        writeln!(
            out,
            "clickhouse at {url} unreachable ({error}): ClickHouse models skipped"
        )?;
        return Ok(None);
    }
    Ok(Some(target))
}

/// A log of at least `events` events in a scratch database, read twice (the first read
/// of fresh rows also sets their hint bits): `(store, head, events read, cold, warm)`.
pub(crate) async fn filled_log(
    options: PgConnectOptions,
    connections: u32,
    events: usize,
    page: usize,
    out: &mut impl Write,
) -> anyhow::Result<(PgEventStore, Position, usize, Duration, Duration)> {
    let pool = PgEventStore::pool_options()
        .max_connections(connections)
        .connect_with(options)
        .await?;
    let store = PgEventStore::from_pool(pool, Limits::default());
    store.migrate().await?;
    let head = prefill(&store, events, out).await?;
    // As a log in service is: vacuumed and analysed. Without it autovacuum wakes up on
    // the freshly filled table in the middle of whatever is measured next, on the same
    // two cores.
    sqlx::query("VACUUM (ANALYZE) eventfold_events")
        .execute(store.pool())
        .await?;
    let (_, cold) = raw_read(&store, head, page).await?;
    let (read, warm) = raw_read(&store, head, page).await?;
    Ok((store, head, read, cold, warm))
}

/// The least a fold of `workouts.v2` does, with nothing of its own: the log read in
/// pages of `batch` (the next page read while this one is written, as the runner's
/// read-ahead does) and, for each page, the rows `workouts.v2` ended with for that
/// page's events — taken beforehand from the fold's own tables in PostgreSQL's binary
/// COPY format — copied into tables of the same shape (indexes included), both in one
/// transaction. No decoding, no fold, no checkpoint, and each row written once (the
/// fold also rewrites the workouts a page boundary cuts): a bound, not a rival.
pub(crate) async fn read_and_copy_workouts(
    store: &PgEventStore,
    head: Position,
    batch: usize,
) -> anyhow::Result<Duration> {
    let pool = store.pool();
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS direct_workouts, direct_workout_points;
         CREATE TABLE direct_workouts (LIKE rm_workouts INCLUDING ALL);
         CREATE TABLE direct_workout_points (LIKE rm_workout_points INCLUDING ALL);",
    )
    .execute(pool)
    .await?;
    // Each page's rows: the workouts its events started, the points they carried.
    let mut chunks = Vec::new();
    let mut conn = pool.acquire().await?;
    let mut after = Position::START;
    while after < head {
        let page = store.read_all(after, None, batch).await?;
        let Some(last) = page.last() else { break };
        let (from, to) = (after.0, last.global_position.0);
        after = last.global_position;
        let mut copied = Vec::new();
        for (table, key) in [
            ("rm_workouts", "position"),
            ("rm_workout_points", "position"),
        ] {
            let mut stream = conn
                .copy_out_raw(&format!(
                    "COPY (SELECT * FROM {table} WHERE {key} > {from} AND {key} <= {to}) \
                     TO STDOUT (FORMAT binary)"
                ))
                .await?;
            let mut bytes = Vec::new();
            while let Some(part) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
                bytes.extend_from_slice(&part?);
            }
            copied.push(bytes);
        }
        chunks.push(copied);
    }
    drop(conn);
    let started = Instant::now();
    let (mut next, read) = pages_ahead(store, Position::START, head, batch);
    let mut chunks = chunks.into_iter();
    while let Some(_page) = next.recv().await {
        let Some(copied) = chunks.next() else { break };
        let mut tx = pool.begin().await?;
        for (table, bytes) in ["direct_workouts", "direct_workout_points"]
            .iter()
            .zip(copied)
        {
            let mut copy = tx
                .copy_in_raw(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
                .await?;
            copy.send(bytes).await?;
            copy.finish().await?;
        }
        tx.commit().await?;
    }
    read.await??;
    Ok(started.elapsed())
}

/// The log's pages of `batch` events after `after`, up to `until`, read on a task of
/// their own one page ahead of the reader (at most two waiting), as the runner's
/// read-ahead does; the task's outcome once the pages are taken.
pub(crate) fn pages_ahead(
    store: &PgEventStore,
    after: Position,
    until: Position,
    batch: usize,
) -> (
    tokio::sync::mpsc::Receiver<Vec<RecordedEvent>>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (pages, next) = tokio::sync::mpsc::channel(2);
    let reader = store.clone();
    let read = tokio::spawn(async move {
        let mut after = after;
        while after < until {
            let page = reader.read_all(after, None, batch).await?;
            let Some(last) = page.last() else { break };
            after = last.global_position;
            let page: Vec<RecordedEvent> = page
                .into_iter()
                .take_while(|r| r.global_position <= until)
                .collect();
            if pages.send(page).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    });
    (next, read)
}

/// The log read in pages of `batch` and decoded, beforehand: `(events, up to)` pages.
async fn decoded_pages(
    store: &PgEventStore,
    head: Position,
    batch: usize,
) -> anyhow::Result<Vec<(Vec<(RecordedEvent, DomainEvent)>, Position)>> {
    let mut pages = Vec::new();
    let mut after = Position::START;
    while after < head {
        let page = store.read_all(after, None, batch).await?;
        let Some(last) = page.last() else { break };
        after = last.global_position;
        let events = page
            .into_iter()
            .filter_map(|record| match DomainEvent::from_recorded(&record) {
                Ok(Some(event)) => Some((record, event)),
                _ => None,
            })
            .collect();
        pages.push((events, after));
    }
    Ok(pages)
}

/// The baseline of the ClickHouse models: the rows `route_points.v1` writes for the
/// log (workouts and points), built beforehand and inserted with the crate straight into
/// tables of the same shape, one insert per table (both at once) per page of `batch`
/// events. `(rows, inserts, time)`.
pub(crate) async fn direct_route_points(
    store: &PgEventStore,
    head: Position,
    target: &eventfold_projections::ClickHouseTarget,
    batch: usize,
) -> anyhow::Result<(usize, usize, Duration)> {
    use eventfold_projections::models::analytics::{self, RoutePoint, RouteWorkout};
    use eventfold_projections::ClickHouseProjection;
    let batches: Vec<(Vec<RouteWorkout>, Vec<RoutePoint>)> = decoded_pages(store, head, batch)
        .await?
        .iter()
        .map(|(events, _)| {
            let refs: Vec<_> = events.iter().map(|(r, e)| (r, e)).collect();
            analytics::route_rows_of(&refs)
        })
        .collect();
    for statement in analytics::RoutePointsProjection.schema() {
        target.run(&statement.replace("ch_", "direct_ch_")).await?;
    }
    let rows = batches.iter().map(|(w, p)| w.len() + p.len()).sum();
    async fn insert<T: clickhouse::RowOwned + clickhouse::RowWrite>(
        target: &eventfold_projections::ClickHouseTarget,
        table: &str,
        rows: &[T],
    ) -> anyhow::Result<()> {
        let mut insert = target.client().insert::<T>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        Ok(insert.end().await?)
    }
    let started = Instant::now();
    for (workouts, points) in &batches {
        let (a, b) = tokio::join!(
            insert(target, "direct_ch_route_workouts", workouts),
            insert(target, "direct_ch_route_points", points)
        );
        a.and(b)?;
    }
    Ok((rows, batches.len() * 2, started.elapsed()))
}

/// The route points' store port without the log: the same pages read and decoded
/// beforehand, applied through the sink (hold check, insert, checkpoint each).
async fn store_apply(
    store: &PgEventStore,
    head: Position,
    target: &eventfold_projections::ClickHouseTarget,
    batch: usize,
) -> anyhow::Result<Duration> {
    use eventfold_projections::models::analytics::RoutePointsProjection;
    use eventfold_projections::ClickHouseSink;
    // A database of its own, so the sink writes its live tables (with the hold check).
    let own = eventfold_projections::ClickHouseTarget::new(
        target.url(),
        &format!("{}_apply", target.database()),
    )?;
    super::clickhouse_made(&own);
    let sink = ClickHouseSink::new(own.clone(), std::sync::Arc::new(RoutePointsProjection), "");
    let result = apply_pages(store, head, &sink, batch).await;
    super::drop_clickhouse(&own).await;
    result
}

async fn apply_pages(
    store: &PgEventStore,
    head: Position,
    sink: &eventfold_projections::ClickHouseSink,
    batch: usize,
) -> anyhow::Result<Duration> {
    sink.setup().await?;
    let pages: Vec<_> = decoded_pages(store, head, batch)
        .await?
        .into_iter()
        .map(|(events, to)| {
            let wanted: Vec<_> = events
                .into_iter()
                .filter(|(record, _)| sink.handles(&record.event_type))
                .collect();
            (wanted, to)
        })
        .collect();
    let started = Instant::now();
    let mut from = Position::START;
    for (events, to) in &pages {
        sink.apply(from, events, *to).await?;
        from = *to;
    }
    Ok(started.elapsed())
}

/// Prints one projection's row of the table.
type RowPrinter<'a> = dyn Fn(&str, &str, Duration, &mut dyn Write) -> anyhow::Result<()> + 'a;

/// The ClickHouse models, beside inserting the same rows straight into a table of the
/// same shape with the crate (no log, no decoding), in batches of the same events.
async fn clickhouse_models(
    store: &PgEventStore,
    head: Position,
    events: usize,
    args: &ProjectBenchArgs,
    row: &RowPrinter<'_>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use eventfold_projections::models::analytics;
    use eventfold_projections::ClickHouseSink;
    let Some(target) = scratch_clickhouse(&args.clickhouse, out).await? else {
        return Ok(());
    };
    let result = async {
        let projection = std::sync::Arc::new(analytics::RoutePointsProjection);
        let took = fold(
            store,
            ClickHouseSink::new(target.clone(), projection.clone(), ""),
            head,
            args.clickhouse_batch,
        )
        .await?;
        row("route_points.v1", "clickhouse", took, out)?;
        let route_took = took;
        let facts = std::sync::Arc::new(analytics::WorkoutFactsProjection);
        let took = fold(
            store,
            ClickHouseSink::new(target.clone(), facts, ""),
            head,
            args.clickhouse_batch,
        )
        .await?;
        row("workout_facts.v1", "clickhouse", took, out)?;
        let (rows, inserts, direct) =
            direct_route_points(store, head, &target, args.clickhouse_batch).await?;
        writeln!(
            out,
            "direct insert of the same {rows} rows (route points and their workouts) with the clickhouse crate ({inserts} inserts): {:.2} s = {:.0} events/s",
            direct.as_secs_f64(),
            events as f64 / direct.as_secs_f64()
        )?;
        writeln!(
            out,
            "route_points.v1 folds at {:.2}x the direct insert of its rows (goal >= 0.8x; the fold reads the log, the direct insert does not)",
            direct.as_secs_f64() / route_took.as_secs_f64()
        )?;
        let applied = store_apply(store, head, &target, args.clickhouse_batch).await?;
        writeln!(
            out,
            "route_points.v1 store port alone (events read and decoded beforehand, same batches, checkpoint and hold check included): {:.2} s = {:.0} events/s = {:.2}x the direct insert",
            applied.as_secs_f64(),
            events as f64 / applied.as_secs_f64(),
            direct.as_secs_f64() / applied.as_secs_f64()
        )?;
        anyhow::Ok(direct)
    }
    .await;
    super::drop_clickhouse(&target).await;
    result.map(|_| ())
}

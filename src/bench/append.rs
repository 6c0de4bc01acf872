//! `eventfold bench append`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use eventfold_event_log::schemas::{ExpectedVersion, NewEvent, StreamId};
use eventfold_event_log::{
    EventWriter, GroupCommit, GroupStats, Limits, PgEventStore, SqliteEventStore,
};
use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::Postgres;
use sqlx::SqlitePool;

use super::report::{print_header, print_row, taking_turns, Measured, Row};
use super::{admin_url, parse_duration, ScratchDb};

/// Streams each writer rotates through.
const STREAMS_PER_WRITER: usize = 20;

#[derive(Debug, Args)]
pub(crate) struct AppendBenchArgs {
    /// How long each case runs, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent writers, one case each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    writers: Vec<usize>,
    /// Events per append, one case each.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    batches: Vec<usize>,
    /// PostgreSQL server to run on: a scratch database is created there and dropped
    /// afterwards. Defaults to DATABASE_URL when that is postgres://, else the local server.
    #[arg(long, env = "EVENTFOLD_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Skip the PostgreSQL cases.
    #[arg(long)]
    no_postgres: bool,
    /// Skip the SQLite cases.
    #[arg(long)]
    no_sqlite: bool,
    /// Appends with group commit `on`, `off` (one transaction per append), or `both`
    /// (two rows per case, same run).
    #[arg(long, value_enum, default_value = "both")]
    group_commit: GroupMode,
    /// PostgreSQL groups in flight at once with group commit on (the store's default when
    /// not given).
    #[arg(long)]
    committers: Option<usize>,
    /// Appends a second group needs to go out beside one in flight (the store's default
    /// when not given).
    #[arg(long)]
    join_at: Option<usize>,
    /// Slices each case's time is cut into, eventfold and raw taking turns (ours, raw;
    /// raw, ours; …), so that both sides meet the same moments of a shared machine.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum GroupMode {
    On,
    Off,
    Both,
}

impl GroupMode {
    /// The configurations to run, each with its row label suffix.
    fn configs(self) -> Vec<(GroupCommit, &'static str)> {
        let on = (GroupCommit::default(), "+group");
        let off = (GroupCommit::off(), "");
        match self {
            GroupMode::On => vec![on],
            GroupMode::Off => vec![off],
            GroupMode::Both => vec![off, on],
        }
    }
}

/// How the appends of a case were grouped (`None`: group commit off).
fn grouping(before: Option<GroupStats>, after: Option<GroupStats>) -> Option<String> {
    let after = after?;
    let before = before.unwrap_or_default();
    let groups = after.groups.saturating_sub(before.groups);
    let appends = after.appends.saturating_sub(before.appends);
    Some(format!(
        "  └ {groups} group commits for {appends} queued appends (mean {:.1}, largest so far {}); \
         appends with nothing else under way went out alone",
        appends as f64 / groups.max(1) as f64,
        after.largest
    ))
}

/// The row label of a backend in a group-commit configuration.
fn label(backend: &str, suffix: &str) -> &'static str {
    match (backend, suffix) {
        ("postgres", "") => "postgres",
        ("postgres", _) => "postgres+group",
        (_, "") => "sqlite",
        _ => "sqlite+group",
    }
}

pub(crate) async fn run(
    database_url: &str,
    args: AppendBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if args.writers.iter().chain(&args.batches).any(|&n| n == 0) || args.rounds == 0 {
        anyhow::bail!("--writers, --batches and --rounds must be >= 1");
    }
    if let Some(&too_big) = args
        .batches
        .iter()
        .find(|&&b| b > Limits::default().max_events_per_append)
    {
        anyhow::bail!("batch {too_big} is over the append limit");
    }
    writeln!(
        out,
        "bench append: ~{} bytes of data per event, {:?} per case; raw = plain INSERTs of the \
         same rows into a table with the same indexes, same concurrency; +group = group \
         commit on (the default), without = one transaction per append",
        payload_size(),
        args.duration
    )?;
    print_header(out)?;
    if !args.no_postgres {
        let admin = admin_url(args.postgres.as_deref(), database_url);
        postgres_cases(&admin, &args, out).await?;
    }
    if !args.no_sqlite {
        sqlite_cases(&args, out).await?;
    }
    Ok(())
}

fn payload() -> serde_json::Value {
    json!({
        "user_id": "0b9c2f7e-5a51-4d8e-9a43-1f6d2c9e8b10",
        "sku": "SKU-4711-CAPS",
        "title": "Coffee capsules, intense roast, 50 pcs",
        "category": "coffee",
        "quantity": 2,
        "unit_price": 1299,
        "currency": "RUB",
        "purchased_at": "2026-11-23T10:15:00Z",
        "marketplace_order_id": "MP-2026-11-23-000123456",
        "note": "delivered to the pick-up point at the corner of the street, 2nd floor"
    })
}

fn payload_size() -> usize {
    payload().to_string().len()
}

/// Everything a writer appends in one call.
fn batch_events(data: &serde_json::Value, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| NewEvent::new("PurchaseRecorded", data.clone()))
        .collect()
}

/// One writer's streams and their versions.
struct WriterStreams {
    ids: Vec<StreamId>,
    versions: Vec<Option<i64>>,
    next: usize,
}

impl WriterStreams {
    fn new(case: &str, writer: usize) -> anyhow::Result<Self> {
        let ids = (0..STREAMS_PER_WRITER)
            .map(|k| StreamId::new(format!("purchases-{case}w{writer}s{k}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            versions: vec![None; ids.len()],
            ids,
            next: 0,
        })
    }

    /// The next stream and the version its next event gets.
    fn take(&mut self, n: usize) -> (usize, ExpectedVersion, i64) {
        let k = self.next;
        self.next = (self.next + 1) % self.ids.len();
        let current = self.versions[k];
        self.versions[k] = Some(current.map_or(n as i64 - 1, |v| v + n as i64));
        let expected = current.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        (k, expected, current.map_or(0, |v| v + 1))
    }
}

/// Runs `writers` tasks for `duration`. Each owns its streams and calls `step(stream,
/// expected version, first version, events)` as often as it can.
async fn drive<F, Fut>(
    case: &str,
    writers: usize,
    batch: usize,
    duration: Duration,
    step: F,
) -> anyhow::Result<Measured>
where
    F: Fn(StreamId, ExpectedVersion, i64, Vec<NewEvent>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let data = payload();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (step, data) = (step.clone(), data.clone());
        let mut streams = WriterStreams::new(case, w)?;
        tasks.push(tokio::spawn(async move {
            let mut measured = Measured::default();
            while Instant::now() < deadline {
                let (k, expected, first_version) = streams.take(batch);
                let events = batch_events(&data, batch);
                let t0 = Instant::now();
                step(streams.ids[k].clone(), expected, first_version, events).await?;
                measured.latencies.push(t0.elapsed());
                measured.events += batch as u64;
            }
            anyhow::Ok(measured)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    Ok(Measured::merge(parts, start.elapsed()))
}

/// Runs both sides of a case in `rounds` slices of `duration / rounds` each, taking
/// turns (ours then raw, then raw then ours, …): a few seconds of drift on a shared
/// machine then reach both sides alike instead of landing on one. Each slice writes
/// streams of its own.
#[allow(clippy::too_many_arguments)]
async fn interleaved<F, Fut, G, Gut>(
    case: &str,
    writers: usize,
    batch: usize,
    duration: Duration,
    rounds: u32,
    ours: F,
    raw: G,
) -> anyhow::Result<(Measured, Measured)>
where
    F: Fn(StreamId, ExpectedVersion, i64, Vec<NewEvent>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
    G: Fn(StreamId, ExpectedVersion, i64, Vec<NewEvent>) -> Gut + Clone + Send + 'static,
    Gut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let slice = duration / rounds.max(1);
    let (mut ours_slices, mut raw_slices) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let case = format!("{case}r{round}");
        for ours_turn in taking_turns(round) {
            if ours_turn {
                ours_slices.push(drive(&case, writers, batch, slice, ours.clone()).await?);
            } else {
                raw_slices.push(drive(&case, writers, batch, slice, raw.clone()).await?);
            }
        }
    }
    Ok((
        Measured::combine(ours_slices),
        Measured::combine(raw_slices),
    ))
}

async fn postgres_cases(
    admin_url: &str,
    args: &AppendBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let scratch = ScratchDb::create(admin_url)
        .await
        .context("use --no-postgres to skip the PostgreSQL cases")?;
    let result = postgres_cases_in(scratch.options.clone(), args, out).await;
    scratch.remove().await?;
    result
}

async fn postgres_cases_in(
    options: PgConnectOptions,
    args: &AppendBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let max_writers = args.writers.iter().copied().max().unwrap_or(1) as u32;
    // A connection for each plain-INSERT writer, those the store keeps, and a few more.
    let pool = PgEventStore::pool_options()
        .max_connections(max_writers * 2 + 4)
        .connect_with(options)
        .await?;
    PgEventStore::from_pool(pool.clone(), Limits::default())
        .migrate()
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE raw_events (LIKE eventfold_events INCLUDING DEFAULTS);
         CREATE SEQUENCE raw_positions;
         ALTER TABLE raw_events ALTER global_position SET DEFAULT nextval('raw_positions');
         ALTER TABLE raw_events ADD PRIMARY KEY (global_position);
         ALTER TABLE raw_events ADD UNIQUE (event_id);
         ALTER TABLE raw_events ADD UNIQUE (stream_id, stream_version);
         CREATE INDEX ON raw_events (category, global_position);",
    )
    .execute(&pool)
    .await?;
    for &batch in &args.batches {
        for &writers in &args.writers {
            for (group, suffix) in args.group_commit.configs() {
                sqlx::raw_sql(
                    "TRUNCATE eventfold_events, raw_events;
                 ALTER SEQUENCE eventfold_positions RESTART; ALTER SEQUENCE raw_positions RESTART;",
                )
                .execute(&pool)
                .await?;
                let case = format!("c{writers}x{batch}");
                let group = GroupCommit {
                    committers: args.committers.unwrap_or(group.committers),
                    join_at: args.join_at.unwrap_or(group.join_at),
                    ..group
                };
                let store = PgEventStore::from_pool_with(pool.clone(), Limits::default(), group);
                let probe = store.clone();
                let raw_side = RawConnections::new(pool.clone());
                let (ours, raw) = interleaved(
                    &case,
                    writers,
                    batch,
                    args.duration,
                    args.rounds,
                    move |s, expected, _, events| {
                        let store = store.clone();
                        async move {
                            store.append(&s, expected, &events).await?;
                            Ok(())
                        }
                    },
                    move |s, _, first, events| {
                        let raw_side = raw_side.clone();
                        async move {
                            let mut conn = raw_side.take().await?;
                            raw_pg_insert(&mut conn, &s, first, &events).await?;
                            raw_side.give(conn);
                            Ok(())
                        }
                    },
                )
                .await?;
                let grouped = grouping(None, probe.group_stats());
                print_row(
                    out,
                    &Row {
                        backend: label("postgres", suffix),
                        writers,
                        batch,
                        ours,
                        raw,
                    },
                )?;
                if let Some(grouped) = grouped {
                    writeln!(out, "{grouped}")?;
                }
            }
        }
    }
    pool.close().await;
    Ok(())
}

/// The plain INSERTs' connections: each writer takes the one used last, as a plain
/// client holding a connection of its own (`pgbench`) does. sqlx's pool hands its idle
/// connections out in turn, each to a backend that has waited longest, its caches cold:
/// that cost plain INSERTs 13–27 % at one writer (3,300 against 3,800–4,500 a second).
#[derive(Clone)]
struct RawConnections {
    pool: PgPool,
    idle: std::sync::Arc<std::sync::Mutex<Vec<PoolConnection<Postgres>>>>,
}

impl RawConnections {
    fn new(pool: PgPool) -> Self {
        Self {
            pool,
            idle: std::sync::Arc::default(),
        }
    }

    async fn take(&self) -> anyhow::Result<PoolConnection<Postgres>> {
        let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Ok(match kept {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        })
    }

    fn give(&self, conn: PoolConnection<Postgres>) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
}

/// The baseline: the same rows, plain INSERT, no checks.
async fn raw_pg_insert(
    conn: &mut sqlx::PgConnection,
    stream: &StreamId,
    first_version: i64,
    events: &[NewEvent],
) -> anyhow::Result<()> {
    let serialised: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            Ok((
                serde_json::to_string(&e.data)?,
                serde_json::to_string(&e.metadata)?,
            ))
        })
        .collect::<serde_json::Result<_>>()?;
    if events.len() == 1 {
        sqlx::query(
            "INSERT INTO raw_events (stream_id, category, stream_version, event_id, event_type, \
             schema_version, data, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
        )
        .bind(stream.as_str())
        .bind(stream.category())
        .bind(first_version)
        .bind(events[0].event_id)
        .bind(&events[0].event_type)
        .bind(events[0].schema_version)
        .bind(&serialised[0].0)
        .bind(&serialised[0].1)
        .execute(&mut *conn)
        .await?;
    } else {
        let versions: Vec<i64> = (0..events.len() as i64)
            .map(|i| first_version + i)
            .collect();
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let schema: Vec<i32> = events.iter().map(|e| e.schema_version).collect();
        let data: Vec<&str> = serialised.iter().map(|s| s.0.as_str()).collect();
        let meta: Vec<&str> = serialised.iter().map(|s| s.1.as_str()).collect();
        sqlx::query(
            "INSERT INTO raw_events (stream_id, category, stream_version, event_id, event_type, \
             schema_version, data, metadata) \
             SELECT $1, $2, v, id, t, s, d::jsonb, m::jsonb \
             FROM unnest($3::bigint[], $4::uuid[], $5::text[], $6::int[], $7::text[], $8::text[]) \
             AS u(v, id, t, s, d, m)",
        )
        .bind(stream.as_str())
        .bind(stream.category())
        .bind(&versions)
        .bind(&ids)
        .bind(&types)
        .bind(&schema)
        .bind(&data)
        .bind(&meta)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn sqlite_cases(args: &AppendBenchArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("eventfold-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let result = sqlite_cases_in(&dir, args, out).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn sqlite_cases_in(
    dir: &std::path::Path,
    args: &AppendBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let store = SqliteEventStore::connect(&url).await?;
    store.migrate().await?;
    let pool = store.writer_pool().clone();
    let grouped =
        SqliteEventStore::connect_with(&url, Limits::default(), GroupCommit::default()).await?;
    let ungrouped =
        SqliteEventStore::connect_with(&url, Limits::default(), GroupCommit::off()).await?;
    sqlx::raw_sql(
        "CREATE TABLE raw_events (
            global_position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, category TEXT NOT NULL,
            stream_version INTEGER NOT NULL, event_id BLOB NOT NULL UNIQUE, event_type TEXT NOT NULL,
            schema_version INTEGER NOT NULL, data TEXT NOT NULL, metadata TEXT NOT NULL,
            recorded_at TEXT NOT NULL, UNIQUE (stream_id, stream_version));
         CREATE INDEX raw_events_category ON raw_events (category, global_position);",
    )
    .execute(&pool)
    .await?;
    for &batch in &args.batches {
        for &writers in &args.writers {
            for (group, suffix) in args.group_commit.configs() {
                sqlx::raw_sql("DELETE FROM eventfold_events; DELETE FROM raw_events;")
                    .execute(&pool)
                    .await?;
                let case = format!("c{writers}x{batch}");
                let store = if group.enabled {
                    grouped.clone()
                } else {
                    ungrouped.clone()
                };
                let probe = store.clone();
                let before = probe.group_stats();
                let pool = pool.clone();
                let (ours, raw) = interleaved(
                    &case,
                    writers,
                    batch,
                    args.duration,
                    args.rounds,
                    move |s, expected, _, events| {
                        let store = store.clone();
                        async move {
                            store.append(&s, expected, &events).await?;
                            Ok(())
                        }
                    },
                    move |s, _, first, events| {
                        let pool = pool.clone();
                        async move { raw_sqlite_insert(&pool, &s, first, &events).await }
                    },
                )
                .await?;
                let grouped = grouping(before, probe.group_stats());
                print_row(
                    out,
                    &Row {
                        backend: label("sqlite", suffix),
                        writers,
                        batch,
                        ours,
                        raw,
                    },
                )?;
                if let Some(grouped) = grouped {
                    writeln!(out, "{grouped}")?;
                }
            }
        }
    }
    grouped.close().await;
    ungrouped.close().await;
    store.close().await;
    Ok(())
}

async fn raw_sqlite_insert(
    pool: &SqlitePool,
    stream: &StreamId,
    first_version: i64,
    events: &[NewEvent],
) -> anyhow::Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let now = chrono::Utc::now();
    for (i, e) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO raw_events (stream_id, category, stream_version, event_id, event_type, \
             schema_version, data, metadata, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(stream.as_str())
        .bind(stream.category())
        .bind(first_version + i as i64)
        .bind(e.event_id)
        .bind(&e.event_type)
        .bind(e.schema_version)
        .bind(serde_json::to_string(&e.data)?)
        .bind(serde_json::to_string(&e.metadata)?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

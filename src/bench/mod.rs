//! `eventfold bench …`: throughput and latency, always next to a raw baseline measured
//! in the same run, so every figure comes with the ratio that makes it meaningful.

use std::io::Write;
use std::time::Duration;

use clap::Subcommand;

mod append;
mod commands;
pub(crate) mod project;
mod query;
mod relay;
mod replay;
mod report;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Appends of ~300-byte events by 1, 8 and 32 writers, single and in batches of 100,
    /// against PostgreSQL and SQLite, each beside plain INSERTs of the same rows.
    Append(append::AppendBenchArgs),
    /// Workout updates on a stream of 1,000 and 10,000 events beside the same update on
    /// a workout just started (PostgreSQL): what a long stream costs a command.
    Commands(commands::CommandsBenchArgs),
    /// Folding a pre-filled log (200k events by default) into the relational and Redis
    /// read models, beside the raw read speed of the same log.
    Project(project::ProjectBenchArgs),
    /// The voice route under fixed request rates, the command→Redis lag, and raw Redis
    /// GETs as the baseline (starts its own server on PostgreSQL + Redis).
    Query(query::QueryBenchArgs),
    /// The Kafka relay publishing a pre-filled log, beside raw rdkafka produce of the
    /// same payloads (librdkafka's mock cluster unless --brokers is given).
    Relay(relay::RelayBenchArgs),
    /// Full rebuilds from a log of a million events, beside the raw read speed.
    Replay(replay::ReplayBenchArgs),
    /// The load generator `bench query` runs in a process of its own: holds a request
    /// rate against the voice route of a running server and prints one JSON line.
    #[command(hide = true)]
    Load(query::LoadArgs),
}

pub(crate) async fn run(
    database_url: &str,
    command: BenchCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let bench = async {
        match command {
            BenchCommand::Append(args) => append::run(database_url, args, out).await,
            BenchCommand::Commands(args) => commands::run(database_url, args, out).await,
            BenchCommand::Project(args) => project::run(database_url, args, out).await,
            BenchCommand::Query(args) => query::run(database_url, args, out).await,
            BenchCommand::Replay(args) => replay::run(database_url, args, out).await,
            BenchCommand::Relay(args) => relay::run(database_url, args, out).await,
            BenchCommand::Load(args) => query::load(args, out).await,
        }
    };
    // Interrupted (Ctrl-C, SIGTERM), a bench removes the scratch state it made: a
    // 1M-event log is hundreds of megabytes left behind on the server otherwise.
    tokio::select! {
        result = bench => result,
        () = crate::serve::shutdown_signal() => {
            let removed = remove_scratch_left().await;
            anyhow::bail!("interrupted; {removed} scratch store(s) of this run removed (PostgreSQL and ClickHouse databases, Redis key prefixes)")
        }
    }
}

/// Scratch state a bench made on a server.
enum Scratch {
    Postgres(sqlx::postgres::PgConnectOptions, String),
    ClickHouse(eventfold_projections::ClickHouseTarget),
    /// A Redis server's URL and a key prefix.
    Redis(String, String),
}

impl Scratch {
    /// What tells it apart from the others: its database's name or its prefix.
    fn key(&self) -> &str {
        match self {
            Scratch::Postgres(_, name) => name,
            Scratch::ClickHouse(target) => target.database(),
            Scratch::Redis(_, prefix) => prefix,
        }
    }

    async fn remove(self) -> anyhow::Result<()> {
        match self {
            Scratch::Postgres(server, name) => {
                use sqlx::ConnectOptions;
                let mut conn = server.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
            }
            Scratch::ClickHouse(target) => target.drop_database().await?,
            Scratch::Redis(url, prefix) => delete_keys(&url, &prefix).await?,
        }
        Ok(())
    }
}

/// The scratch state this process made and has not removed yet.
static SCRATCH: std::sync::Mutex<Vec<Scratch>> = std::sync::Mutex::new(Vec::new());

fn scratch_made(scratch: Scratch) {
    if let Ok(mut made) = SCRATCH.lock() {
        made.push(scratch);
    }
}

fn scratch_removed(key: &str) {
    if let Ok(mut made) = SCRATCH.lock() {
        made.retain(|made| made.key() != key);
    }
}

/// Removes every scratch store still listed; how many went.
async fn remove_scratch_left() -> usize {
    let left = SCRATCH
        .lock()
        .map(|mut made| std::mem::take(&mut *made))
        .unwrap_or_default();
    let mut removed = 0;
    for scratch in left {
        let key = scratch.key().to_owned();
        match scratch.remove().await {
            Ok(()) => removed += 1,
            Err(error) => eprintln!("scratch store {key} not removed: {error}"),
        }
    }
    removed
}

/// Deletes the keys under `prefix`.
async fn delete_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    for chunk in keys.chunks(1000) {
        let _: i64 = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
    }
    Ok(())
}

/// A Redis key prefix of one bench run (`eventfold-bench:{id}:`), its keys deleted by
/// [`ScratchRedis::remove`] or when the bench is interrupted.
pub(crate) struct ScratchRedis {
    url: String,
    pub(crate) prefix: String,
}

impl ScratchRedis {
    pub(crate) fn new(url: &str) -> Self {
        let prefix = format!("eventfold-bench:{}:", uuid::Uuid::new_v4().simple());
        scratch_made(Scratch::Redis(url.to_owned(), prefix.clone()));
        Self {
            url: url.to_owned(),
            prefix,
        }
    }

    pub(crate) async fn remove(self) -> anyhow::Result<()> {
        delete_keys(&self.url, &self.prefix).await?;
        scratch_removed(&self.prefix);
        Ok(())
    }
}

/// A scratch ClickHouse database made by a bench: listed, so that an interrupted bench
/// drops it.
pub(crate) fn clickhouse_made(target: &eventfold_projections::ClickHouseTarget) {
    scratch_made(Scratch::ClickHouse(target.clone()));
}

/// Drops a scratch ClickHouse database (errors ignored: the bench's result matters more)
/// and takes it off the list.
pub(crate) async fn drop_clickhouse(target: &eventfold_projections::ClickHouseTarget) {
    let _ = target.drop_database().await;
    scratch_removed(target.database());
}

/// Parses `3s`, `500ms` or a plain number of seconds.
/// [`parse_duration`], or `0` for "skip it".
pub(crate) fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if matches!(s.trim(), "0" | "0s" | "0ms") {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let seconds = match s.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().map(|ms| ms / 1000.0),
        None => s.strip_suffix('s').unwrap_or(s).parse::<f64>(),
    };
    // From a millisecond to a day: a bench of no time measures nothing, and one past
    // a day is a typo (and past `Instant`'s range, a panic).
    match seconds
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
    {
        Some(d) if (Duration::from_millis(1)..=Duration::from_secs(86_400)).contains(&d) => Ok(d),
        _ => Err(format!(
            "{s:?} is not a duration from 1ms to 24h: use e.g. 3s or 500ms"
        )),
    }
}

/// The server a bench runs on: the flag, else DATABASE_URL when it is PostgreSQL, else
/// the local server.
pub(crate) fn admin_url(flag: Option<&str>, database_url: &str) -> String {
    match flag {
        Some(url) => url.to_owned(),
        None if database_url.starts_with("postgres") => database_url.to_owned(),
        None => "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_owned(),
    }
}

/// A scratch PostgreSQL database for one bench run, dropped by [`ScratchDb::remove`].
pub(crate) struct ScratchDb {
    admin: sqlx::PgConnection,
    name: String,
    /// How to connect to it.
    pub(crate) options: sqlx::postgres::PgConnectOptions,
    /// Its URL.
    pub(crate) url: String,
}

impl ScratchDb {
    pub(crate) async fn create(admin_url: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        use sqlx::ConnectOptions;
        let admin: sqlx::postgres::PgConnectOptions =
            admin_url.parse().context("invalid PostgreSQL URL")?;
        // The process's id in the name: whose it is, should one be left behind.
        let name = format!(
            "eventfold_bench_{}_{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut conn = admin
            .connect()
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        scratch_made(Scratch::Postgres(admin.clone(), name.clone()));
        let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        Ok(Self {
            admin: conn,
            options: admin.database(&name),
            name,
            url,
        })
    }

    pub(crate) async fn remove(mut self) -> anyhow::Result<()> {
        use sqlx::Connection;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin)
        .await?;
        scratch_removed(&self.name);
        self.admin.close().await?;
        Ok(())
    }
}

/// This process's CPU time so far (user + system, all threads), where `/proc` tells it
/// (Linux); `None` elsewhere. The benches print it beside wall time: on a small machine
/// the brokers, the database and the bench share the cores.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')', in
    // clock ticks of 10 ms (Linux's USER_HZ is 100).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks.checked_mul(10)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A duration past what `Duration` or `Instant` hold is refused, never a panic
    /// (`--duration 99999999999999999999s` used to panic converting the float).
    #[test]
    fn durations_are_a_millisecond_to_a_day() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("24h").is_err(), "no unit h");
        assert_eq!(parse_duration("86400"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "99999999999999999999s",
            "86401s",
            "0.0000001s",
            "1e400",
            "NaN",
            "-3s",
            "0",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
    }

    /// What an interrupted bench made on each server — a PostgreSQL database, a
    /// ClickHouse database, keys under a Redis prefix — is removed by what `run` calls
    /// on Ctrl-C or SIGTERM (`cli::an_interrupted_bench_removes_its_scratch_databases`
    /// interrupts a real run, which makes only the PostgreSQL one by then).
    #[tokio::test(flavor = "multi_thread")]
    async fn what_an_interrupted_bench_made_is_removed() -> anyhow::Result<()> {
        let redis_url = std::env::var("EVENTFOLD_TEST_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let clickhouse_url = std::env::var("EVENTFOLD_TEST_CLICKHOUSE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8123".to_owned());
        let redis = ScratchRedis::new(&redis_url);
        let client = redis::Client::open(redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let key = format!("{}due:u1", redis.prefix);
        let () = redis::cmd("SET")
            .arg(&key)
            .arg("1")
            .query_async(&mut conn)
            .await?;
        let name = format!("eventfold_bench_{}", uuid::Uuid::new_v4().simple());
        let clickhouse = eventfold_projections::ClickHouseTarget::new(&clickhouse_url, &name)?;
        clickhouse.ensure().await?;
        clickhouse_made(&clickhouse);
        let postgres = ScratchDb::create(&eventfold_event_log::testing::admin_url()).await?;
        let postgres_name = postgres.name.clone();

        assert_eq!(remove_scratch_left().await, 3);

        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        assert_eq!(exists, 0, "the Redis keys are left");
        let databases: u64 =
            eventfold_projections::ClickHouseTarget::new(&clickhouse_url, "default")?
                .client()
                .query("SELECT count() FROM system.databases WHERE name = ?")
                .bind(&name)
                .fetch_one()
                .await?;
        assert_eq!(databases, 0, "the ClickHouse database is left");
        let mut admin = postgres.admin;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&postgres_name)
            .fetch_one(&mut admin)
            .await?;
        assert_eq!(left, 0, "the PostgreSQL database is left");
        assert_eq!(remove_scratch_left().await, 0, "listed twice");
        Ok(())
    }
}

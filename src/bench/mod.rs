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
    // Interrupted (Ctrl-C, SIGTERM), a bench removes the scratch databases it made: a
    // 1M-event log is hundreds of megabytes left behind on the server otherwise.
    tokio::select! {
        result = bench => result,
        () = crate::serve::shutdown_signal() => {
            let removed = remove_scratch_left().await;
            anyhow::bail!("interrupted; {removed} scratch database(s) of this run removed")
        }
    }
}

/// The scratch databases this process made and has not removed yet: `(server, name)`.
static SCRATCH: std::sync::Mutex<Vec<(sqlx::postgres::PgConnectOptions, String)>> =
    std::sync::Mutex::new(Vec::new());

fn scratch_made(server: &sqlx::postgres::PgConnectOptions, name: &str) {
    if let Ok(mut made) = SCRATCH.lock() {
        made.push((server.clone(), name.to_owned()));
    }
}

fn scratch_removed(name: &str) {
    if let Ok(mut made) = SCRATCH.lock() {
        made.retain(|(_, made)| made != name);
    }
}

/// Drops every scratch database still listed; how many went.
async fn remove_scratch_left() -> usize {
    use sqlx::ConnectOptions;
    let left = SCRATCH
        .lock()
        .map(|mut made| std::mem::take(&mut *made))
        .unwrap_or_default();
    let mut removed = 0;
    for (server, name) in left {
        let dropped = async {
            let mut conn = server.connect().await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await?;
            anyhow::Ok(())
        };
        match dropped.await {
            Ok(()) => removed += 1,
            Err(error) => eprintln!("scratch database {name} not removed: {error}"),
        }
    }
    removed
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
        scratch_made(&admin, &name);
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
}

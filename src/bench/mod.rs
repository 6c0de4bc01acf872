//! `eventfold bench …`: throughput and latency, always next to a raw baseline measured
//! in the same run, so every figure comes with the ratio that makes it meaningful.

use std::io::Write;
use std::time::Duration;

use clap::Subcommand;

mod append;
mod project;
mod query;
mod replay;
mod report;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Appends of ~300-byte events by 1, 8 and 32 writers, single and in batches of 100,
    /// against PostgreSQL and SQLite, each beside plain INSERTs of the same rows.
    Append(append::AppendBenchArgs),
    /// Folding a pre-filled log (200k events by default) into the relational and Redis
    /// read models, beside the raw read speed of the same log.
    Project(project::ProjectBenchArgs),
    /// The voice route under fixed request rates, the command→Redis lag, and raw Redis
    /// GETs as the baseline (starts its own server on PostgreSQL + Redis).
    Query(query::QueryBenchArgs),
    /// Full rebuilds from a log of a million events, beside the raw read speed.
    Replay(replay::ReplayBenchArgs),
}

pub(crate) async fn run(
    database_url: &str,
    command: BenchCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        BenchCommand::Append(args) => append::run(database_url, args, out).await,
        BenchCommand::Project(args) => project::run(database_url, args, out).await,
        BenchCommand::Query(args) => query::run(database_url, args, out).await,
        BenchCommand::Replay(args) => replay::run(database_url, args, out).await,
    }
}

/// Parses `3s`, `500ms` or a plain number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let seconds = match s.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().map(|ms| ms / 1000.0),
        None => s.strip_suffix('s').unwrap_or(s).parse::<f64>(),
    };
    match seconds {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{s:?} is not a duration: use e.g. 3s or 500ms")),
    }
}

//! `eventfold projections …`: what each read model has applied, and how far behind.

use std::io::Write;

use clap::Subcommand;
use eventfold_event_log::AnyEventStore;
use eventfold_projections::{
    measure_lag, ProjectionSet, ReadDb, RedisKeys, RedisTarget, RunnerOptions, StatusBoard,
};

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// Checkpoint, lag and parked events of every projection.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The projections of this deployment: read models next to the log, Redis if configured.
pub(crate) async fn projection_set(
    store: AnyEventStore,
    database_url: &str,
    redis_url: Option<&str>,
    redis_prefix: &str,
) -> anyhow::Result<ProjectionSet<AnyEventStore>> {
    let db = ReadDb::connect(database_url).await?;
    let redis = match redis_url {
        Some(url) => Some(RedisTarget {
            client: redis::Client::open(url)?,
            keys: RedisKeys::new(redis_prefix),
        }),
        None => None,
    };
    Ok(ProjectionSet::new(
        store,
        db,
        redis,
        RunnerOptions::default(),
        StatusBoard::default(),
    ))
}

pub(crate) async fn run(
    set: &ProjectionSet<AnyEventStore>,
    command: ProjectionsCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Status { json } => {
            let progress = set.stored_progress().await?;
            let mut rows = Vec::new();
            for p in progress {
                let checkpoint = p.checkpoint.unwrap_or_default();
                let lag = measure_lag(set.log(), checkpoint).await?;
                rows.push(serde_json::json!({
                    "name": p.name, "store": p.store, "checkpoint": p.checkpoint, "head": lag.head,
                    "lag_events": lag.events, "lag_seconds": lag.seconds, "parked": p.parked,
                    "state": if p.checkpoint.is_none() { "never_ran" } else if lag.events == 0 { "caught_up" } else { "behind" },
                }));
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<18} {:<11} {:>11} {:>11} {:>10} {:>10} {:>7}  state",
                    "projection", "store", "checkpoint", "head", "lag", "lag s", "parked"
                )?;
                for r in rows {
                    writeln!(
                        out,
                        "{:<18} {:<11} {:>11} {:>11} {:>10} {:>10.1} {:>7}  {}",
                        r["name"].as_str().unwrap_or_default(),
                        r["store"].as_str().unwrap_or_default(),
                        r["checkpoint"]
                            .as_i64()
                            .map_or("-".to_owned(), |c| c.to_string()),
                        r["head"].to_string(),
                        r["lag_events"].to_string(),
                        r["lag_seconds"].as_f64().unwrap_or_default(),
                        r["parked"].to_string(),
                        r["state"].as_str().unwrap_or_default(),
                    )?;
                }
            }
        }
    }
    Ok(())
}

//! `eventfold projections …`: what each read model has applied, and how far behind.

use std::io::Write;

use clap::Subcommand;
use eventfold_event_log::AnyEventStore;
use eventfold_projections::{
    measure_lag, ProjectionSet, ReadDb, RedisKeys, RedisTarget, RunnerOptions, StatusBoard,
};

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// Checkpoint, lag and parked events of every projection and reaction.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The events projections and reactions parked (gave up on after their retries and
    /// skipped), oldest first, with why: every one, or those of the names given.
    Parked {
        /// Projections or reactions, e.g. `order_drafter.v1` (all when none).
        names: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Runs a reaction's step again for each event it parked, once its cause is fixed
    /// (e.g. a sku back in the catalog): `reminder_planner.v1` or `order_drafter.v1`.
    /// What goes through is forgotten; what fails again stays parked with its new error
    /// (and the command exits non-zero). A read model's parked events are not applied
    /// out of order: fix the cause and `eventfold replay` the model.
    Retry {
        /// The reaction.
        name: String,
    },
    /// Delete a read model and its checkpoint: it is rebuilt from the log by the next
    /// `serve` (or at once by a running one). Asks for the name to be typed unless --yes.
    Reset {
        /// The projection, e.g. `workouts.v2`.
        name: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// The Redis read models' server and key prefix, when configured.
pub(crate) fn redis_target(
    redis_url: Option<&str>,
    redis_prefix: &str,
) -> anyhow::Result<Option<RedisTarget>> {
    Ok(match redis_url {
        Some(url) => Some(RedisTarget {
            client: redis_client(url)?,
            keys: RedisKeys::new(redis_prefix),
        }),
        None => None,
    })
}

/// A client of the Redis server at `url`, or an error naming the setting and the form
/// it takes (redis's own says only "did not parse").
pub(crate) fn redis_client(url: &str) -> anyhow::Result<redis::Client> {
    redis::Client::open(url).map_err(|error| {
        anyhow::anyhow!(
            "REDIS_URL {:?} is not a Redis URL ({error}): use redis://[user:password@]host[:port][/db]",
            crate::redact(url)
        )
    })
}

/// The server's `maxmemory-policy` when it evicts keys that have no expiry (the
/// `allkeys-*` policies): such a Redis drops read-model keys under memory pressure
/// while their checkpoint stays, and the model answers without them. `None` when the
/// policy keeps them, or the server cannot be asked within a second (down, or `CONFIG`
/// disabled, as on some managed services).
pub(crate) async fn evicting_policy(client: &redis::Client) -> Option<String> {
    let ask = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let answer: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await
            .ok()?;
        answer.get(1).cloned()
    };
    tokio::time::timeout(std::time::Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
        .filter(|policy| policy.starts_with("allkeys-"))
}

/// The ClickHouse analytics' server and database, when configured.
pub(crate) fn clickhouse_target(
    url: Option<&str>,
    database: &str,
) -> anyhow::Result<Option<eventfold_projections::ClickHouseTarget>> {
    Ok(match url {
        Some(url) => Some(eventfold_projections::ClickHouseTarget::new(url, database)?),
        None => None,
    })
}

/// The projections of this deployment: read models next to the log, Redis if configured.
pub(crate) async fn projection_set(
    store: AnyEventStore,
    database_url: &str,
    redis_url: Option<&str>,
    redis_prefix: &str,
) -> anyhow::Result<ProjectionSet<AnyEventStore>> {
    let db = ReadDb::connect(database_url).await?;
    let redis = redis_target(redis_url, redis_prefix)?;
    Ok(ProjectionSet::new(
        store,
        db,
        redis,
        RunnerOptions::default(),
        StatusBoard::default(),
    ))
}

pub(crate) async fn run(
    config: &crate::config::Config,
    set: &ProjectionSet<AnyEventStore>,
    command: ProjectionsCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Reset { name, yes } => reset(set, &name, yes, out).await?,
        ProjectionsCommand::Parked { names, json } => parked(set, &names, json, out).await?,
        ProjectionsCommand::Retry { name } => retry(config, set, &name, out).await?,
        ProjectionsCommand::Status { json } => {
            let progress = set.stored_progress().await?;
            let mut names: Vec<&str> = progress.iter().map(|p| p.name).collect();
            names.extend(crate::reactions::REACTIONS);
            let owners = eventfold_projections::owners(set.db(), &names).await?;
            let owner_of = |name: &str| serde_json::json!(owners.get(name));
            let bumps = set.version_bumps().await?;
            let mut rows = Vec::new();
            for p in progress {
                // Taken over by projector workers: the live checkpoint is a hand-over
                // marker, and the lag is theirs to tell (per partition), not the log's.
                let kafka = p.checkpoint.and_then(eventfold_projections::handed_over_at);
                let checkpoint = kafka.or(p.checkpoint).unwrap_or_default();
                let lag = measure_lag(set.log(), checkpoint).await?;
                let measured = kafka.is_none();
                rows.push(serde_json::json!({
                    "name": p.name, "store": p.store, "checkpoint": p.checkpoint.map(|_| checkpoint),
                    "head": lag.head,
                    "lag_events": measured.then_some(lag.events),
                    "lag_seconds": measured.then_some(lag.seconds), "parked": p.parked,
                    "fed_from_kafka_since": kafka,
                    // What each Kafka partition's feed has applied (projector workers).
                    "partitions": p.sources,
                    "version_bump_from": bumps.iter().find(|b| b.name == p.name).map(|b| b.previous.clone()),
                    "owner": owner_of(p.name),
                    "state": if bumps.iter().any(|b| b.name == p.name) { "version_bump_pending" }
                        else if p.rebuilding { "rebuilding" }
                        else if p.checkpoint.is_none() { "never_ran" }
                        else if kafka.is_some() { "fed_from_kafka" }
                        else if p.parked > 0 { "parked_events" }
                        else if lag.events == 0 { "caught_up" } else { "behind" },
                }));
            }
            for (name, checkpoint, parked) in
                crate::reactions::stored_progress(set.db().pool()).await
            {
                let lag = measure_lag(set.log(), checkpoint.unwrap_or_default()).await?;
                let state = match checkpoint {
                    None => "never_ran",
                    Some(_) if parked > 0 => "parked_events",
                    Some(_) if lag.events == 0 => "caught_up",
                    Some(_) => "behind",
                };
                rows.push(serde_json::json!({
                    "name": name, "store": "reaction", "checkpoint": checkpoint, "head": lag.head,
                    "lag_events": lag.events, "lag_seconds": lag.seconds, "parked": parked,
                    "version_bump_from": null, "state": state, "owner": owner_of(name),
                }));
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<20} {:<11} {:>11} {:>11} {:>10} {:>10} {:>7}  {:<22} owner",
                    "projection", "store", "checkpoint", "head", "lag", "lag s", "parked", "state"
                )?;
                for r in rows {
                    writeln!(
                        out,
                        "{:<20} {:<11} {:>11} {:>11} {:>10} {:>10} {:>7}  {:<22} {}",
                        r["name"].as_str().unwrap_or_default(),
                        r["store"].as_str().unwrap_or_default(),
                        r["checkpoint"]
                            .as_i64()
                            .map_or("-".to_owned(), |c| c.to_string()),
                        r["head"].to_string(),
                        r["lag_events"]
                            .as_i64()
                            .map_or("-".to_owned(), |l| l.to_string()),
                        r["lag_seconds"]
                            .as_f64()
                            .map_or("-".to_owned(), |l| format!("{l:.1}")),
                        r["parked"].to_string(),
                        r["state"].as_str().unwrap_or_default(),
                        r["owner"].as_str().unwrap_or("-"),
                    )?;
                    if let Some(partitions) = r["partitions"].as_object() {
                        for (partition, position) in partitions {
                            writeln!(out, "  └ fed from {partition}: applied through {position}")?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

async fn reset(
    set: &ProjectionSet<AnyEventStore>,
    name: &str,
    yes: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // Unknown names and unconfigured stores are refused before asking.
    let (model, store) = set.model(name).map_err(|e| match e {
        eventfold_projections::Error::UnknownProjection(_) => anyhow::anyhow!(
            "unknown projection {name:?}: use one of {}",
            set.registry().names().join(", ")
        ),
        eventfold_projections::Error::StoreNotConfigured { store: "redis", .. } => anyhow::anyhow!(
            "{name} lives in Redis, which is not configured: pass --redis-url or set REDIS_URL"
        ),
        other => other.into(),
    })?;
    let owned = model.owns().join(", ");
    let place = store.place(&eventfold_projections::Namespace::Live);
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("resetting {name} deletes its read model: pass --yes to confirm when not on a terminal");
        }
        eprint!("This deletes the read model {name}; it will be rebuilt from the log. Type its name to confirm: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != name {
            anyhow::bail!("not confirmed: nothing was changed");
        }
    }
    let (deleted, unit) = set.reset(name).await?;
    writeln!(
        out,
        "{name}: {deleted} {unit}, checkpoint and parked events deleted ({owned} in {place}); it is rebuilt from position 0 by serve (a running one starts at once)"
    )?;
    Ok(())
}

/// `projections parked`: every parked event of the models and reactions asked for.
async fn parked(
    set: &ProjectionSet<AnyEventStore>,
    names: &[String],
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for name in names {
        if set.registry().get(name).is_none()
            && !crate::reactions::REACTIONS.contains(&name.as_str())
        {
            let mut known = set.registry().names();
            known.extend(crate::reactions::REACTIONS);
            anyhow::bail!(
                "unknown projection or reaction {name:?}: use one of {}",
                known.join(", ")
            );
        }
    }
    let wanted = |name: &str| names.is_empty() || names.iter().any(|n| n == name);
    let mut rows = Vec::new();
    let mut push = |name: &str, store: &str, parked: Vec<eventfold_projections::ParkedEvent>| {
        for p in parked {
            rows.push(serde_json::json!({
                "name": name, "store": store, "position": p.position,
                "event_type": p.event_type, "error": p.error,
            }));
        }
    };
    // Every active model, or the models named (one of a store not configured here is
    // an error naming it, not "none").
    let models: Vec<eventfold_projections::Model> = if names.is_empty() {
        set.active().cloned().collect()
    } else {
        names
            .iter()
            .filter_map(|n| set.registry().get(n).cloned())
            .collect()
    };
    for model in &models {
        push(
            model.name(),
            model.store().as_str(),
            set.parked(model.name()).await?,
        );
    }
    for name in crate::reactions::REACTIONS.iter().filter(|n| wanted(n)) {
        let progress = crate::reactions::ReactionProgress::new(set.db().pool().clone(), name);
        push(name, "reaction", progress.parked().await?);
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else if rows.is_empty() {
        writeln!(out, "no parked events")?;
    } else {
        writeln!(
            out,
            "{:<20} {:>11}  {:<22} error",
            "name", "position", "event type"
        )?;
        for r in &rows {
            writeln!(
                out,
                "{:<20} {:>11}  {:<22} {}",
                r["name"].as_str().unwrap_or_default(),
                r["position"].as_i64().unwrap_or_default(),
                r["event_type"].as_str().unwrap_or_default(),
                r["error"].as_str().unwrap_or_default(),
            )?;
        }
    }
    Ok(())
}

/// `projections retry`: a reaction's parked events, through its step again.
async fn retry(
    config: &crate::config::Config,
    set: &ProjectionSet<AnyEventStore>,
    name: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use crate::reactions::{ServiceReaction, ORDER_DRAFTER, REACTIONS, REMINDER_PLANNER};
    if ![REMINDER_PLANNER, ORDER_DRAFTER].contains(&name) {
        if REACTIONS.contains(&name) {
            anyhow::bail!("{name}'s parked events cannot be retried from here: only {REMINDER_PLANNER} and {ORDER_DRAFTER} (whose steps are idempotent commands) can");
        }
        if set.registry().get(name).is_some() {
            anyhow::bail!("{name} is a read model: its parked events cannot be applied out of order; fix their cause, then `eventfold replay {name}` rebuilds it with every event");
        }
        anyhow::bail!("unknown reaction {name:?}: use {REMINDER_PLANNER} or {ORDER_DRAFTER}");
    }
    let pool = set.db().pool().clone();
    let service = std::sync::Arc::new(
        crate::app::command_service(
            set.log().clone(),
            config.slot_planner()?,
            &pool,
            std::sync::Arc::new(chrono::Utc::now),
        )
        .await?,
    );
    let reaction = if name == REMINDER_PLANNER {
        ServiceReaction::planner(service, pool)
    } else {
        ServiceReaction::drafter(service, pool)
    };
    let (done, left) = reaction.retry_parked().await?;
    for position in &done {
        writeln!(out, "{name}: position {position} retried: done")?;
    }
    for p in &left {
        writeln!(
            out,
            "{name}: position {} ({}) still parked: {}",
            p.position, p.event_type, p.error
        )?;
    }
    if !left.is_empty() {
        anyhow::bail!(
            "{} of {name}'s parked events failed again and stay parked",
            left.len()
        );
    }
    if done.is_empty() {
        writeln!(out, "{name}: no parked events")?;
    }
    Ok(())
}

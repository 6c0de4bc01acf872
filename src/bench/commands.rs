//! `eventfold bench commands`: a command on a long stream beside the same command on a
//! fresh one.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use eventfold_commands::{CommandContext, CommandService, Principal};
use eventfold_domain::workout::WorkoutCommand;
use eventfold_event_log::schemas::{DomainEvent, ExpectedVersion, StreamId};
use eventfold_event_log::{EventWriter, PgEventStore};
use eventfold_event_schemas::catalogue::{WorkoutStarted, WorkoutUpdated};
use eventfold_event_schemas::EventMetadata;
use uuid::Uuid;

use super::report::Measured;
use super::{admin_url, ScratchDb};

#[derive(Debug, Args)]
pub(crate) struct CommandsBenchArgs {
    /// Events already in the workout's stream, one case each (0 is the baseline: a
    /// workout just started).
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    lengths: Vec<usize>,
    /// Workout updates measured per case (one after the other).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    updates: u64,
    /// PostgreSQL server to run on: a scratch database is created there and dropped
    /// afterwards. Defaults to DATABASE_URL when that is postgres://, else the local server.
    #[arg(long, env = "EVENTFOLD_BENCH_POSTGRES")]
    postgres: Option<String>,
}

/// Starts a workout and fills its stream to `length` events with updates written
/// straight to the log (in appends of 1,000), as a long workout would have them.
async fn long_workout(store: &PgEventStore, length: usize) -> anyhow::Result<Uuid> {
    let workout_id = Uuid::new_v4();
    let stream = StreamId::new(format!("workout-{workout_id}"))?;
    let start = chrono::Utc::now() - chrono::Duration::hours(6);
    let mut events = vec![DomainEvent::WorkoutStarted(WorkoutStarted {
        workout_id,
        user_id: "bench".to_owned(),
        sport: "running".to_owned(),
        goal_distance_m: None,
        started_at: start,
    })];
    for i in 1..length.max(1) {
        events.push(DomainEvent::WorkoutUpdated(WorkoutUpdated {
            workout_id,
            distance_m: Some(i as f64),
            heart_rate: Some(120),
            speed_mps: None,
            points: Vec::new(),
            updated_at: start + chrono::Duration::milliseconds(i as i64),
        }));
    }
    for chunk in events.chunks(1000) {
        let new: Vec<_> = chunk
            .iter()
            .map(|e| e.to_new_event(Uuid::new_v4(), EventMetadata::default()))
            .collect();
        store.append(&stream, ExpectedVersion::Any, &new).await?;
    }
    Ok(workout_id)
}

/// One workout update through `service`, timed.
async fn update(
    service: &CommandService<PgEventStore>,
    workout_id: Uuid,
) -> anyhow::Result<Duration> {
    let ctx = CommandContext::new(Principal::user("bench"));
    let started = Instant::now();
    service
        .workout_command(&ctx, workout_id, |at| WorkoutCommand::Update {
            distance_m: None,
            heart_rate: Some(130),
            speed_mps: None,
            points: Vec::new(),
            at,
        })
        .await?;
    Ok(started.elapsed())
}

pub(crate) async fn run(
    database_url: &str,
    args: CommandsBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let db = ScratchDb::create(&admin_url(args.postgres.as_deref(), database_url)).await?;
    let outcome = measure(&db, &args, out).await;
    db.remove().await?;
    outcome
}

async fn measure(
    db: &ScratchDb,
    args: &CommandsBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let store = PgEventStore::connect(&db.url, None).await?;
    store.migrate().await?;
    writeln!(
        out,
        "bench commands: {} workout updates a case, one after the other, through the command service on PostgreSQL;\n\
         kept = one service (the stream's folded state kept between commands), cold = a new service for each update \
         (the whole stream read, as every command did before 2026-12-06); baseline = kept on a workout just started",
        args.updates
    )?;
    writeln!(
        out,
        "{:>14} | {:>9} {:>9} {:>12} | {:>9} {:>9} | {:>14}",
        "stream events",
        "kept p50",
        "kept p99",
        "first (cold)",
        "cold p50",
        "cold p99",
        "kept p50 / base"
    )?;
    let mut baseline = None;
    for &length in &args.lengths {
        let workout_id = long_workout(&store, length).await?;
        let kept_service = CommandService::new(store.clone());
        let first = update(&kept_service, workout_id).await?;
        let mut kept = Measured::default();
        for _ in 0..args.updates {
            kept.latencies
                .push(update(&kept_service, workout_id).await?);
        }
        kept.latencies.sort_unstable();
        let mut cold = Measured::default();
        for _ in 0..args.updates.min(50) {
            let fresh = CommandService::new(store.clone());
            cold.latencies.push(update(&fresh, workout_id).await?);
        }
        cold.latencies.sort_unstable();
        let p50 = kept.percentile(0.5);
        let base = *baseline.get_or_insert(p50);
        writeln!(
            out,
            "{:>14} | {:>9.2} {:>9.2} {:>12.2} | {:>9.2} {:>9.2} | {:>14.2}",
            length,
            ms(p50),
            ms(kept.percentile(0.99)),
            ms(first),
            ms(cold.percentile(0.5)),
            ms(cold.percentile(0.99)),
            p50.as_secs_f64() / base.as_secs_f64().max(1e-9)
        )?;
    }
    writeln!(out, "(milliseconds; cold runs at most 50 updates a case)")?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

//! `eventfold replay`: rebuild read models from the log while the live ones serve.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use eventfold_event_log::{AnyEventStore, EventReader};
use eventfold_event_schemas::Position;
use eventfold_projections::{
    Model, ProjectionSet, ReadDb, ReadStore, RedisTarget, RunnerOptions, StatusBoard, StoreKind,
};
use eventfold_replay::{rebuild_model, Label, Progress, SwapReport, Target};

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Projections to rebuild, e.g. `workouts.v2` or `voice_due.v1` (Redis models need
    /// `--redis-url`/`REDIS_URL`).
    names: Vec<String>,
    /// Rebuild every projection (the Redis ones too when Redis is configured).
    #[arg(long)]
    all: bool,
    /// Fold only the events after this position (up to --to/--until, or the head) into
    /// a separate named target: a window of the log, e.g. one week's leaderboard. Models
    /// whose events need earlier state (a workout update needs its start) stop on a
    /// parked event when it is missing.
    #[arg(long)]
    from: Option<i64>,
    /// Build the model as of this position into a separate named target (never swapped).
    #[arg(long, conflicts_with = "until")]
    to: Option<i64>,
    /// Build the model as of this time (RFC 3339) into a separate named target.
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// Name of the as-of target (with --to, --until or --from): tables
    /// `asof_{NAME}_rm_…`, Redis keys `{prefix}asof:{NAME}:…`. 1 to 24 ASCII letters,
    /// digits or `_`, beginning with a letter; read in lowercase. Default: audit.
    #[arg(long = "as")]
    label: Option<Label>,
    /// Show what would be replayed: events per type, and the log's read speed.
    #[arg(long)]
    dry_run: bool,
    /// Keep the replaced tables as `old_rm_…` (Redis keys under `{prefix}old:`).
    #[arg(long)]
    keep_old: bool,
}

fn selected<'s>(
    args: &ReplayArgs,
    set: &'s ProjectionSet<AnyEventStore>,
) -> anyhow::Result<Vec<&'s Model>> {
    let known = set.names();
    if args.all {
        return Ok(set.active().collect());
    }
    if args.names.is_empty() {
        anyhow::bail!(
            "name the projections to rebuild ({}) or pass --all",
            known.join(", ")
        );
    }
    // A name given twice is rebuilt once (the rebuilds run side by side: two of one
    // model would build into the same shadow).
    let mut seen = std::collections::HashSet::new();
    args.names
        .iter()
        .filter(|n| seen.insert(n.as_str()))
        .map(|n| match set.registry().get(n) {
            Some(model) if set.stores().of(model.store()).is_some() => Ok(model),
            Some(model) if model.store() == StoreKind::Redis => anyhow::bail!(
                "{n} lives in Redis, which is not configured: pass --redis-url or set REDIS_URL"
            ),
            Some(model) => anyhow::bail!("{n} lives in {}, which is not configured", model.store()),
            None => anyhow::bail!("unknown projection {n:?}: use one of {}", known.join(", ")),
        })
        .collect()
}

/// The last position recorded at or before `until`.
async fn position_at(store: &AnyEventStore, until: DateTime<Utc>) -> anyhow::Result<Position> {
    let mut after = Position::START;
    let mut last = Position::START;
    loop {
        let page = store.read_all(after, None, 5000).await?;
        let Some(end) = page.last().map(|e| e.global_position) else {
            return Ok(last);
        };
        for event in &page {
            if event.recorded_at > until {
                return Ok(last);
            }
            last = event.global_position;
        }
        after = end;
    }
}

/// Events a model applies per second by store (2 cores, PostgreSQL/Redis on the same
/// machine: `eventfold bench project`); a rough guide for `--dry-run`.
fn apply_rate(store: StoreKind) -> f64 {
    match store {
        StoreKind::Relational => 100_000.0,
        StoreKind::Redis => 200_000.0,
        StoreKind::ClickHouse => 100_000.0,
    }
}

async fn dry_run(
    store: &AnyEventStore,
    models: &[&Model],
    from: Position,
    to: Position,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = from;
    let mut scanned = 0u64;
    while after < to {
        let page = store.read_all(after, None, 5000).await?;
        let Some(end) = page.last().map(|e| e.global_position) else {
            break;
        };
        for e in page.iter().filter(|e| e.global_position <= to) {
            *counts.entry(e.event_type.clone()).or_default() += 1;
            scanned += 1;
        }
        after = end;
    }
    let rate = scanned as f64 / started.elapsed().as_secs_f64().max(1e-3);
    writeln!(
        out,
        "dry run: positions {}..={to}: {scanned} events, read at {rate:.0} events/s",
        from.0 + 1
    )?;
    for model in models {
        let name = model.name();
        let mine: Vec<(&String, &u64)> = counts.iter().filter(|(t, _)| model.handles(t)).collect();
        let total: u64 = mine.iter().map(|(_, n)| **n).sum();
        // Reading the whole log (the rate just measured) plus applying its share, at
        // the apply speeds `eventfold bench project` measures on this kind of machine.
        let estimate = scanned as f64 / rate.max(1.0) + total as f64 / apply_rate(model.store());
        writeln!(
            out,
            "  {name}: {total} events to apply, about {estimate:.0} s (+ verify and swap)"
        )?;
        for (t, n) in mine {
            writeln!(out, "    {t:<28} {n:>10}")?;
        }
    }
    writeln!(out, "  nothing was written")?;
    Ok(())
}

fn reporter(
    name: &'static str,
    multi: Option<&indicatif::MultiProgress>,
) -> impl Fn(Progress) + Sync {
    let bar = multi.map(|multi| {
        let bar = multi.add(indicatif::ProgressBar::new(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(name);
        bar
    });
    let last_line = std::sync::Mutex::new(Instant::now() - Duration::from_secs(60));
    move |p: Progress| {
        let msg = format!("{:.0} events/s, ETA {}s", p.rate, p.eta.as_secs());
        match &bar {
            Some(bar) => {
                bar.set_length(p.target.0.max(0) as u64);
                bar.set_position(p.position.0.max(0) as u64);
                bar.set_message(msg);
            }
            None => {
                let mut last = last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(5) || p.position >= p.target {
                    *last = Instant::now();
                    // stderr: stdout is locked by the caller for the results.
                    eprintln!("{name}: position {}/{} ({msg})", p.position, p.target);
                }
            }
        }
    }
}

/// Rebuilds the projection called `name` into `target`, in whichever store holds it.
pub(crate) async fn rebuild_named(
    set: &ProjectionSet<AnyEventStore>,
    name: &str,
    target: Target,
    progress: impl Fn(Progress) + Sync,
    stop: impl std::future::Future<Output = ()>,
) -> eventfold_replay::Result<Option<SwapReport>> {
    let (model, store) = set.model(name)?;
    rebuild_model(set.log(), store.as_ref(), model, target, progress, stop).await
}

pub(crate) async fn run(
    store: &AnyEventStore,
    database_url: &str,
    redis: Option<RedisTarget>,
    clickhouse: Option<eventfold_projections::ClickHouseTarget>,
    args: ReplayArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let db = ReadDb::connect(database_url).await?;
    let set = ProjectionSet::new(
        store.clone(),
        db,
        redis,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .with_clickhouse(clickhouse);
    let models = selected(&args, &set)?;
    let to = match (args.to, args.until) {
        (Some(to), _) if to < 0 => anyhow::bail!("--to must be >= 0"),
        // A model "as of" a position the log has not reached would claim events that
        // are appended there later without holding them.
        (Some(to), _) => {
            let head = store.head().await?;
            if to > head.0 {
                anyhow::bail!("--to {to} is beyond the log's head ({head}): build as of a position the log holds");
            }
            Some(Position(to))
        }
        (None, Some(until)) => Some(position_at(store, until).await?),
        // A window up to the head: a model of part of the log never replaces the live
        // one (which always rebuilds from 0), so it goes to its own target too.
        (None, None) if args.from.is_some() => Some(store.head().await?),
        (None, None) => None,
    };
    if to.is_none() && args.label.is_some() {
        anyhow::bail!(
            "--as names an as-of build: give it --to, --until or --from (a rebuild without them replaces the live model)"
        );
    }
    let from = match (args.from, to) {
        (None, _) => Position::START,
        (Some(_), None) => anyhow::bail!("--from needs a window end"),
        (Some(from), Some(to)) if from < 0 || from > to.0 => {
            anyhow::bail!("--from must be between 0 and the end of the window ({to})")
        }
        (Some(from), Some(_)) => Position(from),
    };
    if args.dry_run {
        let head = store.head().await?;
        return dry_run(store, &models, from, to.unwrap_or(head), out).await;
    }
    // On PostgreSQL several projections rebuild at once (they share nothing but the
    // log, so both cores and the server's work); SQLite has one writer, so there
    // they take turns.
    let multi = std::io::stderr()
        .is_terminal()
        .then(indicatif::MultiProgress::new);
    let mut tasks = tokio::task::JoinSet::new();
    let mut finished = Vec::new();
    for model in models {
        let name = model.name();
        let target = match to {
            Some(to) => Target::AsOf {
                label: args.label.clone().unwrap_or_default(),
                from,
                to,
            },
            None => Target::Swap {
                keep_old: args.keep_old,
            },
        };
        let (_, store) = set.model(name)?;
        let store = store.clone();
        let (set, multi) = (set.clone(), multi.clone());
        let single_writer = store.single_writer();
        let work = async move {
            let started = Instant::now();
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let progress = reporter(name, multi.as_ref());
            let result = rebuild_named(&set, name, target.clone(), progress, stop).await;
            (name, store, target, started.elapsed(), result)
        };
        // A single-writer store (SQLite) builds its models in turns; the others (and
        // other stores beside it) build at once.
        if single_writer {
            finished.push(work.await);
        } else {
            tasks.spawn(work);
        }
    }
    while let Some(done) = tasks.join_next().await {
        finished.push(done?);
    }
    let mut interrupted = false;
    let mut failed = None;
    for (name, store, target, took, result) in finished {
        let store: &dyn ReadStore = store.as_ref();
        let place = store.place(&target.namespace());
        match result {
            Ok(Some(report)) => writeln!(
                out,
                "{name}: rebuilt to position {} in {:.1} s, {}, swapped in{}; {}: {}",
                report.position,
                took.as_secs_f64(),
                if report.verified_against_live {
                    "verified against the live model"
                } else {
                    "counted only (no live model at the same checkpoint to compare with)"
                },
                if report.kept_old {
                    format!(
                        " (old model kept as {})",
                        store.place(&eventfold_projections::Namespace::Old)
                    )
                } else {
                    String::new()
                },
                store.unit(),
                report
                    .rows
                    .iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?,
            Ok(None) => writeln!(
                out,
                "{name}: built as of position {} into {place} in {:.1} s",
                to.unwrap_or_default(),
                took.as_secs_f64()
            )?,
            Err(eventfold_replay::Error::Interrupted(at)) => {
                writeln!(
                    out,
                    "{name}: interrupted at position {at}; rerun the same command to resume"
                )?;
                interrupted = true;
            }
            Err(error) => {
                writeln!(out, "{name}: failed: {error}")?;
                failed = Some(error);
            }
        }
    }
    if let Some(error) = failed {
        return Err(error.into());
    }
    if interrupted {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

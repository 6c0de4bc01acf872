//! Rebuilding read models from the log without downtime.
//!
//! A rebuild writes into shadow tables (`shadow_rm_…`, with their own checkpoint) while
//! the live model keeps serving and following the log. When the shadow has caught up,
//! it is verified against the live model at the same checkpoint (row counts and an
//! order-independent checksum per table) and swapped in by renaming tables in one
//! transaction; the live runner notices its checkpoint moved and resynchronises. An
//! interrupted rebuild resumes from the shadow's own checkpoint. An as-of build
//! (`--to`/`--until`) writes to `asof_{label}_rm_…` and is never swapped.
//!
//! Redis models ([`rebuild_redis`]) work the same way in a shadow key namespace; see
//! the `redis` module for how the live model is held still for the swap.

mod checksum;
mod redis;
mod swap;

use std::future::Future;
use std::time::{Duration, Instant};

use eventfold_event_log::EventStore;
use eventfold_event_schemas::Position;
use eventfold_projections::{
    RelationalProjection, RelationalSink, Runner, RunnerOptions, Sink, StatusBoard,
};

pub use checksum::{table_checksum, TableChecksum};
pub use redis::{namespace_of, rebuild_redis, snapshot, OLD_NAMESPACE, SHADOW_NAMESPACE};
pub use swap::SwapReport;

/// Prefix of shadow tables.
pub const SHADOW: &str = "shadow_";

/// Result of replay work.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a rebuild did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Projection or store failure.
    #[error(transparent)]
    Projection(#[from] eventfold_projections::Error),
    /// The read store failed.
    #[error("read store: {0}")]
    Sql(#[from] sqlx::Error),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The log failed.
    #[error("event log: {0}")]
    Log(#[from] eventfold_event_log::Error),
    /// The shadow differs from the live model at the same checkpoint.
    #[error("verification failed for {projection} at position {position}: {details}")]
    Mismatch {
        /// The projection.
        projection: String,
        /// The common checkpoint.
        position: i64,
        /// Which tables differ and how.
        details: String,
    },
    /// The live model kept moving; the swap gave up.
    #[error("could not catch the live model of {0} at a common checkpoint; retry")]
    NoCommonCheckpoint(String),
    /// An as-of target of that name already holds events before `--from`.
    #[error("{0}: the target already holds events before --from; choose another --as label")]
    TargetInUse(String),
    /// Interrupted (Ctrl-C); rerun to resume.
    #[error("interrupted at position {0}; rerun to resume")]
    Interrupted(i64),
}

/// Where a build goes and how far.
#[derive(Debug, Clone)]
pub enum Target {
    /// Shadow tables, verified and swapped over the live model.
    Swap {
        /// Keep the replaced tables as `old_rm_…`.
        keep_old: bool,
    },
    /// A separate, named model as of a position; never swapped.
    AsOf {
        /// Name part of the tables (`asof_{label}_rm_…`).
        label: String,
        /// Events after this position only (`Position::START`: from the beginning) —
        /// a window of the log, e.g. what one day's events did.
        from: Position,
        /// Last position to apply.
        to: Position,
    },
}

/// Progress of a build, for a bar or log lines.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Applied up to.
    pub position: Position,
    /// Building up to.
    pub target: Position,
    /// Events per second since the start.
    pub rate: f64,
    /// Estimated time left.
    pub eta: Duration,
}

/// The table prefix of a target.
pub fn prefix_of(target: &Target) -> String {
    match target {
        Target::Swap { .. } => SHADOW.to_owned(),
        Target::AsOf { label, .. } => {
            let clean: String = label
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            format!("asof_{}_", clean.to_ascii_lowercase())
        }
    }
}

/// Waiting for a live model that is behind the shadow: worth it while it moves (a
/// running `serve` catching up, up to a minute); not once it has stood still for half a
/// second (nothing is running it: the swap goes ahead, counted rather than compared).
#[derive(Debug)]
pub(crate) struct LiveWatch {
    last: Option<i64>,
    moved_at: Instant,
    started: Instant,
}

impl Default for LiveWatch {
    fn default() -> Self {
        Self {
            last: None,
            moved_at: Instant::now(),
            started: Instant::now(),
        }
    }
}

impl LiveWatch {
    /// Whether to wait longer, the live model being at `at`.
    pub(crate) fn keep_waiting(&mut self, at: i64) -> bool {
        if self.last != Some(at) {
            self.last = Some(at);
            self.moved_at = Instant::now();
        }
        self.moved_at.elapsed() < Duration::from_millis(500)
            && self.started.elapsed() < Duration::from_secs(60)
    }
}

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 2000,
        ..RunnerOptions::default()
    }
}

/// Starts a fresh window build after `from` (a resumed one goes on where it stopped).
pub(crate) async fn start_after<K: Sink>(sink: &K, from: Position) -> Result<()> {
    let at = sink.checkpoint().await?;
    if from.0 <= 0 || at >= from {
        return Ok(());
    }
    if at.0 != 0 {
        return Err(Error::TargetInUse(sink.name().to_owned()));
    }
    // Moves the fresh checkpoint from 0 to `from`, with no events.
    sink.apply(Position::START, &[], from).await?;
    Ok(())
}

/// Runs `sink` up to `target`, reporting progress about twice a second.
pub(crate) async fn build_to<L: EventStore, K: Sink>(
    log: &L,
    sink: K,
    target: Position,
    progress: &(impl Fn(Progress) + Sync),
) -> Result<Position> {
    let board = StatusBoard::default();
    let name = sink.name();
    let start = sink.checkpoint().await?;
    let runner = Runner::new(log.clone(), sink, options(), board.clone());
    let started = Instant::now();
    let report = || {
        let position = board.checkpoint_of(name).max(start);
        let done = (position.0 - start.0).max(0) as f64;
        let rate = done / started.elapsed().as_secs_f64().max(1e-3);
        let left = (target.0 - position.0).max(0) as f64;
        progress(Progress {
            position,
            target,
            rate,
            eta: Duration::from_secs_f64(if rate > 0.0 { left / rate } else { 0.0 }),
        });
    };
    let run = runner.run_until(Some(target));
    tokio::pin!(run);
    loop {
        tokio::select! {
            result = &mut run => {
                result?;
                report();
                return Ok(board.checkpoint_of(name).max(start));
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => report(),
        }
    }
}

/// Drives a build into `shadow` for `target`: an as-of or window build up to its end, or
/// a shadow build to the head followed by `swap`. When `stop` resolves first, the build
/// ends `Interrupted` at the position `stopped` reports (its rerun resumes there).
pub(crate) async fn drive<L, K, S, T>(
    log: &L,
    shadow: K,
    target: &Target,
    progress: &(impl Fn(Progress) + Sync),
    swap: impl FnOnce(K) -> S,
    stop: impl Future<Output = ()>,
    stopped: impl FnOnce() -> T,
) -> Result<Option<SwapReport>>
where
    L: EventStore,
    K: Sink + Clone,
    S: Future<Output = Result<SwapReport>>,
    T: Future<Output = Result<i64>>,
{
    shadow.setup().await?;
    let work = async {
        match target {
            Target::AsOf { from, to, .. } => {
                start_after(&shadow, *from).await?;
                build_to(log, shadow, *to, progress).await?;
                Ok(None)
            }
            Target::Swap { .. } => {
                let head = log.head().await?;
                build_to(log, shadow.clone(), head, progress).await?;
                Ok(Some(swap(shadow).await?))
            }
        }
    };
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result,
        () = stop => Err(Error::Interrupted(stopped().await?)),
    }
}

/// Rebuilds `projection` into `target`, stopping early (resumable) when `stop` resolves.
pub async fn rebuild<L, P>(
    log: &L,
    db: &eventfold_projections::ReadDb,
    projection: P,
    target: Target,
    progress: impl Fn(Progress) + Sync,
    stop: impl Future<Output = ()>,
) -> Result<Option<SwapReport>>
where
    L: EventStore,
    P: RelationalProjection + Clone,
{
    let prefix = prefix_of(&target);
    let shadow = RelationalSink::with_prefix(db.clone(), projection.clone(), &prefix);
    let keep_old = matches!(target, Target::Swap { keep_old: true });
    let checkpoint_of = shadow.clone();
    drive(
        log,
        shadow,
        &target,
        &progress,
        |shadow| swap::verify_and_swap(log, db, projection, shadow, keep_old, &progress),
        stop,
        || async move { Ok(checkpoint_of.checkpoint().await?.0) },
    )
    .await
}

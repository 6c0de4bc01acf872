//! Rebuilding read models from the log without downtime: the driver over the store
//! ports.
//!
//! A rebuild writes into the model's shadow namespace (its store's
//! [`ReadStore::sink`] in [`Namespace::Shadow`], with its own checkpoint) while the
//! live model keeps serving and following the log. When the shadow has caught up, the
//! store port verifies it against the live model at the same checkpoint and swaps it in
//! atomically ([`ReadStore::swap`]); the live runner notices its checkpoint moved and
//! resynchronises. An interrupted rebuild resumes from the shadow's own checkpoint. An
//! as-of build (`--to`/`--until`) writes to a named namespace and is never swapped.
//!
//! Nothing here knows a store: the relational and Redis specifics (table renames and
//! checksums; the hold key, key-by-key comparison and `MULTI/EXEC` swap) live in their
//! ports in `eventfold-projections`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_event_log::EventStore;
use eventfold_event_schemas::Position;
use eventfold_projections::{
    handed_over_at, CatchUp, Model, Namespace, ReadDb, ReadStore, RedisKeys, RedisProjection,
    RedisStore, RelationalProjection, RelationalStore, Runner, RunnerOptions, Sink, StatusBoard,
};

pub use eventfold_projections::{
    snapshot, table_checksum, Label, LabelError, SwapReport, TableChecksum, OLD_NAMESPACE, SHADOW,
    SHADOW_NAMESPACE,
};

/// Result of replay work.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a rebuild did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Projection or store failure (a mismatch between the rebuilt and the live model
    /// is [`eventfold_projections::Error::Mismatch`]).
    #[error(transparent)]
    Projection(#[from] eventfold_projections::Error),
    /// The log failed.
    #[error("event log: {0}")]
    Log(#[from] eventfold_event_log::Error),
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
        label: Label,
        /// Events after this position only (`Position::START`: from the beginning) —
        /// a window of the log, e.g. what one day's events did.
        from: Position,
        /// Last position to apply.
        to: Position,
    },
}

impl Target {
    /// The namespace a build for this target writes.
    pub fn namespace(&self) -> Namespace {
        match self {
            Target::Swap { .. } => Namespace::Shadow,
            Target::AsOf { label, .. } => Namespace::AsOf(label.clone()),
        }
    }
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

/// The table prefix of a target (relational stores).
pub fn prefix_of(target: &Target) -> String {
    RelationalStore::prefix(&target.namespace())
}

/// The key sub-namespace of a target (Redis stores).
pub fn namespace_of(target: &Target) -> String {
    RedisStore::namespace(&target.namespace())
}

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 2000,
        ..RunnerOptions::default()
    }
}

/// Starts a fresh window build after `from` (a resumed one goes on where it stopped).
async fn start_after(sink: &dyn Sink, from: Position) -> Result<()> {
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
async fn build_to<L: EventStore>(
    log: &L,
    sink: Arc<dyn Sink>,
    target: Position,
    progress: &(dyn Fn(Progress) + Sync),
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
            // Past `Duration`'s range (a far target at a slow start) reads as "a long
            // time", never a panic.
            eta: Duration::try_from_secs_f64(if rate > 0.0 { left / rate } else { 0.0 })
                .unwrap_or(Duration::MAX),
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

/// The replay's runner as the ports' [`CatchUp`]: a swap takes the tail with it.
struct Tail<'a, L> {
    log: &'a L,
    progress: &'a (dyn Fn(Progress) + Sync),
}

#[eventfold_projections::async_trait]
impl<L: EventStore> CatchUp for Tail<'_, L> {
    async fn catch_up(
        &self,
        sink: Arc<dyn Sink>,
        to: Position,
    ) -> eventfold_projections::Result<Position> {
        build_to(self.log, sink, to, self.progress)
            .await
            .map_err(|e| match e {
                Error::Projection(e) => e,
                Error::Log(e) => eventfold_projections::Error::Log(e),
                other => eventfold_projections::Error::Poison {
                    position: 0,
                    event_type: String::new(),
                    reason: other.to_string(),
                },
            })
    }
}

/// Rebuilds `model` in `store` into `target`, stopping early (resumable) when `stop`
/// resolves. The one driver for every store.
pub async fn rebuild_model<L: EventStore>(
    log: &L,
    store: &dyn ReadStore,
    model: &Model,
    target: Target,
    progress: impl Fn(Progress) + Sync,
    stop: impl Future<Output = ()>,
) -> Result<Option<SwapReport>> {
    let namespace = target.namespace();
    if let Target::Swap { .. } = target {
        // A model projector workers took over follows the relay's topics: a build from
        // the log must not replace it (the swap checks again, atomically). Said before
        // a long build, not after it.
        let live = store.sink(model, &Namespace::Live)?.checkpoint().await?;
        if let Some(at) = handed_over_at(live) {
            return Err(eventfold_projections::Error::FedFromKafka {
                name: model.name().to_owned(),
                position: at.0,
            }
            .into());
        }
    }
    let shadow = store.sink(model, &namespace)?;
    shadow.setup().await?;
    let progress: &(dyn Fn(Progress) + Sync) = &progress;
    let work = async {
        match &target {
            Target::AsOf { from, to, .. } => {
                start_after(shadow.as_ref(), *from).await?;
                build_to(log, shadow.clone(), *to, progress).await?;
                Ok(None)
            }
            Target::Swap { keep_old } => {
                let head = log.head().await?;
                build_to(log, shadow.clone(), head, progress).await?;
                let tail = Tail { log, progress };
                Ok(Some(store.swap(model, *keep_old, &tail).await?))
            }
        }
    };
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result,
        () = stop => Err(Error::Interrupted(store.interrupted(model, &namespace).await?.0)),
    }
}

/// Rebuilds a relational `projection` in `db` (see [`rebuild_model`]).
pub async fn rebuild<L, P>(
    log: &L,
    db: &ReadDb,
    projection: P,
    target: Target,
    progress: impl Fn(Progress) + Sync,
    stop: impl Future<Output = ()>,
) -> Result<Option<SwapReport>>
where
    L: EventStore,
    P: RelationalProjection,
{
    let store = RelationalStore::new(db.clone());
    let model = Model::relational(projection);
    rebuild_model(log, &store, &model, target, progress, stop).await
}

/// Rebuilds a Redis `projection` with keys under `keys` (see [`rebuild_model`]).
pub async fn rebuild_redis<L, P>(
    log: &L,
    client: &redis::Client,
    keys: &RedisKeys,
    projection: P,
    target: Target,
    progress: impl Fn(Progress) + Sync,
    stop: impl Future<Output = ()>,
) -> Result<Option<SwapReport>>
where
    L: EventStore,
    P: RedisProjection,
{
    let store = RedisStore {
        client: client.clone(),
        keys: keys.clone(),
    };
    let model = Model::redis(projection);
    rebuild_model(log, &store, &model, target, progress, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert_eq!(namespace_of(&Target::Swap { keep_old: false }), "shadow:");
        assert_eq!(prefix_of(&Target::Swap { keep_old: false }), "shadow_");
        let asof = Target::AsOf {
            label: "Audit_1".parse().expect("label"),
            from: Position::START,
            to: Position(3),
        };
        assert_eq!(namespace_of(&asof), "asof:audit_1:");
        assert_eq!(prefix_of(&asof), "asof_audit_1_");
    }

    /// A label is part of table names and keys: what cannot be one is refused, never
    /// rewritten (before, `a-b` and `ab` shared tables, and a long label was cut to
    /// PostgreSQL's 63 bytes so that a model's tables shared one name).
    #[test]
    fn labels_that_cannot_name_tables_are_refused() {
        let longest = "a".repeat(Label::MAX);
        assert_eq!(longest.parse::<Label>().map(|l| l.to_string()), Ok(longest));
        for bad in [
            "",
            "a-b",
            "Audit 1*",
            "x\"; drop table eventfold_events; --",
            "1st",
            "_x",
            "Ünï",
            "a\u{0}b",
            &"a".repeat(Label::MAX + 1),
        ] {
            let error = bad.parse::<Label>().expect_err("refused").to_string();
            assert!(error.contains("as-of label"), "{bad:?}: {error}");
        }
        // With the longest label, a 30-byte table or index name (ours are at most 21,
        // `rm_reminders_user_due`) still fits PostgreSQL's 63-byte identifiers.
        let label: Label = "a".repeat(Label::MAX).parse().expect("longest");
        let prefix = prefix_of(&Target::AsOf {
            label,
            from: Position::START,
            to: Position(1),
        });
        assert!(prefix.len() + 30 <= 63, "{prefix}");
    }
}

//! Store ports: one per kind of read store. A port owns everything a read model needs
//! from its store — setup (DDL), sinks (apply a batch with its checkpoint, park),
//! progress, reset, the checkpoints version bumps are found by, and the rebuild side:
//! shadow builds (a sink in another [`Namespace`]), the comparison with the live
//! model and the swap. Replay drives ports; it holds no store code of its own.
//!
//! | port | backends | guarantee |
//! | --- | --- | --- |
//! | [`RelationalStore`] | PostgreSQL (native `UNNEST` batches where a model has them), SQLite | writes and checkpoint commit in one transaction |
//! | [`RedisStore`] | Redis | writes and checkpoint in one `MULTI/EXEC` under `WATCH` |
//! | [`ClickHouseStore`] | ClickHouse | re-applying is idempotent (`ReplacingMergeTree` versioned by position); checkpoint after the rows |

mod checksum;
mod clickhouse;
mod redis;
mod redis_swap;
mod relational;
mod relational_swap;

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_event_schemas::Position;
use serde::Serialize;

pub use checksum::{table_checksum, TableChecksum};
pub(crate) use clickhouse::{ch, has_code, insert_rows};
pub use clickhouse::{
    ch_prefix, ChTables, ClickHouseProjection, ClickHouseSink, ClickHouseStore, ClickHouseTarget,
};
pub use redis::{RedisStore, RedisTarget};
pub use redis_swap::{snapshot, OLD_NAMESPACE, SHADOW_NAMESPACE};
pub use relational::{RelationalStore, SHADOW};

use crate::registry::{Model, StoreKind};
use crate::runtime::Sink;
use crate::{Error, Result};

/// Where a sink writes: the live model, a shadow build (verified and swapped over the
/// live one), a named as-of build (never swapped), or the kept replaced model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The model queries read.
    Live,
    /// A rebuild that will replace the live model.
    Shadow,
    /// A separate model of part of the log, under a label.
    AsOf(Label),
    /// The replaced model, kept by `--keep-old`.
    Old,
}

/// The name of an as-of build (`replay --as`): 1 to [`Label::MAX`] ASCII letters, digits
/// or `_`, beginning with a letter; letters are read in lowercase. It becomes part of
/// table names (`asof_{label}_rm_…`, within PostgreSQL's 63-byte identifiers) and of
/// Redis keys (`{prefix}asof:{label}:…`), so anything else is refused rather than
/// rewritten: two labels that differ never share a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(String);

/// A label that cannot name an as-of build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "as-of label {0:?} must be 1 to {max} ASCII letters, digits or `_`, beginning with a letter",
    max = Label::MAX
)]
pub struct LabelError(String);

impl Label {
    /// The longest label: `asof_{label}_` and the longest table or index name stay
    /// within PostgreSQL's 63 bytes.
    pub const MAX: usize = 24;

    /// The label, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Label {
    type Err = LabelError;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let valid = (1..=Self::MAX).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_alphabetic())
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(LabelError(text.to_owned()))
        }
    }
}

/// `audit`, the label of `replay --to`/`--until`/`--from` without `--as`.
impl Default for Label {
    fn default() -> Self {
        Self("audit".to_owned())
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a swap did.
#[derive(Debug, Clone, Serialize)]
pub struct SwapReport {
    /// The projection.
    pub projection: String,
    /// The checkpoint the new model took over at.
    pub position: i64,
    /// Whether it was compared with the live model (the live model was at the same
    /// checkpoint) or only counted (the live model was behind and not moving).
    pub verified_against_live: bool,
    /// Rows per table (or keys per family) in the new model.
    pub rows: Vec<(String, u64)>,
    /// Whether the replaced model was kept (see [`Namespace::Old`]).
    pub kept_old: bool,
}

/// A projection's progress as its store records it (works from any process).
#[derive(Debug, Clone, Serialize)]
pub struct StoredProgress {
    /// Versioned name.
    pub name: &'static str,
    /// `relational` or `redis`.
    pub store: &'static str,
    /// Last applied position (`None`: never ran).
    pub checkpoint: Option<Position>,
    /// Parked events.
    pub parked: u64,
    /// A replay's shadow build of it exists (running, or interrupted and resumable).
    pub rebuilding: bool,
    /// The checkpoints of its other feeds ([`ReadStore::source_sink`]): for a model
    /// projector workers took over, the global position each Kafka partition has
    /// applied (`{topic}#{partition}` → position). Empty for a model fed from the log
    /// alone.
    pub sources: std::collections::BTreeMap<String, i64>,
}

/// An event a model or reaction gave up on: skipped, its error kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedEvent {
    /// Its position in the log.
    pub position: i64,
    /// Its type.
    pub event_type: String,
    /// Why it could not be applied.
    pub error: String,
}

impl From<(i64, String, String)> for ParkedEvent {
    /// From a `(position, event_type, error)` row of a parked-events table.
    fn from((position, event_type, error): (i64, String, String)) -> Self {
        Self {
            position,
            event_type,
            error,
        }
    }
}

/// Brings a sink up to a position by folding the log (the replay's runner); a swap
/// uses it to take the last events into the shadow while the live model is held.
#[async_trait::async_trait]
pub trait CatchUp: Send + Sync {
    /// Folds into `sink` up to `to`; returns the sink's checkpoint after.
    async fn catch_up(&self, sink: Arc<dyn Sink>, to: Position) -> Result<Position>;
}

/// A kind of read store, as the runtime, status, reset, version bumps and replay use
/// it. Each implementation states its guarantee in its docs.
#[async_trait::async_trait]
pub trait ReadStore: Send + Sync + std::fmt::Debug {
    /// The kind of models it holds.
    fn kind(&self) -> StoreKind;

    /// Where a namespace's model lives, for messages (`shadow_rm_… tables`).
    fn place(&self, namespace: &Namespace) -> String;

    /// What a report's counts count: `rows` or `keys`.
    fn unit(&self) -> &'static str;

    /// Whether builds must take turns (one writer: SQLite).
    fn single_writer(&self) -> bool {
        false
    }

    /// Events per batch at least (stores that want few large writes: ClickHouse);
    /// 0 keeps the runner's.
    fn batch_size(&self) -> usize {
        0
    }

    /// How long a live runner gathers events before it applies a short batch (stores
    /// that want few large writes: ClickHouse).
    fn linger(&self) -> Duration {
        Duration::ZERO
    }

    /// The sink of `model` in `namespace`.
    fn sink(&self, model: &Model, namespace: &Namespace) -> Result<Arc<dyn Sink>>;

    /// The live sink of `model` fed by one `source` among several that share its
    /// tables or keys (a Kafka partition: `eventfold.order#2`): the same writes and the
    /// same guarantee, its checkpoint kept under `{name}@{source}`, its parked events
    /// listed under the model's name. `reset` forgets every source's checkpoint.
    fn source_sink(&self, model: &Model, source: &str) -> Result<Arc<dyn Sink>>;

    /// Creates what queries of `model` need before its projector has run.
    async fn setup(&self, model: &Model) -> Result<()>;

    /// Its checkpoint, parked events, and whether a shadow build exists.
    async fn progress(&self, model: &Model) -> Result<StoredProgress>;

    /// Its parked events, oldest first.
    async fn parked(&self, model: &Model) -> Result<Vec<ParkedEvent>>;

    /// Deletes the live model, its checkpoint and parked events; it is rebuilt from 0
    /// by its runner. Returns the rows or keys deleted.
    async fn reset(&self, model: &Model) -> Result<u64>;

    /// The names of the checkpoints stored for any version of these models (by their
    /// base name): how version bumps are found.
    async fn stored_versions(&self, models: &[&Model]) -> Result<Vec<String>>;

    /// Forgets a previous version's checkpoint and parked events (after its successor
    /// was swapped in).
    async fn forget(&self, name: &str) -> Result<()>;

    /// Drops what earlier versions of `model` owned that it no longer has (after it
    /// was rebuilt and swapped in for them). Nothing by default.
    async fn retire(&self, model: &Model) -> Result<()> {
        let _ = model;
        Ok(())
    }

    /// Verifies the shadow build against the live model at a common checkpoint (taking
    /// the tail into the shadow with `catch_up` while the live model is held still),
    /// then swaps it in atomically. A mismatch keeps both and fails.
    async fn swap(
        &self,
        model: &Model,
        keep_old: bool,
        catch_up: &dyn CatchUp,
    ) -> Result<SwapReport>;

    /// After an interrupted build in `namespace`: frees what it held (a Redis hold) and
    /// says where the build stopped (its rerun resumes there).
    async fn interrupted(&self, model: &Model, namespace: &Namespace) -> Result<Position>;
}

/// The stores of a deployment, one per kind that is configured.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    stores: Vec<Arc<dyn ReadStore>>,
}

impl Stores {
    /// No stores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a store (replacing one of the same kind).
    pub fn with(mut self, store: Arc<dyn ReadStore>) -> Self {
        self.stores.retain(|s| s.kind() != store.kind());
        self.stores.push(store);
        self
    }

    /// Every configured store.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn ReadStore>> {
        self.stores.iter()
    }

    /// The store of `kind`, if configured.
    pub fn of(&self, kind: StoreKind) -> Option<&Arc<dyn ReadStore>> {
        self.stores.iter().find(|s| s.kind() == kind)
    }

    /// The store of `model`, or why there is none.
    pub fn for_model(&self, model: &Model) -> Result<&Arc<dyn ReadStore>> {
        self.of(model.store())
            .ok_or_else(|| crate::Error::StoreNotConfigured {
                projection: model.name().to_owned(),
                store: model.store().as_str(),
            })
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

/// [`Error::FedFromKafka`] when the live checkpoint says projector workers took the
/// model over: its tables follow the relay's topics, not the log, and a model built
/// from the log must not replace them (`projections reset` hands it back first).
pub(crate) fn fed_from_kafka(name: &str, live: Position) -> Result<()> {
    match crate::runtime::handed_over_at(live) {
        Some(at) => Err(Error::FedFromKafka {
            name: name.to_owned(),
            position: at.0,
        }),
        None => Ok(()),
    }
}

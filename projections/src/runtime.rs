//! Projections, sinks and the runner that drives them.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventfold_event_log::{EventStore, Page, SubscriptionOptions};
use eventfold_event_schemas::{DomainEvent, Position, RecordedEvent};
use sqlx::{Any, AnyConnection, Transaction};

use crate::applier::Applier;
use crate::sql::Dialect;
use crate::status::{ProjectionState, StatusBoard};
use crate::{Error, Result};

mod relational;

pub use relational::RelationalSink;

/// A read model fed by the log.
pub trait Projection: Send + Sync + 'static {
    /// Stable, versioned name, e.g. `reminders.v1`. A new version is a new read model.
    fn name(&self) -> &'static str;
    /// Whether it wants events of this type (others advance the checkpoint only).
    fn handles(&self, event_type: &str) -> bool;
}

/// A transaction on the relational read store.
#[derive(Debug)]
pub struct SqlTx<'t> {
    tx: Transaction<'t, Any>,
    dialect: Dialect,
    prefix: &'t str,
}

impl SqlTx<'_> {
    /// `sql` aimed at this sink's tables: read models name their tables `rm_…`, and a
    /// shadow build (replay) writes to `{prefix}rm_…` instead.
    pub fn sql<'s>(&self, sql: &'s str) -> std::borrow::Cow<'s, str> {
        with_prefix(self.prefix, sql)
    }

    /// Where to run statements.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
}

/// A projection into PostgreSQL/SQLite tables.
///
/// Dyn-compatible (the registry holds it as `Arc<dyn RelationalProjection>`).
#[async_trait::async_trait]
pub trait RelationalProjection: Projection {
    /// Idempotent DDL creating its tables.
    fn schema(&self) -> &'static [&'static str];
    /// The tables it owns.
    fn tables(&self) -> &'static [&'static str];
    /// Tables an earlier version owned that this one no longer has: dropped once this
    /// version, rebuilt after a version bump, is swapped in.
    fn retired(&self) -> &'static [&'static str] {
        &[]
    }
    /// Applies one event inside the batch's transaction.
    async fn apply(
        &self,
        tx: &mut SqlTx<'_>,
        event: &DomainEvent,
        record: &RecordedEvent,
    ) -> Result<()>;
    /// Applies a batch of events inside one transaction, in order. The default applies
    /// them one by one; a projection with many writes per event overrides it to fold
    /// the batch in memory and write each row once (multi-row statements). Either way
    /// the result must equal applying the events one at a time — replay verification
    /// and the tests compare the two.
    async fn apply_batch(
        &self,
        tx: &mut SqlTx<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()> {
        for (record, event) in events {
            self.apply(tx, event, record).await?;
        }
        Ok(())
    }
    /// The PostgreSQL form of [`RelationalProjection::apply_batch`], where native
    /// statements pay (arrays bound whole to `UNNEST`, typed binds with real NULLs).
    /// `None` (the default): the portable form runs on PostgreSQL too. Both forms must
    /// leave the same rows; the conformance suite compares them with SQLite's.
    fn postgres(&self) -> Option<&dyn PgBatch> {
        None
    }
}

/// A transaction on the PostgreSQL read store through the native driver.
#[derive(Debug)]
pub struct PgTx<'t> {
    tx: Transaction<'t, sqlx::Postgres>,
    prefix: &'t str,
    /// What the batch before left for this one (see [`PgTx::take_kept`]).
    kept: Option<Kept>,
    /// What this batch leaves for the next one, once it has committed.
    keep: Option<Kept>,
}

/// What a projection keeps in memory from one batch for the next: rows as it wrote
/// them, so that the next batch need not read them back.
pub(crate) type Kept = Box<dyn std::any::Any + Send>;

impl PgTx<'_> {
    /// `sql` aimed at this sink's tables (see [`SqlTx::sql`]).
    pub fn sql<'s>(&self, sql: &'s str) -> std::borrow::Cow<'s, str> {
        with_prefix(self.prefix, sql)
    }

    /// Where to run statements.
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// What this projection [`keep`](Self::keep)s from the batch before, when this
    /// batch follows it on the same sink (the checkpoint it committed is where this
    /// one begins) — so it holds exactly what the tables hold. `None` for the first
    /// batch, after any failure, or when the batch before kept something else.
    pub fn take_kept<T: std::any::Any + Send>(&mut self) -> Option<T> {
        self.kept
            .take()
            .and_then(|kept| kept.downcast::<T>().ok())
            .map(|kept| *kept)
    }

    /// Leaves `value` for the next batch of this sink; it is handed over only if this
    /// batch commits. Whatever it describes must be what this batch wrote (or read)
    /// inside its transaction.
    pub fn keep<T: std::any::Any + Send>(&mut self, value: T) {
        self.keep = Some(Box::new(value));
    }
}

/// A batch fold written for PostgreSQL's native driver.
#[async_trait::async_trait]
pub trait PgBatch: Send + Sync {
    /// Applies `events` in order inside the batch's transaction.
    async fn apply_batch(
        &self,
        tx: &mut PgTx<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()>;
}

/// Where a projection writes, with its checkpoint.
///
/// Dyn-compatible: a store port hands sinks out as `Arc<dyn Sink>`.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// The projection's name.
    fn name(&self) -> &'static str;
    /// Whether the projection wants this event type.
    fn handles(&self, event_type: &str) -> bool;
    /// Creates tables/keys and the checkpoint if missing.
    async fn setup(&self) -> Result<()>;
    /// The position of the last applied event.
    async fn checkpoint(&self) -> Result<Position>;
    /// Applies `events` and moves the checkpoint from `from` to `to`, atomically.
    async fn apply(
        &self,
        from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()>;
    /// Stores an event that keeps failing, with its error.
    async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()>;
    /// Its fail point (tests of exactly-once).
    fn fail_point(&self) -> FailPoint;
    /// Waits until the checkpoint of every [`apply`](Sink::apply) that returned is
    /// stored, for a sink that writes it beside its next batch (ClickHouse's). The
    /// runner calls it before it returns at its target and when it stops, so that
    /// whoever reads the checkpoint next (a swap, another process) sees where it got
    /// to. Nothing to wait for by default.
    async fn settle(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the sink takes every record of the log as stored, undecoded (a relay that
    /// forwards events it does not need to understand): the runner then calls
    /// [`Sink::apply_records`] instead of [`Sink::apply`], with every record of a batch.
    fn raw(&self) -> bool {
        false
    }
    /// Applies stored records and moves the checkpoint to `to` (sinks that are
    /// [`raw`](Sink::raw)); a record that can never be applied is the sink's to park.
    async fn apply_records(
        &self,
        from: Position,
        records: &[RecordedEvent],
        to: Position,
    ) -> Result<()> {
        let _ = (from, records, to);
        Err(Error::Poison {
            position: to.0,
            event_type: String::new(),
            reason: format!("{} takes decoded events only", self.name()),
        })
    }
}

#[async_trait::async_trait]
impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn handles(&self, event_type: &str) -> bool {
        (**self).handles(event_type)
    }
    fn raw(&self) -> bool {
        (**self).raw()
    }
    async fn apply_records(
        &self,
        from: Position,
        records: &[RecordedEvent],
        to: Position,
    ) -> Result<()> {
        (**self).apply_records(from, records, to).await
    }
    async fn setup(&self) -> Result<()> {
        (**self).setup().await
    }
    async fn checkpoint(&self) -> Result<Position> {
        (**self).checkpoint().await
    }
    async fn apply(
        &self,
        from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()> {
        (**self).apply(from, events, to).await
    }
    async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()> {
        (**self).park(record, error).await
    }
    async fn settle(&self) -> Result<()> {
        (**self).settle().await
    }
    fn fail_point(&self) -> FailPoint {
        (**self).fail_point()
    }
}

/// Fails a sink's next `n` applies that write something (batches with events, not bare
/// checkpoint moves) after the writes and before the checkpoint commits — the moment a
/// crash hurts most. For tests of exactly-once.
#[derive(Debug, Clone, Default)]
pub struct FailPoint {
    armed: Arc<AtomicU32>,
    fired: Arc<AtomicU32>,
    /// Fail every other apply (each failed batch's retry then succeeds, so failures
    /// spread over the whole log rather than hitting one batch again and again).
    spread: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<AtomicU32>,
}

impl FailPoint {
    /// Arms the next `n` failures.
    pub fn arm(&self, n: u32) {
        self.spread.store(false, Ordering::SeqCst);
        self.armed.store(n, Ordering::SeqCst);
    }

    /// Arms `n` failures, one every other apply: every batch fails once, then its
    /// re-apply goes through (what a crash-and-restart on every batch would do).
    pub fn arm_spread(&self, n: u32) {
        self.spread.store(true, Ordering::SeqCst);
        self.calls.store(0, Ordering::SeqCst);
        self.armed.store(n, Ordering::SeqCst);
    }

    /// How many armed failures have fired so far: a test asserts it, so that a sink
    /// that never reaches its fail point cannot pass for exactly-once.
    pub fn fired(&self) -> u32 {
        self.fired.load(Ordering::SeqCst)
    }

    /// Consumes one armed failure.
    pub fn trip(&self) -> Result<()> {
        if self.spread.load(Ordering::SeqCst) && self.calls.fetch_add(1, Ordering::SeqCst) % 2 == 1
        {
            return Ok(());
        }
        let armed = self
            .armed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if armed {
            self.fired.fetch_add(1, Ordering::SeqCst);
            Err(Error::Injected("after the writes, before the checkpoint"))
        } else {
            Ok(())
        }
    }
}

/// The name of a model's checkpoint for one of its sources (see
/// [`crate::ReadStore::source_sink`]): `{name}@{source}`.
pub fn source_checkpoint(name: &str, source: &str) -> String {
    format!("{name}@{source}")
}

/// The live checkpoint that says "handed over at `at`": Kafka-fed projector workers
/// took the model over from the log-fed runner there (see [`handed_over_at`]).
pub fn handed_over(at: Position) -> Position {
    Position(-1 - at.0.max(0))
}

/// Whether a live checkpoint says the model was handed over to Kafka-fed workers, and
/// at which position. A negative checkpoint is a marker, never a position: the
/// log-fed runner stands by, and its compare-and-set on the checkpoint fails at once
/// if the hand-over happened while it ran (no batch is applied twice).
pub fn handed_over_at(checkpoint: Position) -> Option<Position> {
    (checkpoint.0 < 0).then(|| Position(-1 - checkpoint.0))
}

/// Points read-model SQL (tables and indexes named `rm_…`) at `{prefix}rm_…`.
pub fn with_prefix<'s>(prefix: &str, sql: &'s str) -> std::borrow::Cow<'s, str> {
    if prefix.is_empty() {
        std::borrow::Cow::Borrowed(sql)
    } else {
        std::borrow::Cow::Owned(sql.replace("rm_", &format!("{prefix}rm_")))
    }
}

/// What to do with an event that keeps failing once it is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonPolicy {
    /// Stop the projection: it stays behind until someone looks (the default: nothing
    /// is silently missing from the read model).
    Stop,
    /// Skip it and go on; the parked event is listed by `projections status`.
    Skip,
}

/// How a runner works.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Events read and applied per transaction (default 500).
    pub batch_size: usize,
    /// Attempts for a failing event before it is parked (default 5).
    pub max_attempts: u32,
    /// First retry pause; doubles up to `max_backoff` (default 50 ms).
    pub backoff: Duration,
    /// Longest retry pause (default 5 s).
    pub max_backoff: Duration,
    /// What to do after parking.
    pub poison: PoisonPolicy,
    /// Polling fallback of the subscription.
    pub poll_interval: Duration,
    /// Following the log live, how long a short batch waits for more events before it
    /// is applied (default 0: at once; ClickHouse models gather for 200 ms).
    pub linger: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_attempts: 5,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            poison: PoisonPolicy::Stop,
            poll_interval: Duration::from_secs(1),
            linger: Duration::ZERO,
        }
    }
}

/// The log read ahead of a catching-up sink, by a task of its own: at most one batch
/// waits in the channel while the sink applies the one before and the task reads the
/// next. Dropping it stops the task.
struct ReadAhead {
    pages: tokio::sync::mpsc::Receiver<Page>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    fn spawn<L: EventStore>(
        mut subscription: eventfold_event_log::Subscription<L>,
        from: Position,
        batch_size: usize,
        target: Position,
        backoff: Duration,
        name: &'static str,
    ) -> Self {
        let (sender, pages) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(async move {
            let mut through = from;
            loop {
                // Catching up never waits for events beyond what the log holds now.
                let mut page = match subscription.try_next_page(batch_size).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(projection = name, %error, "reading the log failed; retrying");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                };
                // Never past the target: an as-of build stops exactly there.
                page.events.retain(|e| e.global_position <= target);
                page.through = page.through.min(target);
                // Nothing more up to the target.
                if page.events.is_empty() && page.through <= through {
                    return;
                }
                through = page.through;
                if sender.send(page).await.is_err() || through >= target {
                    return;
                }
            }
        });
        Self { pages, task }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Drives one projection: subscribe from its checkpoint, apply batches, retry, park.
#[derive(Debug)]
pub struct Runner<L, K> {
    log: L,
    applier: Applier<K>,
    /// The event types the log is asked for (`None`: all of them).
    event_types: Option<Arc<[String]>>,
}

/// The catalogue's event types `sink` handles, for reading only those from the log;
/// `None` when it takes records raw or handles every known type. Events of a type the
/// catalogue does not know are skipped by the applier anyway, so nothing it would fold
/// is left out.
fn wanted_types(sink: &impl Sink) -> Option<Arc<[String]>> {
    use eventfold_event_schemas::catalogue::EVENT_TYPES;
    if sink.raw() {
        return None;
    }
    let wanted: Vec<String> = EVENT_TYPES
        .iter()
        .filter(|(name, _)| sink.handles(name))
        .map(|(name, _)| (*name).to_owned())
        .collect();
    (wanted.len() < EVENT_TYPES.len()).then(|| wanted.into())
}

impl<L: EventStore, K: Sink> Runner<L, K> {
    /// A runner reporting to `board`.
    pub fn new(log: L, sink: K, options: RunnerOptions, board: StatusBoard) -> Self {
        Self {
            log,
            event_types: wanted_types(&sink),
            applier: Applier::new(sink, options, board),
        }
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.applier.sink
    }

    /// Runs until `shutdown` resolves (then returns `Ok`) or the projection stops.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::select! {
            result = self.run_until(None) => {
                // Never leave a dead runner on the board as `running`.
                if let Err(error) = &result {
                    tracing::error!(projection = self.applier.sink.name(), %error, "stopped");
                    self.applier.board.set_state(
                        self.applier.sink.name(),
                        ProjectionState::Stopped,
                        Some(error.to_string()),
                    );
                }
                result
            }
            () = shutdown => {
                let name = self.applier.sink.name();
                // The last batch's checkpoint, if its write is still under way: without
                // it the next start applies that batch again (idempotent, but slower).
                match tokio::time::timeout(Duration::from_secs(5), self.applier.sink.settle()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(projection = name, %error, "the last checkpoint was not stored"),
                    Err(_) => tracing::warn!(projection = name, "the last checkpoint was not stored in 5 s"),
                }
                self.applier.board.set_state(name, ProjectionState::Stopped, None);
                Ok(())
            }
        }
    }

    /// Catches up to `target` (or follows the log forever with `None`).
    pub async fn run_until(&self, target: Option<Position>) -> Result<()> {
        let name = self.applier.sink.name();
        self.applier
            .board
            .set_state(name, ProjectionState::Running, None);
        'resync: loop {
            match self.applier.retry_store(|| self.applier.sink.setup()).await {
                Ok(()) => {}
                // A table dropped while it was being set up (a `projections reset`
                // beside this runner, between two of its statements): set up again.
                // Before, the runner stopped with "no such table".
                Err(error) if crate::applier::schema_broken(&error) => {
                    self.schema_broken(&error.to_string()).await;
                    continue 'resync;
                }
                Err(error) => return Err(error),
            }
            let mut checkpoint = self
                .applier
                .retry_store(|| self.applier.sink.checkpoint())
                .await?;
            if let Some(at) = handed_over_at(checkpoint) {
                let error = Error::FedFromKafka {
                    name: name.to_owned(),
                    position: at.0,
                };
                if target.is_some() {
                    return Err(error);
                }
                // Stand by while the workers feed it; a reset hands it back. The board
                // holds the hand-over marker, so status and metrics say so.
                self.applier.board.set_checkpoint(name, checkpoint, None);
                self.applier.board.set_state(
                    name,
                    ProjectionState::Standby,
                    Some(error.to_string()),
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue 'resync;
            }
            self.applier.board.set_checkpoint(name, checkpoint, None);
            self.applier
                .board
                .set_state(name, ProjectionState::Running, None);
            let mut subscription = self.log.subscribe(
                checkpoint,
                SubscriptionOptions {
                    category: None,
                    event_types: self.event_types.clone(),
                    page_size: self.applier.options.batch_size,
                    poll_interval: self.applier.options.poll_interval,
                },
            );
            if let Some(target) = target {
                match self.catch_up(checkpoint, subscription, target).await {
                    Err(Error::CheckpointMoved(_)) => {
                        tracing::warn!(
                            projection = name,
                            "checkpoint changed under the runner; resynchronising"
                        );
                        continue 'resync;
                    }
                    Err(Error::SchemaBroken { reason, .. }) => {
                        self.schema_broken(&reason).await;
                        continue 'resync;
                    }
                    // At the target: its checkpoint stored before the caller goes on
                    // (a swap reading the shadow's, say).
                    Ok(()) => return self.applier.sink.settle().await,
                    done => return done,
                }
            }
            loop {
                let mut page = match subscription
                    .next_page(self.applier.options.batch_size)
                    .await
                {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(projection = name, %error, "reading the log failed; retrying");
                        tokio::time::sleep(self.applier.options.backoff).await;
                        continue;
                    }
                };
                if !self.applier.options.linger.is_zero() {
                    self.gather(&mut subscription, &mut page).await;
                }
                let applied = self
                    .applier
                    .apply_page(checkpoint, page.events, page.through)
                    .await;
                checkpoint = match applied {
                    Ok(checkpoint) => checkpoint,
                    // Another runner moved it, or the store lost its data (a Redis
                    // without persistence restarted empty): continue from what the
                    // store says, which rebuilds a lost model from the log.
                    Err(Error::CheckpointMoved(_)) => {
                        tracing::warn!(
                            projection = name,
                            "checkpoint changed under the runner; resynchronising"
                        );
                        continue 'resync;
                    }
                    Err(Error::SchemaBroken { reason, .. }) => {
                        self.schema_broken(&reason).await;
                        continue 'resync;
                    }
                    Err(error) => return Err(error),
                };
            }
        }
    }

    /// The store refused a statement for its schema (a table dropped by hand, say): says
    /// so, waits a moment, and lets the caller set the model up again — which rebuilds a
    /// model whose tables were lost from the log; anything else (a column missing from a
    /// table that is there, no privilege) stays on the board until someone acts.
    async fn schema_broken(&self, reason: &str) {
        let name = self.applier.sink.name();
        tracing::warn!(
            projection = name,
            reason,
            "the read store's schema does not fit the model; setting it up again \
             (`eventfold projections reset {name}` rebuilds it from the log)"
        );
        self.applier
            .board
            .set_state(name, ProjectionState::Retrying, Some(reason.to_owned()));
        let options = &self.applier.options;
        tokio::time::sleep(
            Duration::from_secs(1)
                .min(options.max_backoff)
                .max(options.backoff),
        )
        .await;
    }

    /// Catches up from `checkpoint` to `target`: the log is read by a task of its own
    /// ([`ReadAhead`]) while the sink applies the batch before, so the log's reads (rows
    /// decoded, payloads parsed) and the sink's writes run on both cores.
    async fn catch_up(
        &self,
        mut checkpoint: Position,
        subscription: eventfold_event_log::Subscription<L>,
        target: Position,
    ) -> Result<()> {
        let name = self.applier.sink.name();
        let mut ahead = ReadAhead::spawn(
            subscription,
            checkpoint,
            self.applier.options.batch_size,
            target,
            self.applier.options.backoff,
            name,
        );
        while checkpoint < target {
            let waited = std::time::Instant::now();
            // The reader stops at the target, or when the log holds nothing more.
            let Some(page) = ahead.pages.recv().await else {
                return Ok(());
            };
            let started = std::time::Instant::now();
            let events = page.events.len();
            checkpoint = self
                .applier
                .apply_page(checkpoint, page.events, page.through)
                .await?;
            tracing::debug!(
                projection = name,
                events,
                waited_ms = (started - waited).as_secs_f64() * 1e3,
                apply_ms = started.elapsed().as_secs_f64() * 1e3,
                "catch-up batch"
            );
        }
        Ok(())
    }

    /// Tops a short live batch up with what arrives within the linger time.
    async fn gather(
        &self,
        subscription: &mut eventfold_event_log::Subscription<L>,
        page: &mut Page,
    ) {
        let deadline = tokio::time::Instant::now() + self.applier.options.linger;
        while page.events.len() < self.applier.options.batch_size {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(25))).await;
            match subscription
                .try_next_page(self.applier.options.batch_size - page.events.len())
                .await
            {
                Ok(more) => {
                    page.events.extend(more.events);
                    page.through = page.through.max(more.through);
                }
                Err(_) => break,
            }
        }
    }
}

//! The PostgreSQL backend.
//!
//! # Why readers never skip an event
//!
//! Positions come from a sequence and are handed out before commit, so transactions can
//! commit out of position order: a reader that pages by `global_position > last` can
//! read 11 before 10 commits, move its checkpoint to 11 and never see 10. Eventfold uses
//! a **writer-registered watermark**: every append, before it takes positions, takes a
//! shared transaction-scoped advisory lock whose key is a lower bound of the positions it
//! will take; readers only read up to `eventfold_safe_position()` — the last handed-out
//! position, capped just below the oldest in-flight appender's lock key — and read the
//! events in a later statement. The migration's SQL comments give the argument.
//!
//! Chosen over the alternatives ARCHITECTURE.md weighs:
//! - a global append lock would make every append wait for the previous commit;
//! - gap timeouts can skip a slow transaction's events;
//! - xid8 visibility (`pg_snapshot_xmin`) is correct, but *any* long transaction in the
//!   database — a forgotten `BEGIN` in psql, a long report — pauses every subscriber.
//!
//! Here only our own in-flight appends (which are single statements, milliseconds long)
//! hold readers back. The cost is a read of `pg_locks` per page read by a subscriber.
//!
//! Appends are one round trip: a single event goes in one plain statement
//! (`APPEND_ONE`: watermark, version check and `INSERT`), several through the
//! `eventfold_append` function, which checks the expected version and inserts them with
//! one multi-row `INSERT`. Wake-ups use
//! `LISTEN/NOTIFY`, sent *after* commit by a background task that coalesces bursts, so
//! the commit path never takes PostgreSQL's global notify-queue lock; subscriptions poll
//! as a fallback.

use std::str::FromStr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use eventfold_event_schemas::{
    is_valid_category, EventMetadata, ExpectedVersion, NewEvent, Payload, Position, RecordedEvent,
    StreamId, StreamVersion,
};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::types::Json;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::append::{recognise_retry, PreparedEvent, StoredId};
use crate::group::{self, Append, GroupedStore, Outcome, Queue};
use crate::store::{EventReader, EventWriter, Page, ReadDirection};
use crate::{AppendResult, Error, GroupCommit, GroupStats, Limits, Result};

mod group_writer;
mod statements;
mod warm;

use group_writer::PgGroupWriter;
pub(crate) use statements::{result_of, try_append, Tried};

/// How long a server still starting is waited for (the pool's acquire timeout is
/// [`crate::pool::ACQUIRE_TIMEOUT`]).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The NOTIFY channel appends are announced on.
const CHANNEL: &str = "eventfold_events";
/// Shortest time between two NOTIFYs: what a subscriber in another process may wait
/// beyond the commit, and what keeps a NOTIFY per append off a busy server.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(2);
/// Appends with `Any`/`StreamExists` that lose a race for the same stream version retry
/// this many times before reporting the conflict.
const MAX_RACE_RETRIES: usize = 50;

const SELECT_EVENTS: &str = "SELECT global_position, stream_id, stream_version, event_id, \
     event_type, schema_version, data, metadata, recorded_at FROM eventfold_events";

/// An event store in PostgreSQL. Cheap to clone (shares one pool).
#[derive(Debug, Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    /// The connections appends run on (see [`warm`]).
    warm: Arc<warm::Warm>,
    /// Fails operations fast while the server is unreachable (see [`crate::breaker`]).
    breaker: crate::Breaker,
    limits: Limits,
    /// Concurrent appends written together (`None`: group commit off).
    group: Option<Queue<PgGroupWriter>>,
    changes: watch::Sender<u64>,
    /// Coalescing trigger for the post-commit NOTIFY task.
    notify_tx: OnceLock<mpsc::Sender<()>>,
    listener_started: OnceLock<()>,
    /// Dropped with the store; background tasks end when they see it closed.
    shutdown: watch::Sender<()>,
}

impl PgEventStore {
    /// Connects with a pool of up to `max_connections` (default 16 when `None`), group
    /// commit on.
    pub async fn connect(url: &str, max_connections: Option<u32>) -> Result<Self> {
        Self::connect_with(url, max_connections, GroupCommit::default()).await
    }

    /// Like [`connect`](Self::connect), with group commit configured by `group`.
    pub async fn connect_with(
        url: &str,
        max_connections: Option<u32>,
        group: GroupCommit,
    ) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        crate::breaker::first_connection(&options, CONNECT_TIMEOUT).await?;
        let pool = Self::pool_options()
            .max_connections(max_connections.unwrap_or(16))
            .connect_with(options)
            .await?;
        Ok(Self::from_pool_with(pool, Limits::default(), group))
    }

    /// The pool settings the store uses when it connects itself: a connection idle for
    /// less than a second is handed out without sqlx's ping (a round trip per acquire,
    /// a sixth of a single append's time); one idle for longer is pinged first, and a
    /// connection that died meanwhile fails the statement that uses it, which the caller
    /// treats like any broken connection (an append's outcome is then unknown and
    /// re-appending it is idempotent).
    pub fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .acquire_timeout(crate::pool::ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(crate::pool::ping_when_idle::<sqlx::Postgres>)
    }

    /// Uses an existing pool, with group commit on (its defaults).
    pub fn from_pool(pool: PgPool, limits: Limits) -> Self {
        Self::from_pool_with(pool, limits, GroupCommit::default())
    }

    /// Uses an existing pool; `group` says how concurrent appends are grouped.
    pub fn from_pool_with(pool: PgPool, limits: Limits, group: GroupCommit) -> Self {
        // A connection for each group in flight and one for an append alone.
        let warm = warm::Warm::new(pool.clone(), group.committers.max(1) + 1);
        let group = group.enabled.then(|| {
            let writer = PgGroupWriter { warm: warm.clone() };
            Queue::new(writer, group)
        });
        let breaker = crate::Breaker::postgres("the event log", (*pool.connect_options()).clone());
        Self {
            inner: Arc::new(Inner {
                pool,
                warm,
                breaker,
                limits,
                group,
                changes: watch::channel(0).0,
                notify_tx: OnceLock::new(),
                listener_started: OnceLock::new(),
                shutdown: watch::channel(()).0,
            }),
        }
    }

    /// Creates or upgrades the log's tables and functions.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.inner.pool)
            .await?;
        Ok(())
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Runs one operation behind the circuit breaker ([`crate::Breaker::run`]).
    async fn guarded<T>(&self, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.inner.breaker.run(op, Error::database_error).await
    }

    /// The highest position below which every event is settled (see module docs).
    pub async fn safe_position(&self) -> Result<Position> {
        self.guarded(async move {
            let safe: i64 = sqlx::query_scalar("SELECT eventfold_safe_position()")
                .fetch_one(&self.inner.pool)
                .await?;
            Ok(Position(safe))
        })
        .await
    }

    async fn lookup_ids(&self, events: &[PreparedEvent]) -> Result<Vec<StoredId>> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let rows: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
            "SELECT event_id, stream_id, stream_version, global_position \
             FROM eventfold_events WHERE event_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(event_id, stream_id, stream_version, position)| StoredId {
                event_id,
                stream_id,
                stream_version,
                position,
            })
            .collect())
    }
}

async fn notify_loop(pool: PgPool, mut rx: mpsc::Receiver<()>) {
    while rx.recv().await.is_some() {
        // NOTIFY gives its transaction an id, so its commit would wait for a WAL flush
        // of its own: nothing to make durable here, so commit without waiting.
        if let Err(error) =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&pool)
                .await
        {
            // Subscribers in other processes fall back to polling.
            tracing::debug!(%error, "could not send the append notification");
        }
        // Appends committed meanwhile are covered by the next one: at most one NOTIFY
        // per interval, however fast the appends come.
        tokio::time::sleep(NOTIFY_INTERVAL).await;
    }
}

async fn listen_loop(pool: PgPool, inner: Weak<Inner>, mut shutdown: watch::Receiver<()>) {
    let mut listener: Option<PgListener> = None;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        drop(strong);
        let current = match listener.as_mut() {
            Some(l) => l,
            None => match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => listener.insert(l),
                    Err(error) => {
                        tracing::debug!(%error, "LISTEN failed; subscribers poll");
                        pause(&mut shutdown).await;
                        continue;
                    }
                },
                Err(error) => {
                    tracing::debug!(%error, "could not open the LISTEN connection; subscribers poll");
                    if pause(&mut shutdown).await {
                        return;
                    }
                    continue;
                }
            },
        };
        tokio::select! {
            received = current.recv() => {
                if received.is_err() {
                    listener = None;
                }
                // Also after an error: a notification may have been lost, so re-read.
                match inner.upgrade() {
                    Some(inner) => inner.changes.send_modify(|n| *n = n.wrapping_add(1)),
                    None => return,
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Waits a second before reconnecting; `true` when the store is gone.
async fn pause(shutdown: &mut watch::Receiver<()>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        _ = shutdown.changed() => true,
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    global_position: i64,
    stream_id: String,
    stream_version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    /// `NULL` only where a read restricted to some event types left it out.
    data: Option<JsonbPayload>,
    metadata: Option<Json<EventMetadata>>,
    recorded_at: DateTime<Utc>,
}

/// A `jsonb` payload column, decoded straight into its compact JSON text (no tree of
/// values built, no re-serialising).
struct JsonbPayload(Payload);

impl sqlx::Type<sqlx::Postgres> for JsonbPayload {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Json<()> as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <Json<()> as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for JsonbPayload {
    fn decode(
        value: sqlx::postgres::PgValueRef<'r>,
    ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        // sqlx reads the column's format (text, or binary `jsonb` with its version byte).
        let Json(raw) = <Json<&'r serde_json::value::RawValue> as sqlx::Decode<
            'r,
            sqlx::Postgres,
        >>::decode(value)?;
        Ok(Self(Payload::compacted(raw.get())?))
    }
}

impl EventRow {
    /// Whether the row carries its payload (a restricted read leaves the others out).
    fn wanted(&self) -> bool {
        self.data.is_some()
    }
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = Error;
    fn try_from(row: EventRow) -> Result<Self> {
        let position = row.global_position;
        let corrupt = |reason: String| Error::Corrupt { position, reason };
        let stream_id = StreamId::new(row.stream_id).map_err(|e| corrupt(e.to_string()))?;
        let (Some(data), Some(metadata)) = (row.data, row.metadata) else {
            return Err(corrupt("the payload was not read".to_owned()));
        };
        Ok(RecordedEvent {
            global_position: Position(row.global_position),
            stream_id,
            stream_version: row.stream_version,
            event_id: row.event_id,
            event_type: row.event_type,
            schema_version: row.schema_version,
            data: data.0,
            metadata: metadata.0,
            recorded_at: row.recorded_at,
        })
    }
}

fn decode(rows: Vec<EventRow>) -> Result<Vec<RecordedEvent>> {
    rows.into_iter().map(RecordedEvent::try_from).collect()
}

fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

/// One page of a stream's rows, `sql` taking the stream, a version and a limit.
async fn stream_rows(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    stream: &StreamId,
    from: StreamVersion,
    max: usize,
) -> std::result::Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as::<_, EventRow>(sql)
        .bind(stream.as_str())
        .bind(from)
        .bind(limit(max))
        .fetch_all(conn)
        .await
}

impl EventReader for PgEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: ReadDirection,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.guarded(async move {
            let sql = match direction {
                ReadDirection::Forwards => format!(
                    "{SELECT_EVENTS} WHERE stream_id = $1 AND stream_version >= $2 \
                     ORDER BY stream_version LIMIT $3"
                ),
                ReadDirection::Backwards => format!(
                    "{SELECT_EVENTS} WHERE stream_id = $1 AND stream_version <= $2 \
                     ORDER BY stream_version DESC LIMIT $3"
                ),
            };
            // A command reads its stream, then appends to it: both on the connection
            // used last (see `warm`).
            let mut conn = self.inner.warm.take().await?;
            let mut rows = stream_rows(&mut conn, &sql, stream, from, max).await;
            let usable = warm::usable(rows.as_ref().err());
            self.inner.warm.give(conn, usable);
            if !usable {
                // The connection had died (a kept one the server closed meanwhile,
                // unseen until used): a read is safe to repeat on a fresh one.
                let mut fresh = self.inner.pool.acquire().await?;
                rows = stream_rows(&mut fresh, &sql, stream, from, max).await;
            }
            decode(rows?)
        })
        .await
    }

    async fn read_all(
        &self,
        after: Position,
        category: Option<&str>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.guarded(async move {
            if let Some(category) = category {
                if !is_valid_category(category) {
                    return Err(Error::InvalidCategory(category.to_owned()));
                }
            }
            // Two statements on purpose: the read below must take its snapshot after the
            // watermark was computed.
            let started = std::time::Instant::now();
            let safe = self.safe_position().await?;
            if safe <= after || max == 0 {
                return Ok(Vec::new());
            }
            let watermark = started.elapsed();
            let rows = match category {
                None => {
                    sqlx::query_as::<_, EventRow>(&format!(
                        "{SELECT_EVENTS} WHERE global_position > $1 AND global_position <= $2 \
                         ORDER BY global_position LIMIT $3"
                    ))
                    .bind(after.0)
                    .bind(safe.0)
                    .bind(limit(max))
                    .fetch_all(&self.inner.pool)
                    .await?
                }
                Some(category) => {
                    sqlx::query_as::<_, EventRow>(&format!(
                        "{SELECT_EVENTS} WHERE category = $4 AND global_position > $1 \
                         AND global_position <= $2 ORDER BY global_position LIMIT $3"
                    ))
                    .bind(after.0)
                    .bind(safe.0)
                    .bind(limit(max))
                    .bind(category)
                    .fetch_all(&self.inner.pool)
                    .await?
                }
            };
            let fetched = started.elapsed();
            let events = decode(rows);
            tracing::debug!(
                after = after.0,
                watermark_ms = watermark.as_secs_f64() * 1e3,
                fetch_ms = (fetched - watermark).as_secs_f64() * 1e3,
                decode_ms = (started.elapsed() - fetched).as_secs_f64() * 1e3,
                "read_all"
            );
            events
        })
        .await
    }

    async fn read_all_of_types(
        &self,
        after: Position,
        category: Option<&str>,
        event_types: Option<&[String]>,
        max: usize,
    ) -> Result<Page> {
        self.guarded(async move {
            // A category read goes by its index; the types are then picked out here.
            let (Some(types), None) = (event_types, category) else {
                let events = self.read_all(after, category, max).await?;
                return Ok(Page::filtered(after, events, event_types));
            };
            // As in `read_all`: the watermark first, the rows in a later statement.
            let safe = self.safe_position().await?;
            if safe <= after || max == 0 {
                return Ok(Page {
                    events: Vec::new(),
                    through: after,
                });
            }
            // Every event of the range is read (so the page ends where an unrestricted one
            // would); only the wanted ones carry their payloads.
            let rows = sqlx::query_as::<_, EventRow>(
                "SELECT global_position, stream_id, stream_version, event_id, event_type, \
                 schema_version, CASE WHEN event_type = ANY($4) THEN data END AS data, \
                 CASE WHEN event_type = ANY($4) THEN metadata END AS metadata, recorded_at \
                 FROM eventfold_events WHERE global_position > $1 AND global_position <= $2 \
                 ORDER BY global_position LIMIT $3",
            )
            .bind(after.0)
            .bind(safe.0)
            .bind(limit(max))
            .bind(types)
            .fetch_all(&self.inner.pool)
            .await?;
            let through = rows.last().map_or(after, |r| Position(r.global_position));
            let events = rows
                .into_iter()
                .filter(EventRow::wanted)
                .map(RecordedEvent::try_from)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page { events, through })
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<StreamVersion>> {
        self.guarded(async move {
            Ok(sqlx::query_scalar(
                "SELECT max(stream_version) FROM eventfold_events WHERE stream_id = $1",
            )
            .bind(stream.as_str())
            .fetch_one(&self.inner.pool)
            .await?)
        })
        .await
    }

    async fn version_of_event(
        &self,
        stream: &StreamId,
        event_id: uuid::Uuid,
    ) -> Result<Option<StreamVersion>> {
        self.guarded(async move {
            Ok(sqlx::query_scalar(
                "SELECT stream_version FROM eventfold_events WHERE event_id = $1 AND stream_id = $2",
            )
            .bind(event_id)
            .bind(stream.as_str())
            .fetch_optional(&self.inner.pool)
            .await?)
        })
        .await
    }

    async fn head(&self) -> Result<Position> {
        self.guarded(async move {
            let head: i64 = sqlx::query_scalar(
                "SELECT COALESCE(max(global_position), 0) FROM eventfold_events",
            )
            .fetch_one(&self.inner.pool)
            .await?;
            Ok(Position(head))
        })
        .await
    }

    async fn writable(&self) -> Result<bool> {
        self.guarded(async move {
            Ok(sqlx::query_scalar(
                "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
            )
            .fetch_one(&self.inner.pool)
            .await?)
        })
        .await
    }

    fn breaker(&self) -> Option<&crate::Breaker> {
        Some(&self.inner.breaker)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.inner.listener_started.get_or_init(|| {
                tokio::spawn(listen_loop(
                    self.inner.pool.clone(),
                    Arc::downgrade(&self.inner),
                    self.inner.shutdown.subscribe(),
                ));
            });
        }
        self.inner.changes.subscribe()
    }
}

impl GroupedStore for PgEventStore {
    type Writer = PgGroupWriter;

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn queue(&self) -> Option<&Queue<PgGroupWriter>> {
        self.inner.group.as_ref()
    }

    fn writer(&self) -> PgGroupWriter {
        PgGroupWriter {
            warm: self.inner.warm.clone(),
        }
    }

    /// Wakes local subscribers now and other processes' shortly, after a commit.
    fn announce(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        let tx = self.inner.notify_tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(1);
            if tokio::runtime::Handle::try_current().is_ok() {
                tokio::spawn(notify_loop(self.inner.pool.clone(), rx));
            }
            tx
        });
        // Full means a NOTIFY is already queued: this append is covered by it.
        let _ = tx.try_send(());
    }

    /// One append in a transaction of its own: the path without group commit, and the
    /// one for an append that collided in its group.
    async fn append_alone(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        prepared: &[PreparedEvent],
    ) -> Result<AppendResult> {
        let mut races = 0;
        loop {
            let mut conn = self.inner.warm.take().await?;
            let outcome = try_append(&mut *conn, stream, expected, prepared).await;
            self.inner
                .warm
                .give(conn, warm::usable(outcome.as_ref().err()));
            self.announce();
            let (conflict, error) = match outcome {
                Ok(Tried::Stored(rows)) => return result_of(&rows),
                Ok(Tried::Conflict(actual)) => (Some(actual), None),
                Err(sqlx::Error::Database(db)) => (None, Some(db)),
                Err(other) => return Err(other.into()),
            };
            let unique = |key: &str| {
                error
                    .as_ref()
                    .is_some_and(|e| e.is_unique_violation() && e.constraint() == Some(key))
            };
            let lost_race = unique("eventfold_events_stream_version_key");
            let duplicate_id = unique("eventfold_events_event_id_key");
            if let (None, Some(error)) = (&conflict, error) {
                if !(lost_race || duplicate_id) {
                    return Err(sqlx::Error::Database(error).into());
                }
            }
            // A retried append whose first attempt committed looks like a conflict or a
            // duplicate id: answer it with the original result.
            let stored = self.lookup_ids(prepared).await?;
            if let Some(original) = recognise_retry(stream, expected, prepared, stored)? {
                return Ok(original);
            }
            let may_retry = matches!(
                expected,
                ExpectedVersion::Any | ExpectedVersion::StreamExists
            );
            if (lost_race || duplicate_id) && may_retry && races < MAX_RACE_RETRIES {
                races += 1;
                continue;
            }
            let actual = match conflict {
                Some(actual) => actual,
                None => self.stream_version(stream).await?,
            };
            return Err(Error::WrongExpectedVersion {
                stream_id: stream.clone(),
                expected,
                actual,
            });
        }
    }

    /// Turns a group's decision into the append's result.
    async fn settle(&self, append: &Append, outcome: Outcome) -> Result<AppendResult> {
        let Append {
            stream,
            expected,
            events,
        } = append;
        match outcome {
            Outcome::Committed(result) => Ok(result),
            Outcome::Conflict { actual } => {
                // A retried append whose first attempt committed conflicts too.
                let stored = self.lookup_ids(events).await?;
                if let Some(original) = recognise_retry(stream, *expected, events, stored)? {
                    return Ok(original);
                }
                Err(Error::WrongExpectedVersion {
                    stream_id: stream.clone(),
                    expected: *expected,
                    actual,
                })
            }
            Outcome::Alone => self.append_alone(stream, *expected, events).await,
        }
    }
}

impl EventWriter for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        self.guarded(async move { group::append(self, stream, expected, events).await })
            .await
    }
}

impl PgEventStore {
    /// Appends to several streams in one transaction (one round trip), each append with
    /// its own expected version and its own result, as if they ran one after another in
    /// order: one that is invalid or conflicts fails alone. `Err` means the transaction
    /// failed as a whole ([`Error::GroupCommitFailed`]'s caveat applies: re-append).
    pub async fn append_group(
        &self,
        appends: Vec<(StreamId, ExpectedVersion, Vec<NewEvent>)>,
    ) -> Result<Vec<Result<AppendResult>>> {
        self.guarded(async move { group::append_group(self, appends).await })
            .await
    }

    /// How group commit has grouped appends so far (`None`: it is off).
    pub fn group_stats(&self) -> Option<GroupStats> {
        self.inner.group.as_ref().map(Queue::stats)
    }
}

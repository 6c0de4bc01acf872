//! The SQLite backend: the embedded default, one file, no server.
//!
//! SQLite runs one write transaction at a time, so positions (the rowid) commit in
//! order and paging `$all` by position can never skip an event. Writes go through a
//! one-connection pool (appends queue fairly in process instead of spinning on
//! `SQLITE_BUSY`) and start with `BEGIN IMMEDIATE`, so an append from another process
//! waits on the busy timeout rather than failing mid-transaction. Reads use a separate
//! pool; WAL mode lets them run while a write is in progress.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eventfold_event_schemas::{
    is_valid_category, ExpectedVersion, NewEvent, Payload, Position, RecordedEvent, StreamId,
    StreamVersion,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::append::{recognise_retry, PreparedEvent, StoredId};
use crate::group::{self, Append, GroupWriter, GroupedStore, Outcome, Queue};
use crate::store::{EventReader, EventWriter, ReadDirection};
use crate::{AppendResult, Error, GroupCommit, GroupStats, Limits, Result};

/// Most events one INSERT statement carries (9 parameters each, under SQLite's 32,766).
const ROWS_PER_INSERT: usize = 1000;

const SELECT_EVENTS: &str = "SELECT global_position, stream_id, stream_version, event_id, \
     event_type, schema_version, data, metadata, recorded_at FROM eventfold_events";

/// An event store in one SQLite file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: SqlitePool,
    reader: SqlitePool,
    limits: Limits,
    /// Concurrent appends written together (`None`: group commit off).
    group: Option<Queue<SqliteGroupWriter>>,
    changes: watch::Sender<u64>,
}

impl SqliteEventStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path/to/file.db`).
    ///
    /// Durability: WAL with `synchronous=FULL`, so an acknowledged append survives a
    /// power cut, not just a crash of the process.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_limits(url, Limits::default()).await
    }

    /// Like [`connect`](Self::connect), with custom append limits.
    pub async fn connect_with_limits(url: &str, limits: Limits) -> Result<Self> {
        Self::connect_with(url, limits, GroupCommit::default()).await
    }

    /// Like [`connect`](Self::connect), with custom append limits and group commit
    /// configured by `group` (its `committers` is ignored: SQLite has one writer).
    pub async fn connect_with(url: &str, limits: Limits, group: GroupCommit) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let group = group.enabled.then(|| {
            Queue::new(
                SqliteGroupWriter {
                    pool: writer.clone(),
                },
                GroupCommit {
                    committers: 1,
                    ..group
                },
            )
        });
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                reader,
                limits,
                group,
                changes: watch::channel(0).0,
            }),
        })
    }

    /// Creates or upgrades the log's tables.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.inner.writer)
            .await?;
        Ok(())
    }

    /// The pool used for writes (one connection).
    pub fn writer_pool(&self) -> &SqlitePool {
        &self.inner.writer
    }

    /// Closes both pools, checkpointing the WAL.
    pub async fn close(&self) {
        self.inner.reader.close().await;
        self.inner.writer.close().await;
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
    data: String,
    metadata: String,
    recorded_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = Error;
    fn try_from(row: EventRow) -> Result<Self> {
        let position = row.global_position;
        let corrupt = |reason: String| Error::Corrupt { position, reason };
        Ok(RecordedEvent {
            global_position: Position(position),
            stream_id: StreamId::new(row.stream_id).map_err(|e| corrupt(e.to_string()))?,
            stream_version: row.stream_version,
            event_id: row.event_id,
            event_type: row.event_type,
            schema_version: row.schema_version,
            data: Payload::from_json(row.data).map_err(|e| corrupt(e.to_string()))?,
            metadata: serde_json::from_str(&row.metadata).map_err(|e| corrupt(e.to_string()))?,
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

impl EventReader for SqliteEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: ReadDirection,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let sql = match direction {
            ReadDirection::Forwards => format!(
                "{SELECT_EVENTS} WHERE stream_id = ?1 AND stream_version >= ?2 \
                 ORDER BY stream_version LIMIT ?3"
            ),
            ReadDirection::Backwards => format!(
                "{SELECT_EVENTS} WHERE stream_id = ?1 AND stream_version <= ?2 \
                 ORDER BY stream_version DESC LIMIT ?3"
            ),
        };
        let rows = sqlx::query_as::<_, EventRow>(&sql)
            .bind(stream.as_str())
            .bind(from)
            .bind(limit(max))
            .fetch_all(&self.inner.reader)
            .await?;
        decode(rows)
    }

    async fn read_all(
        &self,
        after: Position,
        category: Option<&str>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = match category {
            None => {
                sqlx::query_as::<_, EventRow>(&format!(
                    "{SELECT_EVENTS} WHERE global_position > ?1 ORDER BY global_position LIMIT ?2"
                ))
                .bind(after.0)
                .bind(limit(max))
                .fetch_all(&self.inner.reader)
                .await?
            }
            Some(category) => {
                if !is_valid_category(category) {
                    return Err(Error::InvalidCategory(category.to_owned()));
                }
                sqlx::query_as::<_, EventRow>(&format!(
                    "{SELECT_EVENTS} WHERE category = ?3 AND global_position > ?1 \
                     ORDER BY global_position LIMIT ?2"
                ))
                .bind(after.0)
                .bind(limit(max))
                .bind(category)
                .fetch_all(&self.inner.reader)
                .await?
            }
        };
        decode(rows)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<StreamVersion>> {
        Ok(sqlx::query_scalar(
            "SELECT max(stream_version) FROM eventfold_events WHERE stream_id = ?1",
        )
        .bind(stream.as_str())
        .fetch_one(&self.inner.reader)
        .await?)
    }

    async fn version_of_event(
        &self,
        stream: &StreamId,
        event_id: uuid::Uuid,
    ) -> Result<Option<StreamVersion>> {
        Ok(sqlx::query_scalar(
            "SELECT stream_version FROM eventfold_events WHERE event_id = ?1 AND stream_id = ?2",
        )
        .bind(event_id)
        .bind(stream.as_str())
        .fetch_optional(&self.inner.reader)
        .await?)
    }

    async fn head(&self) -> Result<Position> {
        let head: i64 =
            sqlx::query_scalar("SELECT COALESCE(max(global_position), 0) FROM eventfold_events")
                .fetch_one(&self.inner.reader)
                .await?;
        Ok(Position(head))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }
}

impl GroupedStore for SqliteEventStore {
    type Writer = SqliteGroupWriter;

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn queue(&self) -> Option<&Queue<SqliteGroupWriter>> {
        self.inner.group.as_ref()
    }

    fn writer(&self) -> SqliteGroupWriter {
        SqliteGroupWriter {
            pool: self.inner.writer.clone(),
        }
    }

    /// Wakes subscribers (in this process: SQLite has no other writer).
    fn announce(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// One append in a transaction of its own: the path without group commit, and the
    /// one for an append its group could not decide.
    async fn append_alone(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        prepared: &[PreparedEvent],
    ) -> Result<AppendResult> {
        let mut tx = self.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        let current = current_version(&mut tx, stream).await?;

        // Inside the write transaction nothing can change under us: a retried append is
        // looked for only when the plain path fails (wrong version or a duplicate id).
        if !expected.accepts(current) {
            let stored = stored_ids(&mut tx, prepared).await?;
            if let Some(original) = recognise_retry(stream, expected, prepared, stored)? {
                return Ok(original);
            }
            return Err(Error::WrongExpectedVersion {
                stream_id: stream.clone(),
                expected,
                actual: current,
            });
        }
        let first_version = current.map_or(0, |v| v + 1);
        match insert(&mut tx, stream, first_version, prepared, Utc::now()).await {
            Ok(result) => {
                tx.commit().await?;
                self.announce();
                Ok(result)
            }
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                // An id of this append is stored already: a retry, or a misuse.
                let stored = stored_ids(&mut tx, prepared).await?;
                if let Some(original) = recognise_retry(stream, expected, prepared, stored)? {
                    return Ok(original);
                }
                Err(sqlx::Error::Database(db).into())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Turns a group's decision into the append's result. Conflicts and collisions are
    /// decided again alone, in a transaction that also looks for the retry of an append
    /// that committed earlier (no round trip to save: SQLite is in process).
    async fn settle(&self, append: &Append, outcome: Outcome) -> Result<AppendResult> {
        match outcome {
            Outcome::Committed(result) => Ok(result),
            Outcome::Conflict { .. } | Outcome::Alone => {
                self.append_alone(&append.stream, append.expected, &append.events)
                    .await
            }
        }
    }
}

impl EventWriter for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        group::append(self, stream, expected, events).await
    }
}

impl SqliteEventStore {
    /// Appends to several streams in one transaction (one commit), each append with its
    /// own expected version and its own result, as if they ran one after another in
    /// order: one that is invalid or conflicts fails alone. `Err` means the transaction
    /// failed as a whole.
    pub async fn append_group(
        &self,
        appends: Vec<(StreamId, ExpectedVersion, Vec<NewEvent>)>,
    ) -> Result<Vec<Result<AppendResult>>> {
        group::append_group(self, appends).await
    }

    /// How group commit has grouped appends so far (`None`: it is off).
    pub fn group_stats(&self) -> Option<GroupStats> {
        self.inner.group.as_ref().map(Queue::stats)
    }
}

/// The stream's last version inside the write transaction.
async fn current_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    stream: &StreamId,
) -> Result<Option<StreamVersion>> {
    Ok(
        sqlx::query_scalar("SELECT max(stream_version) FROM eventfold_events WHERE stream_id = ?1")
            .bind(stream.as_str())
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Inserts one append's events at `first_version` onwards, with multi-row INSERTs. An
/// append of up to [`ROWS_PER_INSERT`] events is one statement, which SQLite undoes
/// whole when it fails (a duplicate id), leaving the transaction usable.
async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    stream: &StreamId,
    first_version: StreamVersion,
    events: &[PreparedEvent],
    recorded_at: DateTime<Utc>,
) -> sqlx::Result<AppendResult> {
    let mut positions: Vec<i64> = Vec::with_capacity(events.len());
    let mut version = first_version;
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut builder = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO eventfold_events (stream_id, category, stream_version, event_id, \
             event_type, schema_version, data, metadata, recorded_at) ",
        );
        builder.push_values(chunk, |mut row, event| {
            row.push_bind(stream.as_str())
                .push_bind(stream.category())
                .push_bind(version)
                .push_bind(event.event_id)
                .push_bind(event.event_type.as_str())
                .push_bind(event.schema_version)
                .push_bind(event.data.as_str())
                .push_bind(event.metadata.as_str())
                .push_bind(recorded_at);
            version += 1;
        });
        builder.push(" RETURNING global_position");
        let mut got: Vec<i64> = builder.build_query_scalar().fetch_all(&mut **tx).await?;
        // Rows are inserted in VALUES order with growing rowids; RETURNING's order is
        // not promised, so sort.
        got.sort_unstable();
        positions.extend(got);
    }
    match (positions.first(), positions.last()) {
        (Some(&first), Some(&last)) if positions.len() == events.len() => Ok(AppendResult {
            first_version,
            last_version: first_version + events.len() as i64 - 1,
            first_position: Position(first),
            last_position: Position(last),
        }),
        _ => Err(sqlx::Error::Protocol(format!(
            "inserted {} events, {} positions came back",
            events.len(),
            positions.len()
        ))),
    }
}

/// Writes a group of appends in one `BEGIN IMMEDIATE` transaction (one commit, one WAL
/// sync for all of them). Each append is one statement, so one that fails (a duplicate
/// id) leaves the others in place.
#[derive(Debug)]
pub(crate) struct SqliteGroupWriter {
    pool: SqlitePool,
}

impl GroupWriter for SqliteGroupWriter {
    async fn write(&self, group: &[Append]) -> Result<Vec<Outcome>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut versions: std::collections::HashMap<&str, Option<StreamVersion>> =
            std::collections::HashMap::new();
        let recorded_at = Utc::now();
        let mut outcomes = Vec::with_capacity(group.len());
        for pending in group {
            let current = match versions.get(pending.stream.as_str()) {
                Some(current) => *current,
                None => current_version(&mut tx, &pending.stream).await?,
            };
            if !pending.expected.accepts(current) {
                outcomes.push(Outcome::Conflict { actual: current });
                versions.insert(pending.stream.as_str(), current);
                continue;
            }
            if pending.events.len() > ROWS_PER_INSERT {
                // More than one statement: a failure half-way would need a savepoint.
                outcomes.push(Outcome::Alone);
                versions.insert(pending.stream.as_str(), current);
                continue;
            }
            let first_version = current.map_or(0, |v| v + 1);
            match insert(
                &mut tx,
                &pending.stream,
                first_version,
                &pending.events,
                recorded_at,
            )
            .await
            {
                Ok(result) => {
                    versions.insert(pending.stream.as_str(), Some(result.last_version));
                    outcomes.push(Outcome::Committed(result));
                }
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    versions.insert(pending.stream.as_str(), current);
                    outcomes.push(Outcome::Alone);
                }
                Err(other) => return Err(other.into()),
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// Where the ids of `events` are stored already, if anywhere.
async fn stored_ids(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    events: &[PreparedEvent],
) -> Result<Vec<StoredId>> {
    let mut stored = Vec::new();
    for event in events {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT stream_id, stream_version, global_position FROM eventfold_events \
             WHERE event_id = ?1",
        )
        .bind(event.event_id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((stream_id, stream_version, position)) = row {
            stored.push(StoredId {
                event_id: event.event_id,
                stream_id,
                stream_version,
                position,
            });
        }
    }
    Ok(stored)
}

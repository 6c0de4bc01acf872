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
    is_valid_category, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId, StreamVersion,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::append::{prepare, recognise_retry, StoredId};
use crate::store::{EventReader, EventWriter, ReadDirection};
use crate::{AppendResult, Error, Limits, Result};

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
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                reader,
                limits,
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
            data: serde_json::from_str(&row.data).map_err(|e| corrupt(e.to_string()))?,
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

impl EventWriter for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        let prepared = prepare(&self.inner.limits, events)?;
        let mut tx = self.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT max(stream_version) FROM eventfold_events WHERE stream_id = ?1",
        )
        .bind(stream.as_str())
        .fetch_one(&mut *tx)
        .await?;

        // Inside the write transaction nothing can change under us: a retried append is
        // looked for only when the plain path fails (wrong version or a duplicate id).
        if !expected.accepts(current) {
            let stored = stored_ids(&mut tx, &prepared).await?;
            if let Some(original) = recognise_retry(stream, expected, &prepared, stored)? {
                return Ok(original);
            }
            return Err(Error::WrongExpectedVersion {
                stream_id: stream.clone(),
                expected,
                actual: current,
            });
        }

        let first_version = current.map_or(0, |v| v + 1);
        let recorded_at = Utc::now();
        let mut positions = Vec::with_capacity(prepared.len());
        for (offset, event) in prepared.iter().enumerate() {
            let position: sqlx::Result<i64> = sqlx::query_scalar(
                "INSERT INTO eventfold_events (stream_id, category, stream_version, event_id, \
                 event_type, schema_version, data, metadata, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING global_position",
            )
            .bind(stream.as_str())
            .bind(stream.category())
            .bind(first_version + offset as i64)
            .bind(event.event_id)
            .bind(&event.event_type)
            .bind(event.schema_version)
            .bind(&event.data)
            .bind(&event.metadata)
            .bind(recorded_at)
            .fetch_one(&mut *tx)
            .await;
            let position = match position {
                Ok(position) => position,
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    // An id of this append is stored already: a retry, or a misuse.
                    let stored = stored_ids(&mut tx, &prepared).await?;
                    if let Some(original) = recognise_retry(stream, expected, &prepared, stored)? {
                        return Ok(original);
                    }
                    return Err(sqlx::Error::Database(db).into());
                }
                Err(other) => return Err(other.into()),
            };
            positions.push(position);
        }
        tx.commit().await?;
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        let (Some(&first), Some(&last)) = (positions.first(), positions.last()) else {
            return Err(Error::EmptyAppend);
        };
        Ok(AppendResult {
            first_version,
            last_version: first_version + positions.len() as i64 - 1,
            first_position: Position(first),
            last_position: Position(last),
        })
    }
}

/// Where the ids of `events` are stored already, if anywhere.
async fn stored_ids(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    events: &[crate::append::PreparedEvent],
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

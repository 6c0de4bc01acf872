//! One append in one statement on PostgreSQL: the single-event statement, the call of
//! `eventfold_append` for several events, and how their answers are read.

use eventfold_event_schemas::{ExpectedVersion, Position, StreamId, StreamVersion};
use sqlx::postgres::PgDatabaseError;
use uuid::Uuid;

use crate::append::PreparedEvent;
use crate::{AppendResult, Error, Result};

/// What one append's statement did.
pub(crate) enum Tried {
    /// Stored: each event's position and version.
    Stored(Vec<(i64, i64)>),
    /// Not stored: the stream is at another version than expected (`None`: no stream).
    Conflict(Option<StreamVersion>),
}

/// One append, one statement. A single event (what most commands append) goes in one
/// plain SQL statement, `APPEND_ONE`; more go through `eventfold_append`.
pub(crate) async fn try_append(
    conn: impl sqlx::PgExecutor<'_>,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[PreparedEvent],
) -> std::result::Result<Tried, sqlx::Error> {
    let code = expected_code(expected);
    if let [event] = events {
        let (current, position, version): (i64, Option<i64>, Option<i64>) =
            sqlx::query_as(APPEND_ONE)
                .bind(stream.as_str())
                .bind(stream.category())
                .bind(code)
                .bind(event.event_id)
                .bind(event.event_type.as_str())
                .bind(event.schema_version)
                .bind(event.data.as_str())
                .bind(event.metadata.as_str())
                .fetch_one(conn)
                .await?;
        return Ok(match (position, version) {
            (Some(position), Some(version)) => Tried::Stored(vec![(position, version)]),
            _ => Tried::Conflict(Some(current).filter(|v| *v >= 0)),
        });
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<i32> = events.iter().map(|e| e.schema_version).collect();
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    let metadata: Vec<&str> = events.iter().map(|e| e.metadata.as_str()).collect();
    let called = sqlx::query_as(
        "SELECT o_position, o_version FROM eventfold_append($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(stream.as_str())
    .bind(stream.category())
    .bind(code)
    .bind(&ids)
    .bind(&types)
    .bind(&versions)
    .bind(&data)
    .bind(&metadata)
    .fetch_all(conn)
    .await;
    match called {
        Ok(rows) => Ok(Tried::Stored(rows)),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("EF409") => {
            Ok(Tried::Conflict(conflict_actual(&*db)))
        }
        Err(other) => Err(other),
    }
}

/// One event appended in one plain statement: what `eventfold_append` does for it,
/// without the PL/pgSQL call and its arrays (in `pgbench`, one client: 0.44 ms a call
/// against the function's 0.49 ms and a plain `INSERT`'s 0.34 ms).
///
/// 1. `inflight` registers the transaction in the watermark before any position is
///    taken: the insert below reads a row of it (and of `current_version`) before its target
///    list, where `nextval` is, is evaluated.
/// 2. `current_version` is the stream's version; the insert happens only when it is the one
///    expected ($3 as in `eventfold_append`: >= 0 exactly, -1 any, -2 no stream, -3
///    exists). Two appends racing for one version collide on the
///    (stream_id, stream_version) key, as with the function.
/// 3. One row comes back: the version found, and the new event's position and version
///    (NULL when not inserted: a conflict).
///
/// Both CTEs are evaluated once (PostgreSQL never inlines one that calls a volatile
/// function or is referenced twice), without `MATERIALIZED`, which PostgreSQL 11 and
/// older do not parse.
const APPEND_ONE: &str = "\
WITH inflight AS (
    SELECT pg_advisory_xact_lock_shared((17734::bigint << 48)
        | (COALESCE(pg_sequence_last_value('eventfold_positions'), 0) + 1))
), current_version AS (
    SELECT COALESCE(max(e.stream_version), -1) AS v
    FROM eventfold_events e WHERE e.stream_id = $1
), ins AS (
    INSERT INTO eventfold_events AS e
        (global_position, stream_id, category, stream_version, event_id, event_type,
         schema_version, data, metadata)
    SELECT nextval('eventfold_positions'), $1, $2, c.v + 1, $4, $5, $6, $7::jsonb, $8::jsonb
    FROM inflight, current_version c
    WHERE NOT (($3 = -2 AND c.v <> -1) OR ($3 = -3 AND c.v = -1) OR ($3 >= 0 AND c.v <> $3))
    RETURNING e.global_position, e.stream_version
)
SELECT c.v, ins.global_position, ins.stream_version FROM current_version c LEFT JOIN ins ON true";

/// The expectation as `eventfold_append` and `eventfold_append_group` take it.
pub(super) fn expected_code(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Exact(v) => v,
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => -2,
        ExpectedVersion::StreamExists => -3,
    }
}

/// The actual version `eventfold_append` reports with a conflict (`None`: no stream).
fn conflict_actual(error: &dyn sqlx::error::DatabaseError) -> Option<StreamVersion> {
    error
        .try_downcast_ref::<PgDatabaseError>()
        .and_then(|pg| pg.detail())
        .and_then(|d| d.parse::<i64>().ok())
        .filter(|v| *v >= 0)
}

pub(crate) fn result_of(rows: &[(i64, i64)]) -> Result<AppendResult> {
    let (Some(first), Some(last)) = (rows.iter().min(), rows.iter().max()) else {
        return Err(Error::Corrupt {
            position: -1,
            reason: "append returned no rows".into(),
        });
    };
    Ok(AppendResult {
        first_version: first.1,
        last_version: last.1,
        first_position: Position(first.0),
        last_position: Position(last.0),
    })
}

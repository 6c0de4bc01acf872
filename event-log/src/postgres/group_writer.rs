//! Group commit on PostgreSQL: a group of appends in one call of `eventfold_append_group`.

use eventfold_event_schemas::Position;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use super::{expected_code, result_of, try_append, Tried};
use crate::group::{Append, GroupWriter, Outcome};
use crate::{AppendResult, Error, Result};

/// Writes a group of appends with one call of `eventfold_append_group` (one statement,
/// one transaction, one round trip).
#[derive(Debug)]
pub(crate) struct PgGroupWriter {
    pub(super) pool: PgPool,
}

type GroupRow = (i32, i32, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

impl GroupWriter for PgGroupWriter {
    async fn write(&self, group: &[Append]) -> Result<Vec<Outcome>> {
        let mut conn = self.pool.acquire().await?;
        self.write_on(&mut conn, group).await
    }
}

impl PgGroupWriter {
    async fn write_on(
        &self,
        conn: &mut sqlx::PgConnection,
        group: &[Append],
    ) -> Result<Vec<Outcome>> {
        if let [one] = group {
            // `eventfold_append` is the lighter function for one append. Written here,
            // not by its caller, so that what arrives meanwhile queues for the next group.
            let outcome = match try_append(&mut *conn, &one.stream, one.expected, &one.events).await
            {
                Ok(Tried::Stored(rows)) => Outcome::Committed(result_of(&rows)?),
                Ok(Tried::Conflict(actual)) => Outcome::Conflict { actual },
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Outcome::Alone,
                Err(other) => return Err(other.into()),
            };
            return Ok(vec![outcome]);
        }
        let mut streams: Vec<&str> = Vec::new();
        let mut categories: Vec<&str> = Vec::new();
        let mut index: std::collections::HashMap<&str, i32> = std::collections::HashMap::new();
        let mut stream_of = Vec::with_capacity(group.len());
        let mut expected = Vec::with_capacity(group.len());
        let mut counts = Vec::with_capacity(group.len());
        let events = group.iter().map(|p| p.events.len()).sum();
        let mut event_append: Vec<i32> = Vec::with_capacity(events);
        let mut event_offset: Vec<i32> = Vec::with_capacity(events);
        let mut ids: Vec<Uuid> = Vec::with_capacity(events);
        let mut types: Vec<&str> = Vec::with_capacity(events);
        let mut versions: Vec<i32> = Vec::with_capacity(events);
        let mut data: Vec<&str> = Vec::with_capacity(events);
        let mut metadata: Vec<&str> = Vec::with_capacity(events);
        for (a, pending) in (1i32..).zip(group) {
            let next = i32::try_from(streams.len() + 1).unwrap_or(i32::MAX);
            let k = *index.entry(pending.stream.as_str()).or_insert_with(|| {
                streams.push(pending.stream.as_str());
                categories.push(pending.stream.category());
                next
            });
            stream_of.push(k);
            expected.push(expected_code(pending.expected));
            counts.push(i32::try_from(pending.events.len()).unwrap_or(i32::MAX));
            for (offset, event) in (0i32..).zip(pending.events.iter()) {
                event_append.push(a);
                event_offset.push(offset);
                ids.push(event.event_id);
                types.push(&event.event_type);
                versions.push(event.schema_version);
                data.push(&event.data);
                metadata.push(&event.metadata);
            }
        }
        let mut careful = false;
        let rows = loop {
            let called = sqlx::query_as::<_, GroupRow>(
                "SELECT o_append, o_status, o_first_position, o_last_position, \
                 o_first_version, o_actual FROM eventfold_append_group($1, $2, $3, $4, $5, $6, \
                 $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&streams)
            .bind(&categories)
            .bind(&stream_of)
            .bind(&expected)
            .bind(&counts)
            .bind(&event_append)
            .bind(&event_offset)
            .bind(&ids)
            .bind(&types)
            .bind(&versions)
            .bind(&data)
            .bind(&metadata)
            .bind(careful)
            .fetch_all(&mut *conn)
            .await;
            match called {
                // A collision (another group on the same stream, a stored event id) undid
                // the whole fast path: again, one append at a time.
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() && !careful => {
                    careful = true;
                }
                other => break other?,
            }
        };
        rows.into_iter()
            .zip(group)
            .map(|((_, status, lo, hi, first, actual), pending)| {
                let count = pending.events.len() as i64;
                match (status, lo, hi, first) {
                    (0, Some(lo), Some(hi), Some(first)) => Ok(Outcome::Committed(AppendResult {
                        first_version: first,
                        last_version: first + count - 1,
                        first_position: Position(lo),
                        last_position: Position(hi),
                    })),
                    (1, ..) => Ok(Outcome::Conflict {
                        actual: actual.filter(|v| *v >= 0),
                    }),
                    (2, ..) => Ok(Outcome::Alone),
                    _ => Err(Error::Corrupt {
                        position: -1,
                        reason: format!("eventfold_append_group answered status {status}"),
                    }),
                }
            })
            .collect()
    }
}

//! Applying batches of stored records to a sink, shared by the log-fed [`Runner`] and
//! the Kafka-fed projector workers.
//!
//! [`Runner`]: crate::Runner

use std::future::Future;
use std::time::Duration;

use eventfold_event_schemas::{DomainEvent, Position, RecordedEvent};

use crate::runtime::{PoisonPolicy, RunnerOptions, Sink};
use crate::status::{ProjectionState, StatusBoard};
use crate::{Error, Result};

/// Applies batches of stored records to a sink: decodes them, retries a failing batch,
/// isolates and parks the event at fault, waits out a store that is down. The log-fed
/// [`Runner`](crate::Runner) uses it, and so does anything else that feeds a sink records (a
/// Kafka-fed projector, one partition at a time).
#[derive(Debug)]
pub struct Applier<K> {
    pub(crate) sink: K,
    pub(crate) options: RunnerOptions,
    pub(crate) board: StatusBoard,
}

/// Whether an error means the store is unreachable (retry without end) rather than
/// this event failing.
fn store_down(error: &Error) -> bool {
    match error {
        Error::Sql(sqlx::Error::Database(db)) => {
            // What a server says while it goes away, starts, or has no room: not this
            // event's fault. Counted against the event, a restart that takes longer than
            // its few attempts (crash recovery answers 57P03 for seconds) parked good
            // events.
            db.code()
                .is_some_and(|code| eventfold_event_log::breaker::server_unavailable(&code))
        }
        Error::Sql(e) => !matches!(e, sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)),
        Error::Redis(e) => {
            e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout()
        }
        Error::Log(_) | Error::Unavailable { .. } | Error::Injected(_) | Error::Held(_) => true,
        _ => false,
    }
}

/// Whether the read store refused a statement for its schema rather than for the
/// event: ClickHouse's unknown table, database, column or identifier; PostgreSQL's
/// SQLSTATE class 42 (a table, column or function missing, no
/// privilege) and 3F000 (no such schema); SQLite's "no such table", "no such column",
/// "has no column named". Events reach statements as bound parameters, so none of
/// these is ever an event's fault; counted against the event, a dropped table parked a
/// good event and, once a restart had created the table again, the model went on
/// without the rows it had lost.
pub fn schema_broken(error: &Error) -> bool {
    if let Error::ClickHouse(message) = error {
        // ClickHouse's UNKNOWN_TABLE (60), UNKNOWN_DATABASE (81), NO_SUCH_COLUMN_IN_TABLE
        // (16), UNKNOWN_IDENTIFIER (47).
        return crate::store::has_code(message, &["16", "47", "60", "81"]);
    }
    let Error::Sql(sqlx::Error::Database(db)) = error else {
        return false;
    };
    let Some(code) = db.code() else { return false };
    if code.len() == 5 {
        return code.starts_with("42") || code == "3F000";
    }
    // SQLite's SQLITE_ERROR (1) says little by itself: its message says what failed.
    let message = db.message();
    code == "1"
        && (message.starts_with("no such table")
            || message.starts_with("no such column")
            || message.contains("has no column named"))
}

/// Whether the database rolled the transaction back for a conflict with another one
/// (SQLSTATE class 40: serialization failure, deadlock; 55P03 lock not available):
/// not this event's fault, and a retry can succeed. Counted against the event, a run of
/// conflicts parked a good one.
fn conflict(error: &Error) -> bool {
    match error {
        Error::Sql(sqlx::Error::Database(db)) => db
            .code()
            .is_some_and(|code| code.starts_with("40") || code == "55P03"),
        _ => false,
    }
}

impl<K: Sink> Applier<K> {
    /// An applier reporting to `board`.
    pub fn new(sink: K, options: RunnerOptions, board: StatusBoard) -> Self {
        Self {
            sink,
            options,
            board,
        }
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// Its options.
    pub fn options(&self) -> &RunnerOptions {
        &self.options
    }

    /// Applies a batch of records that follow `checkpoint` (in order): decoded runs
    /// between undecodable events, each with retries; returns the new checkpoint (the
    /// last record's position).
    pub async fn apply_batch(
        &self,
        checkpoint: Position,
        batch: Vec<RecordedEvent>,
    ) -> Result<Position> {
        let through = batch.last().map_or(checkpoint, |e| e.global_position);
        self.apply_page(checkpoint, batch, through).await
    }

    /// [`apply_batch`](Self::apply_batch) of a page read through `through`: the
    /// checkpoint moves there even past the page's last event (the log was read that
    /// far; what lay between was of types the sink does not handle).
    pub async fn apply_page(
        &self,
        mut checkpoint: Position,
        batch: Vec<RecordedEvent>,
        through: Position,
    ) -> Result<Position> {
        let mut run: Vec<(RecordedEvent, DomainEvent)> = Vec::new();
        let last = batch
            .last()
            .map_or(checkpoint, |e| e.global_position)
            .max(through);
        if self.sink.raw() {
            let to = last.max(checkpoint);
            let at = batch.last().map(|r| r.recorded_at);
            self.retry_store(|| self.sink.apply_records(checkpoint, &batch, to))
                .await?;
            self.board.set_checkpoint(self.sink.name(), to, at);
            return Ok(to);
        }
        for record in batch {
            if !self.sink.handles(&record.event_type) {
                continue;
            }
            match DomainEvent::from_recorded(&record) {
                Ok(Some(event)) => run.push((record, event)),
                // A type the catalogue does not know: not ours to fold.
                Ok(None) => {}
                Err(error) => {
                    let before = Position(record.global_position.0 - 1);
                    checkpoint = self
                        .apply_run(checkpoint, std::mem::take(&mut run), before)
                        .await?;
                    checkpoint = self
                        .poisoned(checkpoint, &record, &error.to_string())
                        .await?;
                }
            }
        }
        self.apply_run(checkpoint, run, last.max(checkpoint)).await
    }

    /// Applies `events` moving the checkpoint to `to`; isolates a failing event.
    async fn apply_run(
        &self,
        from: Position,
        events: Vec<(RecordedEvent, DomainEvent)>,
        to: Position,
    ) -> Result<Position> {
        if to <= from && events.is_empty() {
            return Ok(from);
        }
        match self.attempt(from, &events, to).await {
            Ok(()) => {
                self.board.set_checkpoint(
                    self.sink.name(),
                    to,
                    events.last().map(|(r, _)| r.recorded_at),
                );
                Ok(to)
            }
            // Not the events' fault: the caller resynchronises or stops.
            Err(
                error @ (Error::CheckpointMoved(_)
                | Error::Stopped { .. }
                | Error::SchemaBroken { .. }),
            ) => Err(error),
            Err(error) if events.len() <= 1 => match events.into_iter().next() {
                Some((record, _)) => {
                    let at = self.poisoned(from, &record, &error.to_string()).await?;
                    Box::pin(self.apply_run(at, Vec::new(), to.max(at))).await
                }
                None => Err(error),
            },
            Err(_) => {
                // Find the culprit: one event per transaction.
                let mut checkpoint = from;
                for (record, event) in events {
                    let position = record.global_position;
                    checkpoint =
                        Box::pin(self.apply_run(checkpoint, vec![(record, event)], position))
                            .await?;
                }
                Box::pin(self.apply_run(checkpoint, Vec::new(), to.max(checkpoint))).await
            }
        }
    }

    /// Tries `apply` until it works, the store stays down (retried without end), or the
    /// attempts run out.
    async fn attempt(
        &self,
        from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()> {
        let mut failures = 0;
        let mut pause = self.options.backoff;
        loop {
            let error = match self.sink.apply(from, events, to).await {
                Ok(()) => return Ok(()),
                // Deterministic: retrying cannot help (a sink that finds its schema
                // broken itself says so).
                Err(
                    error @ (Error::CheckpointMoved(_)
                    | Error::Stopped { .. }
                    | Error::Poison { .. }
                    | Error::SchemaBroken { .. }),
                ) => return Err(error),
                Err(error) if schema_broken(&error) => {
                    return Err(Error::SchemaBroken {
                        projection: self.sink.name().to_owned(),
                        reason: error.to_string(),
                    })
                }
                Err(Error::Held(_)) => {
                    // A replay is swapping this model: wait without counting failures
                    // and without backing off far (the hold lasts a moment).
                    self.board.set_state(
                        self.sink.name(),
                        ProjectionState::Retrying,
                        Some("paused while a rebuilt model is swapped in".to_owned()),
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(error) => error,
            };
            let down = store_down(&error);
            if down {
                self.board.set_state(
                    self.sink.name(),
                    ProjectionState::Retrying,
                    Some(error.to_string()),
                );
                tracing::warn!(projection = self.sink.name(), %error, "store unavailable; retrying");
            } else if conflict(&error) {
                tracing::debug!(projection = self.sink.name(), %error, "rolled back for a conflict; retrying");
            } else {
                failures += 1;
                if failures >= self.options.max_attempts {
                    return Err(error);
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.options.max_backoff);
            if !down && failures == 1 {
                tracing::debug!(projection = self.sink.name(), %error, "apply failed; retrying");
            }
        }
    }

    /// Parks `record`; then stops or skips it by policy. Returns the new checkpoint.
    async fn poisoned(
        &self,
        from: Position,
        record: &RecordedEvent,
        reason: &str,
    ) -> Result<Position> {
        let name = self.sink.name();
        tracing::error!(projection = name, position = record.global_position.0, event_type = %record.event_type, reason, "parking a poison event");
        self.retry_store(|| self.sink.park(record, reason)).await?;
        self.board.add_parked(name);
        match self.options.poison {
            PoisonPolicy::Stop => {
                self.board
                    .set_state(name, ProjectionState::Stopped, Some(reason.to_owned()));
                Err(Error::Stopped {
                    name: name.to_owned(),
                    position: record.global_position.0,
                    reason: reason.to_owned(),
                })
            }
            PoisonPolicy::Skip => {
                let to = record.global_position;
                self.retry_store(|| self.sink.apply(from, &[], to)).await?;
                self.board
                    .set_checkpoint(name, to, Some(record.recorded_at));
                Ok(to)
            }
        }
    }

    /// Retries an operation while the store is down.
    pub async fn retry_store<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pause = self.options.backoff;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(error) if store_down(&error) => {
                    self.board.set_state(
                        self.sink.name(),
                        ProjectionState::Retrying,
                        Some(error.to_string()),
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.options.max_backoff);
                }
                Err(error) => return Err(error),
            }
        }
    }
}

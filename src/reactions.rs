//! Reactions: what follows from an event, run as a process manager on the projections'
//! runner (checkpoint, retries, parking, lag in `/api/v1/projections`).
//!
//! `reminder_planner.v1` plans the reminder of every consumable purchase from the log.
//! The purchase's request still plans it first (so its answer carries the reminder);
//! the reaction makes the plan certain: a request that died between the purchase's
//! append and the reminder's leaves a purchase the reaction plans for. Its effects are
//! appends with ids derived from the purchase, so it is exactly-once in effect though
//! at-least-once in execution; its checkpoint (table `eventfold_reaction_checkpoints`)
//! moves after the effects.
//!
//! `order_drafter.v1` does the same for the re-order's "yes": the request appends the
//! reminder's acceptance, then drafts its order; a request that died between the two
//! left an accepted reminder with no order until the speaker said "yes" again. The
//! reaction drafts the order of every `ReorderAccepted` whose order does not exist (the
//! order's id comes from the reminder; an existing order is left as it is).

use std::sync::Arc;

use eventfold_commands::{CommandError, CommandService};
use eventfold_domain::DomainEvent;
use eventfold_event_log::EventStore;
use eventfold_event_schemas::{Position, RecordedEvent};
use eventfold_projections::{
    async_trait, lock_ddl, Dialect, Error, FailPoint, ParkedEvent, Result, Sink,
};

/// The reminder planner's name on the status board.
pub(crate) const REMINDER_PLANNER: &str = "reminder_planner.v1";

/// The order drafter's name on the status board.
pub(crate) const ORDER_DRAFTER: &str = "order_drafter.v1";

/// Every reaction of this build, as named on the status board.
pub(crate) const REACTIONS: &[&str] = &[
    REMINDER_PLANNER,
    ORDER_DRAFTER,
    crate::notify::DISPATCHER,
    crate::relay::RELAY,
];

/// A reaction's checkpoint and parked events, in the relational read store (tables
/// `eventfold_reaction_checkpoints`, `eventfold_reaction_parked`).
#[derive(Debug, Clone)]
pub(crate) struct ReactionProgress {
    pool: sqlx::AnyPool,
    name: &'static str,
}

impl ReactionProgress {
    pub(crate) fn new(pool: sqlx::AnyPool, name: &'static str) -> Self {
        Self { pool, name }
    }

    /// Creates the tables and the checkpoint row. Reactions start side by side (and in
    /// several processes): the DDL runs under the read store's DDL lock, since two
    /// concurrent `CREATE TABLE IF NOT EXISTS` of one new table make one fail on
    /// PostgreSQL.
    pub(crate) async fn setup(&self) -> Result<()> {
        // `CREATE TABLE IF NOT EXISTS` of a table that exists only reads.
        let mut tx = eventfold_projections::begin_write(&self.pool).await?;
        let dialect = Dialect::of(&tx);
        lock_ddl(&mut tx, dialect).await?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS eventfold_reaction_checkpoints (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS eventfold_reaction_parked (name TEXT NOT NULL, position BIGINT NOT NULL, event_type TEXT NOT NULL, error TEXT NOT NULL, PRIMARY KEY (name, position))",
        ] {
            sqlx::query(ddl).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO eventfold_reaction_checkpoints (name, position) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
        )
        .bind(self.name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored checkpoint (0 before the first batch).
    pub(crate) async fn checkpoint(&self) -> Result<Position> {
        let position = sqlx::query_scalar::<_, i64>(
            "SELECT position FROM eventfold_reaction_checkpoints WHERE name = $1",
        )
        .bind(self.name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(Position(position.unwrap_or(0)))
    }

    /// What is stored, read from any process: the checkpoint (`None`: never ran here)
    /// and the parked events; tables not created yet read as nothing.
    pub(crate) async fn stored(&self) -> (Option<Position>, i64) {
        let checkpoint = sqlx::query_scalar::<_, i64>(
            "SELECT position FROM eventfold_reaction_checkpoints WHERE name = $1",
        )
        .bind(self.name)
        .fetch_optional(&self.pool)
        .await
        .ok()
        .flatten()
        .map(Position);
        let parked = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM eventfold_reaction_parked WHERE name = $1",
        )
        .bind(self.name)
        .fetch_one(&self.pool)
        .await
        .unwrap_or(0);
        (checkpoint, parked)
    }

    /// Moves the checkpoint forward to `to` (never back), after the effects.
    pub(crate) async fn advance(&self, to: Position) -> Result<()> {
        sqlx::query("UPDATE eventfold_reaction_checkpoints SET position = $1 WHERE name = $2 AND position < $1")
            .bind(to.0)
            .bind(self.name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Its parked events, oldest first (none before its tables exist).
    pub(crate) async fn parked(&self) -> Result<Vec<ParkedEvent>> {
        let rows: std::result::Result<Vec<(i64, String, String)>, Error> = sqlx::query_as(
            "SELECT position, event_type, error FROM eventfold_reaction_parked WHERE name = $1 ORDER BY position",
        )
        .bind(self.name)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::from);
        let rows = match rows {
            Err(error) if eventfold_projections::schema_broken(&error) => Vec::new(),
            other => other?,
        };
        Ok(rows.into_iter().map(ParkedEvent::from).collect())
    }

    /// Forgets a parked event (it was applied on a retry), or records its new error.
    async fn settle(&self, position: i64, error: Option<&str>) -> Result<()> {
        let mut q = sqlx::query(match error {
            None => "DELETE FROM eventfold_reaction_parked WHERE name = $1 AND position = $2",
            Some(_) => {
                "UPDATE eventfold_reaction_parked SET error = $3 WHERE name = $1 AND position = $2"
            }
        })
        .bind(self.name)
        .bind(position);
        if let Some(error) = error {
            q = q.bind(error.to_owned());
        }
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// Records an event the reaction gave up on.
    pub(crate) async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO eventfold_reaction_parked (name, position, event_type, error) VALUES ($1, $2, $3, $4) ON CONFLICT (name, position) DO NOTHING",
        )
        .bind(self.name)
        .bind(record.global_position.0)
        .bind(record.event_type.clone())
        .bind(error.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The command side's second step after an event, as a reaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Plans the reminder of a `PurchaseRecorded`.
    PlanReminder,
    /// Drafts the order of a `ReorderAccepted`.
    DraftOrder,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::PlanReminder => REMINDER_PLANNER,
            Step::DraftOrder => ORDER_DRAFTER,
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            Step::PlanReminder => "PurchaseRecorded",
            Step::DraftOrder => "ReorderAccepted",
        }
    }
}

/// A reaction that runs a step of the command service for every event of one type:
/// the reminder planner (`PurchaseRecorded`) or the order drafter (`ReorderAccepted`).
pub(crate) struct ServiceReaction<S> {
    service: Arc<CommandService<S>>,
    progress: ReactionProgress,
    fail_point: FailPoint,
    step: Step,
}

impl<S> std::fmt::Debug for ServiceReaction<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceReaction")
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl<S> ServiceReaction<S> {
    fn new(service: Arc<CommandService<S>>, pool: sqlx::AnyPool, step: Step) -> Self {
        Self {
            service,
            progress: ReactionProgress::new(pool, step.name()),
            fail_point: FailPoint::default(),
            step,
        }
    }

    /// The reminder planner using `service`, its checkpoint on `pool`.
    pub(crate) fn planner(service: Arc<CommandService<S>>, pool: sqlx::AnyPool) -> Self {
        Self::new(service, pool, Step::PlanReminder)
    }

    /// The order drafter using `service`, its checkpoint on `pool`.
    pub(crate) fn drafter(service: Arc<CommandService<S>>, pool: sqlx::AnyPool) -> Self {
        Self::new(service, pool, Step::DraftOrder)
    }
}

impl<S: EventStore> ServiceReaction<S> {
    /// Runs the step again for every event this reaction parked, oldest first (`eventfold
    /// projections retry`): one that goes through now is forgotten, one that fails again
    /// stays parked with its new error. Steps are idempotent, so a retry beside a running
    /// reaction (or of an event another process already retried) does nothing twice. A
    /// store that fails stops the retry with its error; what was not retried stays
    /// parked. Returns the positions retried and the events still parked.
    pub(crate) async fn retry_parked(&self) -> Result<(Vec<i64>, Vec<ParkedEvent>)> {
        let (mut done, mut left) = (Vec::new(), Vec::new());
        for parked in self.progress.parked().await? {
            let record = self
                .service
                .store()
                .read_all(Position(parked.position.saturating_sub(1)), None, 1)
                .await
                .map_err(Error::Log)?
                .into_iter()
                .find(|r| r.global_position.0 == parked.position);
            let Some(record) = record else {
                let error = format!("position {} is not in the log", parked.position);
                self.progress.settle(parked.position, Some(&error)).await?;
                left.push(ParkedEvent { error, ..parked });
                continue;
            };
            let outcome = match self.step {
                Step::PlanReminder => self.service.plan_after(&record).await.map(drop),
                Step::DraftOrder => self.service.draft_after(&record).await,
            };
            match outcome.map_err(|e| failed(&record, e)) {
                Ok(()) => {
                    self.progress.settle(parked.position, None).await?;
                    done.push(parked.position);
                }
                Err(Error::Poison { reason, .. }) => {
                    self.progress.settle(parked.position, Some(&reason)).await?;
                    left.push(ParkedEvent {
                        error: reason,
                        ..parked
                    });
                }
                Err(other) => return Err(other),
            }
        }
        Ok((done, left))
    }
}

fn failed(record: &RecordedEvent, error: CommandError) -> Error {
    match error {
        // A store is down (or broke with the step's append in flight; the step is
        // idempotent, so running it again settles it): the runner retries without end.
        CommandError::Store(log) | CommandError::OutcomeUnknown(log) => Error::Log(log),
        CommandError::Slots(why) => Error::Sql(sqlx::Error::Protocol(why)),
        CommandError::Injected(step) => Error::Injected(step),
        // This event fails: retried, then parked and skipped.
        error => Error::Poison {
            position: record.global_position.0,
            event_type: record.event_type.clone(),
            reason: error.to_string(),
        },
    }
}

#[async_trait]
impl<S: EventStore> Sink for ServiceReaction<S> {
    fn name(&self) -> &'static str {
        self.step.name()
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == self.step.event_type()
    }

    async fn setup(&self) -> Result<()> {
        self.progress.setup().await
    }

    async fn checkpoint(&self) -> Result<Position> {
        self.progress.checkpoint().await
    }

    async fn apply(
        &self,
        _from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()> {
        for (record, _) in events {
            if record.event_type != self.step.event_type() {
                continue;
            }
            self.fail_point.trip()?;
            let done = match self.step {
                Step::PlanReminder => self.service.plan_after(record).await.map(drop),
                Step::DraftOrder => self.service.draft_after(record).await,
            };
            done.map_err(|e| failed(record, e))?;
        }
        // After the effects: a crash before this line replays them, as no-ops.
        if !events.is_empty() {
            self.service
                .fail_steps()
                .trip(eventfold_commands::steps::BEFORE_CHECKPOINT)
                .map_err(|_| Error::Injected(eventfold_commands::steps::BEFORE_CHECKPOINT))?;
        }
        self.progress.advance(to).await
    }

    async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()> {
        self.progress.park(record, error).await
    }

    fn fail_point(&self) -> FailPoint {
        self.fail_point.clone()
    }
}

/// What the reactions have stored: `(name, checkpoint, parked)`; no checkpoint for a
/// reaction that never ran here.
pub(crate) async fn stored_progress(
    pool: &sqlx::AnyPool,
) -> Vec<(&'static str, Option<Position>, i64)> {
    let mut out = Vec::new();
    for name in REACTIONS {
        let (checkpoint, parked) = ReactionProgress::new(pool.clone(), name).stored().await;
        out.push((*name, checkpoint, parked));
    }
    out
}

#[cfg(test)]
mod tests;

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

use std::sync::Arc;

use eventfold_commands::{CommandError, CommandService};
use eventfold_domain::DomainEvent;
use eventfold_event_log::EventStore;
use eventfold_event_schemas::{Position, RecordedEvent};
use eventfold_projections::{async_trait, lock_ddl, Dialect, Error, FailPoint, Result, Sink};
use sqlx::Row;

/// The reminder planner's name on the status board.
pub(crate) const REMINDER_PLANNER: &str = "reminder_planner.v1";

/// Every reaction of this build, as named on the status board.
pub(crate) const REACTIONS: &[&str] = &[REMINDER_PLANNER, crate::notify::DISPATCHER];

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
        let mut tx = self.pool.begin().await?;
        let dialect = if tx.backend_name() == "PostgreSQL" {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
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
        let row =
            sqlx::query("SELECT position FROM eventfold_reaction_checkpoints WHERE name = $1")
                .bind(self.name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Position(match row {
            Some(row) => row.try_get::<i64, _>(0)?,
            None => 0,
        }))
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

/// Plans reminders from `PurchaseRecorded` events.
pub(crate) struct ReminderPlanner<S> {
    service: Arc<CommandService<S>>,
    progress: ReactionProgress,
    fail_point: FailPoint,
}

impl<S> std::fmt::Debug for ReminderPlanner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReminderPlanner").finish_non_exhaustive()
    }
}

impl<S> ReminderPlanner<S> {
    /// A planner using `service`, its checkpoint on `pool`.
    pub(crate) fn new(service: Arc<CommandService<S>>, pool: sqlx::AnyPool) -> Self {
        Self {
            service,
            progress: ReactionProgress::new(pool, REMINDER_PLANNER),
            fail_point: FailPoint::default(),
        }
    }
}

fn failed(record: &RecordedEvent, error: CommandError) -> Error {
    match error {
        // A store is down: the runner retries without end.
        CommandError::Store(log) => Error::Log(log),
        CommandError::Slots(why) => Error::Sql(sqlx::Error::Protocol(why)),
        // This event fails: retried, then parked and skipped.
        error => Error::Poison {
            position: record.global_position.0,
            event_type: record.event_type.clone(),
            reason: error.to_string(),
        },
    }
}

#[async_trait]
impl<S: EventStore> Sink for ReminderPlanner<S> {
    fn name(&self) -> &'static str {
        REMINDER_PLANNER
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "PurchaseRecorded"
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
            if record.event_type != "PurchaseRecorded" {
                continue;
            }
            self.fail_point.trip()?;
            self.service
                .plan_after(record)
                .await
                .map_err(|e| failed(record, e))?;
        }
        // After the effects: a crash before this line replays them, as no-ops.
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
        let checkpoint =
            sqlx::query("SELECT position FROM eventfold_reaction_checkpoints WHERE name = $1")
                .bind(*name)
                .fetch_optional(pool)
                .await
                .ok()
                .flatten()
                .and_then(|row| row.try_get::<i64, _>(0).ok())
                .map(Position);
        let parked = sqlx::query("SELECT COUNT(*) FROM eventfold_reaction_parked WHERE name = $1")
            .bind(*name)
            .fetch_one(pool)
            .await
            .ok()
            .and_then(|row| row.try_get::<i64, _>(0).ok())
            .unwrap_or(0);
        out.push((*name, checkpoint, parked));
    }
    out
}

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

/// The reminder planner's name on the status board.
pub(crate) const REMINDER_PLANNER: &str = "reminder_planner.v1";

/// Every reaction of this build, as named on the status board.
pub(crate) const REACTIONS: &[&str] = &[
    REMINDER_PLANNER,
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
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use eventfold_commands::{steps, CommandContext, Planning, Principal, SlotBook};
    use eventfold_domain::consumables::ConsumablePolicy;
    use eventfold_domain::slotting::SlotPlanner;
    use eventfold_event_log::testing::PgTestDb;
    use eventfold_event_log::EventReader;
    use eventfold_event_schemas::catalogue::PurchaseRecorded;
    use eventfold_projections::{ReadDb, Runner, RunnerOptions, StatusBoard};

    use super::*;

    const USERS: usize = 3;

    /// A fresh process's planner: its own service and slot book handle on the shared
    /// tables; requests do not plan (the reaction does).
    async fn process(
        db: &PgTestDb,
        read: &ReadDb,
    ) -> ReminderPlanner<eventfold_event_log::PgEventStore> {
        let planner = SlotPlanner::default();
        let slots = SlotBook::shared(planner, read.pool().clone())
            .await
            .expect("slot book");
        let service = CommandService::with(
            db.store.clone(),
            ConsumablePolicy::default(),
            planner,
            Arc::new(chrono::Utc::now),
        )
        .with_slot_book(slots)
        .with_planning(Planning::Reaction {
            progress: Arc::new(|| Position(i64::MAX)),
            wait: Duration::ZERO,
        });
        ReminderPlanner::new(Arc::new(service), read.pool().clone())
    }

    fn runner(
        store: eventfold_event_log::PgEventStore,
        planner: ReminderPlanner<eventfold_event_log::PgEventStore>,
    ) -> Runner<eventfold_event_log::PgEventStore, ReminderPlanner<eventfold_event_log::PgEventStore>>
    {
        let options = RunnerOptions {
            backoff: Duration::from_millis(20),
            poison: eventfold_projections::PoisonPolicy::Skip,
            ..RunnerOptions::default()
        };
        Runner::new(store, planner, options, StatusBoard::default())
    }

    async fn buy(
        planner: &ReminderPlanner<eventfold_event_log::PgEventStore>,
        user: &str,
        days_ago: i64,
    ) {
        let ctx = CommandContext {
            principal: Principal::service("test"),
            idempotency_key: Some(format!("buy-{user}-{days_ago}")),
            request_fingerprint: None,
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: None,
        };
        planner
            .service
            .record_purchase(
                &ctx,
                PurchaseRecorded {
                    user_id: user.to_owned(),
                    sku: "CAPS".into(),
                    title: "Capsules".into(),
                    category: "coffee".into(),
                    quantity: 1,
                    unit_price: 500,
                    currency: "RUB".into(),
                    purchased_at: chrono::Utc::now() - chrono::Duration::days(days_ago),
                },
            )
            .await
            .expect("purchase");
    }

    /// For every step between a purchase's append and its reminder's (and the supersede
    /// of the one before, and the reaction's checkpoint), a planner that dies there —
    /// its task aborted while the step's failure is pending — and a new process that
    /// takes over leave exactly one reminder for each user's latest purchase, the
    /// previous one superseded once, and one slot reservation per reminder.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_planner_dying_at_any_step_leaves_exactly_one_reminder_per_purchase() {
        let points: [Option<&'static str>; 5] = [
            None, // the reaction's own fail point: before planning
            Some(steps::RESERVED),
            Some(steps::APPENDED),
            Some(steps::SUPERSEDED),
            Some(steps::BEFORE_CHECKPOINT),
        ];
        for point in points {
            let what = point.unwrap_or("before planning");
            let db = PgTestDb::new().await.expect("test database");
            let read = ReadDb::connect(&db.url()).await.expect("read db");
            // The first purchases, planned by a healthy planner.
            let first = process(&db, &read).await;
            for u in 0..USERS {
                buy(&first, &format!("u{u}"), 40).await;
            }
            let head = db.store.head().await.expect("head");
            runner(db.store.clone(), first)
                .run_until(Some(head))
                .await
                .expect("plan");
            // The second purchases; the planner dies at the step.
            let doomed = process(&db, &read).await;
            for u in 0..USERS {
                buy(&doomed, &format!("u{u}"), 10).await;
            }
            let (fail_steps, fail_point) = (doomed.service.fail_steps(), doomed.fail_point());
            match point {
                Some(step) => fail_steps.arm(step, u32::MAX),
                None => fail_point.arm(u32::MAX),
            }
            let head = db.store.head().await.expect("head");
            let store = db.store.clone();
            let dying =
                tokio::spawn(async move { runner(store, doomed).run_until(Some(head)).await });
            for _ in 0..500 {
                if fail_steps.fired() + fail_point.fired() > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(
                fail_steps.fired() + fail_point.fired() > 0,
                "{what}: never reached"
            );
            dying.abort();
            let _ = dying.await;
            // Another process takes over from the stored checkpoint.
            let heir = process(&db, &read).await;
            runner(db.store.clone(), heir)
                .run_until(Some(head))
                .await
                .expect("heal");

            let events = db
                .store
                .read_all(Position::START, None, 10_000)
                .await
                .expect("read");
            let mut scheduled = BTreeMap::<String, usize>::new();
            let mut superseded = BTreeMap::<String, usize>::new();
            for e in &events {
                let id = e.data.to_value().expect("json")["reminder_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                match e.event_type.as_str() {
                    "ReminderScheduled" => *scheduled.entry(id).or_default() += 1,
                    "ReminderSuperseded" => *superseded.entry(id).or_default() += 1,
                    _ => {}
                }
            }
            assert_eq!(
                scheduled.len(),
                2 * USERS,
                "{what}: a reminder per purchase"
            );
            assert!(scheduled.values().all(|n| *n == 1), "{what}: {scheduled:?}");
            assert_eq!(superseded.len(), USERS, "{what}: the first ones superseded");
            assert!(
                superseded.values().all(|n| *n == 1),
                "{what}: {superseded:?}"
            );
            let reservations: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM eventfold_slot_reservations")
                    .fetch_one(read.pool())
                    .await
                    .expect("count");
            let load: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(load), 0) AS BIGINT) FROM eventfold_slot_loads",
            )
            .fetch_one(read.pool())
            .await
            .expect("sum");
            assert_eq!(
                (reservations, load),
                (2 * USERS as i64, 2 * USERS as i64),
                "{what}"
            );
        }
    }
}

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
use eventfold_projections::{async_trait, lock_ddl, Dialect, Error, FailPoint, Result, Sink};

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
        let mut tx = self.pool.begin().await?;
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
    ) -> ServiceReaction<eventfold_event_log::PgEventStore> {
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
        ServiceReaction::planner(Arc::new(service), read.pool().clone())
    }

    fn runner(
        store: eventfold_event_log::PgEventStore,
        planner: ServiceReaction<eventfold_event_log::PgEventStore>,
    ) -> Runner<eventfold_event_log::PgEventStore, ServiceReaction<eventfold_event_log::PgEventStore>>
    {
        let options = RunnerOptions {
            backoff: Duration::from_millis(20),
            poison: eventfold_projections::PoisonPolicy::Skip,
            ..RunnerOptions::default()
        };
        Runner::new(store, planner, options, StatusBoard::default())
    }

    async fn buy(
        planner: &ServiceReaction<eventfold_event_log::PgEventStore>,
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

    /// A "yes" whose request dies between the reminder's acceptance and its order's
    /// draft (fail point `reorder.accepted`) leaves an accepted reminder with no order;
    /// the order drafter drafts it — once, at the catalog's price — without the speaker
    /// saying "yes" again, and a later "yes" (a resend) drafts no second order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_yes_that_dies_before_its_order_is_drafted_gets_its_order_from_the_drafter() {
        use eventfold_event_schemas::catalogue::PriceChanged;

        let db = PgTestDb::new().await.expect("test database");
        let read = ReadDb::connect(&db.url()).await.expect("read db");
        let planner = process(&db, &read).await;
        let service = planner.service.clone();
        let ctx = |key: &str| CommandContext {
            principal: Principal::service("test"),
            idempotency_key: Some(key.to_owned()),
            request_fingerprint: None,
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: None,
        };
        service
            .set_price(
                &ctx("price"),
                PriceChanged {
                    sku: "CAPS".into(),
                    title: "Capsules".into(),
                    unit_price: 550,
                    currency: "RUB".into(),
                    available: true,
                    delivery_days: 1,
                    changed_at: chrono::Utc::now(),
                },
            )
            .await
            .expect("price");
        buy(&planner, "u0", 40).await;
        buy(&planner, "u0", 10).await;
        let head = db.store.head().await.expect("head");
        runner(db.store.clone(), planner)
            .run_until(Some(head))
            .await
            .expect("plan");
        let events = db
            .store
            .read_all(Position::START, None, 10_000)
            .await
            .expect("read");
        let reminder = events
            .iter()
            .rev()
            .find(|e| e.event_type == "ReminderScheduled")
            .and_then(|e| e.data.to_value().ok())
            .and_then(|v| v["reminder_id"].as_str().map(str::to_owned))
            .and_then(|id| uuid::Uuid::parse_str(&id).ok())
            .expect("a reminder");
        service
            .offer(&ctx("offer"), reminder, None)
            .await
            .expect("offer");

        // The "yes" dies after the acceptance.
        service.fail_steps().arm(steps::ACCEPTED, 1);
        let died = service.accept(&ctx("yes"), reminder).await;
        assert!(
            matches!(died, Err(CommandError::Injected(steps::ACCEPTED))),
            "{died:?}"
        );
        let orders = |events: &[eventfold_event_schemas::RecordedEvent]| {
            events
                .iter()
                .filter(|e| e.event_type == "OrderDrafted")
                .map(|e| e.data.to_value().expect("json"))
                .collect::<Vec<_>>()
        };
        let all = db
            .store
            .read_all(Position::START, None, 10_000)
            .await
            .expect("read");
        assert!(orders(&all).is_empty(), "drafted before the drafter ran");

        let head = db.store.head().await.expect("head");
        let drafter = ServiceReaction::drafter(service.clone(), read.pool().clone());
        Runner::new(
            db.store.clone(),
            drafter,
            RunnerOptions::default(),
            StatusBoard::default(),
        )
        .run_until(Some(head))
        .await
        .expect("draft");
        let all = db
            .store
            .read_all(Position::START, None, 10_000)
            .await
            .expect("read");
        let drafted = orders(&all);
        assert_eq!(drafted.len(), 1, "{drafted:?}");
        assert_eq!(drafted[0]["lines"][0]["unit_price"], 550, "{drafted:?}");

        // The speaker resends the "yes": the same order, no second draft.
        let again = service.accept(&ctx("yes again"), reminder).await;
        assert!(
            matches!(
                again,
                Err(CommandError::Domain(
                    eventfold_domain::DomainError::ReminderAlreadyAccepted(_)
                ))
            ),
            "{again:?}"
        );
        let all = db
            .store
            .read_all(Position::START, None, 10_000)
            .await
            .expect("read");
        assert_eq!(orders(&all).len(), 1);
    }
}

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use eventfold_domain::activity::{Activity, RecordActivation};
use eventfold_domain::catalog::{PriceEntry, SetPrice};
use eventfold_domain::consumables::ConsumablePolicy;
use eventfold_domain::order::{Order, OrderCommand, OrderStatus};
use eventfold_domain::purchases::{PurchaseHistory, RecordPurchase};
use eventfold_domain::reminder::{Reminder, ReminderCommand, ReminderStatus};
use eventfold_domain::slotting::{ActiveWindow, SlotPlanner};
use eventfold_domain::workout::{Workout, WorkoutCommand, WorkoutStatus};
use eventfold_domain::{reorder, Aggregate, DomainError, DomainEvent};
use eventfold_event_log::{EventStore, ReadDirection, STREAM_END};
use eventfold_event_schemas::catalogue::{
    DeviceActivated, OrderLine, PriceChanged, PurchaseRecorded, ReminderScheduled,
};
use eventfold_event_schemas::{Position, RecordedEvent, StreamId};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    CommandContext, CommandError, CommandHandler, CommandOutcome, Principal, Result, SlotBook,
};

/// Where time comes from (tests pin it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Namespace of reminder ids derived from (user, sku, purchase time).
const REMINDER_NAMESPACE: Uuid = Uuid::from_u128(0x7265_6d69_6e64_6572_5f69_645f_6e73_0001);
/// Speaker activations used to learn a user's active hours.
const ACTIVATIONS_FOR_WINDOW: usize = 200;

/// The reminder planned after a user's purchase of a sku at a time.
fn reminder_id_for(user_id: &str, sku: &str, purchased_at: DateTime<Utc>) -> Uuid {
    let name = format!("{user_id}\u{0}{sku}\u{0}{}", purchased_at.timestamp());
    Uuid::new_v5(&REMINDER_NAMESPACE, name.as_bytes())
}

/// What recording a purchase did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PurchaseOutcome {
    /// The purchase history append.
    pub purchase: CommandOutcome,
    /// The reminder planned for it, when the sku is a consumable.
    pub reminder: Option<PlannedReminder>,
}

/// A reminder the planning policy scheduled.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PlannedReminder {
    /// The reminder.
    pub reminder_id: Uuid,
    /// When it is due.
    pub due_at: DateTime<Utc>,
    /// Its slot.
    pub slot: i64,
    /// The append (or the earlier one, if it was already scheduled).
    pub outcome: CommandOutcome,
}

/// What a "yes" did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AcceptOutcome {
    /// The reminder's append.
    pub reminder: CommandOutcome,
    /// The order drafted for it.
    pub order_id: Uuid,
    /// The order's append.
    pub order: CommandOutcome,
    /// Its lines at the refreshed price.
    pub lines: Vec<OrderLine>,
    /// Its total, minor units.
    pub total: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Quoted delivery.
    pub delivery_days: u32,
    /// The price the reminder offered, when the catalog price differs.
    pub repriced_from: Option<i64>,
}

/// The reference domain's commands over an event store.
pub struct CommandService<S> {
    handler: CommandHandler<S>,
    policy: ConsumablePolicy,
    slots: SlotBook,
    clock: Clock,
    planning: Planning,
    fail: crate::FailSteps,
}

/// Who plans a purchase's reminder.
#[derive(Clone, Default)]
pub enum Planning {
    /// The purchase's request, right after the purchase's append (tests, one-off tools).
    #[default]
    Inline,
    /// The reminder planner reaction; the request waits at most `wait` until
    /// `progress` (the reaction's checkpoint) passes the purchase, then answers the
    /// reminder the reaction planned.
    Reaction {
        /// The reaction's checkpoint now.
        progress: Arc<dyn Fn() -> Position + Send + Sync>,
        /// Longest wait.
        wait: std::time::Duration,
    },
}

impl std::fmt::Debug for Planning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Planning::Inline => f.write_str("Inline"),
            Planning::Reaction { wait, .. } => write!(f, "Reaction {{ wait: {wait:?} }}"),
        }
    }
}

impl<S> std::fmt::Debug for CommandService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandService")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

fn stream(category: &str, id: impl std::fmt::Display) -> Result<StreamId> {
    StreamId::from_parts(category, id).map_err(|e| CommandError::InvalidInput(e.to_string()))
}

fn authorize(principal: &Principal, user_id: &str, what: &'static str) -> Result<()> {
    if principal.may_act_for(user_id) {
        Ok(())
    } else {
        Err(CommandError::Forbidden {
            subject: principal.subject.clone(),
            what,
        })
    }
}

impl<S: EventStore> CommandService<S> {
    /// A service with the default policy and slot planner, on the system clock.
    pub fn new(store: S) -> Self {
        Self::with(
            store,
            ConsumablePolicy::default(),
            SlotPlanner::default(),
            Arc::new(Utc::now),
        )
    }

    /// A service with explicit policy, planner and clock.
    pub fn with(store: S, policy: ConsumablePolicy, planner: SlotPlanner, clock: Clock) -> Self {
        Self {
            handler: CommandHandler::new(store),
            policy,
            slots: SlotBook::new(planner),
            clock,
            planning: Planning::Inline,
            fail: crate::FailSteps::default(),
        }
    }

    /// The fail points of this service's multi-step operations (tests arm them).
    pub fn fail_steps(&self) -> crate::FailSteps {
        self.fail.clone()
    }

    /// The same service with reminders planned by `planning`.
    pub fn with_planning(mut self, planning: Planning) -> Self {
        self.planning = planning;
        self
    }

    /// The same service placing reminders with `slots` (e.g. [`SlotBook::shared`]).
    pub fn with_slot_book(mut self, slots: SlotBook) -> Self {
        self.slots = slots;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        self.handler.store()
    }

    /// The slot book used by reminder planning.
    pub fn slots(&self) -> &SlotBook {
        &self.slots
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Records a purchase line; for a consumable, plans the next reminder.
    pub async fn record_purchase(
        &self,
        ctx: &CommandContext,
        purchase: PurchaseRecorded,
    ) -> Result<PurchaseOutcome> {
        authorize(&ctx.principal, &purchase.user_id, "purchase history")?;
        let s = stream("purchases", &purchase.user_id)?;
        let policy = &self.policy;
        let outcome = self
            .handler
            .execute::<PurchaseHistory, _>(&s, ctx, |state| {
                Ok(PurchaseHistory::decide(
                    state,
                    RecordPurchase {
                        purchase: purchase.clone(),
                        policy: policy.clone(),
                    },
                )?)
            })
            .await?;
        let stored_at = outcome.events.first().map(|e| e.stream_version);
        let reminder = match &self.planning {
            Planning::Inline => {
                self.plan_reminder(ctx, &s, &purchase, stored_at, true)
                    .await?
            }
            Planning::Reaction { progress, wait } => {
                // The reaction plans it; the answer waits (bounded) until the reaction
                // has passed this purchase, then reads its plan back.
                let started = std::time::Instant::now();
                while progress() < outcome.consistency_token && started.elapsed() < *wait {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                if progress() < outcome.consistency_token {
                    tracing::warn!(
                        token = %outcome.consistency_token,
                        "the reminder planner has not reached this purchase in time: answered without its reminder"
                    );
                }
                self.plan_reminder(ctx, &s, &purchase, stored_at, false)
                    .await?
            }
        };
        Ok(PurchaseOutcome {
            purchase: outcome,
            reminder,
        })
    }

    /// Reminder planning as a reaction to a stored `PurchaseRecorded` (the process
    /// manager's step): plans what the purchase's request planned, or did not get to
    /// plan because it died between its two appends. Idempotent: the reminder's id and
    /// its event ids are derived from the purchase, so running it again (a redelivered
    /// event, a crash before the reaction's checkpoint) appends nothing.
    pub async fn plan_after(&self, record: &RecordedEvent) -> Result<Option<PlannedReminder>> {
        let Ok(Some(DomainEvent::PurchaseRecorded(purchase))) = DomainEvent::from_recorded(record)
        else {
            return Ok(None);
        };
        let ctx = reaction_context("reminder-planner", record);
        let stored_at = Some(record.stream_version);
        self.plan_reminder(&ctx, &record.stream_id, &purchase, stored_at, true)
            .await
    }

    /// The reminder planning policy: due = last purchase + interval, inside the user's
    /// active hours, in the least-loaded slot with room.
    ///
    /// `stored_at`: the stream version of the purchase as the log holds it.
    /// With `write` false nothing is planned: the reminder the planner stored for the
    /// purchase, if any, is read back.
    async fn plan_reminder(
        &self,
        ctx: &CommandContext,
        purchases: &StreamId,
        requested: &PurchaseRecorded,
        stored_at: Option<i64>,
        write: bool,
    ) -> Result<Option<PlannedReminder>> {
        // Plan from the purchase as the log holds it, not as this request says: a retry
        // (same Idempotency-Key), or the loser of two racing attempts, carries its own
        // server-stamped `purchased_at`; the stored one is the first attempt's. So every
        // attempt finds (or, after a crash between the two appends, makes) the same
        // reminder and answers what the first attempt answered.
        let (history, stored) = self
            .handler
            .state_and_event_at::<PurchaseHistory>(purchases, stored_at)
            .await?;
        let purchase = match &stored {
            Some(DomainEvent::PurchaseRecorded(p)) => p,
            _ => requested,
        };
        let Some(sku) = history.skus.get(&purchase.sku) else {
            return Ok(None);
        };
        let (true, Some(interval)) = (sku.consumable, sku.interval_days) else {
            return Ok(None);
        };
        let last = sku
            .purchased_at
            .iter()
            .max()
            .copied()
            .unwrap_or(purchase.purchased_at);
        if last != purchase.purchased_at {
            // An older purchase arrived late: the reminder follows the latest one.
            return Ok(None);
        }
        let reminder_id = reminder_id_for(&purchase.user_id, &purchase.sku, last);
        let s = stream("reminder", reminder_id)?;
        let loaded_reminder = self.handler.load::<Reminder>(&s).await?;
        let planned = loaded_reminder.state.plan;
        if !write {
            // Only read what the planner (the reaction) stored.
            return Ok(planned.and_then(|plan| {
                let record = loaded_reminder
                    .records
                    .iter()
                    .find(|r| r.event_type == "ReminderScheduled")?;
                Some(PlannedReminder {
                    reminder_id,
                    due_at: plan.due_at,
                    slot: plan.slot,
                    outcome: CommandOutcome {
                        stream_id: s.to_string(),
                        events: vec![crate::RecordedSummary {
                            event_type: record.event_type.clone(),
                            stream_version: record.stream_version,
                        }],
                        consistency_token: record.global_position,
                        replayed: false,
                    },
                })
            }));
        }
        let (due_at, slot) = match &planned {
            // Planned already (a retry, or another process): answer the stored plan and
            // reserve nothing again.
            Some(plan) => (plan.due_at, plan.slot),
            None => {
                let earliest =
                    eventfold_domain::time::plus(last, Duration::days(i64::from(interval)))
                        .max(self.now());
                let window = self.active_window(&purchase.user_id).await?;
                let placement = self
                    .slots
                    .place(self.store(), reminder_id, earliest, &window)
                    .await?;
                if placement.overflow {
                    tracing::warn!(
                        slot = placement.slot,
                        "every slot of the window is full: capacity exceeded"
                    );
                }
                self.fail.trip(crate::steps::RESERVED)?;
                (placement.due_at, placement.slot)
            }
        };
        let plan = ReminderScheduled {
            reminder_id,
            user_id: purchase.user_id.clone(),
            sku: purchase.sku.clone(),
            title: sku.title.clone(),
            quantity: sku.last_quantity,
            last_unit_price: sku.last_unit_price,
            currency: sku.currency.clone(),
            due_at,
            slot,
        };
        let planning = CommandContext {
            idempotency_key: Some(format!("schedule-{reminder_id}")),
            request_fingerprint: None,
            ..ctx.clone()
        };
        let outcome = self
            .handler
            .execute::<Reminder, _>(&s, &planning, |state| match state.status {
                // Planned already (a retried purchase): nothing to do.
                ReminderStatus::None => Ok(Reminder::decide(
                    state,
                    ReminderCommand::Schedule(plan.clone()),
                )?),
                _ => Ok(Vec::new()),
            })
            .await?;
        self.fail.trip(crate::steps::APPENDED)?;
        // Two attempts of one purchase racing: the one whose plan did not land (its
        // append replayed, or re-appended the same event id, a no-op) answers the plan
        // that did.
        let (due_at, slot) = if planned.is_none() {
            match self.handler.state::<Reminder>(&s).await?.plan {
                Some(plan) => (plan.due_at, plan.slot),
                None => (due_at, slot),
            }
        } else {
            (due_at, slot)
        };
        // The reminder planned after the previous purchase is obsolete now.
        let previous = sku.purchased_at.iter().filter(|t| **t < last).max();
        if let Some(previous) = previous {
            let old = reminder_id_for(&purchase.user_id, &purchase.sku, *previous);
            let now = self.now();
            let s = stream("reminder", old)?;
            self.handler
                .execute::<Reminder, _>(&s, &planning, |state| match state.status {
                    ReminderStatus::Scheduled
                    | ReminderStatus::Offered
                    | ReminderStatus::Snoozed(_) => Ok(Reminder::decide(
                        state,
                        ReminderCommand::Supersede {
                            by: reminder_id,
                            at: now,
                        },
                    )?),
                    _ => Ok(Vec::new()),
                })
                .await?;
        }
        self.fail.trip(crate::steps::SUPERSEDED)?;
        Ok(Some(PlannedReminder {
            reminder_id,
            due_at,
            slot,
            outcome,
        }))
    }

    async fn active_window(&self, user_id: &str) -> Result<ActiveWindow> {
        let s = stream("activity", user_id)?;
        let records = self
            .store()
            .read_stream(
                &s,
                ReadDirection::Backwards,
                STREAM_END,
                ACTIVATIONS_FOR_WINDOW,
            )
            .await?;
        let mut activations: Vec<(DateTime<Utc>, i32)> = records
            .iter()
            .filter_map(|r| match DomainEvent::from_recorded(r) {
                Ok(Some(DomainEvent::DeviceActivated(a))) => {
                    Some((a.activated_at, a.utc_offset_minutes))
                }
                _ => None,
            })
            .collect();
        activations.reverse();
        Ok(ActiveWindow::learn(&activations, 3, 3))
    }

    /// A speaker woke up for a user. Stream `activity-{user_id}`: the user's activity
    /// history, from which active hours are learnt.
    pub async fn record_activation(
        &self,
        ctx: &CommandContext,
        activation: DeviceActivated,
    ) -> Result<CommandOutcome> {
        authorize(&ctx.principal, &activation.user_id, "device")?;
        let s = stream("activity", &activation.user_id)?;
        self.handler
            .execute::<Activity, _>(&s, ctx, |state| {
                Ok(Activity::decide(
                    state,
                    RecordActivation(activation.clone()),
                )?)
            })
            .await
    }

    async fn reminder_command(
        &self,
        ctx: &CommandContext,
        reminder_id: Uuid,
        command: impl Fn(DateTime<Utc>) -> ReminderCommand,
    ) -> Result<CommandOutcome> {
        let s = stream("reminder", reminder_id)?;
        let now = self.now();
        self.handler
            .execute::<Reminder, _>(&s, ctx, |state| {
                let plan = state.plan.as_ref().ok_or(DomainError::ReminderNotFound)?;
                authorize(&ctx.principal, &plan.user_id, "reminder")?;
                Ok(Reminder::decide(state, command(now))?)
            })
            .await
    }

    /// The speaker offers the re-order.
    pub async fn offer(
        &self,
        ctx: &CommandContext,
        reminder_id: Uuid,
        device_id: Option<String>,
    ) -> Result<CommandOutcome> {
        self.reminder_command(ctx, reminder_id, |at| ReminderCommand::Offer {
            device_id: device_id.clone(),
            at,
        })
        .await
    }

    /// The user says no.
    pub async fn decline(&self, ctx: &CommandContext, reminder_id: Uuid) -> Result<CommandOutcome> {
        self.reminder_command(ctx, reminder_id, |at| ReminderCommand::Decline { at })
            .await
    }

    /// The user says later.
    pub async fn snooze(
        &self,
        ctx: &CommandContext,
        reminder_id: Uuid,
        until: DateTime<Utc>,
    ) -> Result<CommandOutcome> {
        self.reminder_command(ctx, reminder_id, |at| ReminderCommand::Snooze { until, at })
            .await
    }

    async fn current_price(&self, sku: &str) -> Result<Option<PriceChanged>> {
        let s = stream("price", sku)?;
        Ok(self.handler.state::<PriceEntry>(&s).await?.current)
    }

    /// The user says yes: the reminder is accepted and an order drafted at the catalog's
    /// current price. An unavailable or unknown sku is refused with the reason.
    pub async fn accept(&self, ctx: &CommandContext, reminder_id: Uuid) -> Result<AcceptOutcome> {
        let s = stream("reminder", reminder_id)?;
        let before = self.handler.state::<Reminder>(&s).await?;
        let plan = before.plan.clone().ok_or(DomainError::ReminderNotFound)?;
        authorize(&ctx.principal, &plan.user_id, "reminder")?;
        let price = self.current_price(&plan.sku).await?;
        let order_id = reorder::order_id_for(reminder_id);
        let now = self.now();
        let accepted = self
            .handler
            .execute::<Reminder, _>(&s, ctx, |state| {
                Ok(reorder::accept(state, price.as_ref(), order_id, now)?.reminder_events)
            })
            .await;
        let reminder = match accepted {
            Ok(outcome) => outcome,
            Err(CommandError::Domain(DomainError::ReminderAlreadyAccepted(order_id))) => {
                // Someone else's "yes" won. If it crashed before drafting, finish its work.
                self.ensure_order(ctx, &plan, price.as_ref(), order_id, now)
                    .await?;
                return Err(DomainError::ReminderAlreadyAccepted(order_id).into());
            }
            Err(other) => return Err(other),
        };
        // A crash here leaves an accepted reminder without its order: the order drafter
        // reaction (`draft_after`) drafts it.
        self.fail.trip(crate::steps::ACCEPTED)?;
        let order = self
            .ensure_order(ctx, &plan, price.as_ref(), order_id, now)
            .await?;
        let draft = self
            .handler
            .state::<Order>(&stream("order", order_id)?)
            .await?
            .draft
            .ok_or(DomainError::OrderNotFound)?;
        Ok(AcceptOutcome {
            reminder,
            order_id,
            order,
            lines: draft.lines,
            total: draft.total,
            currency: draft.currency,
            delivery_days: draft.delivery_days,
            repriced_from: draft.repriced_from,
        })
    }

    /// Order drafting as a reaction to a stored `ReorderAccepted` (the process manager's
    /// step): drafts the order the "yes" drafted, or did not get to draft because its
    /// request died between its two appends (the acceptance, then the order). Idempotent:
    /// the order's id comes from the reminder, and an order already drafted is left as it
    /// is. Drafted as the request drafts it: at the catalog's price now, dated when the
    /// "yes" was accepted.
    pub async fn draft_after(&self, record: &RecordedEvent) -> Result<()> {
        let Ok(Some(DomainEvent::ReorderAccepted(accepted))) = DomainEvent::from_recorded(record)
        else {
            return Ok(());
        };
        let ctx = reaction_context("order-drafter", record);
        let reminder = self
            .handler
            .state::<Reminder>(&stream("reminder", accepted.reminder_id)?)
            .await?;
        let plan = reminder.plan.ok_or(DomainError::ReminderNotFound)?;
        let price = self.current_price(&plan.sku).await?;
        self.ensure_order(
            &ctx,
            &plan,
            price.as_ref(),
            accepted.order_id,
            accepted.accepted_at,
        )
        .await?;
        Ok(())
    }

    /// Drafts the order of an accepted reminder unless it exists.
    async fn ensure_order(
        &self,
        ctx: &CommandContext,
        plan: &ReminderScheduled,
        price: Option<&PriceChanged>,
        order_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<CommandOutcome> {
        let s = stream("order", order_id)?;
        let drafting = CommandContext {
            idempotency_key: Some(format!("draft-{order_id}")),
            request_fingerprint: None,
            ..ctx.clone()
        };
        self.handler
            .execute::<Order, _>(&s, &drafting, |state| {
                if state.status != OrderStatus::None {
                    return Ok(Vec::new());
                }
                let draft = reorder::draft_for(plan, price, order_id, now)?;
                Ok(Order::decide(state, draft)?)
            })
            .await
    }

    async fn order_command(
        &self,
        ctx: &CommandContext,
        order_id: Uuid,
        command: OrderCommand,
    ) -> Result<CommandOutcome> {
        let s = stream("order", order_id)?;
        self.handler
            .execute::<Order, _>(&s, ctx, |state| {
                let draft = state.draft.as_ref().ok_or(DomainError::OrderNotFound)?;
                authorize(&ctx.principal, &draft.user_id, "order")?;
                Ok(Order::decide(state, command.clone())?)
            })
            .await
    }

    /// The final confirmation: the order is placed and payment requested.
    pub async fn confirm_order(
        &self,
        ctx: &CommandContext,
        order_id: Uuid,
    ) -> Result<CommandOutcome> {
        let at = self.now();
        self.order_command(ctx, order_id, OrderCommand::Confirm { at })
            .await
    }

    /// Cancels an order before payment.
    pub async fn cancel_order(
        &self,
        ctx: &CommandContext,
        order_id: Uuid,
        reason: String,
    ) -> Result<CommandOutcome> {
        let at = self.now();
        self.order_command(ctx, order_id, OrderCommand::Cancel { reason, at })
            .await
    }

    /// Starts a workout.
    pub async fn start_workout(
        &self,
        ctx: &CommandContext,
        workout_id: Uuid,
        user_id: String,
        sport: String,
        goal_distance_m: Option<f64>,
    ) -> Result<CommandOutcome> {
        authorize(&ctx.principal, &user_id, "workout")?;
        let s = stream("workout", workout_id)?;
        let at = self.now();
        let command = WorkoutCommand::Start {
            workout_id,
            user_id,
            sport,
            goal_distance_m,
            at,
        };
        self.handler
            .execute::<Workout, _>(&s, ctx, |state| {
                Ok(Workout::decide(state, command.clone())?)
            })
            .await
    }

    /// Any other workout command; `command` gets the current time.
    pub async fn workout_command(
        &self,
        ctx: &CommandContext,
        workout_id: Uuid,
        command: impl Fn(DateTime<Utc>) -> WorkoutCommand,
    ) -> Result<CommandOutcome> {
        let s = stream("workout", workout_id)?;
        let at = self.now();
        self.handler
            .execute::<Workout, _>(&s, ctx, |state| {
                if state.status == WorkoutStatus::None {
                    return Err(DomainError::WorkoutNotFound.into());
                }
                authorize(&ctx.principal, &state.user_id, "workout")?;
                // Server time: a request that lost a race to a later one is still valid,
                // so keep the stream's time monotonic instead of calling it time travel.
                let at = state.last_at.map_or(at, |last| last.max(at));
                Ok(Workout::decide(state, command(at))?)
            })
            .await
    }

    /// Sets a sku's catalog price (services only).
    pub async fn set_price(
        &self,
        ctx: &CommandContext,
        price: PriceChanged,
    ) -> Result<CommandOutcome> {
        if ctx.principal.role != crate::Role::Service {
            return Err(CommandError::Forbidden {
                subject: ctx.principal.subject.clone(),
                what: "catalog",
            });
        }
        let s = stream("price", &price.sku)?;
        self.handler
            .execute::<PriceEntry, _>(&s, ctx, |state| {
                Ok(PriceEntry::decide(
                    state,
                    SetPrice {
                        price: price.clone(),
                    },
                )?)
            })
            .await
    }
}

/// The context of a reaction's step on `record`: the service `who`, in the correlation
/// of the event it follows, caused by it.
fn reaction_context(who: &str, record: &RecordedEvent) -> CommandContext {
    CommandContext {
        principal: Principal::service(who),
        idempotency_key: None,
        request_fingerprint: None,
        correlation_id: record.metadata.correlation_id.unwrap_or_else(Uuid::new_v4),
        causation_id: Some(record.event_id),
    }
}

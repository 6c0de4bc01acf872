use std::sync::Arc;

use chrono::{DateTime, Utc};
use eventfold_domain::activity::{Activity, RecordActivation};
use eventfold_domain::catalog::{PriceEntry, SetPrice};
use eventfold_domain::consumables::ConsumablePolicy;
use eventfold_domain::order::{Order, OrderCommand, OrderStatus};
use eventfold_domain::reminder::{Reminder, ReminderCommand};
use eventfold_domain::slotting::SlotPlanner;
use eventfold_domain::workout::{Workout, WorkoutCommand, WorkoutStatus};
use eventfold_domain::{reorder, Aggregate, DomainError, DomainEvent};
use eventfold_event_log::EventStore;
use eventfold_event_schemas::catalogue::{DeviceActivated, OrderLine, PriceChanged};
use eventfold_event_schemas::{Position, RecordedEvent, StreamId};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    CommandContext, CommandError, CommandHandler, CommandOutcome, Principal, Result, SlotBook,
};

mod planning;

pub use planning::{PlannedReminder, PurchaseOutcome};

/// Where time comes from (tests pin it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

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
    /// Position of the last event of the answer (the acceptance's or the order's,
    /// whichever is later): pass it back to a query to read your writes. The
    /// `X-Consistency-Token` header.
    pub consistency_token: Position,
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
    /// current price. An unavailable or unknown sku, or an order the order's own rules
    /// refuse, is refused with the reason — and nothing is stored.
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
                self.ensure_order(ctx, reminder_id).await?;
                return Err(DomainError::ReminderAlreadyAccepted(order_id).into());
            }
            Err(other) => return Err(other),
        };
        // A crash here leaves an accepted reminder without its order: the order drafter
        // reaction (`draft_after`) drafts it.
        self.fail.trip(crate::steps::ACCEPTED)?;
        let order = self.ensure_order(ctx, reminder_id).await?;
        let draft = self
            .handler
            .state::<Order>(&stream("order", order_id)?)
            .await?
            .draft
            .ok_or(DomainError::OrderNotFound)?;
        Ok(AcceptOutcome {
            consistency_token: order.consistency_token.max(reminder.consistency_token),
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
    /// is.
    pub async fn draft_after(&self, record: &RecordedEvent) -> Result<()> {
        let Ok(Some(DomainEvent::ReorderAccepted(accepted))) = DomainEvent::from_recorded(record)
        else {
            return Ok(());
        };
        let ctx = reaction_context("order-drafter", record);
        self.ensure_order(&ctx, accepted.reminder_id).await?;
        Ok(())
    }

    /// Drafts the order of an accepted reminder unless it exists: the order the
    /// acceptance recorded ([`reorder::draft_after`]), dated when the "yes" was given,
    /// whoever drafts it — the request, a losing racer, or the order drafter.
    async fn ensure_order(
        &self,
        ctx: &CommandContext,
        reminder_id: Uuid,
    ) -> Result<CommandOutcome> {
        let reminder = self
            .handler
            .state::<Reminder>(&stream("reminder", reminder_id)?)
            .await?;
        let (Some(plan), Some(accepted)) = (reminder.plan, reminder.accepted) else {
            return Err(DomainError::ReminderNotFound.into());
        };
        // Only an acceptance stored before v2 (no quote) needs the catalog.
        let price = match accepted.quote {
            Some(_) => None,
            None => self.current_price(&plan.sku).await?,
        };
        let draft = reorder::draft_after(&plan, &accepted, price.as_ref());
        let s = stream("order", accepted.order_id)?;
        let drafting = CommandContext {
            idempotency_key: Some(format!("draft-{}", accepted.order_id)),
            request_fingerprint: None,
            ..ctx.clone()
        };
        self.handler
            .execute::<Order, _>(&s, &drafting, |state| {
                if state.status != OrderStatus::None {
                    return Ok(Vec::new());
                }
                Ok(Order::decide(state, draft.clone()?)?)
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

    /// Sets a sku's catalog price (services only), as of `price.changed_at`: a time
    /// before the sku's current price is refused (`TimeTravel`) — the caller said when.
    pub async fn set_price(
        &self,
        ctx: &CommandContext,
        price: PriceChanged,
    ) -> Result<CommandOutcome> {
        self.price_command(ctx, price, false).await
    }

    /// Sets a sku's catalog price as of now (services only): `price.changed_at` is
    /// stamped by the server, and never before the sku's current price. Two prices set
    /// at once each take a time before either is stored; the one stored second may hold
    /// the earlier time (or another process's clock may run a little ahead): it is
    /// still the newer price, so the sku's time moves forward instead of the request
    /// hearing 422 `time_travel` for the server's own clocks.
    pub async fn set_price_now(
        &self,
        ctx: &CommandContext,
        price: PriceChanged,
    ) -> Result<CommandOutcome> {
        let now = self.now();
        self.price_command(
            ctx,
            PriceChanged {
                changed_at: now,
                ..price
            },
            true,
        )
        .await
    }

    async fn price_command(
        &self,
        ctx: &CommandContext,
        price: PriceChanged,
        stamped: bool,
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
                let mut price = price.clone();
                if let (true, Some(current)) = (stamped, &state.current) {
                    price.changed_at = price.changed_at.max(current.changed_at);
                }
                Ok(PriceEntry::decide(state, SetPrice { price })?)
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

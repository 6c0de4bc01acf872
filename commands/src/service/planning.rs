//! Purchases and the reminder planning that follows them: due = last purchase +
//! interval, inside the user's active hours, in the least-loaded slot with room; the
//! reminder of the purchase before superseded. Run inline by the purchase's request or
//! by the planner reaction (the process manager), idempotently either way.

use chrono::{DateTime, Duration, Utc};
use eventfold_domain::purchases::{PurchaseHistory, RecordPurchase};
use eventfold_domain::reminder::{Reminder, ReminderCommand, ReminderStatus};
use eventfold_domain::slotting::ActiveWindow;
use eventfold_domain::{Aggregate, DomainEvent};
use eventfold_event_log::{EventStore, ReadDirection, STREAM_END};
use eventfold_event_schemas::catalogue::{PurchaseRecorded, ReminderScheduled};
use eventfold_event_schemas::{Position, RecordedEvent, StreamId};
use serde::Serialize;
use uuid::Uuid;

use super::{authorize, reaction_context, stream, CommandService, Planning};
use crate::{CommandContext, CommandOutcome, Result};

/// Namespace of reminder ids derived from (user, sku, purchase time).
const REMINDER_NAMESPACE: Uuid = Uuid::from_u128(0x7265_6d69_6e64_6572_5f69_645f_6e73_0001);
/// Speaker activations used to learn a user's active hours.
const ACTIVATIONS_FOR_WINDOW: usize = 200;

/// How many earlier purchases the planner looks through for the reminder it
/// supersedes.
const PREVIOUS_REMINDER_LOOKUPS: usize = 64;

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
    /// Position of the last event of the answer (the reminder's, when there is one):
    /// pass it back to a query to read your writes. The `X-Consistency-Token` header.
    pub consistency_token: Position,
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

impl<S: EventStore> CommandService<S> {
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
        let consistency_token = reminder.as_ref().map_or(outcome.consistency_token, |r| {
            r.outcome.consistency_token.max(outcome.consistency_token)
        });
        Ok(PurchaseOutcome {
            purchase: outcome,
            reminder,
            consistency_token,
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
        let (history, stored, now) = self
            .handler
            .state_and_event_at::<PurchaseHistory>(purchases, stored_at, |e| {
                matches!(e, DomainEvent::PurchaseRecorded(_))
            })
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
        // The answer is decided as of the purchase (above); what is written follows the
        // log as it is now: a purchase whose step runs after a later purchase's (racing
        // requests, a planner taken over mid-step) plans nothing — its reminder would
        // stay open beside the later one's, superseded by nobody. What was stored for
        // it is still answered.
        let overtaken = now
            .as_ref()
            .and_then(|now| now.skus.get(&purchase.sku))
            .and_then(|sku| sku.purchased_at.iter().max())
            .is_some_and(|latest| {
                *latest > last
                    && reminder_id_for(&purchase.user_id, &purchase.sku, *latest) != reminder_id
            });
        let s = stream("reminder", reminder_id)?;
        let loaded_reminder = self.handler.load::<Reminder>(&s).await?;
        let planned = loaded_reminder.state.plan;
        // (Overtaken but planned: this step died between its reminder and the
        // supersede of the one before, and runs again — it still supersedes.)
        if !write || (overtaken && planned.is_none()) {
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
        // The reminder planned before this one is obsolete now: the newest reminder of
        // an earlier purchase of the sku. Purchases that planned none (overtaken by a
        // later purchase before their step ran, older ones arriving late) are walked
        // past: before, only the previous purchase's reminder was looked at, and when
        // that purchase had planned none the one before it stayed open beside this one.
        // Each reminder superseded the one before it, so only the newest can be open.
        // Purchases within one second share their reminder (its id comes from the
        // second), and a reminder never supersedes itself.
        let mut earlier: Vec<DateTime<Utc>> = sku
            .purchased_at
            .iter()
            .filter(|t| **t < last)
            .copied()
            .collect();
        earlier.sort_unstable_by(|a, b| b.cmp(a));
        let mut looked_at = reminder_id;
        // (Bounded: the first reminder of a sku found consumable after many purchases
        // would otherwise look at each of them, none of which planned one.)
        for at in earlier.into_iter().take(PREVIOUS_REMINDER_LOOKUPS) {
            let old = reminder_id_for(&purchase.user_id, &purchase.sku, at);
            if old == looked_at {
                continue;
            }
            looked_at = old;
            let s = stream("reminder", old)?;
            let found = self.handler.state::<Reminder>(&s).await?;
            if found.plan.is_none() {
                continue;
            }
            let now = self.now();
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
            break;
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
}

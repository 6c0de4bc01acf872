//! The `Reminder` aggregate. Stream `reminder-{reminder_id}`.

use chrono::{DateTime, Utc};
use eventfold_event_schemas::catalogue::{
    OrderQuote, ReminderDeclined, ReminderOffered, ReminderScheduled, ReminderSnoozed,
    ReminderSuperseded, ReorderAccepted,
};
use uuid::Uuid;

use crate::{Aggregate, DomainError, DomainEvent};

/// Where a reminder is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReminderStatus {
    /// No such reminder.
    #[default]
    None,
    /// Planned, not yet offered.
    Scheduled,
    /// Offered, waiting for the answer.
    Offered,
    /// The user said yes; the order it created.
    Accepted(Uuid),
    /// The user said no.
    Declined,
    /// The user said later, until then.
    Snoozed(DateTime<Utc>),
    /// Replaced by a newer reminder.
    Superseded(Uuid),
}

/// What decisions need to know about a reminder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReminderState {
    /// Status.
    pub status: ReminderStatus,
    /// The plan it was scheduled with.
    pub plan: Option<ReminderScheduled>,
    /// The "yes", once given: its order and what it accepted.
    pub accepted: Option<ReorderAccepted>,
}

/// What the voice assistant (or the planner) can do with a reminder.
#[derive(Debug, Clone, PartialEq)]
pub enum ReminderCommand {
    /// Plan a reminder (from the reminder planning policy).
    Schedule(ReminderScheduled),
    /// The speaker offers the re-order.
    Offer {
        /// The speaker.
        device_id: Option<String>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The user says yes; `order_id` is the order to draft.
    Accept {
        /// The order to draft.
        order_id: Uuid,
        /// What is accepted: the order to draft, checked as an order already
        /// ([`crate::reorder::accept`] builds it).
        quote: OrderQuote,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The user says no.
    Decline {
        /// Now.
        at: DateTime<Utc>,
    },
    /// The user says later.
    Snooze {
        /// Offer again from then.
        until: DateTime<Utc>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// A newer purchase planned reminder `by`: this one is obsolete.
    Supersede {
        /// The replacement.
        by: Uuid,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// The reminder aggregate.
#[derive(Debug)]
pub struct Reminder;

/// The error for acting on a reminder that is already closed or absent.
fn closed(status: ReminderStatus) -> Option<DomainError> {
    match status {
        ReminderStatus::None => Some(DomainError::ReminderNotFound),
        ReminderStatus::Accepted(order_id) => Some(DomainError::ReminderAlreadyAccepted(order_id)),
        ReminderStatus::Declined => Some(DomainError::ReminderAlreadyDeclined),
        ReminderStatus::Superseded(by) => Some(DomainError::ReminderSuperseded(by)),
        _ => None,
    }
}

/// Answers (accept, decline, snooze) need a pending offer.
pub(crate) fn require_offered(status: ReminderStatus) -> Result<(), DomainError> {
    if let Some(error) = closed(status) {
        return Err(error);
    }
    match status {
        ReminderStatus::Offered => Ok(()),
        _ => Err(DomainError::ReminderNotOffered),
    }
}

impl Aggregate for Reminder {
    type State = ReminderState;
    type Command = ReminderCommand;

    fn decide(
        state: &ReminderState,
        command: ReminderCommand,
    ) -> Result<Vec<DomainEvent>, DomainError> {
        let reminder_id = state
            .plan
            .as_ref()
            .map(|p| p.reminder_id)
            .unwrap_or_default();
        let user_id = state
            .plan
            .as_ref()
            .map(|p| p.user_id.clone())
            .unwrap_or_default();
        let event: DomainEvent = match command {
            ReminderCommand::Schedule(plan) => {
                if state.status != ReminderStatus::None {
                    return Err(DomainError::ReminderAlreadyScheduled(reminder_id));
                }
                plan.into()
            }
            ReminderCommand::Offer { device_id, at } => {
                if let Some(error) = closed(state.status) {
                    return Err(error);
                }
                if let ReminderStatus::Snoozed(until) = state.status {
                    if at < until {
                        return Err(DomainError::ReminderSnoozed(until));
                    }
                }
                ReminderOffered {
                    reminder_id,
                    user_id,
                    device_id,
                    offered_at: at,
                }
                .into()
            }
            ReminderCommand::Accept {
                order_id,
                quote,
                at,
            } => {
                require_offered(state.status)?;
                ReorderAccepted {
                    reminder_id,
                    user_id,
                    order_id,
                    accepted_at: at,
                    quote: Some(quote),
                }
                .into()
            }
            ReminderCommand::Decline { at } => {
                require_offered(state.status)?;
                ReminderDeclined {
                    reminder_id,
                    user_id,
                    declined_at: at,
                }
                .into()
            }
            ReminderCommand::Snooze { until, at } => {
                require_offered(state.status)?;
                if until <= at {
                    return Err(DomainError::SnoozeNotInFuture);
                }
                ReminderSnoozed {
                    reminder_id,
                    user_id,
                    until,
                    snoozed_at: at,
                }
                .into()
            }
            ReminderCommand::Supersede { by, at } => {
                if let Some(error) = closed(state.status) {
                    return Err(error);
                }
                ReminderSuperseded {
                    reminder_id,
                    user_id,
                    by,
                    superseded_at: at,
                }
                .into()
            }
        };
        Ok(vec![event])
    }

    fn evolve(mut state: ReminderState, event: &DomainEvent) -> ReminderState {
        match event {
            DomainEvent::ReminderScheduled(e) => {
                state.status = ReminderStatus::Scheduled;
                state.plan = Some(e.clone());
            }
            DomainEvent::ReminderOffered(_) => state.status = ReminderStatus::Offered,
            DomainEvent::ReorderAccepted(e) => {
                state.status = ReminderStatus::Accepted(e.order_id);
                state.accepted = Some(e.clone());
            }
            DomainEvent::ReminderDeclined(_) => state.status = ReminderStatus::Declined,
            DomainEvent::ReminderSnoozed(e) => state.status = ReminderStatus::Snoozed(e.until),
            DomainEvent::ReminderSuperseded(e) => state.status = ReminderStatus::Superseded(e.by),
            _ => {}
        }
        state
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::testing::given;

    pub(crate) fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
            .single()
            .expect("time")
            + Duration::hours(h)
    }

    pub(crate) fn rid() -> Uuid {
        Uuid::from_u128(0xabc)
    }

    pub(crate) fn scheduled() -> DomainEvent {
        ReminderScheduled {
            reminder_id: rid(),
            user_id: "u1".into(),
            sku: "SKU-CAPS".into(),
            title: "Capsules".into(),
            quantity: 2,
            last_unit_price: 1000,
            currency: "RUB".into(),
            due_at: t(18),
            slot: 1,
        }
        .into()
    }

    pub(crate) fn offered() -> DomainEvent {
        ReminderOffered {
            reminder_id: rid(),
            user_id: "u1".into(),
            device_id: Some("spk".into()),
            offered_at: t(18),
        }
        .into()
    }

    fn accepted() -> DomainEvent {
        ReorderAccepted {
            reminder_id: rid(),
            user_id: "u1".into(),
            order_id: Uuid::from_u128(1),
            accepted_at: t(18),
            quote: Some(quote()),
        }
        .into()
    }

    pub(crate) fn quote() -> OrderQuote {
        OrderQuote {
            lines: vec![eventfold_event_schemas::catalogue::OrderLine {
                sku: "SKU-CAPS".into(),
                title: "Capsules".into(),
                quantity: 2,
                unit_price: 1000,
            }],
            currency: "RUB".into(),
            delivery_days: 2,
            repriced_from: None,
        }
    }

    fn declined() -> DomainEvent {
        ReminderDeclined {
            reminder_id: rid(),
            user_id: "u1".into(),
            declined_at: t(18),
        }
        .into()
    }

    fn snoozed() -> DomainEvent {
        ReminderSnoozed {
            reminder_id: rid(),
            user_id: "u1".into(),
            until: t(20),
            snoozed_at: t(18),
        }
        .into()
    }

    fn accept() -> ReminderCommand {
        ReminderCommand::Accept {
            order_id: Uuid::from_u128(1),
            quote: quote(),
            at: t(18),
        }
    }

    #[test]
    fn schedule_plans_once() {
        let DomainEvent::ReminderScheduled(plan) = scheduled() else {
            unreachable!()
        };
        given::<Reminder>([])
            .when(ReminderCommand::Schedule(plan.clone()))
            .then([scheduled()]);
        given::<Reminder>([scheduled()])
            .when(ReminderCommand::Schedule(plan))
            .then_err(DomainError::ReminderAlreadyScheduled(rid()));
    }

    #[test]
    fn offer_works_when_scheduled_offered_or_snooze_ended() {
        let offer = |h| ReminderCommand::Offer {
            device_id: Some("spk".into()),
            at: t(h),
        };
        given::<Reminder>([scheduled()])
            .when(offer(18))
            .then([offered()]);
        given::<Reminder>([scheduled(), offered()])
            .when(offer(18))
            .then([offered()]);
        given::<Reminder>([scheduled(), offered(), snoozed()])
            .when(offer(19))
            .then_err(DomainError::ReminderSnoozed(t(20)));
        assert!(given::<Reminder>([scheduled(), offered(), snoozed()])
            .when(offer(21))
            .outcome()
            .is_ok());
        given::<Reminder>([])
            .when(offer(18))
            .then_err(DomainError::ReminderNotFound);
        given::<Reminder>([scheduled(), offered(), accepted()])
            .when(offer(18))
            .then_err(DomainError::ReminderAlreadyAccepted(Uuid::from_u128(1)));
        given::<Reminder>([scheduled(), offered(), declined()])
            .when(offer(18))
            .then_err(DomainError::ReminderAlreadyDeclined);
    }

    #[test]
    fn accept_needs_a_pending_offer() {
        given::<Reminder>([scheduled(), offered()])
            .when(accept())
            .then([accepted()]);
        given::<Reminder>([scheduled()])
            .when(accept())
            .then_err(DomainError::ReminderNotOffered);
        given::<Reminder>([scheduled(), offered(), snoozed()])
            .when(accept())
            .then_err(DomainError::ReminderNotOffered);
        given::<Reminder>([scheduled(), offered(), accepted()])
            .when(accept())
            .then_err(DomainError::ReminderAlreadyAccepted(Uuid::from_u128(1)));
        given::<Reminder>([scheduled(), offered(), declined()])
            .when(accept())
            .then_err(DomainError::ReminderAlreadyDeclined);
        given::<Reminder>([])
            .when(accept())
            .then_err(DomainError::ReminderNotFound);
    }

    #[test]
    fn decline_needs_a_pending_offer() {
        let decline = || ReminderCommand::Decline { at: t(18) };
        given::<Reminder>([scheduled(), offered()])
            .when(decline())
            .then([declined()]);
        given::<Reminder>([scheduled()])
            .when(decline())
            .then_err(DomainError::ReminderNotOffered);
        given::<Reminder>([scheduled(), offered(), declined()])
            .when(decline())
            .then_err(DomainError::ReminderAlreadyDeclined);
        given::<Reminder>([scheduled(), offered(), accepted()])
            .when(decline())
            .then_err(DomainError::ReminderAlreadyAccepted(Uuid::from_u128(1)));
        given::<Reminder>([])
            .when(decline())
            .then_err(DomainError::ReminderNotFound);
    }

    #[test]
    fn snooze_needs_a_pending_offer_and_a_future_time() {
        given::<Reminder>([scheduled(), offered()])
            .when(ReminderCommand::Snooze {
                until: t(20),
                at: t(18),
            })
            .then([snoozed()]);
        given::<Reminder>([scheduled(), offered()])
            .when(ReminderCommand::Snooze {
                until: t(17),
                at: t(18),
            })
            .then_err(DomainError::SnoozeNotInFuture);
        given::<Reminder>([scheduled()])
            .when(ReminderCommand::Snooze {
                until: t(20),
                at: t(18),
            })
            .then_err(DomainError::ReminderNotOffered);
        given::<Reminder>([scheduled(), offered(), accepted()])
            .when(ReminderCommand::Snooze {
                until: t(20),
                at: t(18),
            })
            .then_err(DomainError::ReminderAlreadyAccepted(Uuid::from_u128(1)));
        given::<Reminder>([])
            .when(ReminderCommand::Snooze {
                until: t(20),
                at: t(18),
            })
            .then_err(DomainError::ReminderNotFound);
    }

    #[test]
    fn a_newer_reminder_supersedes_an_open_one_only() {
        let by = Uuid::from_u128(0xbbb);
        let supersede = || ReminderCommand::Supersede { by, at: t(19) };
        let superseded: DomainEvent = ReminderSuperseded {
            reminder_id: rid(),
            user_id: "u1".into(),
            by,
            superseded_at: t(19),
        }
        .into();
        given::<Reminder>([scheduled()])
            .when(supersede())
            .then([superseded.clone()]);
        given::<Reminder>([scheduled(), offered(), snoozed()])
            .when(supersede())
            .then([superseded.clone()]);
        given::<Reminder>([scheduled(), offered(), accepted()])
            .when(supersede())
            .then_err(DomainError::ReminderAlreadyAccepted(Uuid::from_u128(1)));
        given::<Reminder>([])
            .when(supersede())
            .then_err(DomainError::ReminderNotFound);
        given::<Reminder>([scheduled(), superseded.clone()])
            .when(supersede())
            .then_err(DomainError::ReminderSuperseded(by));
        given::<Reminder>([scheduled(), superseded])
            .when(accept())
            .then_err(DomainError::ReminderSuperseded(by));
    }
}

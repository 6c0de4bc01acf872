//! The voice re-order process: an accepted reminder becomes an order drafted at the
//! catalog's current price — or the reason it cannot be ordered is reported back.

use chrono::{DateTime, Utc};
use eventfold_event_schemas::catalogue::{OrderLine, PriceChanged, ReminderScheduled};
use uuid::Uuid;

use crate::order::OrderCommand;
use crate::reminder::{Reminder, ReminderCommand, ReminderState};
use crate::{Aggregate, DomainError, DomainEvent};

/// The reminder's events and the order to draft for a "yes".
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedReorder {
    /// Events for the reminder stream.
    pub reminder_events: Vec<DomainEvent>,
    /// The command for the new order stream.
    pub draft: OrderCommand,
}

/// Decides a "yes": the reminder must be offered, the sku in the catalog and
/// available. A price different from the last one paid is carried into the draft as
/// `repriced_from`, so the final confirmation is given knowingly.
pub fn accept(
    reminder: &ReminderState,
    catalog: Option<&PriceChanged>,
    order_id: Uuid,
    at: DateTime<Utc>,
) -> Result<AcceptedReorder, DomainError> {
    let reminder_events = Reminder::decide(reminder, ReminderCommand::Accept { order_id, at })?;
    let plan = reminder
        .plan
        .as_ref()
        .ok_or(DomainError::ReminderNotFound)?;
    Ok(AcceptedReorder {
        reminder_events,
        draft: draft_for(plan, catalog, order_id, at)?,
    })
}

/// The order to draft for a reminder's plan at the catalog's current price.
pub fn draft_for(
    plan: &ReminderScheduled,
    catalog: Option<&PriceChanged>,
    order_id: Uuid,
    at: DateTime<Utc>,
) -> Result<OrderCommand, DomainError> {
    let price = catalog.ok_or_else(|| DomainError::SkuNotInCatalog {
        sku: plan.sku.clone(),
    })?;
    if !price.available {
        return Err(DomainError::SkuUnavailable {
            sku: plan.sku.clone(),
        });
    }
    let repriced_from = (price.unit_price != plan.last_unit_price).then_some(plan.last_unit_price);
    Ok(OrderCommand::Draft {
        order_id,
        user_id: plan.user_id.clone(),
        reminder_id: Some(plan.reminder_id),
        lines: vec![OrderLine {
            sku: plan.sku.clone(),
            title: price.title.clone(),
            quantity: plan.quantity,
            unit_price: price.unit_price,
        }],
        currency: price.currency.clone(),
        delivery_days: price.delivery_days,
        repriced_from,
        at,
    })
}

/// The order id for a reminder's re-order: derived, so that a crash between the
/// reminder's and the order's appends is completed by a retry, never duplicated.
pub fn order_id_for(reminder_id: Uuid) -> Uuid {
    Uuid::new_v5(&reminder_id, b"reorder")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminder::tests::{offered, rid, scheduled, t};

    fn price(unit_price: i64, available: bool) -> PriceChanged {
        PriceChanged {
            sku: "SKU-CAPS".into(),
            title: "Capsules (new pack)".into(),
            unit_price,
            currency: "RUB".into(),
            available,
            delivery_days: 3,
            changed_at: t(1),
        }
    }

    #[test]
    fn yes_drafts_an_order_at_the_current_price_and_flags_a_reprice() {
        let state = Reminder::fold(&[scheduled(), offered()]);
        let accepted =
            accept(&state, Some(&price(1100, true)), order_id_for(rid()), t(18)).expect("accepted");
        assert_eq!(accepted.reminder_events.len(), 1);
        let OrderCommand::Draft {
            lines,
            repriced_from,
            delivery_days,
            ..
        } = accepted.draft
        else {
            panic!("not a draft")
        };
        assert_eq!(lines[0].unit_price, 1100);
        assert_eq!(lines[0].quantity, 2);
        assert_eq!(repriced_from, Some(1000));
        assert_eq!(delivery_days, 3);
        let same =
            accept(&state, Some(&price(1000, true)), order_id_for(rid()), t(18)).expect("accepted");
        assert!(matches!(
            same.draft,
            OrderCommand::Draft {
                repriced_from: None,
                ..
            }
        ));
    }

    #[test]
    fn an_unavailable_or_unknown_sku_is_reported_not_ordered() {
        let state = Reminder::fold(&[scheduled(), offered()]);
        assert_eq!(
            accept(&state, Some(&price(1000, false)), Uuid::nil(), t(18)),
            Err(DomainError::SkuUnavailable {
                sku: "SKU-CAPS".into()
            })
        );
        assert_eq!(
            accept(&state, None, Uuid::nil(), t(18)),
            Err(DomainError::SkuNotInCatalog {
                sku: "SKU-CAPS".into()
            })
        );
    }

    #[test]
    fn the_reminder_rules_come_first() {
        let state = Reminder::fold(&[scheduled()]);
        assert_eq!(
            accept(&state, Some(&price(1, true)), Uuid::nil(), t(18)),
            Err(DomainError::ReminderNotOffered)
        );
    }
}

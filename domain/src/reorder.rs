//! The voice re-order process: an accepted reminder becomes an order drafted at the
//! catalog's current price — or the reason it cannot be ordered is reported back.

use chrono::{DateTime, Utc};
use eventfold_event_schemas::catalogue::{
    OrderLine, OrderQuote, PriceChanged, ReminderScheduled, ReorderAccepted,
};
use uuid::Uuid;

use crate::order::{Order, OrderCommand, OrderState};
use crate::reminder::{require_offered, Reminder, ReminderCommand, ReminderState};
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
/// available, and the order it drafts a valid order — all of it before anything is
/// stored, so that a "yes" the order would refuse is refused whole, never stored as an
/// acceptance whose order cannot follow. A price different from the last one paid is
/// carried into the draft as `repriced_from`, so the final confirmation is given
/// knowingly. The acceptance records the order it drafts ([`OrderQuote`]).
pub fn accept(
    reminder: &ReminderState,
    catalog: Option<&PriceChanged>,
    order_id: Uuid,
    at: DateTime<Utc>,
) -> Result<AcceptedReorder, DomainError> {
    // The reminder's rules come first.
    require_offered(reminder.status)?;
    let plan = reminder
        .plan
        .as_ref()
        .ok_or(DomainError::ReminderNotFound)?;
    let quote = quote_for(plan, catalog)?;
    let draft = draft_from(plan, &quote, order_id, at);
    // The order's own rules (a line's total within what money can hold, …), checked
    // on a new order as the draft will meet it.
    Order::decide(&OrderState::default(), draft.clone())?;
    let reminder_events = Reminder::decide(
        reminder,
        ReminderCommand::Accept {
            order_id,
            quote,
            at,
        },
    )?;
    Ok(AcceptedReorder {
        reminder_events,
        draft,
    })
}

/// The order to draft for a stored "yes": the one it accepted; for an acceptance
/// stored before acceptances recorded it (v1, no quote), at the catalog's price now.
pub fn draft_after(
    plan: &ReminderScheduled,
    accepted: &ReorderAccepted,
    catalog: Option<&PriceChanged>,
) -> Result<OrderCommand, DomainError> {
    let quote = match &accepted.quote {
        Some(quote) => quote.clone(),
        None => quote_for(plan, catalog)?,
    };
    Ok(draft_from(
        plan,
        &quote,
        accepted.order_id,
        accepted.accepted_at,
    ))
}

/// What a "yes" to `plan` orders at the catalog's current price.
fn quote_for(
    plan: &ReminderScheduled,
    catalog: Option<&PriceChanged>,
) -> Result<OrderQuote, DomainError> {
    let price = catalog.ok_or_else(|| DomainError::SkuNotInCatalog {
        sku: plan.sku.clone(),
    })?;
    if !price.available {
        return Err(DomainError::SkuUnavailable {
            sku: plan.sku.clone(),
        });
    }
    let repriced_from = (price.unit_price != plan.last_unit_price).then_some(plan.last_unit_price);
    Ok(OrderQuote {
        lines: vec![OrderLine {
            sku: plan.sku.clone(),
            title: price.title.clone(),
            quantity: plan.quantity,
            unit_price: price.unit_price,
        }],
        currency: price.currency.clone(),
        delivery_days: price.delivery_days,
        repriced_from,
    })
}

/// The draft of an accepted quote.
fn draft_from(
    plan: &ReminderScheduled,
    quote: &OrderQuote,
    order_id: Uuid,
    at: DateTime<Utc>,
) -> OrderCommand {
    OrderCommand::Draft {
        order_id,
        user_id: plan.user_id.clone(),
        reminder_id: Some(plan.reminder_id),
        lines: quote.lines.clone(),
        currency: quote.currency.clone(),
        delivery_days: quote.delivery_days,
        repriced_from: quote.repriced_from,
        at,
    }
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

    /// The order's own rules are part of the "yes": a line whose total money cannot
    /// hold is refused before anything is stored (before, the acceptance was stored,
    /// the order then refused, and the reminder stayed accepted with no order).
    #[test]
    fn a_yes_whose_order_would_be_refused_is_refused_whole() {
        let state = Reminder::fold(&[scheduled(), offered()]);
        let at_most = crate::money::MAX_AMOUNT;
        // Two units at the largest price: a total past what an amount may be.
        assert!(matches!(
            accept(
                &state,
                Some(&price(at_most, true)),
                order_id_for(rid()),
                t(18)
            ),
            Err(DomainError::InvalidOrder(_))
        ));
        // Half of it (rounded down) twice fits.
        assert!(accept(
            &state,
            Some(&price(at_most / 2, true)),
            order_id_for(rid()),
            t(18)
        )
        .is_ok());
    }

    /// The acceptance records the order it drafts; whoever drafts it later (the order
    /// drafter, after the request died) drafts that very order, whatever the catalog
    /// says by then.
    #[test]
    fn a_stored_yes_drafts_the_order_it_accepted_whatever_the_catalog_says_later() {
        let state = Reminder::fold(&[scheduled(), offered()]);
        let accepted =
            accept(&state, Some(&price(1100, true)), order_id_for(rid()), t(18)).expect("accepted");
        let [DomainEvent::ReorderAccepted(stored)] = accepted.reminder_events.as_slice() else {
            panic!("not one acceptance: {:?}", accepted.reminder_events)
        };
        let DomainEvent::ReminderScheduled(plan) = scheduled() else {
            unreachable!()
        };
        for later in [Some(price(5000, true)), Some(price(1100, false)), None] {
            assert_eq!(
                draft_after(&plan, stored, later.as_ref()),
                Ok(accepted.draft.clone()),
                "catalog later: {later:?}"
            );
        }
        // An acceptance stored before v2 carries no quote: drafted at the price now.
        let v1 = ReorderAccepted {
            quote: None,
            ..stored.clone()
        };
        let Ok(OrderCommand::Draft { lines, .. }) =
            draft_after(&plan, &v1, Some(&price(5000, true)))
        else {
            panic!("no draft")
        };
        assert_eq!(lines[0].unit_price, 5000);
        assert_eq!(
            draft_after(&plan, &v1, Some(&price(5000, false))),
            Err(DomainError::SkuUnavailable {
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

//! The `Order` aggregate. Stream `order-{order_id}`.

use chrono::{DateTime, Utc};
use eventfold_event_schemas::catalogue::{
    OrderCancelled, OrderConfirmed, OrderDrafted, OrderLine, OrderPlaced, PaymentPushRequested,
};
use uuid::Uuid;

use crate::{money, Aggregate, DomainError, DomainEvent};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrderStatus {
    /// No such order.
    #[default]
    None,
    /// Drafted, waiting for the final confirmation.
    Drafted,
    /// Confirmed and placed; payment requested.
    Placed,
    /// Cancelled.
    Cancelled,
}

/// What decisions need to know about an order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderState {
    /// Status.
    pub status: OrderStatus,
    /// The draft.
    pub draft: Option<OrderDrafted>,
}

/// What can be done with an order.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// Draft a new order (from an accepted reminder, see [`crate::reorder`]).
    Draft {
        /// The order.
        order_id: Uuid,
        /// The buyer.
        user_id: String,
        /// The reminder it came from.
        reminder_id: Option<Uuid>,
        /// What to order, at current catalog prices.
        lines: Vec<OrderLine>,
        /// ISO 4217 code.
        currency: String,
        /// Quoted delivery time.
        delivery_days: u32,
        /// The price offered before the refresh, when it changed.
        repriced_from: Option<i64>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The final "yes".
    Confirm {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Cancel before payment.
    Cancel {
        /// Why.
        reason: String,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// The order aggregate.
#[derive(Debug)]
pub struct Order;

fn require_open(status: OrderStatus) -> Result<(), DomainError> {
    match status {
        OrderStatus::None => Err(DomainError::OrderNotFound),
        OrderStatus::Cancelled => Err(DomainError::OrderAlreadyCancelled),
        _ => Ok(()),
    }
}

impl Aggregate for Order {
    type State = OrderState;
    type Command = OrderCommand;

    fn decide(state: &OrderState, command: OrderCommand) -> Result<Vec<DomainEvent>, DomainError> {
        match command {
            OrderCommand::Draft {
                order_id,
                user_id,
                reminder_id,
                lines,
                currency,
                delivery_days,
                repriced_from,
                at,
            } => {
                if state.status != OrderStatus::None {
                    return Err(DomainError::OrderAlreadyExists(order_id));
                }
                if lines.is_empty() {
                    return Err(DomainError::InvalidOrder(
                        "an order needs at least one line".into(),
                    ));
                }
                let mut totals = Vec::with_capacity(lines.len());
                for l in &lines {
                    match money::line_total(l.unit_price, l.quantity) {
                        Some(total) if l.quantity > 0 => totals.push(total),
                        _ => {
                            return Err(DomainError::InvalidOrder(format!(
                                "line {} needs a quantity >= 1 and a price >= 0, \
                                 its total at most {} minor units",
                                l.sku,
                                money::MAX_AMOUNT
                            )))
                        }
                    }
                }
                let Some(total) = money::sum(totals) else {
                    return Err(DomainError::InvalidOrder(format!(
                        "the order's total is beyond {} minor units",
                        money::MAX_AMOUNT
                    )));
                };
                Ok(vec![OrderDrafted {
                    order_id,
                    user_id,
                    reminder_id,
                    lines,
                    total,
                    currency,
                    delivery_days,
                    repriced_from,
                    drafted_at: at,
                }
                .into()])
            }
            OrderCommand::Confirm { at } => {
                require_open(state.status)?;
                let Some(draft) = state
                    .draft
                    .as_ref()
                    .filter(|_| state.status == OrderStatus::Drafted)
                else {
                    return Err(DomainError::OrderAlreadyPlaced);
                };
                Ok(vec![
                    OrderConfirmed {
                        order_id: draft.order_id,
                        confirmed_at: at,
                    }
                    .into(),
                    OrderPlaced {
                        order_id: draft.order_id,
                        user_id: draft.user_id.clone(),
                        total: draft.total,
                        currency: draft.currency.clone(),
                        placed_at: at,
                    }
                    .into(),
                    PaymentPushRequested {
                        order_id: draft.order_id,
                        user_id: draft.user_id.clone(),
                        amount: draft.total,
                        currency: draft.currency.clone(),
                        requested_at: at,
                    }
                    .into(),
                ])
            }
            OrderCommand::Cancel { reason, at } => {
                require_open(state.status)?;
                let order_id = state.draft.as_ref().map(|d| d.order_id).unwrap_or_default();
                Ok(vec![OrderCancelled {
                    order_id,
                    reason,
                    cancelled_at: at,
                }
                .into()])
            }
        }
    }

    fn evolve(mut state: OrderState, event: &DomainEvent) -> OrderState {
        match event {
            DomainEvent::OrderDrafted(e) => {
                state.status = OrderStatus::Drafted;
                state.draft = Some(e.clone());
            }
            DomainEvent::OrderPlaced(_) => state.status = OrderStatus::Placed,
            DomainEvent::OrderCancelled(_) => state.status = OrderStatus::Cancelled,
            _ => {}
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::testing::given;

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0)
            .single()
            .expect("time")
    }

    fn oid() -> Uuid {
        Uuid::from_u128(0x0d)
    }

    fn line(qty: u32, price: i64) -> OrderLine {
        OrderLine {
            sku: "SKU".into(),
            title: "Capsules".into(),
            quantity: qty,
            unit_price: price,
        }
    }

    fn draft(lines: Vec<OrderLine>) -> OrderCommand {
        OrderCommand::Draft {
            order_id: oid(),
            user_id: "u1".into(),
            reminder_id: None,
            lines,
            currency: "RUB".into(),
            delivery_days: 2,
            repriced_from: None,
            at: t(),
        }
    }

    fn drafted() -> DomainEvent {
        OrderDrafted {
            order_id: oid(),
            user_id: "u1".into(),
            reminder_id: None,
            lines: vec![line(2, 1500)],
            total: 3000,
            currency: "RUB".into(),
            delivery_days: 2,
            repriced_from: None,
            drafted_at: t(),
        }
        .into()
    }

    fn placed() -> DomainEvent {
        OrderPlaced {
            order_id: oid(),
            user_id: "u1".into(),
            total: 3000,
            currency: "RUB".into(),
            placed_at: t(),
        }
        .into()
    }

    fn cancelled() -> DomainEvent {
        OrderCancelled {
            order_id: oid(),
            reason: "no".into(),
            cancelled_at: t(),
        }
        .into()
    }

    #[test]
    fn draft_totals_the_lines_once() {
        given::<Order>([])
            .when(draft(vec![line(2, 1500)]))
            .then([drafted()]);
        given::<Order>([drafted()])
            .when(draft(vec![line(2, 1500)]))
            .then_err(DomainError::OrderAlreadyExists(oid()));
    }

    #[test]
    fn drafts_need_valid_lines() {
        assert!(matches!(
            given::<Order>([]).when(draft(vec![])).outcome(),
            Err(DomainError::InvalidOrder(_))
        ));
        assert!(matches!(
            given::<Order>([]).when(draft(vec![line(0, 1)])).outcome(),
            Err(DomainError::InvalidOrder(_))
        ));
        assert!(matches!(
            given::<Order>([]).when(draft(vec![line(1, -1)])).outcome(),
            Err(DomainError::InvalidOrder(_))
        ));
        // Totals are checked, not saturated: a line or an order beyond the largest
        // amount is refused.
        assert!(matches!(
            given::<Order>([])
                .when(draft(vec![line(u32::MAX, money::MAX_AMOUNT)]))
                .outcome(),
            Err(DomainError::InvalidOrder(_))
        ));
        assert!(matches!(
            given::<Order>([])
                .when(draft(vec![line(1, money::MAX_AMOUNT), line(1, 1)]))
                .outcome(),
            Err(DomainError::InvalidOrder(_))
        ));
        assert!(given::<Order>([])
            .when(draft(vec![line(1, money::MAX_AMOUNT)]))
            .outcome()
            .is_ok());
    }

    #[test]
    fn confirm_places_the_order_and_requests_payment() {
        given::<Order>([drafted()])
            .when(OrderCommand::Confirm { at: t() })
            .then([
                OrderConfirmed {
                    order_id: oid(),
                    confirmed_at: t(),
                }
                .into(),
                placed(),
                PaymentPushRequested {
                    order_id: oid(),
                    user_id: "u1".into(),
                    amount: 3000,
                    currency: "RUB".into(),
                    requested_at: t(),
                }
                .into(),
            ]);
    }

    #[test]
    fn confirm_is_refused_twice_after_cancel_or_without_order() {
        given::<Order>([drafted(), placed()])
            .when(OrderCommand::Confirm { at: t() })
            .then_err(DomainError::OrderAlreadyPlaced);
        given::<Order>([drafted(), cancelled()])
            .when(OrderCommand::Confirm { at: t() })
            .then_err(DomainError::OrderAlreadyCancelled);
        given::<Order>([])
            .when(OrderCommand::Confirm { at: t() })
            .then_err(DomainError::OrderNotFound);
    }

    #[test]
    fn cancel_works_until_cancelled() {
        let cancel = || OrderCommand::Cancel {
            reason: "no".into(),
            at: t(),
        };
        given::<Order>([drafted()])
            .when(cancel())
            .then([cancelled()]);
        given::<Order>([drafted(), placed()])
            .when(cancel())
            .then([cancelled()]);
        given::<Order>([drafted(), cancelled()])
            .when(cancel())
            .then_err(DomainError::OrderAlreadyCancelled);
        given::<Order>([])
            .when(cancel())
            .then_err(DomainError::OrderNotFound);
    }
}

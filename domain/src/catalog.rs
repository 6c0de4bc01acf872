//! The price catalog entry of one sku. Stream `price-{sku}`.

use eventfold_event_schemas::catalogue::PriceChanged;

use crate::{Aggregate, DomainError, DomainEvent};

/// The current price, if any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceState {
    /// The last change.
    pub current: Option<PriceChanged>,
}

/// Set a sku's price and availability.
#[derive(Debug, Clone, PartialEq)]
pub struct SetPrice {
    /// The new entry.
    pub price: PriceChanged,
}

/// The catalog entry aggregate.
#[derive(Debug)]
pub struct PriceEntry;

impl Aggregate for PriceEntry {
    type State = PriceState;
    type Command = SetPrice;

    fn decide(state: &PriceState, command: SetPrice) -> Result<Vec<DomainEvent>, DomainError> {
        let p = command.price;
        if !(0..=crate::money::MAX_AMOUNT).contains(&p.unit_price)
            || p.currency.len() != 3
            || !p.currency.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(DomainError::InvalidPurchase(
                "a price needs unit_price from 0 to 2^53 - 1 and an ISO 4217 currency".into(),
            ));
        }
        if let Some(current) = &state.current {
            if p.changed_at < current.changed_at {
                return Err(DomainError::TimeTravel(p.changed_at));
            }
        }
        Ok(vec![p.into()])
    }

    fn evolve(mut state: PriceState, event: &DomainEvent) -> PriceState {
        if let DomainEvent::PriceChanged(p) = event {
            state.current = Some(p.clone());
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::testing::given;

    fn price(unit_price: i64, h: u32) -> PriceChanged {
        PriceChanged {
            sku: "S".into(),
            title: "T".into(),
            unit_price,
            currency: "RUB".into(),
            available: true,
            delivery_days: 1,
            changed_at: Utc
                .with_ymd_and_hms(2026, 1, 1, h, 0, 0)
                .single()
                .expect("time"),
        }
    }

    #[test]
    fn prices_change_forwards_only() {
        given::<PriceEntry>([])
            .when(SetPrice {
                price: price(100, 1),
            })
            .then([price(100, 1).into()]);
        given::<PriceEntry>([price(100, 2).into()])
            .when(SetPrice {
                price: price(90, 1),
            })
            .then_err(DomainError::TimeTravel(price(90, 1).changed_at));
        assert!(given::<PriceEntry>([])
            .when(SetPrice {
                price: price(-1, 1)
            })
            .outcome()
            .is_err());
    }
}

//! The per-user purchase history. Stream `purchases-{user_id}`.
//!
//! Recording a purchase also runs the consumable policy: the first time a sku counts
//! as a consumable, `ConsumableDetected`; whenever its interval estimate changes,
//! `RepurchaseIntervalEstimated`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eventfold_event_schemas::catalogue::{
    ConsumableDetected, PurchaseRecorded, RepurchaseIntervalEstimated,
};

use crate::consumables::ConsumablePolicy;
use crate::{Aggregate, DomainError, DomainEvent};

/// What the history knows about one sku.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SkuHistory {
    /// Title of the last purchase.
    pub title: String,
    /// Category.
    pub category: String,
    /// When it was bought.
    pub purchased_at: Vec<DateTime<Utc>>,
    /// Units in the last purchase.
    pub last_quantity: u32,
    /// Unit price of the last purchase.
    pub last_unit_price: i64,
    /// Currency of the last purchase.
    pub currency: String,
    /// Whether it was detected as a consumable.
    pub consumable: bool,
    /// The current interval, days (prior or estimate).
    pub interval_days: Option<u32>,
}

/// A user's purchases, per sku.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PurchaseHistoryState {
    /// Per sku.
    pub skus: BTreeMap<String, SkuHistory>,
}

/// Record one purchase line, deciding with the given consumable policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPurchase {
    /// The purchase.
    pub purchase: PurchaseRecorded,
    /// The policy in force.
    pub policy: ConsumablePolicy,
}

/// The purchase history aggregate.
#[derive(Debug)]
pub struct PurchaseHistory;

fn validate(p: &PurchaseRecorded) -> Result<(), DomainError> {
    let problem = if p.user_id.trim().is_empty() || p.sku.trim().is_empty() {
        Some("user_id and sku are required")
    } else if p.category.trim().is_empty() {
        Some("category is required")
    } else if p.quantity == 0 {
        Some("quantity must be >= 1")
    } else if p.unit_price < 0 {
        Some("unit_price must be >= 0")
    } else if crate::money::line_total(p.unit_price, p.quantity).is_none() {
        Some("quantity × unit_price must be at most 2^53 - 1 minor units")
    } else if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Some("currency must be an ISO 4217 code such as RUB")
    } else {
        None
    };
    problem.map_or(Ok(()), |m| Err(DomainError::InvalidPurchase(m.to_owned())))
}

impl Aggregate for PurchaseHistory {
    type State = PurchaseHistoryState;
    type Command = RecordPurchase;

    fn decide(
        state: &PurchaseHistoryState,
        command: RecordPurchase,
    ) -> Result<Vec<DomainEvent>, DomainError> {
        let RecordPurchase { purchase, policy } = command;
        validate(&purchase)?;
        let previous = state.skus.get(&purchase.sku);
        let mut times = previous.map(|h| h.purchased_at.clone()).unwrap_or_default();
        times.push(purchase.purchased_at);
        let was_consumable = previous.is_some_and(|h| h.consumable);
        let current_interval = previous.and_then(|h| h.interval_days);
        let estimate = policy.estimate_interval(&times);

        let mut events: Vec<DomainEvent> = Vec::new();
        let (user_id, sku, at) = (
            purchase.user_id.clone(),
            purchase.sku.clone(),
            purchase.purchased_at,
        );
        let mut detected_interval = None;
        if !was_consumable {
            if let Some(reason) = policy.classify(&purchase.category, times.len()) {
                let interval = estimate
                    .map(|(days, _)| days)
                    .or_else(|| policy.prior(&purchase.category))
                    .unwrap_or(policy.max_interval_days);
                detected_interval = Some(interval);
                events.push(
                    ConsumableDetected {
                        user_id: user_id.clone(),
                        sku: sku.clone(),
                        title: purchase.title.clone(),
                        category: purchase.category.clone(),
                        reason: reason.as_str().to_owned(),
                        interval_days: interval,
                        detected_at: at,
                    }
                    .into(),
                );
            }
        }
        let consumable = was_consumable || detected_interval.is_some();
        if let (true, Some((days, gaps))) = (consumable, estimate) {
            // Announce an estimate when it is new: just detected, or changed.
            if detected_interval.is_some() || Some(days) != current_interval {
                events.push(
                    RepurchaseIntervalEstimated {
                        user_id,
                        sku,
                        interval_days: days,
                        gaps,
                        estimated_at: at,
                    }
                    .into(),
                );
            }
        }
        events.insert(0, purchase.into());
        Ok(events)
    }

    fn evolve(mut state: PurchaseHistoryState, event: &DomainEvent) -> PurchaseHistoryState {
        match event {
            DomainEvent::PurchaseRecorded(p) => {
                let h = state.skus.entry(p.sku.clone()).or_default();
                h.title = p.title.clone();
                h.category = p.category.clone();
                h.purchased_at.push(p.purchased_at);
                h.last_quantity = p.quantity;
                h.last_unit_price = p.unit_price;
                h.currency = p.currency.clone();
            }
            DomainEvent::ConsumableDetected(c) => {
                let h = state.skus.entry(c.sku.clone()).or_default();
                h.consumable = true;
                h.interval_days = Some(c.interval_days);
            }
            DomainEvent::RepurchaseIntervalEstimated(e) => {
                state.skus.entry(e.sku.clone()).or_default().interval_days = Some(e.interval_days);
            }
            _ => {}
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::testing::given;

    fn day(n: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0)
            .single()
            .expect("time")
            + Duration::days(n)
    }

    fn purchase(category: &str, d: i64) -> PurchaseRecorded {
        PurchaseRecorded {
            user_id: "u1".into(),
            sku: "SKU-1".into(),
            title: "Thing".into(),
            category: category.into(),
            quantity: 1,
            unit_price: 500,
            currency: "RUB".into(),
            purchased_at: day(d),
        }
    }

    fn record(p: PurchaseRecorded) -> RecordPurchase {
        RecordPurchase {
            purchase: p,
            policy: ConsumablePolicy::default(),
        }
    }

    fn detected(reason: &str, interval: u32, d: i64) -> DomainEvent {
        ConsumableDetected {
            user_id: "u1".into(),
            sku: "SKU-1".into(),
            title: "Thing".into(),
            category: if reason == "category_prior" {
                "coffee"
            } else {
                "books"
            }
            .into(),
            reason: reason.into(),
            interval_days: interval,
            detected_at: day(d),
        }
        .into()
    }

    fn estimated(interval: u32, gaps: u32, d: i64) -> DomainEvent {
        RepurchaseIntervalEstimated {
            user_id: "u1".into(),
            sku: "SKU-1".into(),
            interval_days: interval,
            gaps,
            estimated_at: day(d),
        }
        .into()
    }

    #[test]
    fn a_first_purchase_in_a_consumable_category_is_detected_with_the_prior() {
        given::<PurchaseHistory>([])
            .when(record(purchase("coffee", 0)))
            .then([
                purchase("coffee", 0).into(),
                detected("category_prior", 30, 0),
            ]);
    }

    #[test]
    fn a_repeat_refines_the_interval() {
        given::<PurchaseHistory>([
            purchase("coffee", 0).into(),
            detected("category_prior", 30, 0),
        ])
        .when(record(purchase("coffee", 24)))
        .then([purchase("coffee", 24).into(), estimated(24, 1, 24)]);
    }

    #[test]
    fn an_unchanged_estimate_is_not_repeated() {
        given::<PurchaseHistory>([
            purchase("coffee", 0).into(),
            detected("category_prior", 30, 0),
            purchase("coffee", 24).into(),
            estimated(24, 1, 24),
        ])
        .when(record(purchase("coffee", 48)))
        .then([purchase("coffee", 48).into()]);
    }

    #[test]
    fn other_categories_need_three_purchases() {
        given::<PurchaseHistory>([])
            .when(record(purchase("books", 0)))
            .then([purchase("books", 0).into()]);
        given::<PurchaseHistory>([purchase("books", 0).into(), purchase("books", 20).into()])
            .when(record(purchase("books", 40)))
            .then([
                purchase("books", 40).into(),
                detected("repeated_purchases", 20, 40),
                estimated(20, 2, 40),
            ]);
    }

    #[test]
    fn invalid_purchases_are_refused() {
        let mut p = purchase("coffee", 0);
        p.quantity = 0;
        assert!(matches!(
            given::<PurchaseHistory>([]).when(record(p)).outcome(),
            Err(DomainError::InvalidPurchase(_))
        ));
        let mut p = purchase("coffee", 0);
        p.currency = "rub".into();
        assert!(matches!(
            given::<PurchaseHistory>([]).when(record(p)).outcome(),
            Err(DomainError::InvalidPurchase(_))
        ));
        let mut p = purchase("coffee", 0);
        p.unit_price = crate::money::MAX_AMOUNT;
        p.quantity = 2;
        assert!(matches!(
            given::<PurchaseHistory>([]).when(record(p)).outcome(),
            Err(DomainError::InvalidPurchase(_))
        ));
        let mut p = purchase("coffee", 0);
        p.unit_price = -1;
        assert!(matches!(
            given::<PurchaseHistory>([]).when(record(p)).outcome(),
            Err(DomainError::InvalidPurchase(_))
        ));
    }
}

//! The reference domain's read models. Each owns its tables (or keys) and the queries
//! over them.
//!
//! | projection | store | serves |
//! | --- | --- | --- |
//! | `reminders.v1` | relational | reminders per user, due now (voice fallback) |
//! | `orders.v1` | relational | orders with lines |
//! | `purchases.v1` | relational | purchases and consumables per user |
//! | `catalog.v1` | relational | current price and availability per sku |
//! | `workouts.v2` | relational | summary/details, list per period, route, stats, weeks |
//! | `voice_due.v1` | Redis | the voice answer in one round trip |
//! | `leaderboards.v2` | Redis | distance tops per sport and ISO week (whole millimetres) |
//! | `workout_facts.v1`, `route_points.v1`, `purchase_facts.v1`, `reorder_funnel.v1` | ClickHouse | analytics (see [`analytics`]) |

pub mod analytics;
pub mod catalog;
pub mod leaderboard;
pub mod orders;
pub mod purchases;
pub mod reminders;
pub mod voice;
pub mod workouts;

use eventfold_event_schemas::RecordedEvent;

use crate::{Error, Registry};

/// The reference domain's read models. Adding a read model is a module above and one
/// line here; everything else (serve's runners, status, reset, replay, version bumps,
/// readiness, metrics, the conformance suite) finds it in the registry.
pub fn reference() -> Registry {
    Registry::new()
        .relational(reminders::RemindersProjection)
        .relational(orders::OrdersProjection)
        .relational(purchases::PurchasesProjection)
        .relational(catalog::CatalogProjection)
        .relational(workouts::WorkoutsProjection)
        .redis(voice::VoiceDueProjection)
        .redis(leaderboard::LeaderboardProjection)
        .clickhouse(analytics::WorkoutFactsProjection)
        .clickhouse(analytics::RoutePointsProjection)
        .clickhouse(analytics::PurchaseFactsProjection)
        .clickhouse(analytics::ReorderFunnelProjection)
}

/// A broken invariant in an event: the event is poison for this projection.
pub(crate) fn poison(record: &RecordedEvent, reason: impl Into<String>) -> Error {
    Error::Poison {
        position: record.global_position.0,
        event_type: record.event_type.clone(),
        reason: reason.into(),
    }
}

/// Monday-based ISO week of a time, e.g. `2026-W48`.
pub fn iso_week(at: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Datelike;
    let week = at.iso_week();
    format!("{}-W{:02}", week.year(), week.week())
}

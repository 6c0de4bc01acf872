//! Re-order reminders (DOMAIN.md §1, steps 3–5). Stream `reminder-{reminder_id}`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::OrderLine;

/// A reminder to offer a re-order, planned into a time slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReminderScheduled {
    /// The reminder.
    pub reminder_id: Uuid,
    /// Whom to remind.
    pub user_id: String,
    /// What to offer.
    pub sku: String,
    /// Its title, for the spoken offer.
    pub title: String,
    /// Units to offer (what the user bought last time).
    pub quantity: u32,
    /// Unit price last paid, minor units.
    pub last_unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When the reminder becomes due (start of its slot).
    pub due_at: DateTime<Utc>,
    /// The slot index it was placed in (slots since the Unix epoch).
    pub slot: i64,
}

/// The speaker offered the re-order to the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReminderOffered {
    /// The reminder.
    pub reminder_id: Uuid,
    /// Whose reminder it is (so readers need no join).
    pub user_id: String,
    /// The speaker that spoke.
    pub device_id: Option<String>,
    /// When.
    pub offered_at: DateTime<Utc>,
}

/// The user said yes: an order is being drafted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReorderAccepted {
    /// The reminder.
    pub reminder_id: Uuid,
    /// Whose reminder it is (so readers need no join).
    pub user_id: String,
    /// The order drafted for it.
    pub order_id: Uuid,
    /// When.
    pub accepted_at: DateTime<Utc>,
    /// What the user said yes to: the order as drafted at the catalog's price then, and
    /// checked as an order before this event was stored. Its order is drafted from it,
    /// whoever drafts it (the request, or the order drafter after a crash), so an
    /// accepted reminder can never be left without the order it promised. `None` on
    /// events stored before v2: their order is drafted at the catalog's price when it
    /// is drafted.
    pub quote: Option<OrderQuote>,
}

/// The order a "yes" accepted (v2 of [`ReorderAccepted`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderQuote {
    /// What is ordered, at the catalog's price when the user said yes.
    pub lines: Vec<OrderLine>,
    /// ISO 4217 code.
    pub currency: String,
    /// Days until delivery quoted by the catalog.
    pub delivery_days: u32,
    /// The unit price the reminder offered, when the catalog price differs from it.
    pub repriced_from: Option<i64>,
}

/// The user said no.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReminderDeclined {
    /// The reminder.
    pub reminder_id: Uuid,
    /// Whose reminder it is (so readers need no join).
    pub user_id: String,
    /// When.
    pub declined_at: DateTime<Utc>,
}

/// The user said later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReminderSnoozed {
    /// The reminder.
    pub reminder_id: Uuid,
    /// Whose reminder it is (so readers need no join).
    pub user_id: String,
    /// Due again at.
    pub until: DateTime<Utc>,
    /// When the user asked.
    pub snoozed_at: DateTime<Utc>,
}

/// A newer purchase made the reminder obsolete: a new one replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReminderSuperseded {
    /// The reminder.
    pub reminder_id: Uuid,
    /// Whose reminder it is.
    pub user_id: String,
    /// The reminder that replaces it.
    pub by: Uuid,
    /// When.
    pub superseded_at: DateTime<Utc>,
}

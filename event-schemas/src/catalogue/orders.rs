//! Orders (DOMAIN.md §1, steps 6–7). Stream `order-{order_id}`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    /// The sku.
    pub sku: String,
    /// Its title.
    pub title: String,
    /// Units.
    pub quantity: u32,
    /// Current catalog price of one unit, minor units.
    pub unit_price: i64,
}

/// An order drafted from an accepted reminder, at the refreshed catalog price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderDrafted {
    /// The order.
    pub order_id: Uuid,
    /// The buyer.
    pub user_id: String,
    /// The reminder it came from, if any.
    pub reminder_id: Option<Uuid>,
    /// What is ordered.
    pub lines: Vec<OrderLine>,
    /// Sum of the lines, minor units.
    pub total: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Days until delivery quoted by the catalog.
    pub delivery_days: u32,
    /// The unit price the reminder offered, when the catalog price differs from it.
    pub repriced_from: Option<i64>,
    /// When.
    pub drafted_at: DateTime<Utc>,
}

/// The user gave the final confirmation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderConfirmed {
    /// The order.
    pub order_id: Uuid,
    /// When.
    pub confirmed_at: DateTime<Utc>,
}

/// The order was placed with the marketplace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: Uuid,
    /// The buyer.
    pub user_id: String,
    /// Amount to pay, minor units.
    pub total: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When.
    pub placed_at: DateTime<Utc>,
}

/// A push notification to the marketplace app asking the user to pay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentPushRequested {
    /// The order.
    pub order_id: Uuid,
    /// Whom to notify.
    pub user_id: String,
    /// Amount, minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When.
    pub requested_at: DateTime<Utc>,
}

/// The order was cancelled before payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: Uuid,
    /// Why, in the caller's words.
    pub reason: String,
    /// When.
    pub cancelled_at: DateTime<Utc>,
}

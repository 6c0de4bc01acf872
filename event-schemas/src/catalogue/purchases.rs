//! Purchases, devices, consumables and prices (DOMAIN.md §1, steps 1–2 and 6).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A marketplace order line the user bought. Stream `purchases-{user_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRecorded {
    /// The buyer.
    pub user_id: String,
    /// Stock-keeping unit.
    pub sku: String,
    /// Product title as shown to the user.
    pub title: String,
    /// Product category, e.g. `coffee`, `pet_food`.
    pub category: String,
    /// Units bought (>= 1).
    pub quantity: u32,
    /// Price of one unit in minor currency units (kopecks, cents).
    pub unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When the purchase happened.
    pub purchased_at: DateTime<Utc>,
}

/// The consumable policy decided that a sku is a consumable for this user.
/// Stream `purchases-{user_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumableDetected {
    /// The user.
    pub user_id: String,
    /// The consumable.
    pub sku: String,
    /// Its title.
    pub title: String,
    /// Its category.
    pub category: String,
    /// Why: `category_prior` or `repeated_purchases`.
    pub reason: String,
    /// First interval guess in days (the category's default, or the estimate).
    pub interval_days: u32,
    /// When it was decided (the purchase that triggered it).
    pub detected_at: DateTime<Utc>,
}

/// A (new) estimate of how often the user re-buys a consumable.
/// Stream `purchases-{user_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepurchaseIntervalEstimated {
    /// The user.
    pub user_id: String,
    /// The consumable.
    pub sku: String,
    /// Bounded median of the gaps between purchases, in days.
    pub interval_days: u32,
    /// How many gaps the estimate rests on.
    pub gaps: u32,
    /// When it was estimated.
    pub estimated_at: DateTime<Utc>,
}

/// A smart speaker woke up for a user. Stream `device-{device_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceActivated {
    /// The speaker.
    pub device_id: String,
    /// The user it belongs to.
    pub user_id: String,
    /// When it woke up (local hours are learnt from these).
    pub activated_at: DateTime<Utc>,
    /// The user's offset from UTC in minutes at activation time.
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

/// The catalog's current price and availability of a sku. Stream `price-{sku}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceChanged {
    /// The sku.
    pub sku: String,
    /// Product title.
    pub title: String,
    /// Price of one unit in minor currency units.
    pub unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Whether it can be ordered now.
    pub available: bool,
    /// Days until delivery when ordered now.
    pub delivery_days: u32,
    /// When the catalog changed.
    pub changed_at: DateTime<Utc>,
}

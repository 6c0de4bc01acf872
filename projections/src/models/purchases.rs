//! `purchases.v1`: every purchase line and the consumables detected per user.

use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use serde::Serialize;
use sqlx::Row;

use crate::runtime::{Projection, RelationalProjection, SqlTx};
use crate::sql::{from_millis, millis, ReadDb};
use crate::Result;

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct PurchasesProjection;

const HANDLES: &[&str] = &[
    "PurchaseRecorded",
    "ConsumableDetected",
    "RepurchaseIntervalEstimated",
];

impl Projection for PurchasesProjection {
    fn name(&self) -> &'static str {
        "purchases.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        HANDLES.contains(&event_type)
    }
}

#[async_trait::async_trait]
impl RelationalProjection for PurchasesProjection {
    fn schema(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS rm_purchases (
                position BIGINT PRIMARY KEY, user_id TEXT NOT NULL, sku TEXT NOT NULL, title TEXT NOT NULL,
                category TEXT NOT NULL, quantity BIGINT NOT NULL, unit_price BIGINT NOT NULL,
                currency TEXT NOT NULL, purchased_at BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS rm_purchases_user ON rm_purchases (user_id, purchased_at)",
            "CREATE TABLE IF NOT EXISTS rm_consumables (
                user_id TEXT NOT NULL, sku TEXT NOT NULL, title TEXT NOT NULL, category TEXT NOT NULL,
                reason TEXT NOT NULL, interval_days BIGINT NOT NULL, detected_at BIGINT NOT NULL,
                PRIMARY KEY (user_id, sku))",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_purchases", "rm_consumables"]
    }

    async fn apply(
        &self,
        tx: &mut SqlTx<'_>,
        event: &DomainEvent,
        record: &RecordedEvent,
    ) -> Result<()> {
        match event {
            DomainEvent::PurchaseRecorded(p) => {
                sqlx::query(&tx.sql("INSERT INTO rm_purchases (position, user_id, sku, title, category, quantity, unit_price, currency, \
                     purchased_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (position) DO NOTHING"))
                .bind(record.global_position.0)
                .bind(&p.user_id)
                .bind(&p.sku)
                .bind(&p.title)
                .bind(&p.category)
                .bind(i64::from(p.quantity))
                .bind(p.unit_price)
                .bind(&p.currency)
                .bind(millis(p.purchased_at))
                .execute(tx.conn())
                .await?;
            }
            DomainEvent::ConsumableDetected(c) => {
                sqlx::query(&tx.sql("INSERT INTO rm_consumables (user_id, sku, title, category, reason, interval_days, detected_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, sku) DO UPDATE SET \
                     reason = excluded.reason, interval_days = excluded.interval_days"))
                .bind(&c.user_id)
                .bind(&c.sku)
                .bind(&c.title)
                .bind(&c.category)
                .bind(&c.reason)
                .bind(i64::from(c.interval_days))
                .bind(millis(c.detected_at))
                .execute(tx.conn())
                .await?;
            }
            DomainEvent::RepurchaseIntervalEstimated(e) => {
                sqlx::query(&tx.sql(
                    "UPDATE rm_consumables SET interval_days = $1 WHERE user_id = $2 AND sku = $3",
                ))
                .bind(i64::from(e.interval_days))
                .bind(&e.user_id)
                .bind(&e.sku)
                .execute(tx.conn())
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A purchase line.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PurchaseView {
    /// The sku.
    pub sku: String,
    /// Its title.
    pub title: String,
    /// Category.
    pub category: String,
    /// Units.
    pub quantity: i64,
    /// Minor units.
    pub unit_price: i64,
    /// ISO 4217.
    pub currency: String,
    /// When.
    pub purchased_at: chrono::DateTime<chrono::Utc>,
}

/// A consumable of a user, with its purchase history summary.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ConsumableView {
    /// The sku.
    pub sku: String,
    /// Its title.
    pub title: String,
    /// Category.
    pub category: String,
    /// `category_prior` or `repeated_purchases`.
    pub reason: String,
    /// Re-purchase interval, days.
    pub interval_days: i64,
    /// Times bought.
    pub purchases: i64,
    /// Last bought.
    pub last_purchased_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A user's purchases, newest first, paged.
pub async fn for_user(
    db: &ReadDb,
    user_id: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<PurchaseView>> {
    let rows = sqlx::query(
        "SELECT sku, title, category, quantity, unit_price, currency, purchased_at FROM rm_purchases \
         WHERE user_id = $1 ORDER BY purchased_at DESC, position DESC LIMIT $2 OFFSET $3",
    )
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PurchaseView {
                sku: r.try_get("sku")?,
                title: r.try_get("title")?,
                category: r.try_get("category")?,
                quantity: r.try_get("quantity")?,
                unit_price: r.try_get("unit_price")?,
                currency: r.try_get("currency")?,
                purchased_at: from_millis(r.try_get("purchased_at")?),
            })
        })
        .collect()
}

/// A user's consumables.
pub async fn consumables(db: &ReadDb, user_id: &str) -> Result<Vec<ConsumableView>> {
    let rows = sqlx::query(
        "SELECT c.sku, c.title, c.category, c.reason, c.interval_days, \
         (SELECT COUNT(*) FROM rm_purchases p WHERE p.user_id = c.user_id AND p.sku = c.sku) AS purchases, \
         (SELECT MAX(p.purchased_at) FROM rm_purchases p WHERE p.user_id = c.user_id AND p.sku = c.sku) AS last_at \
         FROM rm_consumables c WHERE c.user_id = $1 ORDER BY c.sku",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ConsumableView {
                sku: r.try_get("sku")?,
                title: r.try_get("title")?,
                category: r.try_get("category")?,
                reason: r.try_get("reason")?,
                interval_days: r.try_get("interval_days")?,
                purchases: r.try_get("purchases")?,
                last_purchased_at: r.try_get::<Option<i64>, _>("last_at")?.map(from_millis),
            })
        })
        .collect()
}

//! `catalog.v1`: the current price and availability of every sku.

use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use serde::Serialize;
use sqlx::Row;

use crate::runtime::{Projection, RelationalProjection, SqlTx};
use crate::sql::{millis, ReadDb};
use crate::Result;

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogProjection;

impl Projection for CatalogProjection {
    fn name(&self) -> &'static str {
        "catalog.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "PriceChanged"
    }
}

#[async_trait::async_trait]
impl RelationalProjection for CatalogProjection {
    fn schema(&self) -> &'static [&'static str] {
        &["CREATE TABLE IF NOT EXISTS rm_prices (
            sku TEXT PRIMARY KEY, title TEXT NOT NULL, unit_price BIGINT NOT NULL, currency TEXT NOT NULL,
            available BIGINT NOT NULL, delivery_days BIGINT NOT NULL, changed_at BIGINT NOT NULL)"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_prices"]
    }

    async fn apply(
        &self,
        tx: &mut SqlTx<'_>,
        event: &DomainEvent,
        _record: &RecordedEvent,
    ) -> Result<()> {
        if let DomainEvent::PriceChanged(p) = event {
            sqlx::query(&tx.sql("INSERT INTO rm_prices (sku, title, unit_price, currency, available, delivery_days, changed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (sku) DO UPDATE SET title = excluded.title, \
                 unit_price = excluded.unit_price, currency = excluded.currency, available = excluded.available, \
                 delivery_days = excluded.delivery_days, changed_at = excluded.changed_at"))
            .bind(&p.sku)
            .bind(&p.title)
            .bind(p.unit_price)
            .bind(&p.currency)
            .bind(i64::from(p.available))
            .bind(i64::from(p.delivery_days))
            .bind(millis(p.changed_at))
            .execute(tx.conn())
            .await?;
        }
        Ok(())
    }
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceView {
    /// The sku.
    pub sku: String,
    /// Its title.
    pub title: String,
    /// Minor units.
    pub unit_price: i64,
    /// ISO 4217.
    pub currency: String,
    /// Orderable now.
    pub available: bool,
    /// Quoted delivery.
    pub delivery_days: i64,
}

/// The current entry of `sku`.
pub async fn price(db: &ReadDb, sku: &str) -> Result<Option<PriceView>> {
    let row = sqlx::query("SELECT sku, title, unit_price, currency, available, delivery_days FROM rm_prices WHERE sku = $1")
        .bind(sku)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| {
        Ok(PriceView {
            sku: r.try_get("sku")?,
            title: r.try_get("title")?,
            unit_price: r.try_get("unit_price")?,
            currency: r.try_get("currency")?,
            available: r.try_get::<i64, _>("available")? != 0,
            delivery_days: r.try_get("delivery_days")?,
        })
    })
    .transpose()
}

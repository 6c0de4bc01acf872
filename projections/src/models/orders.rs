//! `orders.v1`: orders with their lines and life cycle.

use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use serde::Serialize;
use sqlx::Row;

use crate::runtime::{Projection, RelationalProjection, SqlTx};
use crate::sql::{from_millis, millis, ReadDb};
use crate::Result;

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersProjection;

const HANDLES: &[&str] = &[
    "OrderDrafted",
    "OrderConfirmed",
    "OrderPlaced",
    "PaymentPushRequested",
    "OrderCancelled",
];

impl Projection for OrdersProjection {
    fn name(&self) -> &'static str {
        "orders.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        HANDLES.contains(&event_type)
    }
}

#[async_trait::async_trait]
impl RelationalProjection for OrdersProjection {
    fn schema(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS rm_orders (
                order_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, reminder_id TEXT, status TEXT NOT NULL,
                total BIGINT NOT NULL, currency TEXT NOT NULL, delivery_days BIGINT NOT NULL,
                repriced_from BIGINT, drafted_at BIGINT NOT NULL, confirmed_at BIGINT, placed_at BIGINT,
                payment_requested_at BIGINT, cancelled_at BIGINT, cancel_reason TEXT)",
            "CREATE INDEX IF NOT EXISTS rm_orders_user ON rm_orders (user_id, drafted_at)",
            "CREATE TABLE IF NOT EXISTS rm_order_lines (
                order_id TEXT NOT NULL, line_no BIGINT NOT NULL, sku TEXT NOT NULL, title TEXT NOT NULL,
                quantity BIGINT NOT NULL, unit_price BIGINT NOT NULL, PRIMARY KEY (order_id, line_no))",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_orders", "rm_order_lines"]
    }

    async fn apply(
        &self,
        tx: &mut SqlTx<'_>,
        event: &DomainEvent,
        _record: &RecordedEvent,
    ) -> Result<()> {
        let (sql, order_id, at) = match event {
            DomainEvent::OrderDrafted(e) => {
                sqlx::query(&tx.sql("INSERT INTO rm_orders (order_id, user_id, reminder_id, status, total, currency, delivery_days, \
                     repriced_from, drafted_at) VALUES ($1, $2, $3, 'drafted', $4, $5, $6, $7, $8) \
                     ON CONFLICT (order_id) DO NOTHING"))
                .bind(e.order_id.to_string())
                .bind(&e.user_id)
                .bind(e.reminder_id.map(|r| r.to_string()))
                .bind(e.total)
                .bind(&e.currency)
                .bind(i64::from(e.delivery_days))
                .bind(e.repriced_from)
                .bind(millis(e.drafted_at))
                .execute(tx.conn())
                .await?;
                for (i, line) in e.lines.iter().enumerate() {
                    sqlx::query(&tx.sql("INSERT INTO rm_order_lines (order_id, line_no, sku, title, quantity, unit_price) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id, line_no) DO NOTHING"))
                    .bind(e.order_id.to_string())
                    .bind(i as i64)
                    .bind(&line.sku)
                    .bind(&line.title)
                    .bind(i64::from(line.quantity))
                    .bind(line.unit_price)
                    .execute(tx.conn())
                    .await?;
                }
                return Ok(());
            }
            DomainEvent::OrderConfirmed(e) => (
                "UPDATE rm_orders SET status = 'confirmed', confirmed_at = $1 WHERE order_id = $2",
                e.order_id,
                e.confirmed_at,
            ),
            DomainEvent::OrderPlaced(e) => (
                "UPDATE rm_orders SET status = 'placed', placed_at = $1 WHERE order_id = $2",
                e.order_id,
                e.placed_at,
            ),
            DomainEvent::PaymentPushRequested(e) => (
                "UPDATE rm_orders SET payment_requested_at = $1 WHERE order_id = $2",
                e.order_id,
                e.requested_at,
            ),
            DomainEvent::OrderCancelled(e) => {
                sqlx::query(&tx.sql("UPDATE rm_orders SET status = 'cancelled', cancelled_at = $1, cancel_reason = $2 WHERE order_id = $3"))
                    .bind(millis(e.cancelled_at))
                    .bind(&e.reason)
                    .bind(e.order_id.to_string())
                    .execute(tx.conn())
                    .await?;
                return Ok(());
            }
            _ => return Ok(()),
        };
        sqlx::query(&tx.sql(sql))
            .bind(millis(at))
            .bind(order_id.to_string())
            .execute(tx.conn())
            .await?;
        Ok(())
    }
}

/// An order line.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct OrderLineView {
    /// The sku.
    pub sku: String,
    /// Its title.
    pub title: String,
    /// Units.
    pub quantity: i64,
    /// Minor units.
    pub unit_price: i64,
}

/// An order as the read model holds it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct OrderView {
    /// The order.
    #[schemars(with = "uuid::Uuid")]
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// The reminder it came from.
    #[schemars(with = "Option<uuid::Uuid>")]
    pub reminder_id: Option<String>,
    /// `drafted`, `confirmed`, `placed`, `cancelled`.
    pub status: String,
    /// Minor units.
    pub total: i64,
    /// ISO 4217.
    pub currency: String,
    /// Quoted delivery.
    pub delivery_days: i64,
    /// The earlier price when the catalog changed it.
    pub repriced_from: Option<i64>,
    /// When drafted.
    pub drafted_at: chrono::DateTime<chrono::Utc>,
    /// Whether payment was requested.
    pub payment_requested: bool,
    /// Its lines.
    pub lines: Vec<OrderLineView>,
}

const COLUMNS: &str = "order_id, user_id, reminder_id, status, total, currency, delivery_days, repriced_from, drafted_at, payment_requested_at";

async fn view(db: &ReadDb, row: &sqlx::any::AnyRow) -> Result<OrderView> {
    let order_id: String = row.try_get("order_id")?;
    let lines = sqlx::query("SELECT sku, title, quantity, unit_price FROM rm_order_lines WHERE order_id = $1 ORDER BY line_no")
        .bind(&order_id)
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|l| {
            Ok(OrderLineView {
                sku: l.try_get("sku")?,
                title: l.try_get("title")?,
                quantity: l.try_get("quantity")?,
                unit_price: l.try_get("unit_price")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(OrderView {
        order_id,
        user_id: row.try_get("user_id")?,
        reminder_id: row.try_get("reminder_id")?,
        status: row.try_get("status")?,
        total: row.try_get("total")?,
        currency: row.try_get("currency")?,
        delivery_days: row.try_get("delivery_days")?,
        repriced_from: row.try_get("repriced_from")?,
        drafted_at: from_millis(row.try_get("drafted_at")?),
        payment_requested: row
            .try_get::<Option<i64>, _>("payment_requested_at")?
            .is_some(),
        lines,
    })
}

/// One order.
pub async fn get(db: &ReadDb, order_id: &str) -> Result<Option<OrderView>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM rm_orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(row) => Ok(Some(view(db, &row).await?)),
        None => Ok(None),
    }
}

/// A user's orders, newest first, paged.
pub async fn for_user(
    db: &ReadDb,
    user_id: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<OrderView>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM rm_orders WHERE user_id = $1 ORDER BY drafted_at DESC, order_id LIMIT $2 OFFSET $3"
    ))
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(view(db, row).await?);
    }
    Ok(out)
}

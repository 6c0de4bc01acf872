//! `reminders.v1`: every reminder and its state; "due now" per user.

use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use serde::Serialize;
use sqlx::Row;

use crate::runtime::{Projection, RelationalProjection, SqlTx};
use crate::sql::{from_millis, millis, ReadDb};
use crate::Result;

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemindersProjection;

const HANDLES: &[&str] = &[
    "ReminderScheduled",
    "ReminderOffered",
    "ReorderAccepted",
    "ReminderDeclined",
    "ReminderSnoozed",
    "ReminderSuperseded",
];

impl Projection for RemindersProjection {
    fn name(&self) -> &'static str {
        "reminders.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        HANDLES.contains(&event_type)
    }
}

impl RelationalProjection for RemindersProjection {
    fn schema(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS rm_reminders (
                reminder_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, sku TEXT NOT NULL,
                title TEXT NOT NULL, quantity BIGINT NOT NULL, last_unit_price BIGINT NOT NULL,
                currency TEXT NOT NULL, due_at BIGINT NOT NULL, slot BIGINT NOT NULL,
                status TEXT NOT NULL, order_id TEXT, offered_at BIGINT, updated_at BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS rm_reminders_user_due ON rm_reminders (user_id, due_at)",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_reminders"]
    }

    async fn apply(
        &self,
        tx: &mut SqlTx<'_>,
        event: &DomainEvent,
        record: &RecordedEvent,
    ) -> Result<()> {
        let at = millis(record.recorded_at);
        match event {
            DomainEvent::ReminderScheduled(e) => {
                sqlx::query(&tx.sql("INSERT INTO rm_reminders (reminder_id, user_id, sku, title, quantity, last_unit_price, currency, \
                     due_at, slot, status, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'scheduled', $10) \
                     ON CONFLICT (reminder_id) DO NOTHING"))
                .bind(e.reminder_id.to_string())
                .bind(&e.user_id)
                .bind(&e.sku)
                .bind(&e.title)
                .bind(i64::from(e.quantity))
                .bind(e.last_unit_price)
                .bind(&e.currency)
                .bind(millis(e.due_at))
                .bind(e.slot)
                .bind(at)
                .execute(tx.conn())
                .await?;
            }
            DomainEvent::ReminderOffered(e) => {
                sqlx::query(&tx.sql("UPDATE rm_reminders SET status = 'offered', offered_at = $1, updated_at = $1 WHERE reminder_id = $2"))
                    .bind(millis(e.offered_at))
                    .bind(e.reminder_id.to_string())
                    .execute(tx.conn())
                    .await?;
            }
            DomainEvent::ReorderAccepted(e) => {
                sqlx::query(&tx.sql("UPDATE rm_reminders SET status = 'accepted', order_id = $1, updated_at = $2 WHERE reminder_id = $3"))
                    .bind(e.order_id.to_string())
                    .bind(at)
                    .bind(e.reminder_id.to_string())
                    .execute(tx.conn())
                    .await?;
            }
            DomainEvent::ReminderDeclined(e) => {
                sqlx::query(&tx.sql("UPDATE rm_reminders SET status = 'declined', updated_at = $1 WHERE reminder_id = $2"))
                    .bind(at)
                    .bind(e.reminder_id.to_string())
                    .execute(tx.conn())
                    .await?;
            }
            DomainEvent::ReminderSuperseded(e) => {
                sqlx::query(&tx.sql("UPDATE rm_reminders SET status = 'superseded', updated_at = $1 WHERE reminder_id = $2"))
                    .bind(at)
                    .bind(e.reminder_id.to_string())
                    .execute(tx.conn())
                    .await?;
            }
            DomainEvent::ReminderSnoozed(e) => {
                sqlx::query(&tx.sql("UPDATE rm_reminders SET status = 'snoozed', due_at = $1, updated_at = $2 WHERE reminder_id = $3"))
                    .bind(millis(e.until))
                    .bind(at)
                    .bind(e.reminder_id.to_string())
                    .execute(tx.conn())
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A reminder as the read model holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReminderView {
    /// The reminder.
    pub reminder_id: String,
    /// Whose.
    pub user_id: String,
    /// What.
    pub sku: String,
    /// Its title.
    pub title: String,
    /// Units.
    pub quantity: i64,
    /// Price last paid, minor units.
    pub last_unit_price: i64,
    /// ISO 4217.
    pub currency: String,
    /// Due (or snoozed until).
    pub due_at: chrono::DateTime<chrono::Utc>,
    /// `scheduled`, `offered`, `snoozed`, `accepted`, `declined`.
    pub status: String,
    /// The order, once accepted.
    pub order_id: Option<String>,
}

const COLUMNS: &str = "reminder_id, user_id, sku, title, quantity, last_unit_price, currency, due_at, status, order_id";

fn view(row: &sqlx::any::AnyRow) -> Result<ReminderView> {
    Ok(ReminderView {
        reminder_id: row.try_get("reminder_id")?,
        user_id: row.try_get("user_id")?,
        sku: row.try_get("sku")?,
        title: row.try_get("title")?,
        quantity: row.try_get("quantity")?,
        last_unit_price: row.try_get("last_unit_price")?,
        currency: row.try_get("currency")?,
        due_at: from_millis(row.try_get("due_at")?),
        status: row.try_get("status")?,
        order_id: row.try_get("order_id")?,
    })
}

/// A user's reminders, newest due first, paged.
pub async fn for_user(
    db: &ReadDb,
    user_id: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<ReminderView>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM rm_reminders WHERE user_id = $1 ORDER BY due_at DESC, reminder_id LIMIT $2 OFFSET $3"
    ))
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(view).collect()
}

/// A user's open reminders due at `now`, oldest first.
pub async fn due_for_user(
    db: &ReadDb,
    user_id: &str,
    now: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<Vec<ReminderView>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM rm_reminders WHERE user_id = $1 AND due_at <= $2 \
         AND status IN ('scheduled', 'offered', 'snoozed') ORDER BY due_at, reminder_id LIMIT $3"
    ))
    .bind(user_id)
    .bind(millis(now))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(view).collect()
}

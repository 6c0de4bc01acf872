use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use eventfold_domain::slotting::{ActiveWindow, Placement, SlotPlanner};
use eventfold_domain::DomainEvent;
use eventfold_event_log::EventReader;
use eventfold_event_schemas::Position;
use uuid::Uuid;

use crate::Result;

/// How many reminders each time slot holds, for the slotting policy.
///
/// Two forms. [`SlotBook::new`] keeps the loads in process memory, caught up from the
/// log's `reminder` category before every placement (one process; tests). Two processes
/// placing at once could both take a slot's last place there.
///
/// [`SlotBook::shared`] keeps them in two tables of the database (PostgreSQL or SQLite):
/// `eventfold_slot_loads (slot, load)` and `eventfold_slot_reservations (reminder_id,
/// slot)`. A reservation is one transaction: the slot's row is created if missing, its
/// load raised only `WHERE load < capacity` (PostgreSQL re-checks that condition after
/// a concurrent writer's commit, SQLite has one writer at a time), and the reminder's
/// reservation inserted — so no slot ever holds more than the capacity, whatever the
/// number of processes, and a reminder is counted once however often it is placed
/// (a retry gets its first slot back). Reminders found in the log that no reservation
/// counted yet (scheduled before the tables existed) are counted by the same
/// idempotent step as each process catches up. A reservation whose reminder never
/// got appended (a crash in between) keeps its place: the retry, with the same
/// reminder id, reuses it.
#[derive(Debug)]
pub struct SlotBook {
    planner: SlotPlanner,
    inner: Mutex<Book>,
    shared: Option<sqlx::AnyPool>,
}

/// Transactions retried when a slot fills under a placement.
const MAX_PLACEMENTS: usize = 64;

#[derive(Debug, Default)]
struct Book {
    loads: HashMap<i64, u32>,
    counted: HashSet<Uuid>,
    position: Position,
}

impl Book {
    fn count(&mut self, reminder_id: Uuid, slot: i64) {
        if self.counted.insert(reminder_id) {
            *self.loads.entry(slot).or_default() += 1;
        }
    }
}

impl SlotBook {
    /// An empty book in process memory, placing with `planner`.
    pub fn new(planner: SlotPlanner) -> Self {
        Self {
            planner,
            inner: Mutex::new(Book::default()),
            shared: None,
        }
    }

    /// A book shared by every process on `pool`'s database (creates its tables).
    pub async fn shared(planner: SlotPlanner, pool: sqlx::AnyPool) -> Result<Self> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS eventfold_slot_loads (slot BIGINT PRIMARY KEY, load BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS eventfold_slot_reservations (reminder_id TEXT PRIMARY KEY, slot BIGINT NOT NULL)",
        ] {
            sqlx::query(ddl).execute(&pool).await.map_err(sql)?;
        }
        Ok(Self {
            planner,
            inner: Mutex::new(Book::default()),
            shared: Some(pool),
        })
    }

    /// The planner (its capacity).
    pub fn planner(&self) -> &SlotPlanner {
        &self.planner
    }

    /// Places `reminder_id` no earlier than `earliest` in `window`, and counts it.
    pub async fn place(
        &self,
        store: &impl EventReader,
        reminder_id: Uuid,
        earliest: DateTime<Utc>,
        window: &ActiveWindow,
    ) -> Result<Placement> {
        let Some(pool) = &self.shared else {
            self.catch_up(store).await?;
            return Ok(self.reserve(reminder_id, earliest, window));
        };
        self.catch_up_shared(store, pool).await?;
        let id = reminder_id.to_string();
        let per_day = (24 * 60 / self.planner.slot_minutes.max(1)).max(1);
        let first = self.planner.slot_of(earliest).saturating_sub(2 * per_day);
        let last = self
            .planner
            .slot_of(earliest)
            .saturating_add((self.planner.max_postpone_days + 3).saturating_mul(per_day));
        for _ in 0..MAX_PLACEMENTS {
            if let Some(slot) = reserved(pool, &id).await? {
                return Ok(Placement {
                    slot,
                    due_at: self.planner.slot_start(slot),
                    postponed_days: 0,
                    overflow: false,
                });
            }
            let rows = sqlx::query(
                "SELECT slot, load FROM eventfold_slot_loads WHERE slot >= $1 AND slot <= $2",
            )
            .bind(first)
            .bind(last)
            .fetch_all(pool)
            .await
            .map_err(sql)?;
            let mut loads = HashMap::new();
            for row in &rows {
                use sqlx::Row;
                let slot: i64 = row.try_get(0).map_err(sql)?;
                let load: i64 = row.try_get(1).map_err(sql)?;
                loads.insert(slot, u32::try_from(load).unwrap_or(u32::MAX));
            }
            let placement = self.planner.place(earliest, window, |slot| {
                loads.get(&slot).copied().unwrap_or(0)
            });
            if take(
                pool,
                &id,
                placement.slot,
                placement.overflow,
                self.planner.capacity,
            )
            .await?
            {
                return Ok(placement);
            }
            // The slot filled (or this reminder got placed) meanwhile: look again.
        }
        Err(crate::CommandError::Contention {
            stream: "eventfold_slot_loads".into(),
            attempts: MAX_PLACEMENTS,
        })
    }

    /// Counts the log's reminders that no reservation counted yet (idempotent).
    async fn catch_up_shared(&self, store: &impl EventReader, pool: &sqlx::AnyPool) -> Result<()> {
        loop {
            let after = self.book().position;
            let page = store.read_all(after, Some("reminder"), 1000).await?;
            let Some(last) = page.last().map(|e| e.global_position) else {
                return Ok(());
            };
            let mut tx = pool.begin().await.map_err(sql)?;
            for record in &page {
                if let Ok(Some(DomainEvent::ReminderScheduled(s))) =
                    DomainEvent::from_recorded(record)
                {
                    if record_reservation(&mut tx, &s.reminder_id.to_string(), s.slot).await? {
                        sqlx::query(
                            "INSERT INTO eventfold_slot_loads (slot, load) VALUES ($1, 1) ON CONFLICT (slot) DO UPDATE SET load = eventfold_slot_loads.load + 1",
                        )
                        .bind(s.slot)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql)?;
                    }
                }
            }
            tx.commit().await.map_err(sql)?;
            let mut book = self.book();
            book.position = book.position.max(last);
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads reminders scheduled since the last catch-up.
    pub async fn catch_up(&self, store: &impl EventReader) -> Result<()> {
        loop {
            let after = self.book().position;
            let page = store.read_all(after, Some("reminder"), 1000).await?;
            let Some(last) = page.last().map(|e| e.global_position) else {
                return Ok(());
            };
            let mut book = self.book();
            for record in &page {
                if let Ok(Some(DomainEvent::ReminderScheduled(s))) =
                    DomainEvent::from_recorded(record)
                {
                    book.count(s.reminder_id, s.slot);
                }
            }
            book.position = book.position.max(last);
        }
    }

    /// Places `reminder_id` and counts it at once, so concurrent placements in this
    /// process see each other.
    pub fn reserve(
        &self,
        reminder_id: Uuid,
        earliest: DateTime<Utc>,
        window: &ActiveWindow,
    ) -> Placement {
        let mut book = self.book();
        let placement = self.planner.place(earliest, window, |slot| {
            book.loads.get(&slot).copied().unwrap_or(0)
        });
        book.count(reminder_id, placement.slot);
        placement
    }

    /// Current load of a slot (of the in-memory book).
    pub fn load(&self, slot: i64) -> u32 {
        self.book().loads.get(&slot).copied().unwrap_or(0)
    }
}

fn sql(error: sqlx::Error) -> crate::CommandError {
    crate::CommandError::Slots(error.to_string())
}

/// Records that `reminder_id` holds `slot`; `false` if it held one already.
async fn record_reservation(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    reminder_id: &str,
    slot: i64,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO eventfold_slot_reservations (reminder_id, slot) VALUES ($1, $2) ON CONFLICT (reminder_id) DO NOTHING",
    )
    .bind(reminder_id)
    .bind(slot)
    .execute(&mut **tx)
    .await
    .map_err(sql)?
    .rows_affected();
    Ok(inserted == 1)
}

/// The slot a reminder already holds.
async fn reserved(pool: &sqlx::AnyPool, reminder_id: &str) -> Result<Option<i64>> {
    use sqlx::Row;
    let row = sqlx::query("SELECT slot FROM eventfold_slot_reservations WHERE reminder_id = $1")
        .bind(reminder_id)
        .fetch_optional(pool)
        .await
        .map_err(sql)?;
    row.map(|r| r.try_get::<i64, _>(0).map_err(sql)).transpose()
}

/// One transaction: raise `slot`'s load if it has room (or regardless, for an overflow
/// the planner reported) and record the reservation. `false`: the slot was full or the
/// reminder was reserved meanwhile; nothing changed.
async fn take(
    pool: &sqlx::AnyPool,
    reminder_id: &str,
    slot: i64,
    overflow: bool,
    capacity: u32,
) -> Result<bool> {
    let mut tx = pool.begin().await.map_err(sql)?;
    sqlx::query("INSERT INTO eventfold_slot_loads (slot, load) VALUES ($1, 0) ON CONFLICT (slot) DO NOTHING")
        .bind(slot)
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
    let limit = if overflow {
        i64::MAX
    } else {
        i64::from(capacity)
    };
    let raised = sqlx::query(
        "UPDATE eventfold_slot_loads SET load = load + 1 WHERE slot = $1 AND load < $2",
    )
    .bind(slot)
    .bind(limit)
    .execute(&mut *tx)
    .await
    .map_err(sql)?
    .rows_affected();
    if raised != 1 {
        tx.rollback().await.map_err(sql)?;
        return Ok(false);
    }
    if !record_reservation(&mut tx, reminder_id, slot).await? {
        tx.rollback().await.map_err(sql)?;
        return Ok(false);
    }
    tx.commit().await.map_err(sql)?;
    Ok(true)
}

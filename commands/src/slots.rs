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
/// Kept in process memory and caught up from the log's `reminder` category before every
/// placement, so reminders scheduled by other processes count too. Two processes
/// placing at the same instant can both take a slot's last place: the capacity is then
/// exceeded by at most one per concurrent placer (a projection with a transactional
/// counter would close that gap).
#[derive(Debug)]
pub struct SlotBook {
    planner: SlotPlanner,
    inner: Mutex<Book>,
}

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
    /// An empty book placing with `planner`.
    pub fn new(planner: SlotPlanner) -> Self {
        Self {
            planner,
            inner: Mutex::new(Book::default()),
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

    /// Current load of a slot.
    pub fn load(&self, slot: i64) -> u32 {
        self.book().loads.get(&slot).copied().unwrap_or(0)
    }
}

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use eventfold_event_schemas::{Position, RecordedEvent};
use tokio::sync::watch;

use crate::{EventReader, Page, Result};

/// How a [`Subscription`] reads the log.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Only events of this stream category.
    pub category: Option<String>,
    /// Only events of these types (all with `None`). The subscription still moves past
    /// the others: [`next_page`](Subscription::next_page) says how far.
    pub event_types: Option<Arc<[String]>>,
    /// Events fetched per read (default 500).
    pub page_size: usize,
    /// Longest wait before polling again when no wake-up arrives (default 1 s): the
    /// fallback that bounds delivery delay if a notification is lost.
    pub poll_interval: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            category: None,
            event_types: None,
            page_size: 500,
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl SubscriptionOptions {
    /// Only events of `category`.
    pub fn category(category: impl Into<String>) -> Self {
        Self {
            category: Some(category.into()),
            ..Self::default()
        }
    }
}

/// A catch-up-then-live subscription to the log.
///
/// It is pull-based: nothing runs between calls to [`next`](Self::next) or
/// [`next_batch`](Self::next_batch), so a slow consumer simply reads later (no
/// unbounded buffer). Its position only moves past events it has handed out.
#[derive(Debug)]
pub struct Subscription<R> {
    reader: R,
    options: SubscriptionOptions,
    changes: watch::Receiver<u64>,
    /// Position of the last event fetched from the log (handed out or buffered; with
    /// `event_types`, wanted or not).
    fetched_up_to: Position,
    /// Through which position everything has been handed out.
    handed_up_to: Position,
    buffer: VecDeque<RecordedEvent>,
}

impl<R: EventReader> Subscription<R> {
    /// A subscription delivering events after `after`.
    pub fn new(reader: R, after: Position, options: SubscriptionOptions) -> Self {
        let changes = reader.changes();
        Self {
            reader,
            options,
            changes,
            fetched_up_to: after,
            handed_up_to: after,
            buffer: VecDeque::new(),
        }
    }

    /// The next event, waiting for it if the subscription has caught up.
    ///
    /// An error (e.g. the database is down) leaves the subscription where it was: call
    /// again to retry.
    pub async fn next(&mut self) -> Result<RecordedEvent> {
        loop {
            if let Some(event) = self.next_page(1).await?.events.pop() {
                return Ok(event);
            }
        }
    }

    /// Between 1 and `max` events, waiting for at least one.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<RecordedEvent>> {
        loop {
            let page = self.next_page(max).await?;
            if !page.events.is_empty() {
                return Ok(page.events);
            }
        }
    }

    /// Whatever is available now without waiting (possibly nothing).
    pub async fn try_next_batch(&mut self, max: usize) -> Result<Vec<RecordedEvent>> {
        if self.buffer.is_empty() {
            self.fetch().await?;
        }
        let take = max.min(self.buffer.len());
        Ok(self.take(take))
    }

    /// Between 1 and `max` events, or none when the log moved on only by events of
    /// other types; waits until the subscription can move.
    pub async fn next_page(&mut self, max: usize) -> Result<Page> {
        loop {
            if let Some(page) = self.take_page(max) {
                return Ok(page);
            }
            // Mark the current change as seen *before* reading, so an append that lands
            // after the read wakes the wait below instead of being slept through.
            self.changes.borrow_and_update();
            self.fetch().await?;
            if let Some(page) = self.take_page(max) {
                return Ok(page);
            }
            self.wait().await;
        }
    }

    /// Whatever is available now without waiting: up to `max` events and how far the
    /// log was read (`through` unchanged when nothing new was there).
    pub async fn try_next_page(&mut self, max: usize) -> Result<Page> {
        if self.buffer.is_empty() {
            self.fetch().await?;
        }
        Ok(self.take_page(max).unwrap_or(Page {
            events: Vec::new(),
            through: self.handed_up_to,
        }))
    }

    /// The next page from the buffer; `None` when there is nothing to move past.
    fn take_page(&mut self, max: usize) -> Option<Page> {
        if self.buffer.is_empty() && self.fetched_up_to <= self.handed_up_to {
            return None;
        }
        let events = self.take(max.max(1).min(self.buffer.len()));
        Some(Page {
            events,
            through: self.handed_up_to,
        })
    }

    /// Hands out the first `n` buffered events.
    fn take(&mut self, n: usize) -> Vec<RecordedEvent> {
        let events: Vec<RecordedEvent> = self.buffer.drain(..n).collect();
        self.handed_up_to = match (self.buffer.is_empty(), events.last()) {
            (true, _) => self.fetched_up_to,
            (false, Some(last)) => last.global_position,
            (false, None) => self.handed_up_to,
        };
        events
    }

    /// Waits for a wake-up, at most the poll interval.
    async fn wait(&mut self) {
        let interval = self.options.poll_interval;
        if let Ok(Err(_closed)) = tokio::time::timeout(interval, self.changes.changed()).await {
            // No more wake-ups will come: fall back to plain polling.
            tokio::time::sleep(interval).await;
        }
    }

    async fn fetch(&mut self) -> Result<()> {
        let page = self
            .reader
            .read_all_of_types(
                self.fetched_up_to,
                self.options.category.as_deref(),
                self.options.event_types.as_deref(),
                self.options.page_size,
            )
            .await?;
        self.fetched_up_to = self.fetched_up_to.max(page.through);
        self.buffer.extend(page.events);
        Ok(())
    }
}

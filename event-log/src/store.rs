use std::future::Future;

use eventfold_event_schemas::{
    ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId, StreamVersion,
};
use tokio::sync::watch;

use crate::{AppendResult, Result, Subscription, SubscriptionOptions};

/// `from` for reading a stream backwards from its last event.
pub const STREAM_END: StreamVersion = StreamVersion::MAX;

/// Which way to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadDirection {
    /// Oldest first, from a version upwards.
    Forwards,
    /// Newest first, from a version downwards.
    Backwards,
}

/// A page of a read of `$all` restricted to some event types: every event of those
/// types in `(after, through]` is in `events`, in position order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The wanted events.
    pub events: Vec<RecordedEvent>,
    /// The position of the last event read (wanted or not); the read's `after` when
    /// nothing was read.
    pub through: Position,
}

impl Page {
    /// The page of an unrestricted read `after`, keeping the events of `event_types`.
    pub fn filtered(
        after: Position,
        events: Vec<RecordedEvent>,
        event_types: Option<&[String]>,
    ) -> Self {
        let through = events.last().map_or(after, |e| e.global_position);
        let events = match event_types {
            None => events,
            Some(types) => events
                .into_iter()
                .filter(|e| types.contains(&e.event_type))
                .collect(),
        };
        Self { events, through }
    }
}

/// Reading the log. Every read only returns events that are safe to build on: a
/// reader that pages through `$all` by position never skips an event that commits
/// later with a lower position.
pub trait EventReader: Send + Sync {
    /// Up to `max` events of one stream, starting at version `from` (inclusive) and going
    /// `direction`. Backwards from [`STREAM_END`] reads the newest events first.
    fn read_stream(
        &self,
        stream: &StreamId,
        direction: ReadDirection,
        from: StreamVersion,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Up to `max` events of `$all` (or of one `category`) with positions after `after`,
    /// oldest first.
    fn read_all(
        &self,
        after: Position,
        category: Option<&str>,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Like [`read_all`](Self::read_all) (up to `max` events after `after` are read),
    /// but only the events of `event_types` are returned (all of them with `None`), and
    /// the page says through which position the log was read. A reader that wants a
    /// few types moves past the others without receiving them; the stores leave the
    /// payloads of unwanted events unsent and unparsed where they can.
    fn read_all_of_types(
        &self,
        after: Position,
        category: Option<&str>,
        event_types: Option<&[String]>,
        max: usize,
    ) -> impl Future<Output = Result<Page>> + Send {
        async move {
            let events = self.read_all(after, category, max).await?;
            Ok(Page::filtered(after, events, event_types))
        }
    }

    /// The stream's last version, `None` when it has no events.
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<StreamVersion>>> + Send;

    /// The version at which `stream` holds the event `event_id`, `None` when it holds
    /// no such event. (What a command retried with its idempotency key asks: its events'
    /// ids are derived from the key. The stores answer from their unique index on event
    /// ids; this default reads the stream.)
    fn version_of_event(
        &self,
        stream: &StreamId,
        event_id: uuid::Uuid,
    ) -> impl Future<Output = Result<Option<StreamVersion>>> + Send {
        async move {
            let mut from = 0;
            loop {
                let page = self
                    .read_stream(stream, ReadDirection::Forwards, from, 1000)
                    .await?;
                if let Some(found) = page.iter().find(|r| r.event_id == event_id) {
                    return Ok(Some(found.stream_version));
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => from = last.stream_version + 1,
                    _ => return Ok(None),
                }
            }
        }
    }

    /// The position of the newest committed event ([`Position::START`] when empty).
    fn head(&self) -> impl Future<Output = Result<Position>> + Send;

    /// A receiver that changes whenever the log may have new events: appends in this
    /// process, and (on Postgres) notifications from other processes. Subscriptions also
    /// poll, so a missed wake-up delays but never loses events.
    fn changes(&self) -> watch::Receiver<u64>;

    /// Whether the log takes appends now: `false` when its server only reads (a
    /// PostgreSQL standby after a failover, `default_transaction_read_only`), where
    /// every append would be refused. Readiness asks this, so that a process whose
    /// commands can only fail is not sent any.
    fn writable(&self) -> impl Future<Output = Result<bool>> + Send {
        async { Ok(true) }
    }

    /// The circuit breaker of the log's server, if it has one (PostgreSQL): open while
    /// the server does not answer (see [`crate::breaker`]).
    fn breaker(&self) -> Option<&crate::Breaker> {
        None
    }
}

/// Appending to the log.
pub trait EventWriter: Send + Sync {
    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    ///
    /// Re-appending events whose ids are already stored at the same place returns the
    /// original result and writes nothing; the same ids anywhere else are
    /// [`Error::DuplicateEventId`](crate::Error::DuplicateEventId).
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> impl Future<Output = Result<AppendResult>> + Send;
}

/// The whole event log: reading, appending, subscribing.
pub trait EventStore: EventReader + EventWriter + Clone + 'static {
    /// Delivers every event after `after` (optionally of one category), then follows the
    /// log live. Catch-up and live delivery go through the same gap-safe read, so nothing
    /// is skipped or delivered twice.
    fn subscribe(&self, after: Position, options: SubscriptionOptions) -> Subscription<Self> {
        Subscription::new(self.clone(), after, options)
    }
}

impl<T: EventReader + EventWriter + Clone + 'static> EventStore for T {}

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

    /// The stream's last version, `None` when it has no events.
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<StreamVersion>>> + Send;

    /// The position of the newest committed event ([`Position::START`] when empty).
    fn head(&self) -> impl Future<Output = Result<Position>> + Send;

    /// A receiver that changes whenever the log may have new events: appends in this
    /// process, and (on Postgres) notifications from other processes. Subscriptions also
    /// poll, so a missed wake-up delays but never loses events.
    fn changes(&self) -> watch::Receiver<u64>;
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

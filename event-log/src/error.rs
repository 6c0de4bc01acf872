use eventfold_event_schemas::{ExpectedVersion, StreamId, StreamIdError, StreamVersion};
use uuid::Uuid;

/// Result of event-log operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to the event log, shaped by what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream is not at the version the appender expected: reload and decide again.
    #[error("stream {stream_id} is at version {}, but the append expected {expected}", display_version(*.actual))]
    WrongExpectedVersion {
        /// The stream appended to.
        stream_id: StreamId,
        /// What the appender expected.
        expected: ExpectedVersion,
        /// The stream's actual last version (`None`: the stream does not exist).
        actual: Option<StreamVersion>,
    },
    /// An event id of the append is already stored somewhere else.
    #[error("event {event_id} is already stored in stream {stored_in} at version {stored_version}, not where this append would put it")]
    DuplicateEventId {
        /// The offending id.
        event_id: Uuid,
        /// Where it is stored.
        stored_in: StreamId,
        /// At which version.
        stored_version: StreamVersion,
    },
    /// The stream id is malformed.
    #[error(transparent)]
    InvalidStreamId(#[from] StreamIdError),
    /// An append with no events.
    #[error("an append must contain at least one event")]
    EmptyAppend,
    /// `ExpectedVersion::Exact` with a version below 0, which no stream is at.
    #[error("expected version {0} is invalid: stream versions start at 0")]
    InvalidExpectedVersion(StreamVersion),
    /// An append with more events than the configured limit.
    #[error("an append may contain at most {max} events; this one has {count}")]
    TooManyEvents {
        /// Events in the append.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One event's serialised data and metadata exceed the configured size.
    #[error("event {event_id} is {size} bytes; the limit is {max}")]
    EventTooLarge {
        /// The event.
        event_id: Uuid,
        /// Serialised size of data + metadata.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Event data must be a JSON object.
    #[error("event {event_id}: data must be a JSON object, got {found}")]
    DataNotObject {
        /// The event.
        event_id: Uuid,
        /// The JSON kind found instead (`array`, `string`, …).
        found: &'static str,
    },
    /// A string or key of the event's data or metadata holds a NUL character, which no
    /// backend may store (PostgreSQL's `jsonb` cannot; one log stores what the others do).
    #[error("event {event_id}: its {part} holds a NUL character (\\u0000), which the log does not store")]
    NulCharacter {
        /// The event.
        event_id: Uuid,
        /// `data` or `metadata`.
        part: &'static str,
    },
    /// The event type is empty, too long or has characters other than letters, digits, `_`, `.`.
    #[error("event type {0:?} is invalid: use 1-100 ASCII letters, digits, `_` or `.`")]
    InvalidEventType(String),
    /// Schema versions start at 1.
    #[error("event {event_id}: schema version must be >= 1, got {schema_version}")]
    InvalidSchemaVersion {
        /// The event.
        event_id: Uuid,
        /// The rejected version.
        schema_version: i32,
    },
    /// The category filter is not a valid stream category.
    #[error("{0:?} is not a valid stream category")]
    InvalidCategory(String),
    /// The database URL names no supported backend.
    #[error("unsupported database URL {0:?}: use postgres://…, sqlite://… or memory:")]
    UnsupportedUrl(String),
    /// A stored row could not be decoded (the log was written by something else).
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt {
        /// Where.
        position: i64,
        /// Why.
        reason: String,
    },
    /// The database failed or is unreachable; retrying later may help.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Serialising an event failed.
    #[error("could not serialise event: {0}")]
    Serialise(#[from] serde_json::Error),
    /// The group commit this append was queued in failed as a whole (the database failed
    /// or the connection was lost mid-commit). Whether it committed is unknown, as for any
    /// append whose connection dies: re-appending the same events is safe and answers
    /// with the original result if it did.
    #[error("the group commit failed, this append may or may not be stored: {0}")]
    GroupCommitFailed(std::sync::Arc<Error>),
    /// The server is unreachable and the store's circuit breaker is open: the operation
    /// was not tried (nothing was written). Retry after a moment.
    #[error(transparent)]
    Unavailable(#[from] crate::breaker::Open),
    /// The group-commit queue is gone (the store is shutting down); nothing was written.
    #[error("the event log is shutting down")]
    GroupCommitStopped,
}

impl Error {
    /// Whether the caller made a mistake (bad input, conflict) rather than the store failing.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Error::Database(_)
                | Error::GroupCommitFailed(_)
                | Error::GroupCommitStopped
                | Error::Migration(_)
                | Error::Corrupt { .. }
                | Error::Serialise(_)
                | Error::UnsupportedUrl(_)
                | Error::Unavailable(_)
        )
    }

    /// Whether an append that failed with this error may nonetheless be stored: its
    /// connection broke with the statement or the commit in flight (I/O, TLS, the
    /// protocol, the driver's worker), so only a read can tell — also for a group
    /// commit that failed so. A refusal by the server (it rolls the transaction back),
    /// a pool that gave no connection, an open circuit breaker: nothing was stored.
    pub fn may_have_been_stored(&self) -> bool {
        match self {
            Error::Database(error) => matches!(
                error,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::WorkerCrashed
            ),
            Error::GroupCommitFailed(inner) => match inner.as_ref() {
                Error::Database(_) => inner.may_have_been_stored(),
                Error::Unavailable(_) | Error::GroupCommitStopped => false,
                // Anything else (the group's answers did not match its appends): the
                // transaction's fate is not known.
                _ => true,
            },
            _ => false,
        }
    }

    /// The database error under this one, if any (also inside a failed group commit).
    pub fn database_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Database(e) => Some(e),
            Error::GroupCommitFailed(inner) => inner.database_error(),
            _ => None,
        }
    }
}

fn display_version(actual: Option<StreamVersion>) -> String {
    match actual {
        Some(v) => v.to_string(),
        None => "no_stream (it does not exist)".to_owned(),
    }
}

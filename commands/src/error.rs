use eventfold_domain::DomainError;
use eventfold_event_schemas::DecodeError;

/// Result of command handling.
pub type Result<T, E = CommandError> = std::result::Result<T, E>;

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A domain rule refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The caller may not act on this data.
    #[error("{subject} may not act on this {what}")]
    Forbidden {
        /// The caller.
        subject: String,
        /// What they tried to act on (`reminder`, `order`, …).
        what: &'static str,
    },
    /// The input is malformed (bad id, bad field).
    #[error("{0}")]
    InvalidInput(String),
    /// The same idempotency key was used for a different request (another command,
    /// another body, another caller) on the same stream.
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// Writers kept racing for the same stream: the command gave up.
    #[error("stream {stream} kept changing under the command ({attempts} attempts); retry")]
    Contention {
        /// The stream.
        stream: String,
        /// Attempts made.
        attempts: usize,
    },
    /// A stored event could not be decoded.
    #[error("stream {stream} holds an event this build cannot read: {source}")]
    Undecodable {
        /// The stream.
        stream: String,
        /// Why.
        source: DecodeError,
    },
    /// The stream holds an event type the command side does not know.
    #[error("stream {stream} holds unknown event type {event_type}")]
    UnknownEventType {
        /// The stream.
        stream: String,
        /// The type.
        event_type: String,
    },
    /// The event log failed.
    #[error(transparent)]
    Store(#[from] eventfold_event_log::Error),
    /// The event log failed with the command's append in flight (its connection broke)
    /// and could not be read afterwards to tell whether the append was stored.
    #[error("the append's outcome is unknown: {0}")]
    OutcomeUnknown(eventfold_event_log::Error),
    /// The shared slot book's tables failed.
    #[error("slot book: {0}")]
    Slots(String),
    /// A test's fail point at this step (see [`crate::FailSteps`]).
    #[error("injected failure at {0}")]
    Injected(&'static str),
}

//! The published event contract of Eventfold.
//!
//! Everything that reads or writes events agrees on the types in this crate: the
//! envelope of a stored event ([`RecordedEvent`]), what an appender hands to the log
//! ([`NewEvent`]), stream ids ([`StreamId`]), optimistic-concurrency expectations
//! ([`ExpectedVersion`]) and log positions ([`Position`], which doubles as the
//! consistency token returned by commands).
//!
//! The read side (projections, Kafka consumers in other services) depends on this crate,
//! never on aggregate internals.

mod envelope;
pub mod json;
mod payload;
mod position;
mod stream_id;
mod version;

pub use envelope::{EventMetadata, NewEvent, RecordedEvent};
pub use payload::Payload;
pub use position::{ParsePositionError, Position};
pub use stream_id::{is_valid_category, StreamId, StreamIdError, MAX_STREAM_ID_LEN};
pub use version::{ExpectedVersion, ParseExpectedVersionError, StreamVersion};

pub mod catalogue;
pub use catalogue::{DecodeError, DomainEvent};

//! The Eventfold event log: the [`EventStore`] ports and their backends.
//!
//! - [`PgEventStore`] — PostgreSQL, for production. Appends stay concurrent and readers
//!   never skip an event committed out of order (see the `postgres` module docs for the
//!   in-flight watermark that makes this true).
//! - [`SqliteEventStore`] — a single SQLite file in WAL mode: the embedded default.
//! - [`InMemoryEventStore`] — for unit tests.
//! - [`AnyEventStore`] — one of the above, chosen at run time from a URL.
//!
//! Every backend passes the same conformance suite (`tests/conformance_*.rs`).

mod any;
mod append;
pub mod breaker;
mod error;
mod group;
mod memory;
mod pool;
mod postgres;
mod sqlite;
mod store;
mod subscription;
#[cfg(feature = "testing")]
pub mod testing;

pub use any::AnyEventStore;
pub use append::{AppendResult, Limits};
pub use breaker::Breaker;
pub use error::{Error, Result};
pub use group::{GroupCommit, GroupStats};
pub use memory::InMemoryEventStore;
pub use pool::{ping_when_idle, ACQUIRE_TIMEOUT};
pub use postgres::PgEventStore;
pub use sqlite::SqliteEventStore;
pub use store::{EventReader, EventStore, EventWriter, Page, ReadDirection, STREAM_END};
pub use subscription::{Subscription, SubscriptionOptions};

pub use eventfold_event_schemas as schemas;

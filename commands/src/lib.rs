//! The command side: load a stream, decide, append with the expected version.
//!
//! - [`CommandHandler`] — the generic loop: fold the stream, decide, append with
//!   `Exact(version)`, retry a bounded number of times on a version conflict. Event ids
//!   are derived from the command's idempotency key, so a retried command returns the
//!   first result instead of acting twice.
//! - [`CommandService`] — the reference domain's operations (purchases, reminders,
//!   orders, workouts, prices), each a composition of handler calls.
//! - [`http::router`] — the HTTP command routes under `/api/v1`, with authentication.

mod context;
mod error;
mod fail;
mod handler;
pub mod http;
mod service;
mod slots;

pub use context::{CommandContext, Principal, Role};
pub use error::{CommandError, Result};
pub use fail::{steps, FailSteps};
pub use handler::{CommandHandler, CommandOutcome, RecordedSummary};
pub use service::{
    AcceptOutcome, Clock, CommandService, PlannedReminder, Planning, PurchaseOutcome,
};
pub use slots::SlotBook;

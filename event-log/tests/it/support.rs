//! Test databases come from the crate's `testing` feature.

pub use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};

//! Folding the log into read models, exactly once.
//!
//! - [`Runner`] — subscribes from a projection's checkpoint, applies batches, advances
//!   the checkpoint atomically with the writes, retries with backoff, parks poison
//!   events (then stops or skips, by [`PoisonPolicy`]), and reports lag.
//! - [`RelationalSink`] — PostgreSQL or SQLite (one code path through `sqlx::Any`): the
//!   writes and the checkpoint commit in one transaction.
//! - [`RedisSink`] — the writes and the checkpoint go in one `MULTI/EXEC`, guarded by
//!   `WATCH` on the checkpoint.
//! - [`models`] — the reference domain's read models and their queries.

mod error;
pub mod models;
mod redis_sink;
mod runtime;
mod set;
mod sql;
mod status;

pub use error::{Error, Result};
pub use redis_sink::{scan_keys, RedisKeys, RedisProjection, RedisSink};
pub use runtime::{
    with_prefix, FailPoint, PoisonPolicy, Projection, RelationalProjection, RelationalSink, Runner,
    RunnerOptions, Sink, SqlTx,
};
pub use set::{
    redis_families, version_of, ProjectionSet, RedisTarget, StoredProgress, VersionBump, REDIS,
    RELATIONAL,
};
pub use sql::{from_millis, lock_ddl, millis, Dialect, ReadDb};
pub use status::{measure_lag, Lag, ProjectionState, ProjectionStatus, StatusBoard};

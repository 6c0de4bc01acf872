//! Folding the log into read models, exactly once.
//!
//! - [`Runner`] — subscribes from a projection's checkpoint, applies batches, advances
//!   the checkpoint atomically with the writes, retries with backoff, parks poison
//!   events (then stops or skips, by [`PoisonPolicy`]), and reports lag.
//! - [`RelationalSink`] — PostgreSQL or SQLite (one code path through `sqlx::Any`): the
//!   writes and the checkpoint commit in one transaction.
//! - [`RedisSink`] — the writes and the checkpoint go in one `MULTI/EXEC`, guarded by
//!   `WATCH` on the checkpoint.
//! - [`Registry`] — every read model described once ([`Model`]: name, store, owned
//!   tables or key families, handled event types); [`models::reference`] registers the
//!   reference domain's. Adding a read model is one module and one line there.
//! - [`ReadStore`] — one store port per kind ([`RelationalStore`], [`RedisStore`]):
//!   setup, sinks, progress, reset, version checkpoints, shadow builds, compare, swap.
//! - [`models`] — the reference domain's read models and their queries.

mod applier;
mod error;
mod lease;
pub mod models;
mod redis_sink;
mod registry;
mod runtime;
mod set;
mod sql;
mod status;
mod store;
pub mod testing;

pub use applier::{schema_broken, Applier};
pub use async_trait::async_trait;
pub use error::{Error, Result};
pub use lease::{lease_key, owners, Leases};
pub use redis_sink::{
    breaker_for as redis_breaker, ping as redis_ping, scan_keys, RedisKeys, RedisProjection,
    RedisSink,
};
pub use registry::{Model, Registry, StoreKind};
pub use runtime::{
    handed_over, handed_over_at, source_checkpoint, with_prefix, FailPoint, PgBatch, PgTx,
    PoisonPolicy, Projection, RelationalProjection, RelationalSink, Runner, RunnerOptions, Sink,
    SqlTx,
};
pub use set::{version_of, FeedProgress, ProjectionSet, VersionBump};
pub use sql::{begin_write, from_millis, lock_ddl, millis, Dialect, ReadDb};
pub use status::{measure_lag, Lag, ProjectionState, ProjectionStatus, StatusBoard};
pub use store::{
    ch_prefix, snapshot, table_checksum, CatchUp, ChTables, ClickHouseProjection, ClickHouseSink,
    ClickHouseStore, ClickHouseTarget, Label, LabelError, Namespace, ParkedEvent, ReadStore,
    RedisStore, RedisTarget, RelationalStore, StoredProgress, Stores, SwapReport, TableChecksum,
    OLD_NAMESPACE, SHADOW, SHADOW_NAMESPACE,
};

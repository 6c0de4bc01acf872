//! Rebuilds equal the live models, survive concurrent writes and resume after a stop.
#![allow(missing_debug_implementations)]

mod clickhouse;
mod conformance;
mod redis;
mod relational;
mod support;

//! Projections against real PostgreSQL, SQLite and Redis.
#![allow(unreachable_pub, missing_debug_implementations)]

mod clickhouse;
mod exactly_once;
mod leases;
mod lost_tables;
mod outage;
mod poison;
mod redis_models;
mod reset_live;
mod scenario;
mod settle;
mod support;
mod type_filter;

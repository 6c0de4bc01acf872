//! The command side over HTTP, against real stores.
#![allow(unreachable_pub, missing_debug_implementations)]

mod broken_connection;
mod concurrency;
mod edge;
mod http;
mod long_streams;
mod property;
mod retries;
mod support;

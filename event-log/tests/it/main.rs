//! Integration tests of the event log against every backend (one binary, so one link).
#![allow(unreachable_pub, missing_debug_implementations)]

mod cancelled_begin;
mod conformance;
mod group_commit;
mod postgres_gaps;
mod support;

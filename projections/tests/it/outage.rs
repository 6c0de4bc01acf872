//! The read store going away is retried without end, never counted against an event:
//! errors a server gives while it shuts down, starts up or drops connections
//! (SQLSTATE classes 08, 53, 57P and 58, and 25006 from a server that only reads)
//! would otherwise park good events. A transaction
//! rolled back for a conflict with another (class 40, 55P03) is retried the same way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::{EventReader, EventWriter};
use eventfold_event_schemas::{
    DomainEvent, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
};
use eventfold_projections::{FailPoint, Runner, RunnerOptions, Sink, StatusBoard};
use serde_json::json;

/// A sink whose first `failures` applies meet a server error with `code`, raised by the
/// real server; it then records what it applies.
struct Flaky {
    pool: sqlx::PgPool,
    code: &'static str,
    failures: usize,
    calls: AtomicUsize,
    checkpoint: Mutex<Position>,
    applied: Mutex<Vec<i64>>,
    parked: Mutex<Vec<i64>>,
}

#[eventfold_projections::async_trait]
impl Sink for Flaky {
    fn name(&self) -> &'static str {
        "flaky.v1"
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    async fn setup(&self) -> eventfold_projections::Result<()> {
        Ok(())
    }

    async fn checkpoint(&self) -> eventfold_projections::Result<Position> {
        Ok(self
            .checkpoint
            .lock()
            .map(|c| *c)
            .unwrap_or(Position::START))
    }

    async fn apply(
        &self,
        _from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> eventfold_projections::Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            let raise = format!(
                "DO $$ BEGIN RAISE EXCEPTION 'the server is going away' USING ERRCODE = '{}'; END $$",
                self.code
            );
            sqlx::query(&raise).execute(&self.pool).await?;
        }
        if let Ok(mut applied) = self.applied.lock() {
            applied.extend(events.iter().map(|(r, _)| r.global_position.0));
        }
        if let Ok(mut c) = self.checkpoint.lock() {
            *c = to;
        }
        Ok(())
    }

    async fn park(
        &self,
        record: &RecordedEvent,
        _error: &str,
    ) -> eventfold_projections::Result<()> {
        if let Ok(mut parked) = self.parked.lock() {
            parked.push(record.global_position.0);
        }
        Ok(())
    }

    fn fail_point(&self) -> FailPoint {
        FailPoint::default()
    }
}

#[tokio::test]
async fn a_server_shutting_down_or_starting_up_or_a_conflicting_transaction_parks_nothing(
) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let event = NewEvent::new(
        "PriceChanged",
        json!({"sku": "S", "title": "T", "unit_price": 100, "currency": "RUB",
               "available": true, "delivery_days": 1, "changed_at": "2026-12-01T00:00:00Z"}),
    );
    db.store
        .append(&StreamId::new("catalog-S")?, ExpectedVersion::Any, &[event])
        .await?;
    let options = RunnerOptions {
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..RunnerOptions::default()
    };
    // More failures in a row than the attempts an event gets before it is parked.
    let failures = options.max_attempts as usize * 3;
    // 57P01 admin shutdown, 57P03 starting up, 08006 connection failure, 53300 too
    // many connections, 58030 I/O error, 25006 a server that only reads (a standby
    // after a failover); and transactions rolled back for a conflict with another:
    // 40001 serialization failure, 40P01 deadlock, 55P03 lock not available.
    for code in [
        "57P01", "57P03", "08006", "53300", "58030", "25006", "40001", "40P01", "55P03",
    ] {
        let sink = Flaky {
            pool: sqlx::PgPool::connect_with(db.options.clone()).await?,
            code,
            failures,
            calls: AtomicUsize::new(0),
            checkpoint: Mutex::new(Position::START),
            applied: Mutex::new(Vec::new()),
            parked: Mutex::new(Vec::new()),
        };
        let sink = Arc::new(sink);
        let runner = Runner::new(
            db.store.clone(),
            Arc::clone(&sink),
            options.clone(),
            StatusBoard::default(),
        );
        let head = db.store.head().await?;
        let outcome = runner.run_until(Some(head)).await;
        assert!(outcome.is_ok(), "{code}: {outcome:?}");
        let parked = sink.parked.lock().map(|p| p.clone()).unwrap_or_default();
        assert!(parked.is_empty(), "{code}: parked {parked:?}");
        let applied = sink.applied.lock().map(|a| a.clone()).unwrap_or_default();
        assert_eq!(applied, [head.0], "{code}");
        assert!(sink.calls.load(Ordering::SeqCst) > failures, "{code}");
    }
    Ok(())
}

//! A sink that stores a batch's checkpoint beside the next batch (ClickHouse's) is
//! settled by the runner before it returns at its target and when it stops: whoever
//! reads the checkpoint next (a swap, the next start) sees where it got to. Before, a
//! rebuild could resume a shadow whose data was gone from a checkpoint that landed
//! after the loss was looked for (CI's one-at-a-time ClickHouse run).

use std::sync::Mutex;
use std::time::Duration;

use eventfold_event_log::{EventWriter, InMemoryEventStore};
use eventfold_event_schemas::{
    DomainEvent, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
};
use eventfold_projections::{FailPoint, Runner, RunnerOptions, Sink, StatusBoard};
use serde_json::json;

/// Keeps each batch's checkpoint pending until the next batch or `settle` (a fake for
/// the runner's contract; the ClickHouse sink is the real one).
#[derive(Default)]
struct Deferred {
    stored: Mutex<Position>,
    pending: Mutex<Option<Position>>,
}

impl Deferred {
    fn stored(&self) -> Position {
        self.stored.lock().map(|p| *p).unwrap_or(Position::START)
    }

    fn store_pending(&self) {
        if let (Ok(mut pending), Ok(mut stored)) = (self.pending.lock(), self.stored.lock()) {
            if let Some(at) = pending.take() {
                *stored = at;
            }
        }
    }
}

#[eventfold_projections::async_trait]
impl Sink for Deferred {
    fn name(&self) -> &'static str {
        "deferred.v1"
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    async fn setup(&self) -> eventfold_projections::Result<()> {
        Ok(())
    }

    async fn checkpoint(&self) -> eventfold_projections::Result<Position> {
        self.store_pending();
        Ok(self.stored())
    }

    async fn apply(
        &self,
        _from: Position,
        _events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> eventfold_projections::Result<()> {
        self.store_pending();
        if let Ok(mut pending) = self.pending.lock() {
            *pending = Some(to);
        }
        Ok(())
    }

    async fn park(
        &self,
        _record: &RecordedEvent,
        _error: &str,
    ) -> eventfold_projections::Result<()> {
        Ok(())
    }

    fn fail_point(&self) -> FailPoint {
        FailPoint::default()
    }

    async fn settle(&self) -> eventfold_projections::Result<()> {
        self.store_pending();
        Ok(())
    }
}

async fn log_of(events: usize) -> anyhow::Result<(InMemoryEventStore, Position)> {
    let log = InMemoryEventStore::default();
    for i in 0..events {
        let event = NewEvent::new(
            "PriceChanged",
            json!({"sku": format!("S{i}"), "title": "T", "unit_price": 100, "currency": "RUB",
                   "available": true, "delivery_days": 1, "changed_at": "2026-12-01T00:00:00Z"}),
        );
        log.append(
            &StreamId::new(format!("catalog-S{i}"))?,
            ExpectedVersion::Any,
            &[event],
        )
        .await?;
    }
    let head = eventfold_event_log::EventReader::head(&log).await?;
    Ok((log, head))
}

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 2,
        poll_interval: Duration::from_millis(10),
        ..RunnerOptions::default()
    }
}

#[tokio::test]
async fn a_runner_at_its_target_has_stored_its_last_checkpoint() -> anyhow::Result<()> {
    let (log, head) = log_of(5).await?;
    let sink = std::sync::Arc::new(Deferred::default());
    Runner::new(log, sink.clone(), options(), StatusBoard::default())
        .run_until(Some(head))
        .await?;
    assert_eq!(sink.stored(), head);
    Ok(())
}

#[tokio::test]
async fn a_runner_told_to_stop_stores_its_last_checkpoint() -> anyhow::Result<()> {
    let (log, head) = log_of(5).await?;
    let sink = std::sync::Arc::new(Deferred::default());
    let board = StatusBoard::default();
    let runner = Runner::new(log, sink.clone(), options(), board.clone());
    let applied = async {
        while board.checkpoint_of("deferred.v1") < head {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    runner.run(applied).await?;
    assert_eq!(sink.stored(), head);
    Ok(())
}

//! One suite for every registered read model in every store port: a new model or a new
//! store gets these checks by being registered. For each model of the reference
//! registry, in PostgreSQL, SQLite and Redis:
//!
//! 1. apply: the live sink folds the whole log in small batches while its fail point
//!    fails every batch once between its writes and its checkpoint (asserted to fire);
//! 2. re-apply after those failed batches leaves nothing twice: a clean shadow build
//!    of the same log is compared with the live model at the same checkpoint and
//!    swapped in (the swap refuses a mismatch);
//! 3. a model projector workers took over (its live checkpoint handed over) is not
//!    replaced by a build from the log: the rebuild refuses before it builds anything,
//!    the swap refuses too, and the live model keeps its data and its hand-over;
//! 4. reset deletes the model and its checkpoint, and the runner rebuilds it from 0 to
//!    the same result, compared again by a second swap.

use std::sync::Arc;
use std::time::Duration;

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::EventStore;
use eventfold_event_schemas::Position;
use eventfold_projections::{
    handed_over, models, CatchUp, Namespace, ParkedEvent, ReadDb, ReadStore, RelationalStore,
    Runner, RunnerOptions, Sink, StatusBoard, StoreKind,
};

use crate::support::{populate, rebuild_and_swap, RedisSpace};

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 9,
        backoff: Duration::from_millis(1),
        ..RunnerOptions::default()
    }
}

async fn swap<S: EventStore>(
    log: &S,
    store: &dyn ReadStore,
    model: &eventfold_projections::Model,
) -> anyhow::Result<()> {
    let report = rebuild_and_swap(log, store, model)
        .await?
        .expect("a swap report");
    assert!(
        report.verified_against_live,
        "{}: the rebuilt model was not compared with the live one",
        model.name()
    );
    Ok(())
}

/// A tail that is never needed: the swaps it is given refuse before any catch-up.
struct NoTail;

#[eventfold_projections::async_trait]
impl CatchUp for NoTail {
    async fn catch_up(
        &self,
        _sink: Arc<dyn Sink>,
        to: Position,
    ) -> eventfold_projections::Result<Position> {
        Ok(to)
    }
}

/// Every check, for every registered model of `store`'s kind.
async fn conformance<S: EventStore>(log: &S, store: &dyn ReadStore) -> anyhow::Result<()> {
    let head = log.head().await?;
    let registry = models::reference();
    registry.check().map_err(anyhow::Error::msg)?;
    let mut checked = 0;
    for model in registry.in_store(store.kind()) {
        let name = model.name();
        store.setup(model).await?;
        let live = store.sink(model, &Namespace::Live)?;
        let fail_point = live.fail_point();
        fail_point.arm_spread(u32::MAX);
        Runner::new(log.clone(), live.clone(), options(), StatusBoard::default())
            .run_until(Some(head))
            .await?;
        assert!(
            fail_point.fired() >= 1,
            "{name}: the fail point fired {} times: nothing was re-applied",
            fail_point.fired()
        );
        assert_eq!(live.checkpoint().await?, head, "{name}: live checkpoint");
        let progress = store.progress(model).await?;
        assert_eq!(progress.checkpoint, Some(head), "{name}: stored progress");
        assert_eq!(progress.parked, 0, "{name}: parked events");
        swap(log, store, model).await?;
        let after = store.progress(model).await?;
        assert_eq!(
            after.checkpoint,
            Some(head),
            "{name}: checkpoint after swap"
        );
        assert!(!after.rebuilding, "{name}: a shadow is left behind");

        // Projector workers take it over at its checkpoint; one partition's feed has
        // applied a little (its checkpoint is listed with the model's progress).
        live.apply(head, &[], handed_over(head)).await?;
        let feed = store.source_sink(model, "relay.test#3")?;
        feed.setup().await?;
        feed.apply(feed.checkpoint().await?, &[], head).await?;
        assert_eq!(
            store.progress(model).await?.sources,
            [("relay.test#3".to_owned(), head.0)].into(),
            "{name}: the partition's feed is not listed"
        );
        let refused = rebuild_and_swap(log, store, model).await;
        assert!(
            matches!(
                refused,
                Err(eventfold_replay::Error::Projection(
                    eventfold_projections::Error::FedFromKafka { .. }
                ))
            ),
            "{name}: a model fed from Kafka was rebuilt from the log: {refused:?}"
        );
        assert!(
            !store.progress(model).await?.rebuilding,
            "{name}: the refused rebuild built a shadow first"
        );
        // Taken over while a shadow was built: the swap itself refuses.
        let refused = store.swap(model, false, &NoTail).await;
        assert!(
            matches!(
                refused,
                Err(eventfold_projections::Error::FedFromKafka { .. })
            ),
            "{name}: a model fed from Kafka was swapped: {refused:?}"
        );
        assert_eq!(
            live.checkpoint().await?,
            handed_over(head),
            "{name}: the hand-over was undone"
        );

        // An event the sink parks is listed by the port, oldest first, and the
        // model's reset forgets it.
        let first = log.read_all(Position::START, None, 2).await?;
        for record in first.iter().rev() {
            live.park(
                record,
                &format!("parked by hand at {}", record.global_position.0),
            )
            .await?;
        }
        let parked = store.parked(model).await?;
        let expected: Vec<ParkedEvent> = first
            .iter()
            .map(|r| ParkedEvent {
                position: r.global_position.0,
                event_type: r.event_type.clone(),
                error: format!("parked by hand at {}", r.global_position.0),
            })
            .collect();
        assert_eq!(parked, expected, "{name}: parked events as listed");
        assert_eq!(
            store.progress(model).await?.parked,
            2,
            "{name}: parked count"
        );

        let deleted = store.reset(model).await?;
        assert!(
            deleted > 0,
            "{name}: the model was empty: nothing was tested"
        );
        assert_eq!(
            store.progress(model).await?.checkpoint,
            None,
            "{name}: reset keeps the checkpoint"
        );
        assert!(
            store.parked(model).await?.is_empty(),
            "{name}: reset keeps the parked events"
        );
        let again = store.sink(model, &Namespace::Live)?;
        again.setup().await?;
        Runner::new(log.clone(), again, options(), StatusBoard::default())
            .run_until(Some(head))
            .await?;
        swap(log, store, model).await?;
        checked += 1;
    }
    assert!(checked > 0, "no {} models registered", store.kind());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_model_conforms_on_postgres() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    populate(pg.store.clone(), "pg", 4, 3).await?;
    let store = RelationalStore::new(ReadDb::connect(&pg.url()).await?);
    conformance(&pg.store, &store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_model_conforms_on_sqlite() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    populate(db.store.clone(), "lite", 4, 3).await?;
    let store = RelationalStore::new(ReadDb::connect(&db.url).await?);
    conformance(&db.store, &store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_model_conforms_in_redis() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    populate(db.store.clone(), "redis", 4, 3).await?;
    let space = RedisSpace::new()?;
    let store: Arc<dyn ReadStore> = Arc::new(space.target());
    assert_eq!(store.kind(), StoreKind::Redis);
    conformance(&db.store, store.as_ref()).await
}

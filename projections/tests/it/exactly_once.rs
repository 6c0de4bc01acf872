//! A projector that dies between its writes and its checkpoint resumes with nothing
//! duplicated and nothing missing.

use std::time::Duration;

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::{EventReader, EventStore};
use eventfold_projections::models::workouts::{self, WorkoutsProjection};
use eventfold_projections::{ReadDb, RelationalSink, Runner, RunnerOptions, Sink, StatusBoard};

use crate::support::append_completed_workouts;

const WORKOUTS: usize = 120;
const USERS: usize = 4;

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 7,
        backoff: Duration::from_millis(1),
        ..RunnerOptions::default()
    }
}

async fn assert_totals(db: &ReadDb) -> anyhow::Result<()> {
    for u in 0..USERS {
        let stats = workouts::stats(db, &format!("runner{u}"))
            .await?
            .expect("stats");
        let per_user = (WORKOUTS / USERS) as i64;
        assert_eq!(
            stats.workouts, per_user,
            "runner{u}: duplicated or missing workouts"
        );
        assert_eq!(stats.total_distance_m, per_user as f64 * 1000.0);
        assert_eq!(stats.total_seconds, per_user * 300);
    }
    Ok(())
}

async fn injected_failures_leave_no_trace<S: EventStore>(
    store: S,
    url: &str,
) -> anyhow::Result<()> {
    append_completed_workouts(&store, WORKOUTS, USERS).await?;
    let db = ReadDb::connect(url).await?;
    let sink = RelationalSink::new(db.clone(), WorkoutsProjection);
    // Every one of the first 10 batches fails after writing, before its checkpoint.
    let fail_point = sink.fail_point();
    fail_point.arm(10);
    let runner = Runner::new(store.clone(), sink, options(), StatusBoard::default());
    runner.run_until(Some(store.head().await?)).await?;
    assert_eq!(
        fail_point.fired(),
        10,
        "the fail point did not fire: nothing was tested"
    );
    assert_eq!(runner.sink().checkpoint().await?, store.head().await?);
    assert_totals(&db).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_between_writes_and_checkpoint_duplicate_nothing_on_postgres() -> anyhow::Result<()>
{
    let db = PgTestDb::new().await?;
    injected_failures_leave_no_trace(db.store.clone(), &db.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_between_writes_and_checkpoint_duplicate_nothing_on_sqlite() -> anyhow::Result<()>
{
    let db = SqliteTestDb::new().await?;
    injected_failures_leave_no_trace(db.store.clone(), &db.url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_again_and_again_ends_exactly_where_a_clean_one_does(
) -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    let store = pg.store.clone();
    append_completed_workouts(&store, WORKOUTS, USERS).await?;
    let head = store.head().await?;
    let db = ReadDb::connect(&pg.url()).await?;
    // Kill the runner task at arbitrary moments (mid-transaction included), restart.
    for round in 0..15u64 {
        let (store, db) = (store.clone(), db.clone());
        let task = tokio::spawn(async move {
            let runner = Runner::new(
                store,
                RelationalSink::new(db, WorkoutsProjection),
                options(),
                StatusBoard::default(),
            );
            runner.run_until(Some(head)).await
        });
        tokio::time::sleep(Duration::from_millis(3 + round * 2)).await;
        task.abort();
        let _ = task.await;
    }
    let runner = Runner::new(
        store.clone(),
        RelationalSink::new(db.clone(), WorkoutsProjection),
        options(),
        StatusBoard::default(),
    );
    runner.run_until(Some(head)).await?;
    assert_totals(&db).await
}

/// A sink keeps the workouts under way in memory from one batch to the next, as it
/// wrote them. Another sink of the same model that applies a batch in between (a
/// second runner, before the first finds its checkpoint moved) changes those rows: the
/// first sink's next batch, which no longer follows its own, must read them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_kept_between_batches_are_not_used_after_another_sink_wrote() -> anyhow::Result<()> {
    use eventfold_event_log::EventWriter;
    use eventfold_event_schemas::catalogue::{GeoPoint, WorkoutStarted, WorkoutUpdated};
    use eventfold_event_schemas::StreamId;
    use eventfold_event_schemas::{DomainEvent, EventMetadata, ExpectedVersion, Position};
    use uuid::Uuid;

    let pg = PgTestDb::new().await?;
    let id = Uuid::new_v4();
    let at = crate::support::now();
    let mut events: Vec<DomainEvent> = vec![WorkoutStarted {
        workout_id: id,
        user_id: "kept".into(),
        sport: "running".into(),
        goal_distance_m: None,
        started_at: at,
    }
    .into()];
    for k in 1..=3 {
        events.push(
            WorkoutUpdated {
                workout_id: id,
                distance_m: Some(f64::from(k) * 100.0),
                heart_rate: None,
                speed_mps: None,
                points: vec![GeoPoint {
                    lat: 55.0,
                    lon: 37.0 + f64::from(k),
                    at,
                }],
                updated_at: at,
            }
            .into(),
        );
    }
    let new: Vec<_> = events
        .iter()
        .map(|e| e.to_new_event(Uuid::new_v4(), EventMetadata::default()))
        .collect();
    pg.store
        .append(
            &StreamId::from_parts("workout", id)?,
            ExpectedVersion::NoStream,
            &new,
        )
        .await?;
    let decoded = decoded_log(&pg.store).await?;
    let at_ = |i: usize| decoded[i].0.global_position;

    let db = ReadDb::connect(&pg.url()).await?;
    let first = RelationalSink::new(db.clone(), WorkoutsProjection);
    let second = RelationalSink::new(db.clone(), WorkoutsProjection);
    first.setup().await?;
    // The first sink starts the workout and takes its first update (and keeps it) …
    first.apply(Position::START, &decoded[0..2], at_(1)).await?;
    // … another takes the second update …
    second.apply(at_(1), &decoded[2..3], at_(2)).await?;
    // … and the first, applying the third, must fold it over the second's row.
    first.apply(at_(2), &decoded[3..4], at_(3)).await?;
    let view = workouts::get(&db, &id.to_string())
        .await?
        .expect("the workout");
    assert_eq!((view.updates, view.points), (3, 3), "{view:?}");
    assert_eq!(view.distance_m, 300.0);
    assert_eq!(workouts::route(&db, &id.to_string()).await?.len(), 3);
    Ok(())
}

/// Two sinks of one model apply the same batches at the same moment (two runners
/// during a lease hand-over): each batch commits once, the other sink is told the
/// checkpoint moved — on PostgreSQL that is raised inside the batch's first round
/// trip, and the connection it failed on is not handed out inside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applied_by_two_sinks_at_once_commits_once() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    let db = ReadDb::connect(&pg.url()).await?;
    two_sinks_at_once(&pg, &db, WorkoutsProjection).await
}

/// The same through the portable path on PostgreSQL (the models without a native
/// form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applied_by_two_portable_sinks_at_once_commits_once() -> anyhow::Result<()> {
    let pg = PgTestDb::new().await?;
    let db = ReadDb::connect(&pg.url()).await?;
    two_sinks_at_once(&pg, &db, Portable).await
}

/// `workouts.v2` without its native PostgreSQL form.
#[derive(Debug, Clone, Copy)]
struct Portable;

impl eventfold_projections::Projection for Portable {
    fn name(&self) -> &'static str {
        WorkoutsProjection.name()
    }
    fn handles(&self, event_type: &str) -> bool {
        WorkoutsProjection.handles(event_type)
    }
}

#[eventfold_projections::async_trait]
impl eventfold_projections::RelationalProjection for Portable {
    fn schema(&self) -> &'static [&'static str] {
        WorkoutsProjection.schema()
    }
    fn tables(&self) -> &'static [&'static str] {
        WorkoutsProjection.tables()
    }
    async fn apply(
        &self,
        tx: &mut eventfold_projections::SqlTx<'_>,
        event: &eventfold_event_schemas::DomainEvent,
        record: &eventfold_event_schemas::RecordedEvent,
    ) -> eventfold_projections::Result<()> {
        WorkoutsProjection.apply(tx, event, record).await
    }
    async fn apply_batch(
        &self,
        tx: &mut eventfold_projections::SqlTx<'_>,
        events: &[(
            &eventfold_event_schemas::RecordedEvent,
            &eventfold_event_schemas::DomainEvent,
        )],
    ) -> eventfold_projections::Result<()> {
        WorkoutsProjection.apply_batch(tx, events).await
    }
}

async fn two_sinks_at_once<P: eventfold_projections::RelationalProjection + Clone>(
    pg: &PgTestDb,
    db: &ReadDb,
    projection: P,
) -> anyhow::Result<()> {
    use eventfold_event_schemas::Position;
    use eventfold_projections::Error;

    append_completed_workouts(&pg.store, WORKOUTS, USERS).await?;
    let decoded = decoded_log(&pg.store).await?;
    let first = RelationalSink::new(db.clone(), projection.clone());
    let second = RelationalSink::new(db.clone(), projection);
    first.setup().await?;
    let mut from = Position::START;
    let mut moved = 0;
    for batch in decoded.chunks(11) {
        let to = batch.last().expect("a batch").0.global_position;
        let (a, b) = tokio::join!(first.apply(from, batch, to), second.apply(from, batch, to));
        match (a, b) {
            (Ok(()), Err(Error::CheckpointMoved(_))) | (Err(Error::CheckpointMoved(_)), Ok(())) => {
                moved += 1
            }
            (Ok(()), Ok(())) => anyhow::bail!("both sinks applied the batch ending at {to}"),
            (a, b) => anyhow::bail!("unexpected outcome: {a:?} / {b:?}"),
        }
        from = to;
    }
    assert_eq!(moved, decoded.chunks(11).count());
    assert_eq!(first.checkpoint().await?, from);
    assert_totals(db).await
}

/// The whole log (up to 10,000 events), each event decoded.
async fn decoded_log(
    store: &impl EventReader,
) -> anyhow::Result<
    Vec<(
        eventfold_event_schemas::RecordedEvent,
        eventfold_event_schemas::DomainEvent,
    )>,
> {
    use eventfold_event_schemas::{DomainEvent, Position};
    store
        .read_all(Position::START, None, 10_000)
        .await?
        .into_iter()
        .map(|r| {
            let event = DomainEvent::from_recorded(&r)?.expect("a known type");
            Ok((r, event))
        })
        .collect()
}

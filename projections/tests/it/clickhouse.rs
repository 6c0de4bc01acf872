//! The ClickHouse analytical read models against the real server (`scripts/setup`
//! starts it on 127.0.0.1:8123); each test works in a database of its own.

use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::EventReader;
use eventfold_event_schemas::{DomainEvent, Position};
use eventfold_projections::models::analytics::{self, RankBy};
use eventfold_projections::{
    ClickHouseTarget, Namespace, ProjectionSet, ReadDb, RunnerOptions, StatusBoard, StoreKind,
};

use crate::support::{now, run_scenario};

use eventfold_projections::testing::ClickHouseTestDb as ChTestDb;

async fn answers(
    target: &ClickHouseTarget,
    route_workout: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "weekly": analytics::weekly_activity(target, "u3", 10).await?,
        "facts": analytics::workout_facts(target, "u3", 10).await?,
        "by_distance": analytics::leaderboard_week(target, "running", "2026-W48", RankBy::Distance, 10).await?,
        "by_duration": analytics::leaderboard_week(target, "running", "2026-W48", RankBy::Duration, 10).await?,
        "purchases": analytics::purchases_by_month(target, "u1").await?,
        "funnel": analytics::funnel(target).await?,
        "route": analytics::route(target, route_workout).await?,
    }))
}

/// Every projection of `db`'s log, the analytics ones into `ch`.
async fn projections_into(
    db: &PgTestDb,
    ch: &ChTestDb,
) -> anyhow::Result<ProjectionSet<eventfold_event_log::PgEventStore>> {
    let read = ReadDb::connect(&db.url()).await?;
    Ok(ProjectionSet::new(
        db.store.clone(),
        read,
        None,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .with_clickhouse(Some(ch.target.clone())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_s_analytics_equal_hand_computed_values_and_a_batch_applied_twice_changes_nothing(
) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let ch = ChTestDb::new().await?;
    let scenario = run_scenario(db.store.clone()).await?;
    let set = projections_into(&db, &ch).await?;
    let head = set.catch_up().await?;
    let ch_models: Vec<_> = set
        .active()
        .filter(|m| m.store() == StoreKind::ClickHouse)
        .cloned()
        .collect();
    assert_eq!(ch_models.len(), 4);
    let t = &ch.target;

    // u3 completed a 5 km and a 10 km run in ISO week 2026-W48 (a third was cancelled).
    let weekly = analytics::weekly_activity(t, "u3", 10).await?;
    assert_eq!(weekly.len(), 1);
    assert_eq!(
        (
            weekly[0].week.as_str(),
            weekly[0].workouts,
            weekly[0].distance_m
        ),
        ("2026-W48", 2, 15_000.0)
    );
    let facts = analytics::workout_facts(t, "u3", 10).await?;
    let mut distances: Vec<f64> = facts.iter().map(|f| f.distance_m).collect();
    distances.sort_by(f64::total_cmp);
    assert_eq!(distances, [5_000.0, 10_000.0]);
    assert!(facts
        .iter()
        .all(|f| f.sport == "running" && f.calories.is_none()));
    let top = analytics::leaderboard_week(t, "running", "2026-W48", RankBy::Distance, 10).await?;
    assert_eq!(top.len(), 1);
    assert_eq!(
        (top[0].user_id.as_str(), top[0].distance_m, top[0].workouts),
        ("u3", 15_000.0, 2)
    );
    assert!(
        analytics::leaderboard_week(t, "running", "2026-W47", RankBy::Distance, 10)
            .await?
            .is_empty()
    );

    // u1 bought two capsules 60 and 30 days before 2026-11-23: September and October.
    let months = analytics::purchases_by_month(t, "u1").await?;
    let shape: Vec<(&str, &str, u64, u64, u128)> = months
        .iter()
        .map(|m| {
            (
                m.month.as_str(),
                m.category.as_str(),
                m.purchases,
                m.quantity,
                m.spent,
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("2026-10", "coffee", 1, 2, 2_000),
            ("2026-09", "coffee", 1, 2, 2_000)
        ]
    );

    // Coffee: two reminders scheduled (the first superseded), one offered, accepted,
    // placed. Pet food: one scheduled and offered, then declined.
    let funnel = analytics::funnel(t).await?;
    let mut by_category = std::collections::BTreeMap::<String, [u64; 4]>::new();
    for row in &funnel {
        let sums = by_category.entry(row.category.clone()).or_default();
        sums[0] += row.scheduled;
        sums[1] += row.offered;
        sums[2] += row.accepted;
        sums[3] += row.placed;
    }
    assert_eq!(by_category.get("coffee"), Some(&[2, 1, 1, 1]), "{funnel:?}");
    assert_eq!(
        by_category.get("pet_food"),
        Some(&[1, 1, 0, 0]),
        "{funnel:?}"
    );

    let first = scenario.workouts[0].to_string();
    let (owner, points) = analytics::route(t, &first).await?;
    assert_eq!((owner.as_deref(), points.len()), (Some("u3"), 2));

    // Every ClickHouse model's batch applied again: no answer changes.
    let before = answers(t, &first).await?;
    let events = db.store.read_all(Position::START, None, 100_000).await?;
    for model in &ch_models {
        let (_, store) = set.model(model.name())?;
        let sink = store.sink(model, &Namespace::Live)?;
        let batch: Vec<_> = events
            .iter()
            .filter(|e| model.handles(&e.event_type))
            .filter_map(|e| Some((e.clone(), DomainEvent::from_recorded(e).ok()??)))
            .collect();
        assert!(!batch.is_empty(), "{} has nothing to apply", model.name());
        sink.apply(Position::START, &batch, head).await?;
        assert_eq!(sink.checkpoint().await?, head);
    }
    assert_eq!(answers(t, &first).await?, before);
    let _ = now();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_only_the_route_point_months_past_it() -> anyhow::Result<()> {
    use eventfold_event_log::EventWriter;
    use eventfold_event_schemas::catalogue::{GeoPoint, WorkoutStarted, WorkoutUpdated};
    use eventfold_event_schemas::{EventMetadata, ExpectedVersion, StreamId};

    let db = PgTestDb::new().await?;
    let ch = ChTestDb::new().await?;
    let workout = uuid::Uuid::new_v4();
    let at = |months_ago: i64| chrono::Utc::now() - chrono::Duration::days(31 * months_ago);
    let mut events: Vec<DomainEvent> = vec![WorkoutStarted {
        workout_id: workout,
        user_id: "u1".into(),
        sport: "running".into(),
        goal_distance_m: None,
        started_at: at(9),
    }
    .into()];
    for months_ago in [9, 8, 2, 0] {
        events.push(
            WorkoutUpdated {
                workout_id: workout,
                distance_m: None,
                heart_rate: None,
                speed_mps: None,
                points: vec![GeoPoint {
                    lat: 55.7,
                    lon: 37.6,
                    at: at(months_ago),
                }],
                updated_at: at(months_ago),
            }
            .into(),
        );
    }
    let new: Vec<_> = events
        .iter()
        .map(|e| e.to_new_event(uuid::Uuid::new_v4(), EventMetadata::default()))
        .collect();
    db.store
        .append(
            &StreamId::from_parts("workout", workout)?,
            ExpectedVersion::NoStream,
            &new,
        )
        .await?;
    let set = projections_into(&db, &ch).await?;
    set.catch_up().await?;
    let (_, points) = analytics::route(&ch.target, &workout.to_string()).await?;
    assert_eq!(points.len(), 4);
    let dropped = analytics::drop_expired_route_points(&ch.target, 6, chrono::Utc::now()).await?;
    assert_eq!(
        dropped.len(),
        2,
        "the 9- and 8-month-old months: {dropped:?}"
    );
    let (_, points) = analytics::route(&ch.target, &workout.to_string()).await?;
    assert_eq!(points.len(), 2, "the last six months are kept");
    // Again: nothing left to drop.
    assert!(
        analytics::drop_expired_route_points(&ch.target, 6, chrono::Utc::now())
            .await?
            .is_empty()
    );
    Ok(())
}

/// A month of purchases past 2^63 minor units is summed exactly: ClickHouse's `sum` of
/// 64-bit integers wraps silently, and 1,100 lines of the largest amount (2^53 - 1, the
/// most one line may be) used to answer a negative `spent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_purchases_past_64_bits_is_summed_exactly() -> anyhow::Result<()> {
    use eventfold_event_log::EventWriter;
    use eventfold_event_schemas::catalogue::PurchaseRecorded;
    use eventfold_event_schemas::{EventMetadata, ExpectedVersion, StreamId};

    const LARGEST: i64 = (1 << 53) - 1;
    const LINES: u32 = 1_100;
    let db = PgTestDb::new().await?;
    let ch = ChTestDb::new().await?;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-10T10:00:00Z")?.to_utc();
    let new: Vec<_> = (0..LINES)
        .map(|_| {
            DomainEvent::from(PurchaseRecorded {
                user_id: "rich".into(),
                sku: "gold".into(),
                title: "Gold".into(),
                category: "jewellery".into(),
                quantity: 1,
                unit_price: LARGEST,
                currency: "RUB".into(),
                purchased_at: at,
            })
            .to_new_event(uuid::Uuid::new_v4(), EventMetadata::default())
        })
        .collect();
    // In appends of at most 1,000 events (the log's limit).
    let stream = StreamId::new("purchases-rich")?;
    for part in new.chunks(550) {
        db.store.append(&stream, ExpectedVersion::Any, part).await?;
    }
    let set = projections_into(&db, &ch).await?;
    set.catch_up().await?;
    let months = analytics::purchases_by_month(&ch.target, "rich").await?;
    assert_eq!(months.len(), 1, "{months:?}");
    assert_eq!(months[0].purchases, u64::from(LINES));
    let exact = u128::from(LINES) * LARGEST as u128;
    assert!(exact > i64::MAX as u128, "the case must pass 64 bits");
    assert_eq!(months[0].spent, exact);
    Ok(())
}

/// A data table dropped under a ClickHouse model — while its runner runs, and while none
/// does — is not the events' fault: nothing is parked, and the model is rebuilt from
/// the log, answering what a model built from scratch answers (it used to park the
/// events and, set up again, go on with its table empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_is_rebuilt_from_the_log() -> anyhow::Result<()> {
    use eventfold_projections::{Runner, Sink};
    use std::time::Duration;

    let db = PgTestDb::new().await?;
    let ch = ChTestDb::new().await?;
    let scenario = run_scenario(db.store.clone()).await?;
    let first = scenario.workouts[0].to_string();
    let set = projections_into(&db, &ch).await?;
    set.catch_up().await?;

    // Under a running runner.
    let (model, store) = set.model("workout_facts.v1")?;
    let sink = store.sink(model, &Namespace::Live)?;
    let options = RunnerOptions {
        poll_interval: Duration::from_millis(50),
        max_attempts: 2,
        ..RunnerOptions::default()
    };
    let runner = Runner::new(
        db.store.clone(),
        sink.clone(),
        options,
        StatusBoard::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let caught_up = |head| {
        let sink = sink.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while sink.checkpoint().await.ok() != Some(head) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "workout_facts.v1 stayed at {:?}, not {head}",
                    sink.checkpoint().await
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // The runner past its set-up (a table dropped while the set-up creates it is not
    // seen as lost: see the README), then the drop.
    crate::support::append_completed_workouts(&db.store, 1, 1).await?;
    caught_up(db.store.head().await?).await;
    ch.target.run("DROP TABLE ch_workout_facts").await?;
    crate::support::append_completed_workouts(&db.store, 6, 3).await?;
    caught_up(db.store.head().await?).await;
    let _ = stop.send(());
    live.await??;

    // While nothing runs.
    ch.target.run("DROP TABLE ch_route_points").await?;
    crate::support::append_completed_workouts(&db.store, 2, 1).await?;
    set.catch_up().await?;

    let fresh = ChTestDb::new().await?;
    projections_into(&db, &fresh).await?.catch_up().await?;
    assert_eq!(
        answers(&ch.target, &first).await?,
        answers(&fresh.target, &first).await?
    );
    for model in ["workout_facts.v1", "route_points.v1"] {
        let parked: u64 = ch
            .target
            .client()
            .query(&format!(
                "SELECT count() FROM ch_parked__{}",
                model.split('.').next().unwrap_or(model)
            ))
            .fetch_one()
            .await?;
        assert_eq!(parked, 0, "{model} parked events");
    }
    Ok(())
}

/// While a swap holds a ClickHouse model (it renames the rebuilt tables in one by
/// one), a table missing is not taken for lost: a set-up then leaves every table as it
/// is. Once the hold is lifted, the same loss is seen and the model dropped for a
/// rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_missing_while_a_swap_holds_the_model_is_not_taken_for_lost() -> anyhow::Result<()>
{
    use eventfold_projections::Sink;

    let db = PgTestDb::new().await?;
    let ch = ChTestDb::new().await?;
    run_scenario(db.store.clone()).await?;
    let set = projections_into(&db, &ch).await?;
    let head = set.catch_up().await?;
    let (model, store) = set.model("workout_facts.v1")?;
    let sink = store.sink(model, &Namespace::Live)?;
    assert_eq!(sink.checkpoint().await?, head);

    // INSERT … SELECT, not VALUES: the query log keeps the whole statement, which
    // scripts/clickhouse-current replays on a current ClickHouse.
    ch.target
        .run("INSERT INTO eventfold_holds (name, until, at) SELECT 'workout_facts.v1', now() + 600, 1")
        .await?;
    ch.target.run("DROP TABLE ch_workout_facts").await?;
    sink.setup().await?;
    assert_eq!(sink.checkpoint().await?, head, "dropped while held");

    ch.target
        .run("INSERT INTO eventfold_holds (name, until, at) SELECT 'workout_facts.v1', toDateTime(0), 2")
        .await?;
    ch.target.run("DROP TABLE ch_workout_facts").await?;
    sink.setup().await?;
    assert_eq!(
        sink.checkpoint().await?,
        Position::START,
        "not seen as lost"
    );
    Ok(())
}

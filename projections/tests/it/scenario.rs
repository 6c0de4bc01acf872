//! The scripted scenario folds into the expected read models, on PostgreSQL and SQLite.

use eventfold_event_log::testing::{PgTestDb, SqliteTestDb};
use eventfold_event_log::EventStore;
use eventfold_projections::models::{catalog, orders, purchases, reminders, voice, workouts};
use eventfold_projections::{ProjectionSet, ReadDb, RunnerOptions, StatusBoard};

use crate::support::{now, run_scenario};

async fn check<S: EventStore>(store: S, url: &str) -> anyhow::Result<()> {
    let scenario = run_scenario(store.clone()).await?;
    let db = ReadDb::connect(url).await?;
    let set = ProjectionSet::new(
        store,
        db.clone(),
        None,
        RunnerOptions::default(),
        StatusBoard::default(),
    );
    let head = set.catch_up().await?;
    for status in set.board().statuses() {
        assert_eq!(status.checkpoint, head, "{} is behind", status.name);
    }

    // The first purchase's reminder was superseded by the second purchase's.
    let u1 = reminders::for_user(&db, "u1", 10, 0).await?;
    let mut statuses: Vec<&str> = u1.iter().map(|r| r.status.as_str()).collect();
    statuses.sort();
    assert_eq!(statuses, ["accepted", "superseded"]);
    let accepted = u1
        .iter()
        .find(|r| r.status == "accepted")
        .expect("accepted");
    assert_eq!(accepted.reminder_id, scenario.accepted_reminder.to_string());
    let order_id = scenario.order_id.to_string();
    assert_eq!(accepted.order_id.as_deref(), Some(order_id.as_str()));
    let u2 = reminders::for_user(&db, "u2", 10, 0).await?;
    assert_eq!((u2.len(), u2[0].status.as_str()), (1, "declined"));
    assert_eq!(u2[0].reminder_id, scenario.declined_reminder.to_string());
    // Nothing is due for either: one accepted, one declined.
    assert!(
        voice::due_from_relational(&db, "u1", now() + chrono::Duration::days(400), 5)
            .await?
            .is_empty()
    );

    let order = orders::get(&db, &scenario.order_id.to_string())
        .await?
        .expect("order");
    assert_eq!(order.status, "placed");
    assert!(order.payment_requested);
    assert_eq!((order.total, order.repriced_from), (2400, Some(1000)));
    assert_eq!(order.lines.len(), 1);
    assert_eq!(
        (order.lines[0].unit_price, order.lines[0].quantity),
        (1200, 2)
    );
    assert_eq!(orders::for_user(&db, "u1", 10, 0).await?.len(), 1);

    assert_eq!(purchases::for_user(&db, "u1", 10, 0).await?.len(), 2);
    let consumables = purchases::consumables(&db, "u1").await?;
    assert_eq!(consumables.len(), 1);
    assert_eq!(
        (consumables[0].interval_days, consumables[0].purchases),
        (30, 2)
    );
    assert_eq!(consumables[0].reason, "category_prior");
    let price = catalog::price(&db, "SKU-CAPS").await?.expect("price");
    assert_eq!((price.unit_price, price.available), (1200, true));

    let done = workouts::get(&db, &scenario.workouts[1].to_string())
        .await?
        .expect("workout");
    assert_eq!(done.status, "completed");
    assert_eq!(done.distance_m, 10_000.0);
    assert_eq!(
        (done.updates, done.points, done.max_heart_rate),
        (1, 2, Some(150))
    );
    let cancelled = workouts::get(&db, &scenario.workouts[2].to_string())
        .await?
        .expect("workout");
    assert_eq!(cancelled.status, "cancelled");
    let day = chrono::Duration::days(1);
    assert_eq!(
        workouts::list(&db, "u3", now() - day, now() + day, 10, 0)
            .await?
            .len(),
        3
    );
    assert_eq!(
        workouts::list(&db, "u3", now() - day, now() + day, 2, 2)
            .await?
            .len(),
        1,
        "paging"
    );
    assert_eq!(
        workouts::route(&db, &scenario.workouts[0].to_string())
            .await?
            .len(),
        2
    );
    let stats = workouts::stats(&db, "u3").await?.expect("stats");
    assert_eq!(stats.workouts, 2);
    assert_eq!(stats.total_distance_m, 15_000.0);
    assert_eq!(stats.longest_distance_m, 10_000.0);
    assert_eq!(stats.weekly.len(), 1);
    assert_eq!(stats.weekly[0].workouts, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_folds_into_the_expected_read_models_on_postgres() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    check(db.store.clone(), &db.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_folds_into_the_expected_read_models_on_sqlite() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    check(db.store.clone(), &db.url).await
}

//! ClickHouse analytical models: a rebuild verifies equal to the live model and swaps in
//! (one multi-table RENAME), and a live model that differs is caught.

use eventfold_event_log::testing::PgTestDb;
use eventfold_projections::testing::ClickHouseTestDb;
use eventfold_projections::{ProjectionSet, ReadDb, RunnerOptions, StatusBoard, StoreKind};
use eventfold_replay::{rebuild_model, Error, Target};

use crate::support::populate;

/// Row counts and checksums of every ClickHouse table, as queries see them.
async fn fingerprint(
    target: &eventfold_projections::ClickHouseTarget,
) -> anyhow::Result<Vec<(String, u64)>> {
    let tables: Vec<String> = target
        .client()
        .query("SELECT name FROM system.tables WHERE database = ? AND name LIKE 'ch\\\\_%' ORDER BY name")
        .bind(target.database())
        .fetch_all()
        .await?;
    let mut out = Vec::new();
    // Data tables only: checkpoint and parked tables are bookkeeping.
    for table in tables.into_iter().filter(|t| !t.contains("__")) {
        let rows: u64 = target
            .client()
            .query(&format!("SELECT count() FROM {table} FINAL"))
            .fetch_one()
            .await?;
        out.push((table, rows));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clickhouse_model_rebuilds_equal_to_live_and_swaps_in() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let ch = ClickHouseTestDb::new().await?;
    populate(db.store.clone(), "c", 8, 2).await?;
    let set = ProjectionSet::new(
        db.store.clone(),
        ReadDb::connect(&db.url()).await?,
        None,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .with_clickhouse(Some(ch.target.clone()));
    set.catch_up().await?;
    let before = fingerprint(&ch.target).await?;
    assert!(before.iter().all(|(_, n)| *n > 0), "{before:?}");
    let models: Vec<_> = set
        .active()
        .filter(|m| m.store() == StoreKind::ClickHouse)
        .cloned()
        .collect();
    for model in &models {
        let (_, store) = set.model(model.name())?;
        let report = rebuild_model(
            set.log(),
            store.as_ref(),
            model,
            Target::Swap { keep_old: false },
            |_| {},
            std::future::pending(),
        )
        .await?
        .expect("a swap report");
        assert!(report.verified_against_live, "{}: {report:?}", model.name());
    }
    // The swapped-in models are the live ones now, equal to before; no shadow is left.
    assert_eq!(fingerprint(&ch.target).await?, before);
    let shadows: u64 = ch
        .target
        .client()
        .query("SELECT count() FROM system.tables WHERE database = ? AND name LIKE 'shadow\\\\_%'")
        .bind(ch.target.database())
        .fetch_one()
        .await?;
    assert_eq!(shadows, 0);
    // A run of the live model after the swap continues from its checkpoint.
    set.catch_up().await?;
    assert_eq!(fingerprint(&ch.target).await?, before);

    // A live model that lost a row is not swapped over: the comparison says where.
    ch.target
        .run("ALTER TABLE ch_workout_facts DELETE WHERE 1 = 1")
        .await?;
    for _ in 0..100 {
        let left: u64 = ch
            .target
            .client()
            .query("SELECT count() FROM ch_workout_facts")
            .fetch_one()
            .await?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let model = set
        .registry()
        .get("workout_facts.v1")
        .expect("registered")
        .clone();
    let (_, store) = set.model(model.name())?;
    let result = rebuild_model(
        set.log(),
        store.as_ref(),
        &model,
        Target::Swap { keep_old: false },
        |_| {},
        std::future::pending(),
    )
    .await;
    match result {
        Err(Error::Projection(eventfold_projections::Error::Mismatch { details, .. })) => {
            assert!(details.contains("ch_workout_facts"), "{details}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    Ok(())
}

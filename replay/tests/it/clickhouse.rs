//! ClickHouse analytical models: a rebuild verifies equal to the live model and swaps in
//! (one multi-table RENAME), and a live model that differs is caught.

use eventfold_event_log::testing::PgTestDb;
use eventfold_projections::testing::ClickHouseTestDb;
use eventfold_projections::{ProjectionSet, ReadDb, RunnerOptions, StatusBoard, StoreKind};
use eventfold_replay::Error;

use crate::support::{populate, rebuild_and_swap};

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

/// The registered `workout_facts.v1` model, the one these tests break.
fn facts(set: &ProjectionSet<eventfold_event_log::PgEventStore>) -> eventfold_projections::Model {
    set.registry()
        .get("workout_facts.v1")
        .expect("registered")
        .clone()
}

/// `model` in `namespace` run up to the head of the log.
async fn run_to_head(
    set: &ProjectionSet<eventfold_event_log::PgEventStore>,
    model: &eventfold_projections::Model,
    namespace: &eventfold_projections::Namespace,
) -> anyhow::Result<()> {
    let (_, store) = set.model(model.name())?;
    let head = eventfold_event_log::EventReader::head(set.log()).await?;
    eventfold_projections::Runner::new(
        set.log().clone(),
        store.sink(model, namespace)?,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .run_until(Some(head))
    .await?;
    Ok(())
}

/// A log of `users` users' flows (stream prefix `tag`) and its models caught up, the
/// ClickHouse ones in a scratch database.
async fn live(
    tag: &str,
    users: usize,
) -> anyhow::Result<(
    PgTestDb,
    ClickHouseTestDb,
    ProjectionSet<eventfold_event_log::PgEventStore>,
)> {
    let db = PgTestDb::new().await?;
    let ch = ClickHouseTestDb::new().await?;
    populate(db.store.clone(), tag, users, 2).await?;
    let set = ProjectionSet::new(
        db.store.clone(),
        ReadDb::connect(&db.url()).await?,
        None,
        RunnerOptions::default(),
        StatusBoard::default(),
    )
    .with_clickhouse(Some(ch.target.clone()));
    set.catch_up().await?;
    Ok((db, ch, set))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clickhouse_model_rebuilds_equal_to_live_and_swaps_in() -> anyhow::Result<()> {
    let (_db, ch, set) = live("c", 8).await?;
    let before = fingerprint(&ch.target).await?;
    assert!(before.iter().all(|(_, n)| *n > 0), "{before:?}");
    let models: Vec<_> = set
        .active()
        .filter(|m| m.store() == StoreKind::ClickHouse)
        .cloned()
        .collect();
    for model in &models {
        let (_, store) = set.model(model.name())?;
        let report = rebuild_and_swap(set.log(), store.as_ref(), model)
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

    // An event a model parks is listed by its port (and `projections parked`).
    let first = eventfold_event_log::EventReader::read_all(
        set.log(),
        eventfold_event_schemas::Position::START,
        None,
        1,
    )
    .await?;
    for model in &models {
        let (_, store) = set.model(model.name())?;
        store
            .sink(model, &eventfold_projections::Namespace::Live)?
            .park(&first[0], "parked by hand")
            .await?;
        assert_eq!(
            store.parked(model).await?,
            vec![eventfold_projections::ParkedEvent {
                position: first[0].global_position.0,
                event_type: first[0].event_type.clone(),
                error: "parked by hand".into(),
            }],
            "{}",
            model.name()
        );
    }

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
    let model = facts(&set);
    let (_, store) = set.model(model.name())?;
    let result = rebuild_and_swap(set.log(), store.as_ref(), &model).await;
    match result {
        Err(Error::Projection(eventfold_projections::Error::Mismatch { details, .. })) => {
            assert!(details.contains("ch_workout_facts"), "{details}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    Ok(())
}

/// Every ClickHouse model rebuilt and swapped at once, as `replay --all` does, three
/// times over: each swap verifies and swaps in. Before swaps were serialised in the
/// process, ClickHouse 18.16 answered one model's RENAME TABLE with "Table old_… doesn't
/// exist" about another model's table dropped at the same moment (seen under
/// scripts/stateful-load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clickhouse_model_swapped_at_once_swaps_in() -> anyhow::Result<()> {
    let (_db, ch, set) = live("s", 4).await?;
    let before = fingerprint(&ch.target).await?;
    let models: Vec<_> = set
        .active()
        .filter(|m| m.store() == StoreKind::ClickHouse)
        .cloned()
        .collect();
    assert!(models.len() > 1);
    for _ in 0..3 {
        let mut swaps = tokio::task::JoinSet::new();
        for model in &models {
            let (_, store) = set.model(model.name())?;
            let (log, model, store) = (set.log().clone(), model.clone(), store.clone());
            swaps.spawn(async move {
                rebuild_and_swap(&log, store.as_ref(), &model)
                    .await
                    .map(|report| (model.name().to_owned(), report))
            });
        }
        while let Some(done) = swaps.join_next().await {
            let (name, report) = done??;
            let report = report.expect("a swap report");
            assert!(report.verified_against_live, "{name}: {report:?}");
        }
    }
    assert_eq!(fingerprint(&ch.target).await?, before);
    Ok(())
}

/// A swap cut short on ClickHouse 18.16, which renames table by table (the server
/// killed mid-RENAME, found by `scripts/stateful-load --replay-every` with ClickHouse in
/// its kill rotation): a table's directory left without its metadata where the swap put
/// the replaced tables, and a shadow build whose checkpoint table survived its data
/// table. Both stopped every later rebuild of the model: the RENAME onto that name was
/// refused ("Target path already exists") halfway through, and the shadow, resumed from
/// its checkpoint into empty tables, failed verification. Now the rebuild goes through,
/// verified, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_cut_short_leaves_nothing_that_stops_the_next_rebuild() -> anyhow::Result<()> {
    use eventfold_projections::Namespace;
    let (_db, ch, set) = live("h", 4).await?;
    let before = fingerprint(&ch.target).await?;
    let model = facts(&set);
    let (_, store) = set.model(model.name())?;
    // The directory a killed RENAME left under the name the replaced checkpoint table
    // used to take — on 18.16 (an Ordinary database: a table's directory is named after
    // it) run on this machine. A current server (an Atomic database, directories by
    // UUID, `data_paths`) has no such leftover: the rest of the test still runs there.
    let path: Option<String> = ch
        .target
        .client()
        .query("SELECT data_path /* a table's directory (18.16 only, not replayed) */ FROM system.tables WHERE database = ? AND name = 'ch_checkpoint__workout_facts'")
        .bind(ch.target.database())
        .fetch_one()
        .await
        .ok();
    let orphan = path
        .map(|path| {
            std::path::Path::new(path.trim_end_matches('/'))
                .with_file_name("old_ch_checkpoint__workout_facts")
        })
        .filter(|orphan| orphan.parent().is_some_and(|dir| dir.is_dir()));
    if let Some(orphan) = &orphan {
        std::fs::create_dir_all(orphan)?;
    }
    // A shadow build at the head whose data table is gone (a leftover of the swap's).
    run_to_head(&set, &model, &Namespace::Shadow).await?;
    // (Moved away, as the half-done RENAME did: a table dropped and created again at
    // once under the same name can lose its new data on 18.16.)
    ch.target
        .run("RENAME TABLE shadow_ch_workout_facts TO retired_0000cafe_ch_workout_facts")
        .await?;

    for round in 0..2 {
        let report = rebuild_and_swap(set.log(), store.as_ref(), &model)
            .await?
            .expect("a swap report");
        assert!(report.verified_against_live, "round {round}: {report:?}");
        assert_eq!(fingerprint(&ch.target).await?, before, "round {round}");
    }
    let left: u64 = ch
        .target
        .client()
        .query("SELECT count() FROM system.tables WHERE database = ? AND (startsWith(name, 'shadow_') OR startsWith(name, 'retired_') OR startsWith(name, 'old_'))")
        .bind(ch.target.database())
        .fetch_one()
        .await?;
    assert_eq!(left, 0, "tables left behind");
    if let Some(orphan) = &orphan {
        let _ = std::fs::remove_dir_all(orphan);
    }
    Ok(())
}

/// Leaves the state a ClickHouse 18.16 stopped at the first table of a swap's RENAME
/// leaves (its directory moved under the swap's name, its metadata not: the table back
/// empty under its old name, its checkpoint saying its rows were written), with the
/// swap's mark, sent after the rebuilt model's last write, past its time and never seen
/// done, and the rebuilt model still under its shadow names.
async fn cut_rename_short(
    set: &ProjectionSet<eventfold_event_log::PgEventStore>,
    ch: &ClickHouseTestDb,
    model: &eventfold_projections::Model,
) -> anyhow::Result<()> {
    use eventfold_projections::Namespace;
    run_to_head(set, model, &Namespace::Shadow).await?;
    ch.target
        .run("INSERT INTO eventfold_holds (name, until, at) SELECT 'workout_facts.v1#renaming:0000beef', toDateTime(now() - 1), toUInt64(now()) * 1000000")
        .await?;
    ch.target
        .run("RENAME TABLE ch_workout_facts TO retired_0000beef_ch_workout_facts")
        .await?;
    ch.target
        .run("CREATE TABLE ch_workout_facts AS retired_0000beef_ch_workout_facts")
        .await?;
    Ok(())
}

/// What the cut RENAME left behind: tables under shadow or swap names, and the mark.
async fn left_of_cut_rename(ch: &ClickHouseTestDb) -> anyhow::Result<(u64, u32)> {
    let tables: u64 = ch
        .target
        .client()
        .query("SELECT count() FROM system.tables WHERE database = ? AND (startsWith(name, 'shadow_') OR startsWith(name, 'retired_'))")
        .bind(ch.target.database())
        .fetch_one()
        .await?;
    let mark: u32 = ch
        .target
        .client()
        .query("SELECT toUInt32(argMax(until, at)) FROM eventfold_holds WHERE name = 'workout_facts.v1#renaming:0000beef'")
        .fetch_one()
        .await?;
    Ok((tables, mark))
}

/// A swap's RENAME the server stopped in the middle of, found by its mark when the
/// live model is next set up (a `serve` started after the crash): the model is built
/// again from the log, whole, and nothing of the swap is left. Without the mark the
/// model went on from its checkpoint with its facts table empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_cut_short_is_found_at_set_up_and_the_model_built_again() -> anyhow::Result<()> {
    use eventfold_projections::Namespace;
    let (_db, ch, set) = live("k", 4).await?;
    let before = fingerprint(&ch.target).await?;
    let model = facts(&set);
    cut_rename_short(&set, &ch, &model).await?;
    assert_ne!(fingerprint(&ch.target).await?, before, "the cut is visible");
    run_to_head(&set, &model, &Namespace::Live).await?;
    assert_eq!(fingerprint(&ch.target).await?, before);
    assert_eq!(left_of_cut_rename(&ch).await?, (0, 0));
    Ok(())
}

/// The same found by a live runner already following the log (the `serve` that kept
/// running while ClickHouse restarted): its next batch finds the mark and the model is
/// built again; a rebuild then verifies it equal to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_cut_short_is_found_by_a_running_model_and_it_is_built_again() -> anyhow::Result<()>
{
    use eventfold_projections::{Namespace, Runner};
    let (db, ch, set) = live("m", 4).await?;
    let model = facts(&set);
    let (_, store) = set.model(model.name())?;
    let board = StatusBoard::default();
    let runner = Runner::new(
        set.log().clone(),
        store.sink(&model, &Namespace::Live)?,
        RunnerOptions {
            poll_interval: std::time::Duration::from_millis(20),
            backoff: std::time::Duration::from_millis(10),
            ..RunnerOptions::default()
        },
        board.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let head = eventfold_event_log::EventReader::head(set.log()).await?;
    while board.checkpoint_of(model.name()) < head {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cut_rename_short(&set, &ch, &model).await?;
    // More workouts: the runner's next batch.
    populate(db.store.clone(), "m2", 2, 2).await?;
    let head = eventfold_event_log::EventReader::head(set.log()).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // (18.16's system.tables can fail a query while the runner drops tables: asked
    // again.)
    while left_of_cut_rename(&ch).await.ok() != Some((0, 0))
        || board.checkpoint_of(model.name()) < head
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not rebuilt: {:?}, at {:?}",
            left_of_cut_rename(&ch).await.ok(),
            board.checkpoint_of(model.name())
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    running.await??;
    let report = rebuild_and_swap(set.log(), store.as_ref(), &model)
        .await?
        .expect("a swap report");
    assert!(report.verified_against_live, "{report:?}");
    Ok(())
}

/// A directory left under a table's name without its table (ClickHouse 18.16 after a
/// RENAME cut short: the directory moved, the metadata not) made the table's `CREATE
/// TABLE IF NOT EXISTS` fail for good ("already containing data parts"): the model never
/// started again. Made here by detaching the facts table and deleting its metadata
/// file; the model is set up again and built whole. (18.16 only: current servers keep
/// tables in directories of their own by UUID. On a server whose files are not on this
/// machine the table is only detached: the model is rebuilt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_left_without_its_table_does_not_stop_the_model() -> anyhow::Result<()> {
    let (_db, ch, set) = live("o", 4).await?;
    let before = fingerprint(&ch.target).await?;
    let version: String = ch
        .target
        .client()
        .query("SELECT version()")
        .fetch_one()
        .await?;
    if !version.starts_with("18.") {
        // No table directories by name on a current server (Atomic databases).
        return Ok(());
    }
    let metadata: Option<String> = ch
        .target
        .client()
        .query("SELECT metadata_path /* a table's file (18.16 only, not replayed) */ FROM system.tables WHERE database = ? AND name = 'ch_workout_facts'")
        .bind(ch.target.database())
        .fetch_one()
        .await
        .ok();
    ch.target
        .run("DETACH /* a directory left without its table (18.16 only, not replayed) */ TABLE ch_workout_facts")
        .await?;
    if let Some(file) = metadata.filter(|f| std::path::Path::new(f).is_file()) {
        std::fs::remove_file(file)?;
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), set.catch_up()).await??;
    assert_eq!(fingerprint(&ch.target).await?, before);
    Ok(())
}

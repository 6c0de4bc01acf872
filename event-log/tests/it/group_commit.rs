//! Group commit: concurrent appends written together, each decided on its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_event_log::schemas::{ExpectedVersion, NewEvent, Position, StreamId};
use eventfold_event_log::{
    AppendResult, Error, EventReader, EventWriter, GroupStats, ReadDirection, STREAM_END,
};
use serde_json::json;
use tokio::sync::Barrier;

use crate::support::{PgTestDb, SqliteTestDb};

fn stream(s: &str) -> StreamId {
    StreamId::new(s).expect("valid stream id in test")
}

fn event(n: i64) -> NewEvent {
    NewEvent::new("ThingHappened", json!({ "n": n }))
}

/// What one of the 64 writers saw.
#[derive(Default)]
struct Seen {
    wins: Vec<(i64, uuid::Uuid)>,
    conflicts: Vec<(ExpectedVersion, Option<i64>)>,
}

/// 64 writers race for every version of one stream with `Exact` expectations until it
/// holds `versions` events: each version is won exactly once, every loser is told the
/// version the stream was really at (never the one it expected), and the log holds the
/// winners' events, in order.
async fn sixty_four_exact_writers<S>(store: S, stats: impl Fn(&S) -> Option<GroupStats>)
where
    S: EventReader + EventWriter + Clone + 'static,
{
    const WRITERS: usize = 64;
    const VERSIONS: i64 = 150;
    let s = stream("reminder-contended");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut known: Option<i64> = None;
            barrier.wait().await;
            while known.is_none_or(|v| v + 1 < VERSIONS) {
                let expected = known.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let e = event(w as i64);
                match store.append(&s, expected, std::slice::from_ref(&e)).await {
                    Ok(r) => {
                        assert_eq!(r.first_version, r.last_version);
                        assert_eq!(r.first_version, known.map_or(0, |v| v + 1));
                        seen.wins.push((r.last_version, e.event_id));
                        known = Some(r.last_version);
                    }
                    Err(Error::WrongExpectedVersion {
                        expected: got,
                        actual,
                        ..
                    }) => {
                        assert_eq!(got, expected);
                        seen.conflicts.push((expected, actual));
                        known = actual;
                    }
                    Err(other) => panic!("writer {w}: {other}"),
                }
            }
            seen
        }));
    }
    let mut winners = BTreeMap::new();
    let mut conflicts = 0;
    for task in tasks {
        let seen = task.await.expect("writer task");
        for (version, id) in seen.wins {
            assert!(
                winners.insert(version, id).is_none(),
                "version {version} was won twice"
            );
        }
        for (expected, actual) in seen.conflicts {
            conflicts += 1;
            let actual = actual.expect("a conflict on an existing stream names its version");
            match expected {
                ExpectedVersion::NoStream => {}
                ExpectedVersion::Exact(v) => assert!(
                    actual > v,
                    "expected {v}, told {actual}: the stream only grows"
                ),
                other => panic!("unexpected expectation {other:?}"),
            }
        }
    }
    let last = *winners.keys().last().expect("someone won");
    assert!(last >= VERSIONS - 1);
    assert_eq!(
        winners.keys().copied().collect::<Vec<_>>(),
        (0..=last).collect::<Vec<_>>(),
        "every version won exactly once"
    );
    assert!(conflicts > 0, "64 writers on one stream must conflict");
    let stored = store
        .read_stream(&s, ReadDirection::Forwards, 0, 10_000)
        .await
        .expect("read");
    assert_eq!(stored.len() as i64, last + 1);
    for e in &stored {
        assert_eq!(winners.get(&e.stream_version), Some(&e.event_id));
    }
    if let Some(stats) = stats(&store) {
        assert!(
            stats.largest > 1,
            "64 concurrent writers never shared a commit: {stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sixty_four_exact_appends_to_one_stream_admit_one_per_version(
) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    sixty_four_exact_writers(db.store.clone(), |s| s.group_stats()).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_sixty_four_exact_appends_to_one_stream_admit_one_per_version() -> anyhow::Result<()>
{
    let db = SqliteTestDb::new().await?;
    sixty_four_exact_writers(db.store.clone(), |s| s.group_stats()).await;
    Ok(())
}

type GroupInput = Vec<(StreamId, ExpectedVersion, Vec<NewEvent>)>;

/// One explicit group mixing every kind of append: valid ones (two chained on one
/// stream), a version conflict, an event id stored in another stream, an invalid event,
/// and the retry of an append that committed earlier. The valid ones commit, in order;
/// each of the others gets its own error or, for the retry, the original result.
async fn a_mixed_group_commits_the_valid_appends<F, Fut>(
    store: impl EventReader + EventWriter,
    append_group: F,
) -> anyhow::Result<()>
where
    F: Fn(GroupInput) -> Fut,
    Fut: std::future::Future<
        Output = eventfold_event_log::Result<Vec<eventfold_event_log::Result<AppendResult>>>,
    >,
{
    let taken = event(99);
    store
        .append(
            &stream("order-other"),
            ExpectedVersion::Any,
            std::slice::from_ref(&taken),
        )
        .await?;
    let earlier = vec![event(1), event(2)];
    let original = store
        .append(
            &stream("order-retried"),
            ExpectedVersion::NoStream,
            &earlier,
        )
        .await?;
    store
        .append(
            &stream("order-behind"),
            ExpectedVersion::NoStream,
            &[event(0)],
        )
        .await?;

    let results = append_group(vec![
        (stream("order-a"), ExpectedVersion::NoStream, vec![event(1)]),
        (
            stream("order-a"),
            ExpectedVersion::Exact(0),
            vec![event(2), event(3)],
        ),
        (
            stream("order-behind"),
            ExpectedVersion::Exact(5),
            vec![event(4)],
        ),
        (
            stream("order-dup"),
            ExpectedVersion::Any,
            vec![event(5), taken.clone()],
        ),
        (
            stream("order-bad"),
            ExpectedVersion::Any,
            vec![NewEvent::new("bad type", json!({}))],
        ),
        (
            stream("order-retried"),
            ExpectedVersion::NoStream,
            earlier.clone(),
        ),
        (stream("order-b"), ExpectedVersion::Any, vec![event(6)]),
    ])
    .await?;
    assert_eq!(results.len(), 7);
    let a1 = results[0].as_ref().expect("first append commits");
    let a2 = results[1].as_ref().expect("chained append commits");
    assert_eq!((a1.first_version, a1.last_version), (0, 0));
    assert_eq!((a2.first_version, a2.last_version), (1, 2));
    assert!(a1.last_position < a2.first_position);
    assert!(matches!(
        results[2],
        Err(Error::WrongExpectedVersion {
            actual: Some(0),
            ..
        })
    ));
    assert!(matches!(results[3], Err(Error::DuplicateEventId { .. })));
    assert!(matches!(results[4], Err(Error::InvalidEventType(_))));
    assert_eq!(results[5].as_ref().ok(), Some(&original));
    let b = results[6].as_ref().expect("last append commits");
    assert!(a2.last_position < b.first_position);

    let read = |s: &'static str| {
        let store = &store;
        async move {
            store
                .read_stream(&stream(s), ReadDirection::Backwards, STREAM_END, 100)
                .await
        }
    };
    assert_eq!(read("order-a").await?.len(), 3);
    assert_eq!(read("order-behind").await?.len(), 1);
    assert!(read("order-dup").await?.is_empty());
    assert!(read("order-bad").await?.is_empty());
    assert_eq!(read("order-retried").await?.len(), 2);
    assert_eq!(read("order-b").await?.len(), 1);
    let positions: Vec<Position> = store
        .read_all(Position::START, None, 100)
        .await?
        .iter()
        .map(|e| e.global_position)
        .collect();
    assert_eq!(positions.len(), 1 + 2 + 1 + 3 + 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_mixed_group_commits_the_valid_appends_and_fails_the_others(
) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let store = db.store.clone();
    a_mixed_group_commits_the_valid_appends(db.store.clone(), |g| {
        let store = store.clone();
        async move { store.append_group(g).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_mixed_group_commits_the_valid_appends_and_fails_the_others() -> anyhow::Result<()>
{
    let db = SqliteTestDb::new().await?;
    let store = db.store.clone();
    a_mixed_group_commits_the_valid_appends(db.store.clone(), |g| {
        let store = store.clone();
        async move { store.append_group(g).await }
    })
    .await
}

/// A group whose appends are each on a stream of its own (on PostgreSQL the one plain
/// statement, not the function): each kind of decision, every append on its own; then a
/// group one of whose events is stored elsewhere, which fails that append only.
async fn a_group_on_streams_of_their_own_decides_each_append<F, Fut>(
    store: impl EventReader + EventWriter,
    append_group: F,
) -> anyhow::Result<()>
where
    F: Fn(GroupInput) -> Fut,
    Fut: std::future::Future<
        Output = eventfold_event_log::Result<Vec<eventfold_event_log::Result<AppendResult>>>,
    >,
{
    let earlier = vec![event(1), event(2)];
    let original = store
        .append(
            &stream("order-retried"),
            ExpectedVersion::NoStream,
            &earlier,
        )
        .await?;
    for s in ["order-behind", "order-old"] {
        store
            .append(&stream(s), ExpectedVersion::NoStream, &[event(0)])
            .await?;
    }
    let results = append_group(vec![
        (stream("order-a"), ExpectedVersion::NoStream, vec![event(1)]),
        (
            stream("order-m"),
            ExpectedVersion::Any,
            vec![event(2), event(3), event(4)],
        ),
        (
            stream("order-behind"),
            ExpectedVersion::Exact(5),
            vec![event(5)],
        ),
        (
            stream("order-none"),
            ExpectedVersion::StreamExists,
            vec![event(6)],
        ),
        (
            stream("order-old"),
            ExpectedVersion::NoStream,
            vec![event(7)],
        ),
        (
            stream("order-retried"),
            ExpectedVersion::NoStream,
            earlier.clone(),
        ),
        (
            stream("order-behind-ok"),
            ExpectedVersion::Any,
            vec![event(8)],
        ),
        (
            stream("order-old-ok"),
            ExpectedVersion::Exact(0),
            vec![event(9)],
        ),
    ])
    .await?;
    assert_eq!(results.len(), 8);
    let a = results[0].as_ref().expect("a new stream");
    let m = results[1].as_ref().expect("three events, any version");
    assert_eq!((a.first_version, a.last_version), (0, 0));
    assert_eq!((m.first_version, m.last_version), (0, 2));
    assert_eq!(m.last_position.0 - m.first_position.0, 2);
    assert!(a.last_position < m.first_position);
    let conflict = |i: usize| match &results[i] {
        Err(Error::WrongExpectedVersion { actual, .. }) => Ok(*actual),
        other => Err(anyhow::anyhow!(
            "append {i}: expected a conflict, got {other:?}"
        )),
    };
    assert_eq!(conflict(2)?, Some(0));
    assert_eq!(conflict(3)?, None);
    assert_eq!(conflict(4)?, Some(0));
    assert_eq!(results[5].as_ref().ok(), Some(&original));
    let behind_ok = results[6].as_ref().expect("any version on a new stream");
    assert!(m.last_position < behind_ok.first_position);
    assert!(
        matches!(
            &results[7],
            Err(Error::WrongExpectedVersion { actual: None, .. })
        ),
        "Exact(0) on a stream that does not exist: {:?}",
        results[7]
    );

    // One event of the group is stored in another stream: that append fails, the
    // others commit.
    let taken = event(99);
    store
        .append(
            &stream("order-taken"),
            ExpectedVersion::NoStream,
            std::slice::from_ref(&taken),
        )
        .await?;
    let results = append_group(vec![
        (
            stream("order-c"),
            ExpectedVersion::NoStream,
            vec![event(10)],
        ),
        (
            stream("order-dup"),
            ExpectedVersion::Any,
            vec![event(11), taken.clone()],
        ),
        (
            stream("order-a"),
            ExpectedVersion::Exact(0),
            vec![event(12)],
        ),
    ])
    .await?;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(matches!(results[1], Err(Error::DuplicateEventId { .. })));
    assert_eq!(results[2].as_ref().map(|r| r.first_version).ok(), Some(1));

    let read = |s: &'static str| {
        let store = &store;
        async move {
            store
                .read_stream(&stream(s), ReadDirection::Forwards, 0, 100)
                .await
                .map(|events| events.len())
        }
    };
    for (s, n) in [
        ("order-a", 2),
        ("order-m", 3),
        ("order-behind", 1),
        ("order-none", 0),
        ("order-old", 1),
        ("order-retried", 2),
        ("order-behind-ok", 1),
        ("order-old-ok", 0),
        ("order-c", 1),
        ("order-dup", 0),
    ] {
        assert_eq!(read(s).await?, n, "events in {s}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_group_on_streams_of_their_own_decides_each_append() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let store = db.store.clone();
    a_group_on_streams_of_their_own_decides_each_append(db.store.clone(), |g| {
        let store = store.clone();
        async move { store.append_group(g).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_group_on_streams_of_their_own_decides_each_append() -> anyhow::Result<()> {
    let db = SqliteTestDb::new().await?;
    let store = db.store.clone();
    a_group_on_streams_of_their_own_decides_each_append(db.store.clone(), |g| {
        let store = store.clone();
        async move { store.append_group(g).await }
    })
    .await
}

/// 32 writers append single events with `Exact` versions to streams of their own while
/// every connection of the store is killed (`pg_terminate_backend`) every few
/// milliseconds, groups in flight included. A writer whose append failed for the store
/// retries the very same event until it gets an answer. At the end every stream holds
/// exactly its writer's events, once each, in order, at the positions acknowledged: no
/// acknowledged append was lost, nothing was acknowledged that did not commit, and no
/// retry of a group that did commit wrote twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_killed_mid_group_lose_nothing_acknowledged() -> anyhow::Result<()> {
    const WRITERS: usize = 32;
    const RUN: Duration = Duration::from_secs(4);
    let db = PgTestDb::new().await?;
    let store = db.store.clone();
    let (killer_pool, database) = {
        let pool = sqlx::PgPool::connect_with(db.options.clone()).await?;
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pool)
            .await?;
        (pool, name)
    };
    let deadline = Instant::now() + RUN;
    let killer = tokio::spawn(async move {
        let mut kills = 0u64;
        while Instant::now() < deadline {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&database)
            .fetch_all(&killer_pool)
            .await
            .unwrap_or_default();
            kills += killed.iter().filter(|k| **k).count() as u64;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        kills
    });
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let s = stream(&format!("workout-w{w}"));
            let mut acknowledged: Vec<(uuid::Uuid, AppendResult)> = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let version = acknowledged.len() as i64;
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version - 1)
                };
                let e = event(version);
                loop {
                    match store.append(&s, expected, std::slice::from_ref(&e)).await {
                        Ok(r) => {
                            assert_eq!(r.last_version, version, "writer {w}");
                            acknowledged.push((e.event_id, r));
                            break;
                        }
                        Err(error) if !error.is_client_error() => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Err(error) => panic!("writer {w}: {error}"),
                    }
                }
            }
            (s, acknowledged, failures)
        }));
    }
    let mut failures = 0;
    let mut appends = 0;
    let mut outcomes = Vec::new();
    for writer in writers {
        let (s, acknowledged, failed) = writer.await?;
        failures += failed;
        appends += acknowledged.len();
        outcomes.push((s, acknowledged));
    }
    let kills = killer.await?;
    assert!(kills > 0, "the killer never hit a connection");
    assert!(
        failures > 0,
        "no append ever failed: the kills did not land mid-append"
    );
    for (s, acknowledged) in outcomes {
        let stored = store
            .read_stream(&s, ReadDirection::Forwards, 0, 100_000)
            .await?;
        assert_eq!(
            stored.len(),
            acknowledged.len(),
            "{s}: stored vs acknowledged"
        );
        for (e, (id, r)) in stored.iter().zip(&acknowledged) {
            assert_eq!(e.event_id, *id, "{s} v{}", e.stream_version);
            assert_eq!(e.stream_version, r.last_version);
            assert_eq!(e.global_position, r.last_position);
        }
    }
    eprintln!(
        "{appends} appends acknowledged, {failures} failed and retried, {kills} connections killed"
    );
    Ok(())
}

/// Two groups writing the same two streams in opposite orders, at the same moment, many
/// times over: both always commit every append (the later one after the earlier, or
/// alone after a collision), and neither fails whole. Before each group locked its
/// streams in one order, PostgreSQL found a deadlock in such a pair (each had inserted a
/// row the other waited for) and failed one group: its callers were told their appends
/// "may or may not be stored".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_groups_writing_the_same_streams_in_opposite_orders_both_commit(
) -> anyhow::Result<()> {
    const ROUNDS: usize = 300;
    let db = PgTestDb::new().await?;
    let barrier = Arc::new(Barrier::new(2));
    let mut sides = Vec::new();
    for side in 0..2i64 {
        let store = db.store.clone();
        let barrier = barrier.clone();
        sides.push(tokio::spawn(async move {
            // Every round is played out (the other side waits at the barrier); the
            // failures are told at the end.
            let mut failures = Vec::new();
            for round in 0..ROUNDS {
                let (x, y) = (
                    stream(&format!("order-x{round}")),
                    stream(&format!("order-y{round}")),
                );
                let (first, second) = if side == 0 { (x, y) } else { (y, x) };
                barrier.wait().await;
                match store
                    .append_group(vec![
                        (first, ExpectedVersion::Any, vec![event(side), event(side)]),
                        (second, ExpectedVersion::Any, vec![event(side), event(side)]),
                    ])
                    .await
                {
                    Ok(results) => failures.extend(
                        results
                            .into_iter()
                            .filter_map(|r| r.err())
                            .map(|e| format!("round {round}, side {side}, one append: {e}")),
                    ),
                    Err(e) => failures.push(format!("round {round}, side {side}: {e}")),
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for side in sides {
        failures.extend(side.await?);
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    for round in 0..ROUNDS {
        for name in [format!("order-x{round}"), format!("order-y{round}")] {
            let events = db
                .store
                .read_stream(&stream(&name), ReadDirection::Backwards, STREAM_END, 10)
                .await?;
            assert_eq!(events.len(), 4, "{name}: both groups' events, once each");
        }
    }
    Ok(())
}

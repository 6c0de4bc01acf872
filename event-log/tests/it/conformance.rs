//! One conformance suite, run against every backend.

use eventfold_event_log::schemas::{
    EventMetadata, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
};
use eventfold_event_log::{
    AppendResult, Error, EventStore, GroupCommit, InMemoryEventStore, Limits, ReadDirection,
    SubscriptionOptions, STREAM_END,
};
use serde_json::json;

use crate::support::{PgTestDb, SqliteTestDb};

macro_rules! conformance_suite {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            conformance_suite!(@cases $fixture;
                appended_events_read_back_with_every_field,
                expected_versions_are_enforced_with_the_actual_version,
                streams_read_forwards_and_backwards_from_a_version,
                all_and_categories_read_in_pages_after_a_position,
                reappending_the_same_events_returns_the_original_result,
                the_same_event_id_elsewhere_is_an_error,
                bad_input_is_rejected_with_typed_errors_and_writes_nothing,
                head_and_stream_version_follow_appends,
                an_event_is_found_by_its_id_in_its_stream_only,
                subscriptions_catch_up_then_follow_live,
                subscriptions_filter_by_category_and_start_after_a_checkpoint,
                reads_restricted_to_types_move_past_the_others,
                concurrent_appends_with_any_all_land_contiguously,
                concurrent_appends_at_one_exact_version_admit_exactly_one,
                a_flood_of_the_same_append_at_once_stores_it_once_and_answers_it_alike,
                a_batch_takes_positions_in_version_order
            );
        }
    };
    (@cases $fixture:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() -> anyhow::Result<()> {
                let (store, _guard) = $fixture().await?;
                super::$case(store).await
            }
        )*
    };
}

conformance_suite!(in_memory, crate::conformance::memory_store);
conformance_suite!(sqlite, crate::conformance::sqlite_store);
conformance_suite!(postgres, crate::conformance::postgres_store);
conformance_suite!(
    sqlite_one_by_one,
    crate::conformance::sqlite_store_without_group_commit
);
conformance_suite!(
    postgres_one_by_one,
    crate::conformance::postgres_store_without_group_commit
);

pub async fn memory_store() -> anyhow::Result<(InMemoryEventStore, ())> {
    Ok((InMemoryEventStore::new(Limits::default()), ()))
}

pub async fn sqlite_store() -> anyhow::Result<(eventfold_event_log::SqliteEventStore, SqliteTestDb)>
{
    let db = SqliteTestDb::new().await?;
    Ok((db.store.clone(), db))
}

pub async fn postgres_store() -> anyhow::Result<(eventfold_event_log::PgEventStore, PgTestDb)> {
    let db = PgTestDb::new().await?;
    Ok((db.store.clone(), db))
}

pub async fn sqlite_store_without_group_commit(
) -> anyhow::Result<(eventfold_event_log::SqliteEventStore, SqliteTestDb)> {
    let db = SqliteTestDb::with(Limits::default(), GroupCommit::off()).await?;
    Ok((db.store.clone(), db))
}

pub async fn postgres_store_without_group_commit(
) -> anyhow::Result<(eventfold_event_log::PgEventStore, PgTestDb)> {
    let db = PgTestDb::with(Limits::default(), GroupCommit::off()).await?;
    Ok((db.store.clone(), db))
}

fn stream(s: &str) -> StreamId {
    StreamId::new(s).expect("valid stream id in test")
}

fn event(n: i64) -> NewEvent {
    NewEvent::new("ThingHappened", json!({ "n": n }))
}

async fn append_n<S: EventStore>(store: &S, s: &StreamId, n: i64) -> anyhow::Result<AppendResult> {
    let events: Vec<NewEvent> = (0..n).map(event).collect();
    Ok(store.append(s, ExpectedVersion::Any, &events).await?)
}

async fn appended_events_read_back_with_every_field<S: EventStore>(store: S) -> anyhow::Result<()> {
    let s = stream("order-7f3c");
    let metadata = EventMetadata {
        correlation_id: Some(uuid::Uuid::new_v4()),
        causation_id: Some(uuid::Uuid::new_v4()),
        actor: Some("user-1".into()),
        idempotency_key: Some("key-1".into()),
        request_fingerprint: Some("3b8f0e52-6f2b-5c1e-9d0a-1f0e2d3c4b5a".into()),
        extra: [("trace_id".to_owned(), json!("abc"))]
            .into_iter()
            .collect(),
    };
    let first = NewEvent::new(
        "OrderDrafted",
        json!({"sku": "caps", "qty": 2, "nested": {"a": [1, 2]}}),
    )
    .with_metadata(metadata.clone());
    let second = NewEvent::new("OrderPlaced", json!({})).with_schema_version(3);
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let result = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            &[first.clone(), second.clone()],
        )
        .await?;
    assert_eq!((result.first_version, result.last_version), (0, 1));
    assert!(result.first_position < result.last_position);

    let read = store
        .read_stream(&s, ReadDirection::Forwards, 0, 10)
        .await?;
    assert_eq!(read.len(), 2);
    let (a, b) = (&read[0], &read[1]);
    assert_eq!(a.event_id, first.event_id);
    assert_eq!(a.event_type, "OrderDrafted");
    assert_eq!(a.schema_version, 1);
    assert_eq!(a.data, first.data);
    assert_eq!(a.metadata, metadata);
    assert_eq!(a.stream_id, s);
    assert_eq!(a.stream_version, 0);
    assert_eq!(a.global_position, result.first_position);
    assert!(a.recorded_at > before);
    assert_eq!(b.schema_version, 3);
    assert_eq!(b.stream_version, 1);
    assert_eq!(b.global_position, result.last_position);
    Ok(())
}

fn assert_conflict(
    result: Result<AppendResult, Error>,
    want_expected: ExpectedVersion,
    want_actual: Option<i64>,
) {
    match result {
        Err(Error::WrongExpectedVersion {
            expected, actual, ..
        }) => {
            assert_eq!(expected, want_expected);
            assert_eq!(actual, want_actual);
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
}

async fn expected_versions_are_enforced_with_the_actual_version<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let s = stream("reminder-1");
    assert_conflict(
        store
            .append(&s, ExpectedVersion::StreamExists, &[event(0)])
            .await,
        ExpectedVersion::StreamExists,
        None,
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(0), &[event(0)])
            .await,
        ExpectedVersion::Exact(0),
        None,
    );
    store
        .append(&s, ExpectedVersion::NoStream, &[event(0)])
        .await?;
    assert_conflict(
        store
            .append(&s, ExpectedVersion::NoStream, &[event(1)])
            .await,
        ExpectedVersion::NoStream,
        Some(0),
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(5), &[event(1)])
            .await,
        ExpectedVersion::Exact(5),
        Some(0),
    );
    let r = store
        .append(&s, ExpectedVersion::Exact(0), &[event(1)])
        .await?;
    assert_eq!(r.last_version, 1);
    let r = store
        .append(&s, ExpectedVersion::StreamExists, &[event(2)])
        .await?;
    assert_eq!(r.last_version, 2);
    let r = store
        .append(&s, ExpectedVersion::Any, &[event(3), event(4)])
        .await?;
    assert_eq!((r.first_version, r.last_version), (3, 4));
    assert_eq!(
        store
            .read_stream(&s, ReadDirection::Forwards, 0, 100)
            .await?
            .len(),
        5
    );
    Ok(())
}

async fn streams_read_forwards_and_backwards_from_a_version<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let s = stream("workout-1");
    append_n(&store, &s, 10).await?;
    append_n(&store, &stream("workout-2"), 3).await?;
    let versions = |events: Vec<RecordedEvent>| -> Vec<i64> {
        events.iter().map(|e| e.stream_version).collect()
    };
    assert_eq!(
        versions(store.read_stream(&s, ReadDirection::Forwards, 4, 3).await?),
        vec![4, 5, 6]
    );
    assert_eq!(
        versions(
            store
                .read_stream(&s, ReadDirection::Backwards, STREAM_END, 3)
                .await?
        ),
        vec![9, 8, 7]
    );
    assert_eq!(
        versions(
            store
                .read_stream(&s, ReadDirection::Backwards, 2, 10)
                .await?
        ),
        vec![2, 1, 0]
    );
    assert!(store
        .read_stream(&s, ReadDirection::Forwards, 10, 10)
        .await?
        .is_empty());
    assert!(store
        .read_stream(&stream("workout-404"), ReadDirection::Forwards, 0, 10)
        .await?
        .is_empty());
    Ok(())
}

async fn all_and_categories_read_in_pages_after_a_position<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    for i in 0..5 {
        append_n(&store, &stream(&format!("order-{i}")), 3).await?;
        append_n(&store, &stream(&format!("purchases-{i}")), 2).await?;
    }
    // Page through $all.
    let mut after = Position::START;
    let mut all = Vec::new();
    loop {
        let page = store.read_all(after, None, 4).await?;
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = last.global_position;
        all.extend(page);
    }
    assert_eq!(all.len(), 25);
    assert!(all
        .windows(2)
        .all(|w| w[0].global_position < w[1].global_position));
    // From a position: strictly after it.
    let tail = store.read_all(all[9].global_position, None, 100).await?;
    assert_eq!(tail.len(), 15);
    assert_eq!(tail[0].global_position, all[10].global_position);
    // One category.
    let orders = store.read_all(Position::START, Some("order"), 100).await?;
    assert_eq!(orders.len(), 15);
    assert!(orders.iter().all(|e| e.stream_id.category() == "order"));
    let later_orders = store
        .read_all(orders[5].global_position, Some("order"), 4)
        .await?;
    assert_eq!(later_orders.len(), 4);
    assert_eq!(later_orders[0].global_position, orders[6].global_position);
    assert!(store
        .read_all(Position::START, Some("nothing"), 10)
        .await?
        .is_empty());
    Ok(())
}

async fn reappending_the_same_events_returns_the_original_result<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, &[event(0)])
        .await?;
    let batch = vec![event(1), event(2)];
    let original = store.append(&s, ExpectedVersion::Exact(0), &batch).await?;
    // Another append lands in between; the retry must still answer the original result.
    store.append(&s, ExpectedVersion::Any, &[event(3)]).await?;
    assert_eq!(
        store.append(&s, ExpectedVersion::Exact(0), &batch).await?,
        original
    );
    assert_eq!(
        store.append(&s, ExpectedVersion::Any, &batch).await?,
        original
    );
    assert_eq!(
        store
            .append(&s, ExpectedVersion::StreamExists, &batch)
            .await?,
        original
    );
    assert_eq!(
        store
            .read_stream(&s, ReadDirection::Forwards, 0, 100)
            .await?
            .len(),
        4
    );
    let first_again = store.read_stream(&s, ReadDirection::Forwards, 0, 1).await?;
    let retried = NewEvent { ..event(0) }.with_id(first_again[0].event_id);
    let r = store
        .append(&s, ExpectedVersion::NoStream, &[retried])
        .await?;
    assert_eq!(r.first_version, 0);
    Ok(())
}

async fn the_same_event_id_elsewhere_is_an_error<S: EventStore>(store: S) -> anyhow::Result<()> {
    let e = event(0);
    store
        .append(
            &stream("order-1"),
            ExpectedVersion::Any,
            std::slice::from_ref(&e),
        )
        .await?;
    let elsewhere = store
        .append(
            &stream("order-2"),
            ExpectedVersion::Any,
            std::slice::from_ref(&e),
        )
        .await;
    match elsewhere {
        Err(Error::DuplicateEventId {
            event_id,
            stored_in,
            stored_version,
        }) => {
            assert_eq!(event_id, e.event_id);
            assert_eq!(stored_in.as_str(), "order-1");
            assert_eq!(stored_version, 0);
        }
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    // Partly new, partly stored: not a retry either.
    let partial = store
        .append(
            &stream("order-1"),
            ExpectedVersion::Any,
            &[e.clone(), event(1)],
        )
        .await;
    assert!(
        matches!(partial, Err(Error::DuplicateEventId { .. })),
        "{partial:?}"
    );
    // Stored in this stream, but not where this expectation puts it.
    store
        .append(&stream("order-1"), ExpectedVersion::Any, &[event(2)])
        .await?;
    let moved = store
        .append(&stream("order-1"), ExpectedVersion::Exact(1), &[e])
        .await;
    assert!(
        matches!(moved, Err(Error::DuplicateEventId { .. })),
        "{moved:?}"
    );
    assert!(store
        .read_stream(&stream("order-2"), ReadDirection::Forwards, 0, 10)
        .await?
        .is_empty());
    assert_eq!(
        store.head().await?,
        store.read_all(Position::START, None, 10).await?[1].global_position
    );
    Ok(())
}

async fn bad_input_is_rejected_with_typed_errors_and_writes_nothing<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let s = stream("order-1");
    let limits = Limits::default();
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &[]).await,
        Err(Error::EmptyAppend)
    ));
    let too_many: Vec<NewEvent> = (0..limits.max_events_per_append as i64 + 1)
        .map(event)
        .collect();
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &too_many).await,
        Err(Error::TooManyEvents { .. })
    ));
    let huge = NewEvent::new("Big", json!({ "blob": "x".repeat(limits.max_event_bytes) }));
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Any, &[event(0), huge])
            .await,
        Err(Error::EventTooLarge { .. })
    ));
    // A version below 0 names no state of a stream (PostgreSQL's backend took -2 and
    // -3 for "no stream" and "stream exists", -1 for "any", and appended).
    for version in [-1, -2, -3, i64::MIN] {
        for events in [vec![event(0)], vec![event(0), event(1)]] {
            assert!(matches!(
                store
                    .append(&s, ExpectedVersion::Exact(version), &events)
                    .await,
                Err(Error::InvalidExpectedVersion(v)) if v == version
            ));
        }
    }
    for data in [json!([1, 2]), json!("text"), json!(null), json!(3)] {
        assert!(matches!(
            store
                .append(&s, ExpectedVersion::Any, &[NewEvent::new("T", data)])
                .await,
            Err(Error::DataNotObject { .. })
        ));
    }
    for bad_type in ["", "has space", "ünïcode", &"x".repeat(101)] {
        assert!(matches!(
            store
                .append(
                    &s,
                    ExpectedVersion::Any,
                    &[NewEvent::new(bad_type, json!({}))]
                )
                .await,
            Err(Error::InvalidEventType(_))
        ));
    }
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Any, &[event(0).with_schema_version(0)])
            .await,
        Err(Error::InvalidSchemaVersion { .. })
    ));
    // A NUL that PostgreSQL's jsonb cannot hold is refused alike everywhere, typed.
    for data in [json!({"t": "a\u{0}b"}), json!({"k\u{0}": 1})] {
        assert!(matches!(
            store
                .append(
                    &s,
                    ExpectedVersion::Any,
                    &[event(0), NewEvent::new("T", data)]
                )
                .await,
            Err(Error::NulCharacter { part: "data", .. })
        ));
    }
    assert!(matches!(
        store
            .read_all(Position::START, Some("Bad-Category"), 10)
            .await,
        Err(Error::InvalidCategory(_))
    ));
    assert!(store.read_all(Position::START, None, 10).await?.is_empty());
    assert_eq!(store.head().await?, Position::START);
    Ok(())
}

async fn head_and_stream_version_follow_appends<S: EventStore>(store: S) -> anyhow::Result<()> {
    let s = stream("purchases-u1");
    assert_eq!(store.head().await?, Position::START);
    assert_eq!(store.stream_version(&s).await?, None);
    let r = append_n(&store, &s, 3).await?;
    assert_eq!(store.stream_version(&s).await?, Some(2));
    assert_eq!(store.head().await?, r.last_position);
    Ok(())
}

async fn an_event_is_found_by_its_id_in_its_stream_only<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let s = stream("workout-w1");
    append_n(&store, &s, 3).await?;
    append_n(&store, &stream("workout-w2"), 2).await?;
    let stored = store
        .read_stream(&s, ReadDirection::Forwards, 0, 10)
        .await?;
    for record in &stored {
        assert_eq!(
            store.version_of_event(&s, record.event_id).await?,
            Some(record.stream_version)
        );
        assert_eq!(
            store
                .version_of_event(&stream("workout-w2"), record.event_id)
                .await?,
            None,
            "found in a stream that does not hold it"
        );
    }
    assert_eq!(
        store.version_of_event(&s, uuid::Uuid::new_v4()).await?,
        None
    );
    assert_eq!(
        store
            .version_of_event(&stream("workout-none"), stored[0].event_id)
            .await?,
        None
    );
    Ok(())
}

async fn subscriptions_catch_up_then_follow_live<S: EventStore>(store: S) -> anyhow::Result<()> {
    let s = stream("order-1");
    append_n(&store, &s, 3).await?;
    let mut sub = store.subscribe(Position::START, SubscriptionOptions::default());
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(tokio::time::timeout(std::time::Duration::from_secs(5), sub.next()).await??);
    }
    let writer = store.clone();
    let appender = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        append_n(&writer, &stream("order-2"), 2).await
    });
    for _ in 0..2 {
        // Well under the 1 s polling fallback: the wake-up must work.
        seen.push(tokio::time::timeout(std::time::Duration::from_secs(5), sub.next()).await??);
    }
    appender.await??;
    let positions: Vec<_> = seen.iter().map(|e| e.global_position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(seen[3].stream_id.as_str(), "order-2");
    // Nothing more is delivered.
    assert!(sub.try_next_batch(10).await?.is_empty());
    Ok(())
}

async fn subscriptions_filter_by_category_and_start_after_a_checkpoint<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let first = append_n(&store, &stream("order-1"), 2).await?;
    append_n(&store, &stream("workout-1"), 2).await?;
    append_n(&store, &stream("order-2"), 2).await?;
    let mut orders = store.subscribe(Position::START, SubscriptionOptions::category("order"));
    let batch = orders.next_batch(100).await?;
    assert_eq!(batch.len(), 4);
    assert!(batch.iter().all(|e| e.stream_id.category() == "order"));
    let mut after = store.subscribe(first.first_position, SubscriptionOptions::default());
    let batch = after.next_batch(100).await?;
    assert_eq!(batch.len(), 5);
    assert_eq!(batch[0].global_position, first.last_position);
    Ok(())
}

/// A read restricted to some event types returns exactly those of the range an
/// unrestricted read of the same size covers, and says how far it read; a subscription
/// restricted the same way delivers only those and moves past the rest, to the head.
async fn reads_restricted_to_types_move_past_the_others<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let kinds = ["Wanted", "Other", "Other", "AlsoWanted", "Other"];
    for i in 0..6 {
        let events: Vec<NewEvent> = kinds
            .iter()
            .map(|kind| NewEvent::new(*kind, json!({ "i": i })))
            .collect();
        let s = stream(&format!("thing-{i}"));
        store.append(&s, ExpectedVersion::Any, &events).await?;
    }
    let types: Vec<String> = vec!["Wanted".into(), "AlsoWanted".into()];
    let all = store.read_all(Position::START, None, 100).await?;
    assert_eq!(all.len(), 30);
    let mut after = Position::START;
    let mut seen = Vec::new();
    loop {
        let page = store
            .read_all_of_types(after, None, Some(&types), 7)
            .await?;
        let unrestricted = store.read_all(after, None, 7).await?;
        let expected: Vec<&RecordedEvent> = unrestricted
            .iter()
            .filter(|e| types.contains(&e.event_type))
            .collect();
        assert_eq!(page.events.iter().collect::<Vec<_>>(), expected);
        assert_eq!(
            page.through,
            unrestricted.last().map_or(after, |e| e.global_position)
        );
        if page.through == after {
            break;
        }
        after = page.through;
        seen.extend(page.events);
    }
    assert_eq!(after, all[29].global_position);
    let wanted: Vec<&RecordedEvent> = all
        .iter()
        .filter(|e| types.contains(&e.event_type))
        .collect();
    assert_eq!(seen.iter().collect::<Vec<_>>(), wanted);
    assert_eq!(seen.len(), 12);

    // A subscription: the wanted events in order, then pages reach the head.
    let options = SubscriptionOptions {
        event_types: Some(types.clone().into()),
        page_size: 4,
        ..SubscriptionOptions::default()
    };
    let mut sub = store.subscribe(Position::START, options);
    let mut delivered = Vec::new();
    let mut through = Position::START;
    while through < all[29].global_position {
        let page =
            tokio::time::timeout(std::time::Duration::from_secs(5), sub.next_page(3)).await??;
        assert!(page.through > through, "a page moves the subscription on");
        assert!(page
            .events
            .iter()
            .all(|e| e.global_position > through && e.global_position <= page.through));
        through = page.through;
        delivered.extend(page.events);
    }
    assert_eq!(delivered.iter().collect::<Vec<_>>(), wanted);
    let rest = sub.try_next_page(10).await?;
    assert!(rest.events.is_empty());
    assert_eq!(rest.through, all[29].global_position);
    // Live: only other types arrive; the subscription still moves to them.
    let last = store
        .append(
            &stream("thing-9"),
            ExpectedVersion::Any,
            &[NewEvent::new("Other", json!({}))],
        )
        .await?;
    let page = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next_page(10)).await??;
    assert!(page.events.is_empty());
    assert_eq!(page.through, last.last_position);
    Ok(())
}

async fn concurrent_appends_with_any_all_land_contiguously<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let s = stream("order-hot");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                store
                    .append(&s, ExpectedVersion::Any, &[event(w * 100 + i)])
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let events = store
        .read_stream(&s, ReadDirection::Forwards, 0, 1000)
        .await?;
    let versions: Vec<i64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (0..80).collect::<Vec<_>>());
    assert!(events
        .windows(2)
        .all(|w| w[0].global_position < w[1].global_position));
    Ok(())
}

async fn concurrent_appends_at_one_exact_version_admit_exactly_one<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    let s = stream("reminder-42");
    store
        .append(&s, ExpectedVersion::NoStream, &[event(0)])
        .await?;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            store
                .append(&s, ExpectedVersion::Exact(0), &[event(w)])
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await? {
            Ok(r) => {
                ok += 1;
                assert_eq!(r.last_version, 1);
            }
            Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, Some(1)),
            Err(other) => return Err(other.into()),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.stream_version(&s).await?, Some(1));
    Ok(())
}

/// A client that retries without waiting for its answer (a voice assistant, a proxy):
/// the very same append, its event ids included, many times at once, with every kind
/// of expectation, one event and several. Each copy is answered with the one result;
/// the stream holds the events once.
async fn a_flood_of_the_same_append_at_once_stores_it_once_and_answers_it_alike<S: EventStore>(
    store: S,
) -> anyhow::Result<()> {
    const COPIES: usize = 24;
    let s = stream("order-flood");
    let rounds: Vec<(ExpectedVersion, Vec<NewEvent>)> = vec![
        (ExpectedVersion::NoStream, vec![event(0)]),
        (ExpectedVersion::Exact(0), vec![event(1)]),
        (ExpectedVersion::Any, vec![event(2), event(3)]),
        (ExpectedVersion::StreamExists, vec![event(4)]),
        (
            ExpectedVersion::Exact(4),
            vec![event(5), event(6), event(7)],
        ),
        (ExpectedVersion::Any, vec![event(8)]),
    ];
    let mut stored = 0;
    for (expected, events) in rounds {
        let mut copies = Vec::new();
        for _ in 0..COPIES {
            let (store, s, events) = (store.clone(), s.clone(), events.clone());
            copies.push(tokio::spawn(async move {
                store.append(&s, expected, &events).await
            }));
        }
        let mut answers = Vec::new();
        for copy in copies {
            answers.push(copy.await?.map_err(|e| {
                anyhow::anyhow!("a copy of the append with {expected} was refused: {e}")
            })?);
        }
        let first = answers[0];
        assert!(
            answers.iter().all(|a| *a == first),
            "copies of one append answered differently ({expected}): {answers:?}"
        );
        assert_eq!(first.first_version, stored);
        stored += events.len() as i64;
        assert_eq!(first.last_version, stored - 1);
    }
    let events = store
        .read_stream(&s, ReadDirection::Forwards, 0, 1000)
        .await?;
    let versions: Vec<i64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (0..stored).collect::<Vec<_>>());
    Ok(())
}

async fn a_batch_takes_positions_in_version_order<S: EventStore>(store: S) -> anyhow::Result<()> {
    let s = stream("workout-batch");
    let r = append_n(&store, &s, 100).await?;
    let events = store
        .read_stream(&s, ReadDirection::Forwards, 0, 1000)
        .await?;
    assert_eq!(events.len(), 100);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.stream_version, i as i64);
        assert_eq!(e.data.to_value().expect("json")["n"], json!(i));
    }
    assert!(events
        .windows(2)
        .all(|w| w[0].global_position < w[1].global_position));
    assert_eq!(events[0].global_position, r.first_position);
    assert_eq!(events[99].global_position, r.last_position);
    Ok(())
}

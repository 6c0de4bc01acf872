//! PostgreSQL only: subscribers never skip an event, whatever order transactions commit
//! in, and nothing but our own in-flight appends holds them back.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use eventfold_event_log::schemas::{ExpectedVersion, NewEvent, Position, StreamId};
use eventfold_event_log::{EventReader, EventStore, EventWriter, SubscriptionOptions};
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

use crate::support::PgTestDb;
use eventfold_event_log::testing::append_in_transaction;

const WRITERS: usize = 16;
const TOTAL_EVENTS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_subscriber_gets_every_event_of_sixteen_concurrent_writers_exactly_once(
) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let store = db.store.clone();
    let mut subscription = store.subscribe(
        Position::START,
        SubscriptionOptions {
            page_size: 1000,
            poll_interval: Duration::from_millis(200),
            ..SubscriptionOptions::default()
        },
    );

    let per_writer = TOTAL_EVENTS / WRITERS;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut appended = Vec::with_capacity(per_writer);
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            let mut left = per_writer;
            while left > 0 {
                // Random streams, random small batches: appends to the same stream race.
                let n = rng.random_range(1..=4).min(left);
                let s = StreamId::new(format!("order-{}", rng.random_range(0..200)))?;
                let events: Vec<NewEvent> = (0..n)
                    .map(|i| NewEvent::new("Tick", json!({"i": i})))
                    .collect();
                store.append(&s, ExpectedVersion::Any, &events).await?;
                appended.extend(events.iter().map(|e| e.event_id));
                left -= n;
            }
            anyhow::Ok(appended)
        }));
    }

    let mut received = Vec::with_capacity(TOTAL_EVENTS);
    while received.len() < TOTAL_EVENTS {
        let Ok(batch) =
            tokio::time::timeout(Duration::from_secs(30), subscription.next_batch(1000)).await
        else {
            // A writer that failed appends no more: say why, not just that events are
            // missing.
            let mut failures = Vec::new();
            for w in writers.iter_mut().filter(|w| w.is_finished()) {
                if let Err(error) = w.await? {
                    failures.push(format!("{error:#}"));
                }
            }
            anyhow::bail!(
                "subscriber stalled after {} events; failed writers: {failures:?}",
                received.len()
            );
        };
        received.extend(batch?);
    }
    let mut appended = HashSet::new();
    for w in writers {
        appended.extend(w.await??);
    }
    // Nothing extra arrives afterwards.
    assert!(subscription.try_next_batch(10).await?.is_empty());

    let ids: Vec<Uuid> = received.iter().map(|e| e.event_id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event was delivered twice");
    assert_eq!(
        unique, appended,
        "delivered events differ from appended events"
    );
    assert!(received
        .windows(2)
        .all(|w| w[0].global_position < w[1].global_position));
    let mut next_version: HashMap<&str, i64> = HashMap::new();
    for e in &received {
        let expected = next_version.entry(e.stream_id.as_str()).or_insert(0);
        assert_eq!(
            e.stream_version, *expected,
            "stream {} out of order",
            e.stream_id
        );
        *expected += 1;
    }
    Ok(())
}

/// Opens a connection of its own to the test database.
async fn side_connection(db: &PgTestDb) -> anyhow::Result<sqlx::PgConnection> {
    Ok(db.options.clone().connect().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_commits_after_a_later_position_is_not_skipped() -> anyhow::Result<()> {
    // Both statements the store appends with: one event (a plain statement of its own)
    // and several (`eventfold_append`).
    for events in [1, 2] {
        slow_append_is_not_skipped(events)
            .await
            .with_context(|| format!("a slow append of {events} event(s)"))?;
    }
    Ok(())
}

async fn slow_append_is_not_skipped(events: usize) -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let store = db.store.clone();
    // A slow appender: it takes its positions, then waits before committing.
    let mut slow = side_connection(&db).await?;
    let mut tx = slow.begin().await?;
    let slow_events: Vec<NewEvent> = (0..events)
        .map(|_| NewEvent::new("Slow", json!({})))
        .collect();
    let slow_append = append_in_transaction(
        &mut tx,
        &StreamId::new("order-slow")?,
        ExpectedVersion::Any,
        &slow_events,
    )
    .await?
    .context("the slow append was refused")?;
    // A fast appender takes a later position and commits first.
    let fast = store
        .append(
            &StreamId::new("order-fast")?,
            ExpectedVersion::Any,
            &[NewEvent::new("Fast", json!({}))],
        )
        .await?;
    assert!(fast.first_position > slow_append.last_position);

    // The hazard is real: a plain position-ordered read already sees the later event...
    let naive: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM eventfold_events WHERE global_position > 0 ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await?;
    assert_eq!(naive, vec![fast.first_position.0]);
    // ...but the log's reads hold back until the slow append settles.
    assert!(store.read_all(Position::START, None, 10).await?.is_empty());
    let mut subscription = store.subscribe(Position::START, SubscriptionOptions::default());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), subscription.next())
            .await
            .is_err(),
        "the subscriber must not run ahead of the in-flight append"
    );

    tx.commit().await?;
    let mut seen = Vec::new();
    for _ in 0..=events {
        let event = tokio::time::timeout(Duration::from_secs(5), subscription.next()).await??;
        seen.push(event.global_position);
    }
    let mut expected: Vec<Position> = (slow_append.first_position.0..=slow_append.last_position.0)
        .map(Position)
        .collect();
    expected.push(fast.first_position);
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_append_does_not_hold_readers_back() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let store = db.store.clone();
    let mut slow = side_connection(&db).await?;
    let mut tx = slow.begin().await?;
    sqlx::query(
        "SELECT * FROM eventfold_append('order-slow', 'order', -1, $1, \
         ARRAY['Slow'], ARRAY[1], ARRAY['{}'], ARRAY['{}'])",
    )
    .bind(vec![Uuid::new_v4()])
    .execute(&mut *tx)
    .await?;
    let fast = store
        .append(
            &StreamId::new("order-fast")?,
            ExpectedVersion::Any,
            &[NewEvent::new("Fast", json!({}))],
        )
        .await?;
    tx.rollback().await?;
    let all = store.read_all(Position::START, None, 10).await?;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].global_position, fast.first_position);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transaction_elsewhere_does_not_stall_subscribers() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    let store = db.store.clone();
    // A session that holds a transaction id and sits idle in its transaction, as a
    // forgotten psql session would. xid8-based readers would stop at its xmin.
    let mut idle = side_connection(&db).await?;
    let mut tx = idle.begin().await?;
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await?;

    let mut subscription = store.subscribe(Position::START, SubscriptionOptions::default());
    let appended = store
        .append(
            &StreamId::new("order-1")?,
            ExpectedVersion::Any,
            &[NewEvent::new("Placed", json!({}))],
        )
        .await?;
    let got = tokio::time::timeout(Duration::from_secs(1), subscription.next())
        .await
        .context("subscriber stalled by an unrelated idle transaction")??;
    assert_eq!(got.global_position, appended.first_position);
    tx.rollback().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_appending_wakes_a_subscriber_through_notify() -> anyhow::Result<()> {
    let db = PgTestDb::new().await?;
    // Two stores on separate pools stand for two processes: no shared in-process wake-up.
    let other_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.options.clone())
        .await?;
    let other = eventfold_event_log::PgEventStore::from_pool(other_pool, Default::default());
    let mut subscription = db.store.subscribe(
        Position::START,
        SubscriptionOptions {
            poll_interval: Duration::from_secs(30),
            ..SubscriptionOptions::default()
        },
    );
    // The subscriber reads first (nothing yet) and goes to wait: from then on only a
    // wake-up can deliver the event before the 30 s poll. Reading only after the
    // append would find the event without any NOTIFY.
    let waiting = tokio::spawn(async move { subscription.next().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    anyhow::ensure!(
        !waiting.is_finished(),
        "the subscriber found an event in an empty log"
    );
    other
        .append(
            &StreamId::new("order-1")?,
            ExpectedVersion::Any,
            &[NewEvent::new("Placed", json!({}))],
        )
        .await?;
    tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .context("no NOTIFY wake-up within 3 s (polling was set to 30 s)")???;
    Ok(())
}

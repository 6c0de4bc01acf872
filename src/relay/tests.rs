use std::collections::BTreeMap;

use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::{EventReader, EventWriter, PgEventStore};
use eventfold_event_schemas::{ExpectedVersion, NewEvent, StreamId};
use eventfold_projections::ReadDb;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::*;
use crate::kafka_testing::{relay_runner, Broker, CATEGORIES};

/// `streams` streams of `per_stream` events each, over three categories, appended in
/// interleaved rounds (so a partition holds many streams' events interleaved).
async fn fill(store: &PgEventStore, streams: usize, per_stream: usize) -> Position {
    let mut versions = vec![None; streams];
    for round in 0..per_stream.div_ceil(10) {
        let mut tasks = tokio::task::JoinSet::new();
        for (s, version) in versions.iter_mut().enumerate() {
            let n = (per_stream - round * 10).min(10);
            let events: Vec<NewEvent> = (0..n)
                .map(|i| {
                    NewEvent::new(
                        "TestHappened",
                        serde_json::json!({"stream": s, "n": round * 10 + i}),
                    )
                })
                .collect();
            let expected = match *version {
                None => ExpectedVersion::NoStream,
                Some(v) => ExpectedVersion::Exact(v),
            };
            *version = Some(version.map_or(n as i64 - 1, |v| v + n as i64));
            let store = store.clone();
            let stream = StreamId::new(format!("{}-{s}", CATEGORIES[s % 3])).expect("stream");
            tasks.spawn(async move { store.append(&stream, expected, &events).await });
            if tasks.len() >= 8 {
                tasks
                    .join_next()
                    .await
                    .expect("task")
                    .expect("join")
                    .expect("append");
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("join").expect("append");
        }
    }
    store.head().await.expect("head")
}

/// One consumed message: (topic, partition, offset, key, position, event id).
type Seen = (String, i32, i64, String, i64, String);

/// Reads every partition of the categories' topics from the start until `expected`
/// messages have arrived (and a moment longer, to catch extras).
async fn consume(bootstrap: &str, settings: &KafkaSettings, expected: usize) -> Vec<Seen> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "eventfold-relay-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for category in CATEGORIES {
        for partition in 0..settings.partitions {
            assignment
                .add_partition_offset(
                    &format!("{}{category}", settings.prefix),
                    partition,
                    Offset::Beginning,
                )
                .expect("partition");
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = Vec::new();
    loop {
        let wait = if seen.len() >= expected {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(30)
        };
        let message = match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(message) => message.expect("message"),
            Err(_) if seen.len() >= expected => break,
            Err(_) => panic!("only {} of {expected} messages arrived", seen.len()),
        };
        let header = |name: &str| -> String {
            message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(message.payload().expect("payload")).expect("json");
        let position: i64 = header("eventfold-position")
            .parse()
            .expect("position header");
        assert_eq!(
            body["global_position"], position,
            "the envelope and its header agree"
        );
        assert_eq!(header("eventfold-event-type"), "TestHappened");
        assert_eq!(header("eventfold-schema-version"), "1");
        seen.push((
            message.topic().to_owned(),
            message.partition(),
            message.offset(),
            String::from_utf8_lossy(message.key().expect("key")).into_owned(),
            position,
            header("eventfold-event-id"),
        ));
    }
    seen
}

/// Every stream's events in one partition of its category's topic, in stream order.
fn assert_per_stream_order(seen: &[Seen]) {
    let mut streams: BTreeMap<&str, (&str, i32, i64, i64)> = BTreeMap::new();
    for (topic, partition, offset, key, position, _) in seen {
        let category = key.split('-').next().unwrap_or_default();
        assert!(topic.ends_with(category), "{key} went to {topic}");
        if let Some((t, p, last_offset, last_position)) = streams.get(key.as_str()) {
            assert_eq!(
                (*t, *p),
                (topic.as_str(), *partition),
                "{key} changed partitions"
            );
            assert!(offset > last_offset);
            assert!(
                position > last_position,
                "{key}: {position} after {last_position}"
            );
        }
        streams.insert(key, (topic, *partition, *offset, *position));
    }
}

/// Every event of a 50k-event log published once, each stream in order in one
/// partition; a second relay run from the checkpoint publishes nothing.
async fn published_once_in_stream_order(broker: Broker) {
    let bootstrap = broker.bootstrap();
    let db = PgTestDb::new().await.expect("test database");
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let settings = broker.settings(3);
    let head = fill(&db.store, 500, 100).await;
    assert_eq!(head.0, 50_000);
    let (runner, _) = relay_runner(&db.store, &settings, &read, Duration::from_millis(20));
    runner.run_until(Some(head)).await.expect("relay");
    let seen = consume(&bootstrap, &settings, 50_000).await;
    let mut positions: Vec<i64> = seen.iter().map(|s| s.4).collect();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (1..=50_000).collect::<Vec<i64>>(),
        "each event exactly once"
    );
    assert_per_stream_order(&seen);
    // Run again from its checkpoint: nothing more is published.
    let (again, _) = relay_runner(&db.store, &settings, &read, Duration::from_millis(20));
    again.run_until(Some(head)).await.expect("relay again");
    assert_eq!(consume(&bootstrap, &settings, 50_000).await.len(), 50_000);
}

/// A relay killed after producing a batch and before its checkpoint: its heir
/// republishes that batch only, as duplicates a position-skipping consumer ignores.
async fn killed_before_its_checkpoint(broker: Broker) {
    let bootstrap = broker.bootstrap();
    let db = PgTestDb::new().await.expect("test database");
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let settings = broker.settings(2);
    let head = fill(&db.store, 60, 200).await;
    assert_eq!(head.0, 12_000);
    // The first relay dies after its first batch is acknowledged, before its
    // checkpoint (its retry waits far longer than the test does).
    let (runner, fail_point) = relay_runner(&db.store, &settings, &read, Duration::from_secs(600));
    fail_point.arm(1);
    let task = tokio::spawn(async move { runner.run_until(Some(head)).await });
    while fail_point.fired() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    let (heir, _) = relay_runner(&db.store, &settings, &read, Duration::from_millis(20));
    heir.run_until(Some(head)).await.expect("heir");
    let seen = consume(&bootstrap, &settings, 12_000).await;
    let mut copies: BTreeMap<i64, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        copies.entry(s.4).or_default().push(s);
    }
    assert_eq!(copies.len(), 12_000, "every event arrived");
    let duplicated: Vec<i64> = copies
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(p, _)| *p)
        .collect();
    assert!(!duplicated.is_empty(), "the killed batch was republished");
    assert!(
        duplicated.len() <= 5_000,
        "only the killed batch: {}",
        duplicated.len()
    );
    for position in &duplicated {
        let c = &copies[position];
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].5, c[1].5, "a duplicate carries the same event id");
    }
    // What a consumer that skips positions it has seen reads: the log, in order.
    let mut kept: Vec<Seen> = Vec::new();
    let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut ordered = seen.clone();
    ordered.sort_by_key(|s| (s.0.clone(), s.1, s.2));
    for s in ordered {
        let high = last.entry((s.0.clone(), s.1)).or_insert(0);
        if s.4 > *high {
            *high = s.4;
            kept.push(s);
        }
    }
    assert_eq!(
        kept.len(),
        12_000,
        "skipping seen positions leaves each event once"
    );
    assert_per_stream_order(&kept);
}

/// A relay configured with the old topic prefix that takes the lease over after `relay
/// --from-start` moved the relay to a new prefix and published there is refused at its
/// set-up, instead of going on from that checkpoint into its old topics (which lack
/// every event published under the new prefix). Before, the prefix was checked only
/// when a process started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_taking_over_after_the_prefix_moved_is_refused() {
    let broker = Broker::mock();
    let db = PgTestDb::new().await.expect("test database");
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let old = broker.settings(1);
    let head = fill(&db.store, 3, 10).await;
    let (first, _) = relay_runner(&db.store, &old, &read, Duration::from_millis(20));
    first.run_until(Some(head)).await.expect("relay");

    // `relay --from-start` under a new prefix publishes the log there.
    let Broker::Mock(cluster, prefix) = &broker else {
        panic!("a mock cluster")
    };
    let moved = format!("{prefix}moved.");
    for category in CATEGORIES {
        cluster
            .create_topic(&format!("{moved}{category}"), 1, 1)
            .expect("topic");
    }
    let new = KafkaSettings::new(broker.bootstrap(), Some(moved.clone()), Some(1), None)
        .expect("settings");
    claim_destination(read.pool(), &moved, true)
        .await
        .expect("from the start");
    let (second, _) = relay_runner(&db.store, &new, &read, Duration::from_millis(20));
    second.run_until(Some(head)).await.expect("relay again");

    // One more event; the process still configured with the old prefix takes over.
    let stream = StreamId::new(format!("{}-late", CATEGORIES[0])).expect("stream");
    let late = NewEvent::new("TestHappened", serde_json::json!({"late": true}));
    let appended = db
        .store
        .append(&stream, ExpectedVersion::NoStream, &[late])
        .await
        .expect("append");
    let (stale, _) = relay_runner(&db.store, &old, &read, Duration::from_millis(20));
    let refused = stale.run_until(Some(appended.last_position)).await;
    assert!(
        matches!(&refused, Err(Error::InvalidSetting(why)) if why.contains(&moved)),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_every_event_of_a_50k_log_is_published_once_in_stream_order() {
    published_once_in_stream_order(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_a_relay_killed_before_its_checkpoint_republishes_only_duplicates() {
    killed_before_its_checkpoint(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_every_event_of_a_50k_log_is_published_once_in_stream_order() {
    published_once_in_stream_order(Broker::tansu()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_a_relay_killed_before_its_checkpoint_republishes_only_duplicates() {
    killed_before_its_checkpoint(Broker::tansu()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_every_event_of_a_50k_log_is_published_once_in_stream_order() {
    if let Some(broker) = Broker::external() {
        published_once_in_stream_order(broker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_a_relay_killed_before_its_checkpoint_republishes_only_duplicates() {
    if let Some(broker) = Broker::external() {
        killed_before_its_checkpoint(broker).await;
    }
}

#[test]
fn topics_are_per_category_and_names_kafka_refuses_are_refused() {
    let settings = KafkaSettings::new("k:9092".into(), None, None, None).expect("defaults");
    assert_eq!(settings.topic_for("order-42"), "eventfold.order");
    assert_eq!(settings.topic_for("workout-6f1c-22aa"), "eventfold.workout");
    assert_eq!(settings.partitions, 3);
    assert!(KafkaSettings::new(" ".into(), None, None, None).is_err());
    // Broker lists librdkafka could only retry forever are refused up front.
    for good in [
        "k",
        "k:9092",
        "a:1,b:65535",
        " a:9092 , b ",
        "[::1]:9092",
        "PLAINTEXT://k:9092",
        "10.0.0.1:9092",
    ] {
        assert!(
            KafkaSettings::new(good.into(), None, None, None).is_ok(),
            "{good}"
        );
    }
    for bad in [
        "not a broker",
        "a:9092,,b:9092",
        "k:0",
        "k:65536",
        "k:port",
        ":9092",
        "[::1",
        "[]:9092",
        "k:",
    ] {
        assert!(
            KafkaSettings::new(bad.into(), None, None, None).is_err(),
            "{bad}"
        );
    }
    assert!(KafkaSettings::new("k".into(), Some("a/b".into()), None, None).is_err());
    assert!(KafkaSettings::new("k".into(), None, Some(0), None).is_err());
    assert!(KafkaSettings::new("k".into(), None, None, Some(0)).is_err());
    assert!(KafkaSettings::new("k".into(), Some("t1.ev-".into()), None, None).is_ok());
}

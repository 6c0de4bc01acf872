use std::sync::atomic::Ordering;

use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::EventReader;
use eventfold_projections::{
    scan_keys, snapshot, table_checksum, Error, ProjectionSet, ReadDb, RedisKeys, RedisStore,
    StoreKind,
};
use redis::AsyncCommands;
use sqlx::Acquire;

use super::*;
use crate::kafka_testing::{relay_runner, Broker};

fn redis_url() -> String {
    std::env::var("EVENTFOLD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The reference read models of `db` (relational) and Redis under `prefix`.
async fn models_on(
    db: &PgTestDb,
    prefix: &str,
) -> ProjectionSet<eventfold_event_log::PgEventStore> {
    let read = ReadDb::connect(&db.url()).await.expect("read db");
    let redis = RedisStore {
        client: redis::Client::open(redis_url()).expect("redis"),
        keys: RedisKeys::new(prefix),
    };
    ProjectionSet::new(
        db.store.clone(),
        read,
        Some(redis),
        RunnerOptions::default(),
        StatusBoard::default(),
    )
}

/// Every table (checksum of every row) and every key of `a`'s models equal `b`'s,
/// or what differs.
async fn differences(
    a: &ProjectionSet<eventfold_event_log::PgEventStore>,
    b: &ProjectionSet<eventfold_event_log::PgEventStore>,
    prefixes: (&str, &str),
) -> Vec<String> {
    let mut out = Vec::new();
    let mut ca = a.db().pool().acquire().await.expect("conn a");
    let mut cb = b.db().pool().acquire().await.expect("conn b");
    let mut redis = redis::Client::open(redis_url())
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis conn");
    for model in a.active() {
        match model.store() {
            StoreKind::Relational => {
                for table in model.owns() {
                    let x = table_checksum(ca.acquire().await.expect("a"), table)
                        .await
                        .expect("checksum a");
                    let y = table_checksum(cb.acquire().await.expect("b"), table)
                        .await
                        .expect("checksum b");
                    if x != y {
                        out.push(format!("{}: {table} {x:?} vs {y:?}", model.name()));
                    }
                }
            }
            StoreKind::Redis => {
                let x = snapshot(&mut redis, &RedisKeys::new(prefixes.0), model.owns())
                    .await
                    .expect("snapshot a");
                let y = snapshot(&mut redis, &RedisKeys::new(prefixes.1), model.owns())
                    .await
                    .expect("snapshot b");
                if x != y {
                    let differing = x.iter().filter(|(k, v)| y.get(*k) != Some(v)).count()
                        + y.keys().filter(|k| !x.contains_key(*k)).count();
                    out.push(format!(
                        "{}: {differing} keys of {} / {} differ",
                        model.name(),
                        x.len(),
                        y.len()
                    ));
                }
            }
            StoreKind::ClickHouse => {}
        }
    }
    out
}

async fn drop_keys(prefix: &str) {
    let mut conn = redis::Client::open(redis_url())
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis conn");
    let keys = RedisKeys::new(prefix);
    let names: Vec<String> = scan_keys(&mut conn, &keys, &[""])
        .await
        .expect("scan")
        .iter()
        .map(|k| keys.key(k))
        .collect();
    for chunk in names.chunks(1000) {
        let _: i64 = conn.del(chunk).await.expect("del");
    }
}

/// A log of the test's own, relayed to a broker (topics of the partitions given).
struct Relayed {
    log: PgTestDb,
    read: ReadDb,
    settings: KafkaSettings,
}

impl Relayed {
    async fn new(broker: &Broker, partitions: i32) -> Self {
        let log = PgTestDb::new().await.expect("log database");
        let read = ReadDb::connect(&log.url()).await.expect("read db");
        let settings = broker.settings(partitions);
        Self {
            log,
            read,
            settings,
        }
    }

    /// `events` more events in the log; the head.
    async fn fill(&self, events: usize) -> Position {
        crate::bench::project::prefill(&self.log.store, events, &mut std::io::sink())
            .await
            .expect("fill")
    }

    /// The log relayed up to `head`.
    async fn relay(&self, head: Position) {
        let (runner, _) = relay_runner(
            &self.log.store,
            &self.settings,
            &self.read,
            Duration::from_millis(20),
        );
        runner.run_until(Some(head)).await.expect("relay");
    }

    /// `events` more events in the log, relayed; the head.
    async fn grow(&self, events: usize) -> Position {
        let head = self.fill(events).await;
        self.relay(head).await;
        head
    }
}

/// A worker of `group` feeding `set`'s models, as a task; its applied counter.
async fn spawn_worker(
    settings: &KafkaSettings,
    group: &str,
    set: &ProjectionSet<eventfold_event_log::PgEventStore>,
) -> (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let models = set
        .active()
        .map(|m| (m.clone(), set.stores().for_model(m).expect("store").clone()))
        .collect();
    let mut worker = Worker::start(settings.clone(), group, models, StatusBoard::default())
        .await
        .expect("worker");
    worker.batch = 500;
    let applied = worker.applied();
    let task = tokio::spawn(async move { worker.run(std::future::pending::<()>(), |_| {}).await });
    (task, applied)
}

/// The log grows in four rounds, relayed after each. Worker 1 starts at once,
/// worker 2 joins after round 1, worker 1 is killed mid-batch after round 3 (its
/// partitions move to worker 2, which re-reads what 1 had not committed): the
/// Kafka-fed models equal the log-fed ones table by table (every row) and key by
/// key, and a relay's duplicates change nothing.
async fn two_workers_equal_the_log_fed_models(broker: Broker) {
    let relayed = Relayed::new(&broker, 3).await;
    let (log, settings) = (&relayed.log, &relayed.settings);
    let other = PgTestDb::new().await.expect("worker database");
    let tag = &crate::kafka_testing::unique_prefix();
    let (pa, pb) = (format!("{tag}log:"), format!("{tag}kafka:"));
    let reference = models_on(log, &pa).await;
    let fed = models_on(&other, &pb).await;
    let group = format!("{tag}workers");
    let head = relayed.fill(6_000).await;
    relayed.relay(head).await;
    let (first, first_applied) = spawn_worker(settings, &group, &fed).await;
    while first_applied.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let head = relayed.fill(6_000).await;
    let (second, second_applied) = spawn_worker(settings, &group, &fed).await;
    relayed.relay(head).await;
    let head = relayed.fill(6_000).await;
    relayed.relay(head).await;
    // Killed while it applies (or right after): whatever it had not committed to
    // the group is read again by worker 2 and skipped by position.
    let before = first_applied.load(Ordering::Relaxed);
    while first_applied.load(Ordering::Relaxed) == before {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.abort();
    let _ = first.await;
    // Round 4 through a relay killed after its first batch is acknowledged and
    // before its checkpoint: its heir sends that batch again (duplicates).
    let head = relayed.fill(6_000).await;
    let (runner, fail_point) = relay_runner(
        &log.store,
        settings,
        &relayed.read,
        Duration::from_secs(600),
    );
    fail_point.arm(1);
    let killed = tokio::spawn(async move { runner.run_until(Some(head)).await });
    while fail_point.fired() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killed.abort();
    let _ = killed.await;
    relayed.relay(head).await;
    until_equal(log, &reference, &fed, (&pa, &pb), &second).await;
    assert!(
        second_applied.load(Ordering::Relaxed) > 0,
        "worker 2 took part"
    );
    // The models are handed over: a log-fed runner on them refuses to write.
    let refused = fed.catch_up().await;
    assert!(
        matches!(refused, Err(Error::FedFromKafka { .. })),
        "a log-fed runner must stand by on a Kafka-fed model: {refused:?}"
    );
    second.abort();
    drop_keys(tag).await;
}

/// Waits until `reference` (log-fed to the log's head) and `fed` (a worker's) are equal
/// table by table and key by key; panics with what differs after two minutes or when
/// the worker stops.
async fn until_equal(
    log: &PgTestDb,
    reference: &ProjectionSet<eventfold_event_log::PgEventStore>,
    fed: &ProjectionSet<eventfold_event_log::PgEventStore>,
    prefixes: (&str, &str),
    worker: &tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    reference.setup().await.expect("setup");
    let end = reference.catch_up().await.expect("log-fed");
    assert_eq!(end, log.store.head().await.expect("head"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let differences = differences(reference, fed, prefixes).await;
        if differences.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline && !worker.is_finished(),
            "the Kafka-fed models never matched: {differences:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A worker whose models have applied nothing from a partition reads it from its start
/// when the group has read past it: here the group read the topics already for other
/// read models (another database). Before, it refused to start (and, for a model taken
/// over past position 0, went on from the group's offsets, every event between missing).
async fn a_fresh_model_reads_a_partition_the_group_read_past_from_its_start(broker: Broker) {
    let relayed = Relayed::new(&broker, 2).await;
    let (log, settings) = (&relayed.log, &relayed.settings);
    let first_db = PgTestDb::new().await.expect("first worker database");
    let second_db = PgTestDb::new().await.expect("second worker database");
    let tag = &crate::kafka_testing::unique_prefix();
    let group = format!("{tag}workers");
    let head = relayed.grow(1_000).await;
    let first_set = models_on(&first_db, &format!("{tag}a:")).await;
    let (first, first_applied) = spawn_worker(settings, &group, &first_set).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while first_applied.load(Ordering::Relaxed) < head.0 as u64 {
        assert!(Instant::now() < deadline, "worker 1 never applied the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its offsets are committed after each batch (asynchronously).
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.abort();
    let _ = first.await;
    relayed.grow(1_000).await;
    let (pr, pb) = (format!("{tag}r:"), format!("{tag}b:"));
    let reference = models_on(log, &pr).await;
    let second_set = models_on(&second_db, &pb).await;
    let (second, _) = spawn_worker(settings, &group, &second_set).await;
    until_equal(log, &reference, &second_set, (&pr, &pb), &second).await;
    second.abort();
    drop_keys(tag).await;
}

/// Models lost by their store while a worker feeds them (a Redis without persistence
/// that restarted empty: every key gone, the hand-over mark with them) or reset
/// (`projections reset`), with a log-fed runner (a `serve`) going at them at the same
/// time: the worker takes them over again and reads its partitions from their start,
/// and they end equal to the log-fed models. Before, the worker went on from the
/// group's offsets (every earlier event missing) while the log-fed runner rebuilt them
/// beside it (the later events applied twice: leaderboard sums doubled).
async fn models_lost_or_reset_under_a_worker_are_built_again(broker: Broker) {
    let relayed = Relayed::new(&broker, 2).await;
    let (log, settings) = (&relayed.log, &relayed.settings);
    let other = PgTestDb::new().await.expect("worker database");
    let tag = &crate::kafka_testing::unique_prefix();
    let (pa, pb) = (format!("{tag}log:"), format!("{tag}kafka:"));
    let reference = models_on(log, &pa).await;
    let fed = models_on(&other, &pb).await;
    let group = format!("{tag}workers");
    let head = relayed.fill(2_000).await;
    relayed.relay(head).await;
    let (worker, applied) = spawn_worker(settings, &group, &fed).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied.load(Ordering::Relaxed) < head.0 as u64 {
        assert!(
            Instant::now() < deadline,
            "the worker never applied the log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idle now: the Redis models lost at once, a relational one reset.
    drop_keys(&pb).await;
    fed.reset("reminders.v1").await.expect("reset");
    let serve = {
        let fed = models_on(&other, &pb).await;
        tokio::spawn(async move {
            fed.setup().await.ok();
            fed.catch_up().await
        })
    };
    let head = relayed.fill(2_000).await;
    relayed.relay(head).await;
    // Taken over again by the worker, or rebuilt from the log first and handed over
    // then: either way the log-fed runner stands by once the worker has them.
    let _ = serve.await;
    until_equal(log, &reference, &fed, (&pa, &pb), &worker).await;
    worker.abort();
    drop_keys(tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_models_lost_or_reset_under_a_worker_are_built_again() {
    models_lost_or_reset_under_a_worker_are_built_again(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_models_lost_or_reset_under_a_worker_are_built_again() {
    models_lost_or_reset_under_a_worker_are_built_again(Broker::tansu()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_a_fresh_model_reads_a_partition_the_group_read_past_from_its_start() {
    a_fresh_model_reads_a_partition_the_group_read_past_from_its_start(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_two_workers_one_joining_one_killed_equal_the_log_fed_models() {
    two_workers_equal_the_log_fed_models(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_two_workers_one_joining_one_killed_equal_the_log_fed_models() {
    two_workers_equal_the_log_fed_models(Broker::tansu()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_two_workers_one_joining_one_killed_equal_the_log_fed_models() {
    if let Some(broker) = Broker::external() {
        two_workers_equal_the_log_fed_models(broker).await;
    }
}

/// A model that took nothing over from the log and has applied nothing from a
/// partition needs that partition whole. librdkafka's mock cluster keeps 5 MiB a
/// partition: 6 MiB of foreign messages after the first relayed events push those out
/// (its low watermark moves past them). The worker reads the partition from its start,
/// finds it beginning at the low watermark, and refuses with what to do — never a
/// model with the earliest events silently missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_a_fresh_model_refuses_a_partition_whose_start_retention_dropped() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let broker = Broker::mock();
    let relayed = Relayed::new(&broker, 1).await;
    let models_db = PgTestDb::new().await.expect("models database");
    relayed.grow(300).await;
    let settings = &relayed.settings;
    let topic = format!("{}workout", settings.prefix);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("producer");
    let junk = vec![b'x'; 512 * 1024];
    for _ in 0..12 {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(0)
                    .payload(&junk),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }
    relayed.grow(300).await;
    let (low, _) = producer
        .client()
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    assert!(low > 0, "the mock cluster kept the partition whole");
    let tag = &crate::kafka_testing::unique_prefix();
    let set = models_on(&models_db, tag).await;
    let (worker, _) = spawn_worker(settings, &format!("{tag}workers"), &set).await;
    let refused = tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker went on")
        .expect("the worker's task");
    let why = refused.expect_err("a model built from a partition missing its start");
    assert!(
        why.to_string()
            .contains(&format!("{topic}#0 starts at offset {low}")),
        "{why}"
    );
    assert!(why.to_string().contains("retention"), "{why}");
    drop_keys(tag).await;
}

/// A partition read again from its start whose first message came past offset 0
/// while the brokers still hold offsets before it: the rewind was overtaken (the
/// partition went to another worker and came back at the group's offset before its
/// first message was read), not retention: read from its start once more. Twice
/// means those offsets cannot be read (a compacted topic): refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_an_overtaken_rewind_is_read_from_the_start_again_once() {
    let broker = Broker::mock();
    let relayed = Relayed::new(&broker, 1).await;
    let models_db = PgTestDb::new().await.expect("models database");
    relayed.grow(300).await;
    let settings = &relayed.settings;
    let topic = format!("{}workout", settings.prefix);
    let tag = &crate::kafka_testing::unique_prefix();
    let set = models_on(&models_db, tag).await;
    let models = set
        .active()
        .map(|m| (m.clone(), set.stores().for_model(m).expect("store").clone()))
        .collect();
    let mut worker = Worker::start(
        settings.clone(),
        &format!("{tag}workers"),
        models,
        StatusBoard::default(),
    )
    .await
    .expect("worker");
    let consumer = worker.consumer().expect("consumer");
    worker
        .check_start(&consumer, &topic, 0, 5, 0)
        .expect("read from its start again");
    let why = worker
        .check_start(&consumer, &topic, 0, 5, 0)
        .expect_err("refused the second time");
    assert!(why.to_string().contains("from offset 0"), "{why}");
    assert!(why.to_string().contains("compacted"), "{why}");
}

//! `eventfold bench relay`: the relay publishing a pre-filled log to Kafka, beside raw
//! `rdkafka` produce of the same payloads with the same producer settings, in the same
//! run.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use eventfold_event_log::EventReader;
use eventfold_event_schemas::{Position, RecordedEvent};
use eventfold_projections::{ReadDb, StatusBoard};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use sqlx::postgres::PgConnectOptions;

use super::project::{filled_log, pages_ahead};
use super::{admin_url, ScratchDb};
use crate::relay::{headers, KafkaSettings, Relay};

#[derive(Debug, Args)]
pub(crate) struct RelayBenchArgs {
    /// Events in the pre-filled log (at least this many).
    #[arg(long, default_value_t = 200_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    events: usize,
    /// PostgreSQL server: a scratch database is created there and dropped afterwards.
    #[arg(long, env = "EVENTFOLD_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Kafka brokers (`host:port,…`); librdkafka's in-process mock cluster when unset.
    #[arg(long)]
    brokers: Option<String>,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Slices of the log the relay and raw produce take turns over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
}

pub(crate) async fn run(
    database_url: &str,
    args: RelayBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let admin = admin_url(args.postgres.as_deref(), database_url);
    let scratch = ScratchDb::create(&admin).await?;
    // The Kafka-fed worker's read models, in a database of their own.
    let workers = ScratchDb::create(&admin).await?;
    let result = run_in(
        scratch.options.clone(),
        &scratch.url,
        &workers.url,
        &args,
        out,
    )
    .await;
    scratch.remove().await?;
    workers.remove().await?;
    result
}

/// The time and this process's CPU time one side of the comparison took, over its turns
/// (CPU of all threads: the bench's, librdkafka's and the mock cluster's; not
/// PostgreSQL's).
#[derive(Debug, Default)]
struct Side {
    time: Duration,
    /// `None` where `/proc/self/stat` cannot be read.
    cpu: Option<Duration>,
}

impl Side {
    /// Runs `turn`, adding what it took.
    async fn timed(
        &mut self,
        turn: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let cpu = super::process_cpu();
        let started = Instant::now();
        turn.await?;
        self.time += started.elapsed();
        self.cpu = match (cpu, super::process_cpu()) {
            (Some(before), Some(now)) => {
                Some(self.cpu.unwrap_or_default() + now.saturating_sub(before))
            }
            _ => None,
        };
        Ok(())
    }

    /// The CPU seconds, or `-` where they could not be read.
    fn cpu(&self) -> String {
        self.cpu
            .map_or_else(|| "-".to_owned(), |cpu| format!("{:.2}", cpu.as_secs_f64()))
    }
}

/// Produces `records` with their prepared `payloads` (topic and envelope), as the relay
/// would, waiting for every acknowledgement.
async fn produce(
    producer: &rdkafka::producer::FutureProducer,
    records: &[RecordedEvent],
    payloads: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let mut in_flight = InFlight::default();
    for (record, (topic, payload)) in records.iter().zip(payloads) {
        in_flight.send(producer, record, topic, payload).await?;
    }
    in_flight.acknowledged().await
}

/// Messages sent and not yet acknowledged.
#[derive(Default)]
struct InFlight(VecDeque<rdkafka::producer::DeliveryFuture>);

impl InFlight {
    /// Sends one message (key, payload and headers as the relay's), waiting for the
    /// oldest acknowledgement while librdkafka's queue is full.
    async fn send(
        &mut self,
        producer: &rdkafka::producer::FutureProducer,
        record: &RecordedEvent,
        topic: &str,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let mut message = FutureRecord::to(topic)
            .key(record.stream_id.as_str())
            .payload(payload)
            .headers(headers(record));
        loop {
            match producer.send_result(message) {
                Ok(delivery) => {
                    self.0.push_back(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    message = back;
                    match self.0.pop_front() {
                        Some(delivery) => {
                            delivery.await?.map_err(|(e, _)| e)?;
                        }
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }

    /// Waits for every acknowledgement.
    async fn acknowledged(mut self) -> anyhow::Result<()> {
        while let Some(delivery) = self.0.pop_front() {
            delivery.await?.map_err(|(e, _)| e)?;
        }
        Ok(())
    }
}

/// The least any relay of the log does, with nothing of its own: the log read page by
/// page from `after` to `until` (the next page read while this one is produced), each
/// event's envelope serialised and produced, every acknowledgement awaited once at the
/// end — no checkpoint, no per-batch wait, no runner.
async fn read_and_produce(
    store: &eventfold_event_log::PgEventStore,
    producer: &rdkafka::producer::FutureProducer,
    settings: &KafkaSettings,
    after: Position,
    until: Position,
) -> anyhow::Result<()> {
    let (mut next, read) = pages_ahead(store, after, until, 5000);
    let mut in_flight = InFlight::default();
    while let Some(page) = next.recv().await {
        for record in &page {
            let payload = serde_json::to_vec(record)?;
            let topic = settings.topic_for(record.stream_id.as_str());
            in_flight.send(producer, record, &topic, &payload).await?;
        }
    }
    read.await??;
    in_flight.acknowledged().await
}

/// The categories of the pre-filled log: the relayed topics.
const CATEGORIES: [&str; 2] = ["workout", "reminder"];

/// A topic prefix of this run's own.
fn prefix(what: &str) -> String {
    format!(
        "bench{}.{what}.",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn run_in(
    options: PgConnectOptions,
    url: &str,
    worker_url: &str,
    args: &RelayBenchArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (store, head, read, _, read_time) = filled_log(options, 8, args.events, 5000, out).await?;
    let raw_read_rate = read as f64 / read_time.as_secs_f64();
    writeln!(
        out,
        "raw read of the log: {read} events in {:.2} s = {raw_read_rate:.0} events/s (pages of 5000)",
        read_time.as_secs_f64()
    )?;
    // A mock cluster of its own for each measurement: one holding the other's
    // messages already is slower (it keeps every message in memory).
    let mocks = match &args.brokers {
        Some(_) => None,
        None => Some([
            rdkafka::mocking::MockCluster::new(3)?,
            rdkafka::mocking::MockCluster::new(3)?,
            rdkafka::mocking::MockCluster::new(3)?,
        ]),
    };
    // The cluster of each measurement: 0 raw produce, 1 the relay, 2 read and produce.
    let brokers = |side: usize| match (&args.brokers, &mocks) {
        (Some(brokers), _) => brokers.clone(),
        (None, Some(clusters)) => clusters
            .get(side)
            .map(|c| c.bootstrap_servers())
            .unwrap_or_default(),
        (None, None) => String::new(),
    };
    writeln!(
        out,
        "brokers: {} ({} partitions a topic)",
        if mocks.is_some() {
            "librdkafka's in-process mock cluster (3 brokers; a fresh one for each run)".to_owned()
        } else {
            brokers(0)
        },
        args.partitions
    )?;
    let settings_for = |prefix: String, side: usize| -> anyhow::Result<KafkaSettings> {
        let settings =
            KafkaSettings::new(brokers(side), Some(prefix), Some(args.partitions), None)?;
        if let Some(cluster) = mocks.as_ref().and_then(|clusters| clusters.get(side)) {
            for category in CATEGORIES {
                cluster.create_topic(
                    &format!("{}{category}", settings.prefix),
                    settings.partitions,
                    1,
                )?;
            }
        }
        Ok(settings)
    };

    // The baseline: the same payloads (the envelope as JSON), keys and headers, built
    // from the log beforehand, produced with the relay's producer settings.
    let raw = settings_for(prefix("raw"), 0)?;
    let mut records: Vec<RecordedEvent> = Vec::with_capacity(read);
    let mut after = Position::START;
    while after < head {
        let page = store.read_all(after, None, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.global_position;
        records.extend(page);
    }
    let payloads: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|r| Ok((raw.topic_for(r.stream_id.as_str()), serde_json::to_vec(r)?)))
        .collect::<anyhow::Result<_>>()?;
    let producer = raw.producer()?;
    // Brokers that do not answer would hold every side until the producer's message
    // timeout, and the relay (which retries them without end) for ever.
    if let Some(brokers) = &args.brokers {
        use rdkafka::producer::Producer;
        let probe = producer.clone();
        tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|_| ())
        })
        .await?
        .map_err(|e| anyhow::anyhow!("the brokers at {brokers} did not answer within 10 s: {e}"))?;
    }

    // The relay: from the log, with its checkpoint, through the runner.
    let relayed = settings_for(prefix("relay"), 1)?;
    // The least a relay does: read and produce, nothing else.
    let piped = settings_for(prefix("piped"), 2)?;
    let piped_producer = piped.producer()?;
    let db = ReadDb::connect(url).await?;
    let board = StatusBoard::default();
    let relayed_settings = relayed.clone();
    let relay = Relay::new(relayed, db.pool().clone(), board.clone())?;
    let runner = crate::relay::runner(store.clone(), relay, board);

    // The three take turns over the log in `rounds` slices, each round led by the next
    // one (raw, relay, piped; relay, piped, raw; …), so that a drift of the shared
    // machine reaches them alike.
    let mut raw_side = Side::default();
    let mut relay_side = Side::default();
    let mut piped_side = Side::default();
    let rounds = args.rounds as usize;
    for round in 0..rounds {
        let (from, to) = (
            records.len() * round / rounds,
            records.len() * (round + 1) / rounds,
        );
        let target = match records.get(to.wrapping_sub(1)) {
            Some(last) if round + 1 < rounds => last.global_position,
            _ => head,
        };
        let start = match from.checked_sub(1).and_then(|i| records.get(i)) {
            Some(before) => before.global_position,
            None => Position::START,
        };
        for turn in 0..3 {
            match (round + turn) % 3 {
                0 => {
                    let slice = records.get(from..to).unwrap_or_default();
                    let payloads = payloads.get(from..to).unwrap_or_default();
                    raw_side.timed(produce(&producer, slice, payloads)).await?;
                }
                1 => {
                    relay_side
                        .timed(async { Ok(runner.run_until(Some(target)).await?) })
                        .await?;
                }
                _ => {
                    piped_side
                        .timed(read_and_produce(
                            &store,
                            &piped_producer,
                            &piped,
                            start,
                            target,
                        ))
                        .await?;
                }
            }
        }
    }
    drop(producer);
    drop(piped_producer);
    let raw_rate = records.len() as f64 / raw_side.time.as_secs_f64();
    let relay_rate = read as f64 / relay_side.time.as_secs_f64();
    let piped_rate = read as f64 / piped_side.time.as_secs_f64();
    writeln!(
        out,
        "{:<44} {:>8} {:>12} {:>8} {:>10}",
        format!("({rounds} slices each, taking turns)"),
        "seconds",
        "events/s",
        "ratio",
        "cpu (s)"
    )?;
    writeln!(
        out,
        "{:<44} {:>8.2} {raw_rate:>12.0} {:>8.2} {:>10}",
        "raw rdkafka produce of the same payloads",
        raw_side.time.as_secs_f64(),
        1.0,
        raw_side.cpu()
    )?;
    writeln!(
        out,
        "{:<44} {:>8.2} {relay_rate:>12.0} {:>8.2} {:>10}",
        "relay (log read, checkpoint, acknowledged)",
        relay_side.time.as_secs_f64(),
        relay_rate / raw_rate,
        relay_side.cpu()
    )?;
    writeln!(
        out,
        "{:<44} {:>8.2} {piped_rate:>12.0} {:>8.2} {:>10}",
        "log read + produce, nothing else",
        piped_side.time.as_secs_f64(),
        piped_rate / raw_rate,
        piped_side.cpu()
    )?;
    writeln!(
        out,
        "relay / raw produce: {:.2}x (goal >= 0.8x); relay / raw log read: {:.2}x; \
         relay / (log read + produce): {:.2}x; the least any relay does (read the log, \
         produce it) reaches {:.2}x raw produce in this run",
        relay_rate / raw_rate,
        relay_rate / raw_read_rate,
        relay_rate / piped_rate,
        piped_rate / raw_rate
    )?;
    // A Kafka-fed worker can only rebuild what the topics still hold. librdkafka's mock
    // cluster keeps about 5 MiB per partition and drops the oldest messages beyond
    // that (not configurable): a worker fed from a truncated topic builds a partial model
    // (an update whose workout start was dropped is poison) and never sees every event.
    let truncated = truncated_partitions(&relayed_settings, args.partitions).await?;
    if !truncated.is_empty() {
        writeln!(
            out,
            "Kafka-fed comparison skipped: the brokers no longer hold the start of {} \
             (their retention dropped the oldest messages; librdkafka's mock cluster keeps \
             ~5 MiB a partition): use fewer --events, more --partitions, or --brokers",
            truncated.join(", ")
        )?;
        db.pool().close().await;
        store.pool().close().await;
        return Ok(());
    }
    // The relational read models fed from the log, then from the relayed topics by a
    // worker (the same models, in a database of its own).
    let log_fed = eventfold_projections::ProjectionSet::new(
        store.clone(),
        db.clone(),
        None,
        eventfold_projections::RunnerOptions::default(),
        StatusBoard::default(),
    );
    log_fed.setup().await?;
    let started = Instant::now();
    log_fed.catch_up().await?;
    let log_fed_time = started.elapsed();
    let worker_store = crate::open_store(worker_url).await?;
    let worker_db = ReadDb::connect(worker_url).await?;
    let kafka_fed = eventfold_projections::ProjectionSet::new(
        worker_store,
        worker_db.clone(),
        None,
        eventfold_projections::RunnerOptions::default(),
        StatusBoard::default(),
    );
    let models = kafka_fed
        .active()
        .map(|m| Ok((m.clone(), kafka_fed.stores().for_model(m)?.clone())))
        .collect::<eventfold_projections::Result<Vec<_>>>()?;
    let names: Vec<&str> = models.iter().map(|(m, _)| m.name()).collect();
    let mut worker = crate::worker::Worker::start(
        relayed_settings,
        &format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        models,
        StatusBoard::default(),
    )
    .await?;
    let applied = worker.applied();
    let all = read as u64;
    let started = Instant::now();
    // When the first events were applied, and how many: before it the worker waits for
    // the group to assign it partitions (a join, seconds, paid once per worker start).
    let first = std::cell::Cell::new(None);
    let done = async {
        loop {
            let now = applied.load(std::sync::atomic::Ordering::Relaxed);
            if now > 0 && first.get().is_none() {
                first.set(Some((started.elapsed(), now)));
            }
            if now >= all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(600), worker.run(done, |_| {}))
        .await
        .map_err(|_| anyhow::anyhow!("the worker did not apply every event within 10 minutes"))??;
    let kafka_fed_time = started.elapsed();
    let log_fed_rate = read as f64 / log_fed_time.as_secs_f64();
    let kafka_fed_rate = read as f64 / kafka_fed_time.as_secs_f64();
    writeln!(out, "relational read models ({}):", names.join(", "))?;
    writeln!(
        out,
        "{:<44} {:>8.2} {log_fed_rate:>12.0} {:>8.2}",
        "log-fed (catch-up from the log)",
        log_fed_time.as_secs_f64(),
        1.0
    )?;
    writeln!(
        out,
        "{:<44} {:>8.2} {kafka_fed_rate:>12.0} {:>8.2}",
        "Kafka-fed (one worker, consumer group)",
        kafka_fed_time.as_secs_f64(),
        kafka_fed_rate / log_fed_rate
    )?;
    if let Some((joined, early)) = first.get() {
        // The fold itself: from the first batch applied to the last.
        let rest = (all.saturating_sub(early)) as f64;
        let folding = kafka_fed_time.saturating_sub(joined).as_secs_f64();
        if rest > 0.0 && folding > 0.0 {
            let rate = rest / folding;
            writeln!(
                out,
                "{:<44} {folding:>8.2} {rate:>12.0} {:>8.2}",
                "  of which folding (after its first batch)",
                rate / log_fed_rate
            )?;
        }
        writeln!(
            out,
            "  (the first {early} events were applied {:.2} s after the worker started: the consumer group's join, paid once per start)",
            joined.as_secs_f64()
        )?;
    }
    worker_db.pool().close().await;
    db.pool().close().await;
    store.pool().close().await;
    Ok(())
}

/// The relayed partitions whose first offset is no longer 0 (`topic#partition`).
async fn truncated_partitions(
    settings: &KafkaSettings,
    partitions: i32,
) -> anyhow::Result<Vec<String>> {
    use rdkafka::producer::Producer;
    let producer = settings.producer()?;
    let topics: Vec<String> = CATEGORIES
        .iter()
        .map(|category| format!("{}{category}", settings.prefix))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut truncated = Vec::new();
        for topic in &topics {
            for partition in 0..partitions {
                let (low, _) = producer.client().fetch_watermarks(
                    topic,
                    partition,
                    Duration::from_secs(10),
                )?;
                if low > 0 {
                    truncated.push(format!("{topic}#{partition}"));
                }
            }
        }
        anyhow::Ok(truncated)
    })
    .await?
}

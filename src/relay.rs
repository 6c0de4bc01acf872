//! The relay: the log as an outbox to Kafka topics (`kafka_relay.v1`).
//!
//! No dual write: commands append to the log only, and the relay tails the log through
//! the gap-safe subscription, like a projection (checkpoint, retries, lag in
//! `/api/v1/projections` and `projections status`, one active relay across `serve`
//! processes by the projections' lease). Every event goes to the topic of its stream's
//! category (`{prefix}{category}`: `order-42` → `eventfold.order`), keyed by its stream
//! id (so one stream's events stay in order in one partition), its value the stored
//! envelope as JSON, with headers `eventfold-event-id`, `eventfold-event-type`,
//! `eventfold-schema-version`, `eventfold-position` and, when known,
//! `eventfold-correlation-id`.
//!
//! **What "once" means here.** The producer is idempotent (`enable.idempotence`: the
//! broker drops the producer's own retries) and never gives up on a message
//! (`message.timeout.ms=0`: a broker that is down is waited for, in order, without a
//! gap); the checkpoint moves only after every message of a batch is acknowledged. A
//! relay killed after producing and before its checkpoint republishes that batch when
//! it restarts: the copies are duplicates (same event id and position, later offsets),
//! which consumers skip by position. Nothing is skipped and nothing is reordered within
//! a stream.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use eventfold_domain::DomainEvent;
use eventfold_event_schemas::{Position, RecordedEvent};
use eventfold_projections::{
    async_trait, Error, FailPoint, PoisonPolicy, ProjectionState, Result, Runner, RunnerOptions,
    Sink, StatusBoard,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::reactions::ReactionProgress;

mod destination;

use destination::{claim, cluster_moved, prefix_moved, CLUSTER, PREFIX};
pub(crate) use destination::{claim_destination, ClaimedDestination};

/// The relay's name on the status board.
pub(crate) const RELAY: &str = "kafka_relay.v1";

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaSettings {
    /// `host:port[,host:port…]`.
    pub(crate) brokers: String,
    /// Every topic's name starts with it.
    pub(crate) prefix: String,
    /// Partitions of a topic the relay creates.
    pub(crate) partitions: i32,
    /// Replicas of a topic the relay creates.
    pub(crate) replication: i32,
}

/// Whether one entry of a broker list is one librdkafka can reach: `host`, `host:port`,
/// `[ipv6]:port`, optionally after `scheme://`. An empty entry (`a:9092,,b:9092`), a
/// space or a port that is not one is refused before anything connects: librdkafka
/// would only retry it, unreachable, forever.
fn broker_ok(entry: &str) -> bool {
    let entry = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    let (host_ok, port) = match entry.strip_prefix('[') {
        Some(v6) => {
            let Some((host, rest)) = v6.split_once(']') else {
                return false;
            };
            let port = match rest {
                "" => None,
                rest => match rest.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return false,
                },
            };
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'));
            (host_ok, port)
        }
        None => {
            let (host, port) = match entry.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            };
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            (host_ok, port)
        }
    };
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p >= 1))
}

impl KafkaSettings {
    /// Checks what Kafka would refuse before anything connects.
    pub(crate) fn new(
        brokers: String,
        prefix: Option<String>,
        partitions: Option<i32>,
        replication: Option<i32>,
    ) -> anyhow::Result<Self> {
        if brokers.trim().is_empty() {
            anyhow::bail!("KAFKA_BROKERS is empty: host:port[,host:port…]");
        }
        if let Some(bad) = brokers.split(',').find(|entry| !broker_ok(entry.trim())) {
            anyhow::bail!(
                "KAFKA_BROKERS {brokers:?}: {bad:?} is not a broker: host[:port][,host[:port]…] \
                 (a port from 1 to 65535; an IPv6 host in brackets)"
            );
        }
        let prefix = prefix.unwrap_or_else(|| "eventfold.".to_owned());
        if prefix.len() > 100
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            anyhow::bail!(
                "EVENTFOLD_KAFKA_TOPIC_PREFIX {prefix:?}: at most 100 letters, digits, '.', '_' and '-'"
            );
        }
        let partitions = partitions.unwrap_or(3);
        if !(1..=10_000).contains(&partitions) {
            anyhow::bail!("EVENTFOLD_KAFKA_PARTITIONS {partitions}: from 1 to 10000");
        }
        let replication = replication.unwrap_or(1);
        if !(1..=100).contains(&replication) {
            anyhow::bail!("EVENTFOLD_KAFKA_REPLICATION {replication}: from 1 to 100");
        }
        Ok(Self {
            brokers,
            prefix,
            partitions,
            replication,
        })
    }

    /// The topic of a stream's events: the prefix and the stream's category.
    pub(crate) fn topic_for(&self, stream_id: &str) -> String {
        format!("{}{}", self.prefix, category_of(stream_id))
    }

    /// The client settings every Kafka client of the relay shares.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "eventfold")
            .set("log_level", "3");
        config
    }

    /// The relay's producer: idempotent, acknowledged by all in-sync replicas, never
    /// giving a message up.
    pub(crate) fn producer(&self) -> anyhow::Result<FutureProducer> {
        Ok(self
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "0")
            .create()?)
    }
}

/// A stream's category: its id up to the first `-`.
fn category_of(stream_id: &str) -> &str {
    stream_id.split_once('-').map_or(stream_id, |(c, _)| c)
}

/// The headers of an event's message.
pub(crate) fn headers(record: &RecordedEvent) -> OwnedHeaders {
    let id = record.event_id.to_string();
    let version = record.schema_version.to_string();
    let position = record.global_position.0.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: "eventfold-event-id",
            value: Some(id.as_str()),
        })
        .insert(Header {
            key: "eventfold-event-type",
            value: Some(record.event_type.as_str()),
        })
        .insert(Header {
            key: "eventfold-schema-version",
            value: Some(version.as_str()),
        })
        .insert(Header {
            key: "eventfold-position",
            value: Some(position.as_str()),
        });
    if let Some(correlation) = record.metadata.correlation_id {
        let correlation = correlation.to_string();
        headers = headers.insert(Header {
            key: "eventfold-correlation-id",
            value: Some(correlation.as_str()),
        });
    }
    headers
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        store: "kafka",
        reason: format!("{what}: {error}"),
    }
}

/// A message that can never be delivered as it is (too large, a topic name the broker
/// refuses, not allowed): parked, not retried.
fn permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// Publishes the log to Kafka.
pub(crate) struct Relay {
    settings: KafkaSettings,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    topics: Mutex<HashSet<String>>,
    progress: ReactionProgress,
    pool: sqlx::AnyPool,
    board: StatusBoard,
    fail_point: FailPoint,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay producing to `settings`' brokers, its checkpoint on `pool`, its waits for
    /// the broker shown on `board`.
    pub(crate) fn new(
        settings: KafkaSettings,
        pool: sqlx::AnyPool,
        board: StatusBoard,
    ) -> anyhow::Result<Self> {
        let producer = settings.producer()?;
        let admin = settings.client_config().create()?;
        Ok(Self {
            settings,
            producer,
            admin,
            topics: Mutex::new(HashSet::new()),
            progress: ReactionProgress::new(pool.clone(), RELAY),
            pool,
            board,
            fail_point: FailPoint::default(),
        })
    }

    /// The Kafka cluster the relay publishes to, checked against the one it published
    /// to before it produces anything (table `eventfold_relay_cluster`, beside the topic
    /// prefix): the checkpoint says how far the log went out, not where to. Pointed at
    /// another cluster (`KAFKA_BROKERS` changed, or the cluster rebuilt), the relay would
    /// go on from its checkpoint, and the new cluster's topics would lack every event
    /// before it — a worker building a model from them would build it without a word.
    /// The first run (or the first since this check) records the cluster; a relay that
    /// has published nothing yet may move; otherwise another cluster stops the relay
    /// ([`Error::InvalidSetting`], not retried) until its brokers are set back or
    /// `eventfold relay --from-start` publishes the whole log to the new cluster. A
    /// cluster that does not answer is waited for (the runner retries the set-up).
    async fn claim_cluster(&self) -> Result<()> {
        let producer = self.producer.clone();
        let found = tokio::task::spawn_blocking(move || {
            producer.client().fetch_cluster_id(Duration::from_secs(10))
        })
        .await
        .map_err(|e| unavailable("reading the cluster id", e))?;
        let Some(cluster) = found.filter(|id| !id.is_empty()) else {
            return Err(unavailable(
                "reading the cluster id",
                format!("{} did not answer", self.settings.brokers),
            ));
        };
        claim(&self.pool, CLUSTER, &cluster, |recorded| {
            cluster_moved(recorded, &cluster, &self.settings.brokers)
        })
        .await
    }

    /// The topic prefix, checked again whenever the relay starts (also when it takes the
    /// lease over from another process): a process that started before `relay
    /// --from-start` moved the relay to a new prefix and published there would go on
    /// from that checkpoint into its old topics, leaving them a gap. Refused as
    /// [`Relay::claim_cluster`] refuses another cluster.
    async fn claim_prefix(&self) -> Result<()> {
        let prefix = &self.settings.prefix;
        claim(&self.pool, PREFIX, prefix, |recorded| {
            prefix_moved(recorded, prefix)
        })
        .await
    }

    /// Creates those of `topics` the relay has not seen yet (one that exists already is
    /// fine).
    async fn ensure_topics(&self, topics: &[String]) -> Result<()> {
        let missing: Vec<String> = {
            let known = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            let mut missing: Vec<String> = topics
                .iter()
                .filter(|t| !known.contains(*t))
                .cloned()
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        // Those the brokers have already need no creating (and a broker that cannot
        // create topics, like librdkafka's mock cluster, is not asked to).
        let producer = self.producer.clone();
        let existing: HashSet<String> = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|m| m.topics().iter().map(|t| t.name().to_owned()).collect())
        })
        .await
        .map_err(|e| unavailable("reading metadata", e))?
        .map_err(|e| unavailable("reading metadata", e))?;
        let missing: Vec<String> = {
            let mut known = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            let (present, missing): (Vec<String>, Vec<String>) =
                missing.into_iter().partition(|t| existing.contains(t));
            known.extend(present);
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.settings.partitions,
                    TopicReplication::Fixed(self.settings.replication),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(15)));
        let results = match self.admin.create_topics(&new, &options).await {
            Ok(results) => results,
            // A broker without CreateTopics (librdkafka's mock cluster) creates topics
            // when they are first asked for, if it creates them at all; a produce to a
            // topic that never appears waits, and the relay says so.
            Err(KafkaError::AdminOp(
                code @ (RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::InvalidRequest),
            )) => {
                tracing::warn!(%code, topics = ?missing, "the broker cannot create topics; relying on it creating them when asked for");
                missing.iter().map(|t| Ok(t.clone())).collect()
            }
            Err(error) => return Err(unavailable("creating topics", error)),
        };
        let mut known = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        for result in results {
            match result {
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(topic);
                }
                Err((topic, code)) => {
                    tracing::warn!(%topic, %code, "creating a topic failed; relying on the broker creating it");
                    known.insert(topic);
                }
            }
        }
        Ok(())
    }

    /// Waits for a delivery, showing on the board that the broker is being waited for
    /// when it takes long (the producer keeps retrying it; nothing is sent twice).
    async fn delivered(
        &self,
        record: &RecordedEvent,
        delivery: rdkafka::producer::DeliveryFuture,
    ) -> Result<()> {
        tokio::pin!(delivery);
        // Most deliveries are in by the time they are awaited (the brokers acknowledge
        // message sets, not messages): those are taken without arming a timer.
        let ready = std::future::Future::poll(
            delivery.as_mut(),
            &mut std::task::Context::from_waker(std::task::Waker::noop()),
        );
        let outcome = match ready {
            std::task::Poll::Ready(outcome) => outcome,
            std::task::Poll::Pending => self.waited(record, delivery).await,
        };
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) if permanent(&error) => {
                tracing::error!(position = record.global_position.0, %error, "event cannot be relayed; parked");
                self.progress.park(record, &error.to_string()).await
            }
            Ok(Err((error, _))) => Err(unavailable("producing", error)),
            Err(_) => Err(unavailable("producing", "the producer was dropped")),
        }
    }

    /// Waits for a delivery still in flight, showing on the board that the broker is
    /// being waited for when it takes long (the producer keeps retrying it).
    async fn waited(
        &self,
        record: &RecordedEvent,
        mut delivery: std::pin::Pin<&mut rdkafka::producer::DeliveryFuture>,
    ) -> <rdkafka::producer::DeliveryFuture as std::future::Future>::Output {
        tokio::select! {
            outcome = &mut delivery => outcome,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                self.board.set_state(
                    RELAY,
                    ProjectionState::Retrying,
                    Some(format!(
                        "kafka: waiting for the brokers ({}) to acknowledge position {}",
                        self.settings.brokers, record.global_position.0
                    )),
                );
                delivery.await
            }
        }
    }
}

#[async_trait]
impl Sink for Relay {
    fn name(&self) -> &'static str {
        RELAY
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    fn raw(&self) -> bool {
        true
    }

    async fn setup(&self) -> Result<()> {
        self.progress.setup().await?;
        self.claim_prefix().await?;
        self.claim_cluster().await
    }

    async fn checkpoint(&self) -> Result<Position> {
        self.progress.checkpoint().await
    }

    async fn apply(
        &self,
        from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()> {
        let records: Vec<RecordedEvent> = events.iter().map(|(r, _)| r.clone()).collect();
        self.apply_records(from, &records, to).await
    }

    async fn apply_records(
        &self,
        _from: Position,
        records: &[RecordedEvent],
        to: Position,
    ) -> Result<()> {
        // One topic name per category of the batch, not one per record.
        let mut topics: Vec<String> = Vec::new();
        let mut slots: Vec<usize> = Vec::with_capacity(records.len());
        let mut slot_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for record in records {
            let stream = record.stream_id.as_str();
            let slot = *slot_of.entry(category_of(stream)).or_insert_with(|| {
                topics.push(self.settings.topic_for(stream));
                topics.len() - 1
            });
            slots.push(slot);
        }
        self.ensure_topics(&topics).await?;
        let mut pending = std::collections::VecDeque::with_capacity(records.len());
        for (record, slot) in records.iter().zip(slots) {
            let topic = &topics[slot];
            let payload = serde_json::to_vec(record).map_err(|e| Error::Poison {
                position: record.global_position.0,
                event_type: record.event_type.clone(),
                reason: e.to_string(),
            })?;
            let mut message = FutureRecord::to(topic)
                .key(record.stream_id.as_str())
                .payload(&payload)
                .headers(headers(record));
            loop {
                match self.producer.send_result(message) {
                    Ok(delivery) => {
                        pending.push_back((record, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The producer's queue is full: wait for the oldest delivery.
                        message = back;
                        match pending.pop_front() {
                            Some((done, delivery)) => self.delivered(done, delivery).await?,
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    Err((error, _)) if permanent(&error) => {
                        self.progress.park(record, &error.to_string()).await?;
                        break;
                    }
                    Err((error, _)) => return Err(unavailable("producing", error)),
                }
            }
        }
        while let Some((record, delivery)) = pending.pop_front() {
            self.delivered(record, delivery).await?;
        }
        // Produced and acknowledged, the checkpoint not yet moved: a crash here
        // republishes the batch (duplicates).
        self.fail_point.trip()?;
        self.progress.advance(to).await
    }

    async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()> {
        self.progress.park(record, error).await
    }

    fn fail_point(&self) -> FailPoint {
        self.fail_point.clone()
    }
}

/// The relay's runner: pages of 5,000 events, each record the relay cannot deliver
/// parked and skipped (it parks them itself).
pub(crate) fn runner<L: eventfold_event_log::EventStore>(
    log: L,
    relay: Relay,
    board: StatusBoard,
) -> Runner<L, Relay> {
    let options = RunnerOptions {
        batch_size: 5_000,
        poison: PoisonPolicy::Skip,
        ..RunnerOptions::default()
    };
    Runner::new(log, relay, options, board)
}

/// `eventfold relay`.
#[derive(Debug, clap::Args)]
pub(crate) struct RelayArgs {
    /// Publish the whole log again from its start (after changing the topic prefix: the
    /// new topics get every event; the old ones keep theirs).
    #[arg(long)]
    from_start: bool,
}

/// `eventfold relay`: the relay alone, until Ctrl-C or SIGTERM, printing its progress.
/// It takes the same lease as a `serve`'s relay: one relays, the others stand by.
pub(crate) async fn run_command(
    config: &crate::config::Config,
    database_url: &str,
    args: RelayArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use eventfold_event_log::EventReader;
    let Some(settings) = config.kafka()? else {
        anyhow::bail!(
            "KAFKA_BROKERS is not set: where should the relay produce to? (host:port[,host:port…])"
        );
    };
    let store = crate::open_store(database_url).await?;
    let db = eventfold_projections::ReadDb::connect(database_url).await?;
    if args.from_start {
        // A relay running elsewhere would write its checkpoint over the reset and go on
        // publishing under its own prefix.
        if let Some(owner) = eventfold_projections::owners(&db, &[RELAY])
            .await?
            .get(RELAY)
        {
            anyhow::bail!(
                "{owner} holds the relay's lease: stop it (or its relaying) first, then run \
                 `eventfold relay --from-start` — a relay running beside the reset would write \
                 its checkpoint over it"
            );
        }
    }
    if let ClaimedDestination::FromStart { was } =
        claim_destination(db.pool(), &settings.prefix, args.from_start).await?
    {
        writeln!(
            out,
            "publishing the log again from its start under {}{{category}} (the relay had published through position {was})",
            settings.prefix
        )?;
    }
    let board = StatusBoard::default();
    let leases = eventfold_projections::Leases::start(&db, crate::app::owner_name(), board.clone());
    let relay = Relay::new(settings.clone(), db.pool().clone(), board.clone())?;
    let runner = runner(store.clone(), relay, board.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = {
        let (leases, board) = (leases.clone(), board.clone());
        tokio::spawn(async move { leases.run(&runner, &board, stopped).await })
    };
    writeln!(
        out,
        "relaying {} to {} (topics {}{{category}}); Ctrl-C stops",
        crate::redact(database_url),
        settings.brokers,
        settings.prefix
    )?;
    out.flush()?;
    let signal = crate::serve::shutdown_signal();
    tokio::pin!(signal);
    let mut last = String::new();
    loop {
        tokio::select! {
            () = &mut signal => break,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if task.is_finished() {
            break;
        }
        let head = store.head().await.map(|p| p.0).unwrap_or(-1);
        let line = match board.status(RELAY) {
            Some(s) => format!(
                "{} at position {} of {head} (lag {}){}",
                format!("{:?}", s.state).to_lowercase(),
                s.checkpoint.0,
                (head - s.checkpoint.0).max(0),
                s.last_error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
            None => format!("starting (head {head})"),
        };
        if line != last {
            writeln!(out, "{line}")?;
            out.flush()?;
            last = line;
        }
    }
    stop.send(true).ok();
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(anyhow::Error::new(error).context("the relay stopped")),
        Err(error) => anyhow::bail!("the relay panicked: {error}"),
    }
    writeln!(out, "stopped")?;
    Ok(())
}

/// Makes sure every message handed to the producer is out (or failed) before exit.
impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests;

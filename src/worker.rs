//! Kafka-fed projectors: `eventfold project --from kafka --group NAME`.
//!
//! A worker joins a Kafka consumer group on the relay's topics (`{prefix}*`) and folds
//! what it is assigned into the same read models, through the same registry and store
//! ports, as the log-fed runner. Several workers on several machines share the
//! partitions; a rebalance moves partitions between them.
//!
//! **Checkpoints.** Each (model, partition) pair has a checkpoint of its own in the
//! model's store (`{name}@{topic}#{partition}`, see [`ReadStore::source_sink`]), moved
//! in the same transaction as the writes (PostgreSQL/SQLite, Redis `MULTI/EXEC`) or
//! after them (ClickHouse, where re-applying is idempotent). It holds the global
//! position of the last event applied from that partition, not the Kafka offset: a
//! partition carries its streams' events in log order, so a message whose position is
//! not beyond the checkpoint has been applied already — re-read after a rebalance or a
//! crash, or a relay's duplicate — and is skipped. The group's committed offsets,
//! written after the writes commit, only say where to resume reading: a lost or stale
//! commit re-reads, it never double-applies or skips.
//!
//! **A partition read past is read again from its start.** A model that has applied
//! nothing from a partition since it was taken over needs the partition from its start;
//! when the first message this worker gets from it is later (the group read it before,
//! for other read models or for this one before it was reset or lost) the worker seeks
//! the partition back to its start and skips by position what it has. Read from its
//! start, a partition that still begins past offset 0 for a model that took nothing over
//! from the log is refused when the brokers' low watermark says so (retention dropped
//! its start): the worker stops with an error instead of building a partial model.
//! When the brokers still hold earlier offsets the rewind was overtaken (a rebalance
//! moved the partition away and back before its first message was read): it is read
//! from its start once more.
//!
//! **A model lost or reset under the worker is taken over again.** Every second (and at
//! once when a partition checkpoint goes back under a batch) a worker checks that each
//! model it feeds is still handed over at the position it took it over at. One that is
//! not (`projections reset`, a table dropped and rebuilt, a Redis without persistence
//! that restarted empty) is given up, taken over again where its checkpoint now stands,
//! and every partition assigned to the worker is read again from its start.
//!
//! **Taking a model over from the log.** When the first Eventfold event reaches it from
//! Kafka, a worker marks the model's log-fed checkpoint as handed over at position P
//! ([`eventfold_projections::handed_over`]; a later worker finds the mark and takes its P): a `serve` running
//! it from the log stands by (its next compare-and-set fails, so no batch lands twice),
//! and every partition starts beyond P. Not before: a worker that never receives
//! anything (brokers unreachable, a mistyped address, a relay not running) leaves the
//! models to the log (it used to take them over as it started, and `serve` stopped
//! feeding them until a rebuild). `eventfold projections reset NAME` hands one back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_event_schemas::{Position, RecordedEvent};
use eventfold_projections::{Applier, Model, ReadStore, RunnerOptions, Sink, StatusBoard};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use self::partitions::feed_records;
use crate::relay::KafkaSettings;

/// A model a worker feeds, with its store and where it was taken over from the log
/// (once the first event arrived).
struct Fed {
    model: Model,
    store: Arc<dyn ReadStore>,
    taken_over_at: Option<Position>,
    /// Whether its store keeps the hand-over mark (not ClickHouse, whose checkpoint
    /// only grows: the log-fed runner goes on beside the workers there).
    keeps_mark: bool,
}

/// One partition's feed of one model.
struct Feed {
    applier: Applier<Arc<dyn Sink>>,
    checkpoint: Position,
}

/// What a worker has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WorkerStats {
    /// Messages received.
    pub(crate) received: u64,
    /// Of those, applied to at least one model (the others were already applied, or
    /// were duplicates, or concern no model of this worker).
    pub(crate) fresh: u64,
    /// Messages that are not an Eventfold envelope (skipped, logged).
    pub(crate) foreign: u64,
    /// The models taken over from the log so far, each with the position it was taken
    /// over at, in the order they were.
    pub(crate) taken_over: Vec<(String, Position)>,
    /// The models found handed back to the log while this worker fed them (reset, a
    /// table dropped, a Redis that restarted empty), in the order they were: each was
    /// taken over again and its partitions read again from their start.
    pub(crate) handed_back: Vec<String>,
}

/// How often a worker checks that the models it feeds are still handed over to it.
const MARK_CHECK: Duration = Duration::from_secs(1);

/// What one batch did.
struct Applied {
    /// The next offset of each partition whose messages were applied (or skipped as
    /// applied already): where the group resumes.
    offsets: BTreeMap<(String, i32), i64>,
    /// Partitions to read again from their start (their messages in this batch were
    /// left for then).
    rewind: Vec<(String, i32)>,
    /// Models whose checkpoint went back under this worker (lost by their store, or
    /// reset).
    lost: Vec<usize>,
    /// Partitions read again from their start whose first message was past offset 0
    /// (`(topic, partition, first offset, model)`), for a model that needs them whole:
    /// gone (retention), or a rewind that a rebalance overtook ([`Worker::check_start`]).
    check: Vec<(String, i32, i64, usize)>,
}

/// What opening a (model, partition) feed found.
enum Opened {
    /// Ready: the feed's key.
    Feed((usize, String, i32)),
    /// The partition must be read again from its start first.
    Rewind,
    /// Read again from its start, it began past offset 0 (this offset), for this model:
    /// see [`Applied::check`].
    Check(i64, usize),
}

/// A Kafka-fed projector.
pub(crate) struct Worker {
    settings: KafkaSettings,
    group: String,
    fed: Vec<Fed>,
    feeds: HashMap<(usize, String, i32), Feed>,
    /// The first offset this worker received from each partition (since it was last
    /// read from its start).
    first_offsets: HashMap<(String, i32), i64>,
    /// The partitions this worker has read again from their start, for a model that had
    /// applied nothing from them since it was taken over.
    rewound: std::collections::HashSet<(String, i32)>,
    /// The partitions read from their start a second time because the brokers still
    /// held offsets before the first one read after the first time.
    rewound_twice: std::collections::HashSet<(String, i32)>,
    /// When the hand-over marks were last checked ([`Worker::lost`]), or `None`: now.
    marks_checked: Option<Instant>,
    options: RunnerOptions,
    board: StatusBoard,
    stats: WorkerStats,
    /// Messages applied so far, readable while it runs.
    applied: Arc<std::sync::atomic::AtomicU64>,
    /// Messages gathered into one batch at most, and how long a short batch waits.
    batch: usize,
    linger: Duration,
}

impl Worker {
    /// A worker of `group` feeding `models` (each with its store), their stores set
    /// up. It takes them over from the log when the first event arrives (see the
    /// module's docs).
    pub(crate) async fn start(
        settings: KafkaSettings,
        group: &str,
        models: Vec<(Model, Arc<dyn ReadStore>)>,
        board: StatusBoard,
    ) -> eventfold_projections::Result<Self> {
        let mut fed = Vec::new();
        for (model, store) in models {
            store.setup(&model).await?;
            fed.push(Fed {
                keeps_mark: model.store() != eventfold_projections::StoreKind::ClickHouse,
                model,
                store,
                taken_over_at: None,
            });
        }
        Ok(Self {
            settings,
            group: group.to_owned(),
            fed,
            feeds: HashMap::new(),
            first_offsets: HashMap::new(),
            rewound: std::collections::HashSet::new(),
            rewound_twice: std::collections::HashSet::new(),
            marks_checked: None,
            options: RunnerOptions::default(),
            board,
            stats: WorkerStats::default(),
            applied: Arc::default(),
            batch: 5_000,
            linger: Duration::from_millis(50),
        })
    }

    /// Messages applied so far, readable while it runs.
    pub(crate) fn applied(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.applied.clone()
    }

    /// What it has done.
    pub(crate) fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// The group's consumer, subscribed to every topic under the prefix.
    fn consumer(&self) -> anyhow::Result<StreamConsumer> {
        let consumer: StreamConsumer = self
            .settings
            .client_config()
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // New categories (topics) are found within seconds.
            .set("topic.metadata.refresh.interval.ms", "2000")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()?;
        let pattern = format!("^{}.*", self.settings.prefix.replace('.', "\\."));
        consumer.subscribe(&[&pattern])?;
        Ok(consumer)
    }

    /// Consumes until `shutdown` resolves (then commits and returns) or a model stops
    /// (a parked event under policy `Stop`, or a store that refuses for good).
    /// `progress` is told what it has done every two seconds at most.
    pub(crate) async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
        mut progress: impl FnMut(&WorkerStats),
    ) -> anyhow::Result<()> {
        let consumer = self.consumer()?;
        tokio::pin!(shutdown);
        let mut told = Instant::now();
        loop {
            if told.elapsed() >= Duration::from_secs(2) {
                progress(&self.stats);
                told = Instant::now();
            }
            if self
                .marks_checked
                .is_none_or(|at| at.elapsed() >= MARK_CHECK)
            {
                let lost = self.lost().await;
                self.give_up(&consumer, &lost);
                self.marks_checked = Some(Instant::now());
            }
            let first = tokio::select! {
                () = &mut shutdown => {
                    self.settle().await;
                    return Ok(());
                }
                // Nothing arriving (no partitions yet, brokers away): still tell.
                () = tokio::time::sleep(Duration::from_secs(2).saturating_sub(told.elapsed())) => continue,
                message = consumer.recv() => message,
            };
            let mut batch = Vec::with_capacity(self.batch);
            match first {
                Ok(message) => batch.push(message.detach()),
                Err(error) => {
                    tracing::warn!(%error, "consuming failed; retrying");
                    tokio::time::sleep(self.options.backoff).await;
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + self.linger;
            while batch.len() < self.batch {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(message)) => batch.push(message.detach()),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "consuming failed");
                        break;
                    }
                    Err(_) => break,
                }
            }
            let Applied {
                offsets,
                rewind,
                lost,
                check,
            } = self.apply(batch).await?;
            for (topic, partition) in rewind {
                self.seek_to_start(&consumer, &topic, partition);
            }
            for (topic, partition, first, model) in check {
                self.check_start(&consumer, &topic, partition, first, model)?;
            }
            self.give_up(&consumer, &lost);
            // After the writes: where the group resumes reading. Losing it re-reads
            // (skipped by position), so an asynchronous commit is enough.
            let mut list = TopicPartitionList::new();
            for ((topic, partition), next) in offsets {
                list.add_partition_offset(&topic, partition, Offset::Offset(next))?;
            }
            if let Err(error) = consumer.commit(&list, CommitMode::Async) {
                tracing::warn!(%error, "committing offsets failed (they are re-read and skipped)");
            }
        }
    }

    /// Stores the checkpoints still being written (ClickHouse writes a batch's beside
    /// the next one): a worker stopped at once leaves its feeds where they got to.
    async fn settle(&self) {
        for ((_, topic, partition), feed) in &self.feeds {
            let sink = feed.applier.sink();
            if let Err(error) = sink.settle().await {
                tracing::warn!(model = sink.name(), %topic, partition, %error, "the last checkpoint was not stored");
            }
        }
    }

    /// Applies one batch of messages, every (model, partition) feed at once; returns the
    /// next offset of each partition.
    async fn apply(
        &mut self,
        batch: Vec<rdkafka::message::OwnedMessage>,
    ) -> anyhow::Result<Applied> {
        let mut offsets = BTreeMap::new();
        let mut partitions: BTreeMap<(String, i32), Vec<RecordedEvent>> = BTreeMap::new();
        for message in batch {
            self.stats.received += 1;
            let key = (message.topic().to_owned(), message.partition());
            offsets.insert(key.clone(), message.offset() + 1);
            self.first_offsets
                .entry(key.clone())
                .or_insert(message.offset());
            match message
                .payload()
                .map(serde_json::from_slice::<RecordedEvent>)
            {
                Some(Ok(record)) => partitions.entry(key).or_default().push(record),
                other => {
                    self.stats.foreign += 1;
                    let error = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "no payload".to_owned(),
                    };
                    tracing::warn!(topic = %key.0, partition = key.1, offset = message.offset(), %error, "not an Eventfold event; skipped");
                }
            }
        }
        if !partitions.is_empty() {
            self.take_over().await?;
        }
        // Every (model, partition) feed of the batch at once, each on a task of its
        // own: a feed applies its partition's records in order with its own sink and
        // checkpoint, independent of the others (the log-fed runner runs its models
        // side by side too; before, a worker applied them one after another).
        let mut work = tokio::task::JoinSet::new();
        let mut rewind = Vec::new();
        let mut check = Vec::new();
        'partitions: for ((topic, partition), records) in partitions {
            let mut keys = Vec::with_capacity(self.fed.len());
            for model in 0..self.fed.len() {
                match self.open_feed(model, &topic, partition).await? {
                    Opened::Feed(key) => keys.push(key),
                    // Read again from its start (or checked first): none of its
                    // records now, for any model (the others skip them by position
                    // then), and its offset is not committed.
                    Opened::Rewind => {
                        offsets.remove(&(topic.clone(), partition));
                        rewind.push((topic, partition));
                        continue 'partitions;
                    }
                    Opened::Check(first, model) => {
                        offsets.remove(&(topic.clone(), partition));
                        check.push((topic, partition, first, model));
                        continue 'partitions;
                    }
                }
            }
            let records = Arc::new(records);
            for key in keys {
                let model = key.0;
                let Some(mut feed) = self.feeds.remove(&key) else {
                    anyhow::bail!("no feed for {topic}#{partition}");
                };
                let taken_over_at = self.fed[model].taken_over_at.unwrap_or(Position::START);
                let records = records.clone();
                work.spawn(async move {
                    let applied = feed_records(&mut feed, &key, &records, taken_over_at).await;
                    (key, feed, applied)
                });
            }
        }
        let mut fresh: BTreeMap<(String, i32), Vec<bool>> = BTreeMap::new();
        let mut failed = None;
        let mut lost = Vec::new();
        while let Some(done) = work.join_next().await {
            let (key, feed, applied) = match done {
                Ok(done) => done,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => anyhow::bail!("a feed's task was cancelled: {error}"),
            };
            let partition = (key.1.clone(), key.2);
            let key_model = key.0;
            // Put back before anything else: a feed that failed keeps its checkpoint.
            self.feeds.insert(key, feed);
            match applied {
                Ok(None) => {
                    // Its records are read again once the model is taken over again.
                    offsets.remove(&partition);
                    lost.push(key_model);
                }
                Ok(Some(applied)) => {
                    let flags = fresh
                        .entry(partition)
                        .or_insert_with(|| vec![false; applied.len()]);
                    for (flag, new) in flags.iter_mut().zip(applied) {
                        *flag |= new;
                    }
                }
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failed {
            return Err(error);
        }
        let fresh = fresh.values().flatten().filter(|f| **f).count() as u64;
        self.stats.fresh += fresh;
        self.applied
            .fetch_add(fresh, std::sync::atomic::Ordering::Relaxed);
        lost.sort_unstable();
        lost.dedup();
        Ok(Applied {
            offsets,
            rewind,
            lost,
            check,
        })
    }
}

/// Where `eventfold project` reads events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Source {
    /// The relay's Kafka topics, in a consumer group (`--group`).
    Kafka,
    /// The log itself (what `serve` does, without the HTTP API; under the same leases).
    Log,
}

/// `eventfold project`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProjectArgs {
    /// Where events come from.
    #[arg(long, value_enum)]
    from: Source,
    /// The consumer group the Kafka-fed workers share (required with `--from kafka`).
    #[arg(long)]
    group: Option<String>,
    /// The read models to feed (repeatable); every model whose store is configured
    /// when left out.
    #[arg(long = "projection")]
    projections: Vec<String>,
}

/// `eventfold project`: projector workers without the HTTP API.
pub(crate) async fn run(
    config: &crate::config::Config,
    set: eventfold_projections::ProjectionSet<eventfold_event_log::AnyEventStore>,
    args: ProjectArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let mut names: Vec<String> = if args.projections.is_empty() {
        set.names().into_iter().map(str::to_owned).collect()
    } else {
        args.projections.clone()
    };
    // A model named twice is fed once (two feeds of one model in one worker would apply
    // the same partitions side by side).
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    let mut models = Vec::new();
    for name in &names {
        let (model, store) = set
            .model(name)
            .map_err(|e| anyhow::anyhow!("{e} (known: {})", set.registry().names().join(", ")))?;
        models.push((model.clone(), store.clone()));
    }
    match args.from {
        Source::Kafka => {
            let Some(settings) = config.kafka()? else {
                anyhow::bail!("KAFKA_BROKERS is not set: which brokers hold the relay's topics?");
            };
            let Some(group) = args.group.filter(|g| !g.trim().is_empty()) else {
                anyhow::bail!(
                    "--from kafka needs --group NAME: the consumer group the workers share"
                );
            };
            run_command(settings, &group, models, out).await
        }
        Source::Log => {
            if args.group.is_some() {
                anyhow::bail!(
                    "--group is for --from kafka: log-fed projectors share work by leases"
                );
            }
            let leases = eventfold_projections::Leases::start(
                set.db(),
                crate::app::owner_name(),
                set.board().clone(),
            );
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let mut tasks = tokio::task::JoinSet::new();
            for (model, _) in &models {
                let (set, stopped, leases, name) =
                    (set.clone(), stopped.clone(), leases.clone(), model.name());
                tasks.spawn(async move { set.run_leased(name, stopped, &leases).await });
            }
            writeln!(
                out,
                "projecting {} from the log; Ctrl-C stops",
                names.join(", ")
            )?;
            out.flush()?;
            crate::serve::shutdown_signal().await;
            stop.send(true).ok();
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            writeln!(out, "stopped")?;
            Ok(())
        }
    }
}

/// A Kafka-fed worker until Ctrl-C or SIGTERM, printing its progress.
pub(crate) async fn run_command(
    settings: KafkaSettings,
    group: &str,
    models: Vec<(Model, Arc<dyn ReadStore>)>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let names: Vec<&str> = models.iter().map(|(m, _)| m.name()).collect();
    writeln!(
        out,
        "projecting {} from {} (topics {}*, group {group}); Ctrl-C stops",
        names.join(", "),
        settings.brokers,
        settings.prefix
    )?;
    out.flush()?;
    let waiting = format!(
        "no message yet: waiting for {} to assign this worker partitions of {}* (group {group}), \
         or for the relay to publish; until then the log feeds the models",
        settings.brokers, settings.prefix
    );
    let board = StatusBoard::default();
    let mut worker = Worker::start(settings, group, models, board).await?;
    let started = Instant::now();
    let mut told = 0;
    let result = worker
        .run(crate::serve::shutdown_signal(), |stats| {
            for (name, at) in stats.taken_over.iter().skip(told) {
                let _ = writeln!(out, "{name}: fed from Kafka beyond position {}", at.0);
            }
            told = stats.taken_over.len();
            // Nothing received at all: say what it waits for (brokers unreachable, a
            // group still joining, topics not created yet) rather than "0 messages".
            let _ = if stats.received == 0 {
                writeln!(out, "{waiting}")
            } else {
                writeln!(
                    out,
                    "{} messages, {} applied ({:.0}/s)",
                    stats.received,
                    stats.fresh,
                    stats.fresh as f64 / started.elapsed().as_secs_f64().max(1e-3)
                )
            };
            let _ = out.flush();
        })
        .await;
    let stats = worker.stats();
    for (name, at) in stats.taken_over.iter().skip(told) {
        writeln!(out, "{name}: fed from Kafka beyond position {}", at.0)?;
    }
    if stats.taken_over.is_empty() {
        writeln!(
            out,
            "nothing arrived from Kafka: the models were left to the log, not taken over"
        )?;
    }
    writeln!(
        out,
        "stopped after {:.1} s: {} messages, {} applied, {} skipped (already applied or duplicates), {} not Eventfold events",
        started.elapsed().as_secs_f64(),
        stats.received,
        stats.fresh,
        stats.received.saturating_sub(stats.fresh + stats.foreign),
        stats.foreign
    )?;
    result
}

mod partitions;
#[cfg(test)]
mod tests;

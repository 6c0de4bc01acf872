//! A worker's partitions: which models it still holds (the hand-over mark), giving
//! them up and taking them over again, opening a (model, partition) feed and reading a
//! partition again from its start (see the parent module's docs), and feeding one
//! partition's records to one model.

use std::sync::Arc;
use std::time::Duration;

use eventfold_event_schemas::{Position, RecordedEvent};
use eventfold_projections::{
    handed_over, handed_over_at, Applier, Error, Model, Namespace, ReadStore, Sink,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Offset;

use super::{Feed, Opened, Worker};

impl Worker {
    /// The models (indexes) no longer handed over at the position this worker took them
    /// over at: handed back to the log since (`projections reset`, a table dropped and
    /// rebuilt, a Redis without persistence that restarted empty — its mark is gone
    /// with the model), or taken over again by another worker that found them so. A
    /// store that cannot answer now is asked again at the next check.
    pub(super) async fn lost(&self) -> Vec<usize> {
        let mut lost = Vec::new();
        for (index, fed) in self.fed.iter().enumerate() {
            let (Some(at), true) = (fed.taken_over_at, fed.keeps_mark) else {
                continue;
            };
            let checkpoint = match fed.store.sink(&fed.model, &Namespace::Live) {
                Ok(live) => live.checkpoint().await,
                Err(error) => Err(error),
            };
            match checkpoint {
                Ok(checkpoint) if handed_over_at(checkpoint) == Some(at) => {}
                Ok(_) => lost.push(index),
                Err(error) => {
                    tracing::warn!(model = fed.model.name(), %error, "checking the hand-over mark failed; checking again in a second");
                }
            }
        }
        lost
    }

    /// Gives up what this worker had of `lost` models (their feeds, where it took them
    /// over) and reads every partition assigned to it again from its start: the next
    /// batch takes each over again, where the mark now says (the log-fed runner's
    /// checkpoint, or another worker's new mark), and folds its partitions from there;
    /// the other models skip what they applied already, by position. Without the
    /// rewind the partitions would resume at the group's offsets, and every event
    /// between the new take-over and those offsets would be missing from the model.
    pub(super) fn give_up(&mut self, consumer: &StreamConsumer, lost: &[usize]) {
        if lost.is_empty() {
            return;
        }
        for &index in lost {
            let fed = &mut self.fed[index];
            let name = fed.model.name();
            tracing::warn!(
                model = name,
                taken_over_at = fed.taken_over_at.map(|p| p.0),
                "handed back to the log while this worker fed it (reset, a table dropped, or a Redis that restarted empty): taking it over again and reading its partitions from their start"
            );
            fed.taken_over_at = None;
            self.stats.handed_back.push(name.to_owned());
            self.feeds.retain(|(model, _, _), _| *model != index);
        }
        self.rewound.clear();
        self.rewound_twice.clear();
        self.first_offsets.clear();
        match consumer.assignment() {
            Ok(assigned) => {
                for element in assigned.elements() {
                    self.seek_to_start(consumer, element.topic(), element.partition());
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading the assignment failed: partitions are read again from their start as their next messages arrive");
            }
        }
    }

    /// Reads `topic#partition` again from its start (librdkafka drops what it had
    /// fetched beyond).
    pub(super) fn seek_to_start(&mut self, consumer: &StreamConsumer, topic: &str, partition: i32) {
        let key = (topic.to_owned(), partition);
        self.first_offsets.remove(&key);
        match consumer.seek(topic, partition, Offset::Beginning, Duration::from_secs(10)) {
            Ok(()) => {
                self.rewound.insert(key);
            }
            Err(error) => {
                tracing::warn!(topic, partition, %error, "reading a partition again from its start failed; trying again with its next message");
                self.rewound.remove(&key);
            }
        }
    }

    /// Takes over from the log every model not taken over yet (the first events have
    /// arrived).
    pub(super) async fn take_over(&mut self) -> eventfold_projections::Result<()> {
        for fed in self.fed.iter_mut().filter(|f| f.taken_over_at.is_none()) {
            let at = take_over(&fed.model, fed.store.as_ref()).await?;
            fed.taken_over_at = Some(at);
            self.stats
                .taken_over
                .push((fed.model.name().to_owned(), at));
        }
        Ok(())
    }

    /// The feed of one model from one partition, opened (its checkpoint read) the
    /// first time; its key, or `None` when the partition must be read again from its
    /// start first: the model has applied nothing from it since it was taken over, and
    /// this worker's first message of it is past offset 0 (the group read it before —
    /// for the model before it was reset or lost, or for other models), so the events
    /// between the take-over and that offset would be missing.
    pub(super) async fn open_feed(
        &mut self,
        model: usize,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<Opened> {
        let key = (model, topic.to_owned(), partition);
        if !self.feeds.contains_key(&key) {
            let fed = &self.fed[model];
            let sink = fed
                .store
                .source_sink(&fed.model, &format!("{topic}#{partition}"))?;
            let applier = Applier::new(sink, self.options.clone(), self.board.clone());
            let taken_over_at = fed.taken_over_at.unwrap_or(Position::START);
            let stored = stored_checkpoint(&applier).await?;
            let place = (topic.to_owned(), partition);
            let first = self.first_offsets.get(&place).copied().unwrap_or(0);
            if stored <= taken_over_at && first > 0 {
                if !self.rewound.contains(&place) {
                    return Ok(Opened::Rewind);
                }
                if taken_over_at == Position::START {
                    return Ok(Opened::Check(first, model));
                }
            }
            let checkpoint = resume(&applier, stored, taken_over_at).await?;
            self.rewound_twice.remove(&place);
            self.feeds.insert(
                key.clone(),
                Feed {
                    applier,
                    checkpoint,
                },
            );
        }
        Ok(Opened::Feed(key))
    }

    /// A partition read again from its start began at `first` > 0, for a model that
    /// has applied nothing from it and took nothing over from the log. Either the
    /// events before `first` are gone — the brokers' retention dropped them (the
    /// partition's low watermark is at `first`): refused, the model cannot be built
    /// from Kafka — or the rewind was overtaken (the partition went to another worker
    /// and came back at the group's offset before its first message was read): read
    /// from its start again, once. The brokers are asked for the low watermark only
    /// here (a blocking call, bounded).
    pub(super) fn check_start(
        &mut self,
        consumer: &StreamConsumer,
        topic: &str,
        partition: i32,
        first: i64,
        model: usize,
    ) -> anyhow::Result<()> {
        let place = (topic.to_owned(), partition);
        let low = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map(|(low, _)| low);
        let name = self.fed[model].model.name();
        match low {
            Ok(low) if low < first && self.rewound_twice.insert(place) => {
                tracing::info!(topic, partition, first, low, "a rewind was overtaken by a rebalance: reading the partition from its start again");
                self.seek_to_start(consumer, topic, partition);
                Ok(())
            }
            Ok(low) if low < first => anyhow::bail!(
                "{name}: {topic}#{partition}, read from its start twice, begins at offset {first} \
                 although the brokers keep it from offset {low}: the events between are not \
                 readable (a compacted topic?). Keep the relay's topics whole \
                 (cleanup.policy=delete, retention.ms=-1), or build the model from the log"
            ),
            Ok(_) => anyhow::bail!(
                "{name}: {topic}#{partition} starts at offset {first} (read from its start), \
                 but the model has applied nothing from that partition and took nothing \
                 over from the log: the events before that offset are gone (the \
                 brokers' retention dropped them). Keep the relay's topics for good \
                 (retention.ms=-1), or build the model from the log"
            ),
            Err(error) => {
                // Asked again when the partition is next read from its start.
                tracing::warn!(topic, partition, %error, "reading a partition's low watermark failed; reading it from its start again");
                self.seek_to_start(consumer, topic, partition);
                Ok(())
            }
        }
    }
}

/// Feeds one partition's records to one model; says which were beyond its checkpoint
/// (applied now), or `None` when the model's checkpoint went back under it (its store
/// lost it, or it was reset): nothing applied.
pub(super) async fn feed_records(
    feed: &mut Feed,
    (_, topic, partition): &(usize, String, i32),
    records: &[RecordedEvent],
    taken_over_at: Position,
) -> anyhow::Result<Option<Vec<bool>>> {
    loop {
        // Beyond the checkpoint and beyond every earlier record of the batch: a
        // relay's duplicates come after the originals with lower positions.
        let mut high = feed.checkpoint;
        let mut kept = Vec::new();
        let flags: Vec<bool> = records
            .iter()
            .map(|r| {
                let new = r.global_position > high;
                if new {
                    high = r.global_position;
                    kept.push(r.clone());
                }
                new
            })
            .collect();
        if kept.is_empty() {
            return Ok(Some(flags));
        }
        match feed.applier.apply_batch(feed.checkpoint, kept).await {
            Ok(checkpoint) => {
                feed.checkpoint = checkpoint;
                return Ok(Some(flags));
            }
            // Another worker applied part of it (a rebalance moved the partition):
            // read its checkpoint and skip what it did. Gone back instead: the model
            // was lost or reset under this worker.
            Err(Error::CheckpointMoved(_)) => {
                let stored = stored_checkpoint(&feed.applier).await?;
                if stored < feed.checkpoint {
                    return Ok(None);
                }
                tracing::info!(
                    topic,
                    partition,
                    "checkpoint moved by another worker; resuming from it"
                );
                feed.checkpoint = resume(&feed.applier, stored, taken_over_at).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Marks `model`'s log-fed checkpoint as handed over (once: later workers find the
/// mark); returns where the log-fed runner stopped.
async fn take_over(
    model: &Model,
    store: &dyn ReadStore,
) -> eventfold_projections::Result<Position> {
    let live = store.sink(model, &Namespace::Live)?;
    live.setup().await?;
    loop {
        let checkpoint = live.checkpoint().await?;
        if let Some(at) = handed_over_at(checkpoint) {
            return Ok(at);
        }
        match live.apply(checkpoint, &[], handed_over(checkpoint)).await {
            // A store whose checkpoint only grows (ClickHouse, idempotent) keeps the
            // log-fed runner going beside the workers: harmless there.
            Ok(()) => return Ok(checkpoint),
            Err(Error::CheckpointMoved(_)) => continue,
            Err(error) => return Err(error),
        }
    }
}

/// A partition feed's checkpoint as its store holds it (set up first).
async fn stored_checkpoint(
    applier: &Applier<Arc<dyn Sink>>,
) -> eventfold_projections::Result<Position> {
    let sink = applier.sink();
    applier.retry_store(|| sink.setup()).await?;
    applier.retry_store(|| sink.checkpoint()).await
}

/// A partition feed's checkpoint (`checkpoint`, as its store holds it), raised to the
/// take-over position the first time.
async fn resume(
    applier: &Applier<Arc<dyn Sink>>,
    checkpoint: Position,
    taken_over_at: Position,
) -> eventfold_projections::Result<Position> {
    let sink = applier.sink();
    if checkpoint >= taken_over_at {
        return Ok(checkpoint);
    }
    match sink.apply(checkpoint, &[], taken_over_at).await {
        Ok(()) => Ok(taken_over_at),
        // Another worker raised it first.
        Err(Error::CheckpointMoved(_)) => applier.retry_store(|| sink.checkpoint()).await,
        Err(error) => Err(error),
    }
}

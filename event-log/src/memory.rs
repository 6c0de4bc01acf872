use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use eventfold_event_schemas::{
    is_valid_category, ExpectedVersion, NewEvent, Payload, Position, RecordedEvent, StreamId,
    StreamVersion,
};
use tokio::sync::watch;

use crate::append::{prepare, recognise_retry, StoredId};
use crate::store::{EventReader, EventWriter, ReadDirection};
use crate::{AppendResult, Error, Limits, Result};

/// An event store in process memory, for unit tests. Nothing survives the process.
#[derive(Debug, Clone)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    limits: Limits,
}

#[derive(Debug, Default)]
struct State {
    /// `events[i]` has position `i + 1`.
    events: Vec<RecordedEvent>,
    /// Indexes into `events`, per stream, in version order.
    streams: HashMap<String, Vec<usize>>,
    ids: HashMap<uuid::Uuid, usize>,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl InMemoryEventStore {
    /// An empty store with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changes: watch::channel(0).0,
                limits,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated (appends
        // validate before mutating), so a poisoned lock is still consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EventReader for InMemoryEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: ReadDirection,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let state = self.state();
        let Some(indexes) = state.streams.get(stream.as_str()) else {
            return Ok(Vec::new());
        };
        let events = indexes.iter().map(|&i| &state.events[i]);
        Ok(match direction {
            ReadDirection::Forwards => events
                .filter(|e| e.stream_version >= from)
                .take(max)
                .cloned()
                .collect(),
            ReadDirection::Backwards => events
                .rev()
                .filter(|e| e.stream_version <= from)
                .take(max)
                .cloned()
                .collect(),
        })
    }

    async fn read_all(
        &self,
        after: Position,
        category: Option<&str>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        if let Some(category) = category {
            if !is_valid_category(category) {
                return Err(Error::InvalidCategory(category.to_owned()));
            }
        }
        let state = self.state();
        let start = usize::try_from(after.0.max(0)).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(start)
            .filter(|e| category.is_none_or(|c| e.stream_id.category() == c))
            .take(max)
            .cloned()
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<StreamVersion>> {
        let state = self.state();
        Ok(state
            .streams
            .get(stream.as_str())
            .map(|indexes| indexes.len() as StreamVersion - 1))
    }

    async fn head(&self) -> Result<Position> {
        Ok(Position(self.state().events.len() as i64))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }
}

impl EventWriter for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        let prepared = prepare(&self.inner.limits, expected, events)?;
        let mut state = self.state();
        let stored: Vec<StoredId> = prepared
            .iter()
            .filter_map(|p| state.ids.get(&p.event_id))
            .map(|&i| {
                let e = &state.events[i];
                StoredId {
                    event_id: e.event_id,
                    stream_id: e.stream_id.to_string(),
                    stream_version: e.stream_version,
                    position: e.global_position.0,
                }
            })
            .collect();
        if let Some(original) = recognise_retry(stream, expected, &prepared, stored)? {
            return Ok(original);
        }
        let current = state
            .streams
            .get(stream.as_str())
            .map(|indexes| indexes.len() as StreamVersion - 1);
        if !expected.accepts(current) {
            return Err(Error::WrongExpectedVersion {
                stream_id: stream.clone(),
                expected,
                actual: current,
            });
        }
        let first_version = current.map_or(0, |v| v + 1);
        let first_position = Position(state.events.len() as i64 + 1);
        let recorded_at = Utc::now();
        for (offset, (event, prepared)) in events.iter().zip(&prepared).enumerate() {
            let index = state.events.len();
            state.events.push(RecordedEvent {
                global_position: Position(index as i64 + 1),
                stream_id: stream.clone(),
                stream_version: first_version + offset as i64,
                event_id: prepared.event_id,
                event_type: prepared.event_type.clone(),
                schema_version: prepared.schema_version,
                data: Payload::from_json(prepared.data.clone())?,
                metadata: event.metadata.clone(),
                recorded_at,
            });
            state
                .streams
                .entry(stream.as_str().to_owned())
                .or_default()
                .push(index);
            state.ids.insert(prepared.event_id, index);
        }
        let count = events.len() as i64;
        drop(state);
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        Ok(AppendResult {
            first_version,
            last_version: first_version + count - 1,
            first_position,
            last_position: Position(first_position.0 + count - 1),
        })
    }
}

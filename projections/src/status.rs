//! What each projection is doing, for `projections status`, `/metrics` and `/readyz`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use eventfold_event_log::EventReader;
use eventfold_event_schemas::Position;
use serde::Serialize;

use crate::Result;

/// A projection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    /// Not started in this process.
    #[default]
    Idle,
    /// Following the log.
    Running,
    /// Its store is unavailable; retrying.
    Retrying,
    /// Stopped (shut down, or on a parked event).
    Stopped,
    /// Being rebuilt from the log before it runs (a version bump).
    Rebuilding,
    /// Another process holds its lease and runs it; this one takes over if that one
    /// dies.
    Standby,
}

/// One projection's progress.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProjectionStatus {
    /// Versioned name.
    pub name: String,
    /// Last applied position.
    pub checkpoint: Position,
    /// When the last applied event was recorded.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Life.
    pub state: ProjectionState,
    /// Events parked in this process's lifetime.
    pub parked: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The process that runs it (its lease holder), when known.
    pub owner: Option<String>,
    /// Until when a query is waiting on its checkpoint (a standby refreshes it often
    /// then).
    #[serde(skip)]
    pub wanted_until: Option<std::time::Instant>,
}

/// Shared progress of every projection in the process.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<String, ProjectionStatus>>>);

impl StatusBoard {
    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, ProjectionStatus>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with(&self, name: &str, f: impl FnOnce(&mut ProjectionStatus)) {
        let mut entries = self.entries();
        let entry = entries
            .entry(name.to_owned())
            .or_insert_with(|| ProjectionStatus {
                name: name.to_owned(),
                ..ProjectionStatus::default()
            });
        f(entry);
    }

    pub(crate) fn set_checkpoint(
        &self,
        name: &str,
        checkpoint: Position,
        at: Option<DateTime<Utc>>,
    ) {
        self.with(name, |s| {
            s.checkpoint = checkpoint;
            if at.is_some() {
                s.last_event_at = at;
            }
            if s.state == ProjectionState::Retrying {
                s.state = ProjectionState::Running;
            }
        });
    }

    pub fn set_state(&self, name: &str, state: ProjectionState, error: Option<String>) {
        self.with(name, |s| {
            s.state = state;
            if error.is_some() {
                s.last_error = error;
            }
        });
    }

    /// A standby's view of the owner's progress, read from the store.
    pub(crate) fn set_standby_checkpoint(&self, name: &str, checkpoint: Position) {
        self.with(name, |s| s.checkpoint = s.checkpoint.max(checkpoint));
    }

    /// Who runs `name`.
    pub fn set_owner(&self, name: &str, owner: Option<String>) {
        self.with(name, |s| s.owner = owner);
    }

    /// A query waits on `name`'s checkpoint (read-your-writes): a standby process
    /// refreshes it from the store every few milliseconds for a moment.
    pub fn want(&self, name: &str) {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(250);
        self.with(name, |s| s.wanted_until = Some(until));
    }

    /// Whether a query waits on `name`'s checkpoint now.
    pub fn wanted(&self, name: &str) -> bool {
        self.entries()
            .get(name)
            .and_then(|s| s.wanted_until)
            .is_some_and(|until| until > std::time::Instant::now())
    }

    pub(crate) fn add_parked(&self, name: &str) {
        self.with(name, |s| s.parked += 1);
    }

    /// Starts `name`'s parked count from what its store holds (a process starting, so
    /// that `/metrics` and the projections route do not say 0 while parked events
    /// wait from before); the runner adds what it parks from then on.
    pub fn set_parked(&self, name: &str, parked: u64) {
        self.with(name, |s| s.parked = parked);
    }

    /// Every projection's status.
    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        self.entries().values().cloned().collect()
    }

    /// One projection's status.
    pub fn status(&self, name: &str) -> Option<ProjectionStatus> {
        self.entries().get(name).cloned()
    }

    /// One projection's state (`Idle` when the board does not know it), without
    /// copying its status.
    pub fn state_of(&self, name: &str) -> ProjectionState {
        self.entries()
            .get(name)
            .map_or_else(Default::default, |s| s.state)
    }

    /// The lowest checkpoint among `names` (what a query over them may rely on).
    pub fn checkpoint_of(&self, name: &str) -> Position {
        self.entries()
            .get(name)
            .map_or(Position::START, |s| s.checkpoint)
    }
}

/// How far a checkpoint is behind the log.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lag {
    /// The log's head.
    pub head: Position,
    /// Positions between the checkpoint and the head (holes included).
    pub events: i64,
    /// Age of the oldest event not yet applied, seconds (0 when caught up).
    pub seconds: f64,
}

/// Measures the lag of `checkpoint` against `log`.
pub async fn measure_lag(log: &impl EventReader, checkpoint: Position) -> Result<Lag> {
    let head = log.head().await?;
    let events = (head.0 - checkpoint.0).max(0);
    let seconds = if events == 0 {
        0.0
    } else {
        let next = log.read_all(checkpoint, None, 1).await?;
        next.first().map_or(0.0, |e| {
            (Utc::now() - e.recorded_at).num_milliseconds().max(0) as f64 / 1000.0
        })
    };
    Ok(Lag {
        head,
        events,
        seconds,
    })
}

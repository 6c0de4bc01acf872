//! The `Workout` aggregate. Stream `workout-{workout_id}`.

use chrono::{DateTime, Utc};
use eventfold_event_schemas::catalogue::{
    GeoPoint, WorkoutCancelled, WorkoutCompleted, WorkoutGoalReached, WorkoutPaused,
    WorkoutResumed, WorkoutStarted, WorkoutUpdated,
};
use uuid::Uuid;

use crate::{Aggregate, DomainError, DomainEvent};

/// Where a workout is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkoutStatus {
    /// No such workout.
    #[default]
    None,
    /// Running.
    Active,
    /// Paused.
    Paused,
    /// Completed.
    Completed,
    /// Cancelled.
    Cancelled,
}

/// What decisions need to know about a workout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkoutState {
    /// Status.
    pub status: WorkoutStatus,
    /// Its id.
    pub workout_id: Uuid,
    /// The athlete.
    pub user_id: String,
    /// The sport.
    pub sport: String,
    /// Latest reported total distance, metres.
    pub distance_m: f64,
    /// Highest heart rate reported.
    pub max_heart_rate: Option<u32>,
    /// Seconds moving, up to the last pause.
    pub active_seconds: i64,
    /// When the current active stretch began.
    pub active_since: Option<DateTime<Utc>>,
    /// The latest time the stream has seen.
    pub last_at: Option<DateTime<Utc>>,
    /// Updates applied.
    pub updates: u64,
    /// The distance goal, metres, if one was set at the start.
    pub goal_distance_m: Option<f64>,
    /// Whether `WorkoutGoalReached` has been recorded.
    pub goal_reached: bool,
}

/// The goal policy: `WorkoutGoalReached` once, when a reported or final distance first
/// meets the goal set at the start.
fn goal_reached(
    state: &WorkoutState,
    distance_m: Option<f64>,
    at: DateTime<Utc>,
) -> Option<DomainEvent> {
    let goal = state.goal_distance_m?;
    let distance = distance_m?;
    (!state.goal_reached && goal > 0.0 && distance >= goal).then(|| {
        WorkoutGoalReached {
            workout_id: state.workout_id,
            user_id: state.user_id.clone(),
            sport: state.sport.clone(),
            goal_distance_m: goal,
            distance_m: distance,
            reached_at: at,
        }
        .into()
    })
}

/// What an athlete (or their watch) can ask of a workout.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkoutCommand {
    /// Start a new workout.
    Start {
        /// The id (chosen by the caller).
        workout_id: Uuid,
        /// The athlete.
        user_id: String,
        /// The sport.
        sport: String,
        /// Optional distance goal, metres.
        goal_distance_m: Option<f64>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Report progress.
    Update {
        /// Total distance so far, metres.
        distance_m: Option<f64>,
        /// Heart rate.
        heart_rate: Option<u32>,
        /// Current speed, m/s.
        speed_mps: Option<f64>,
        /// New GPS fixes.
        points: Vec<GeoPoint>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Pause.
    Pause {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Resume after a pause.
    Resume {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Finish and compute totals.
    Complete {
        /// Final total distance, metres (default: the last reported).
        distance_m: Option<f64>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Abandon.
    Cancel {
        /// Why.
        reason: Option<String>,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// The workout aggregate.
#[derive(Debug)]
pub struct Workout;

fn check_time(state: &WorkoutState, at: DateTime<Utc>) -> Result<(), DomainError> {
    match state.last_at {
        Some(last) if at < last => Err(DomainError::TimeTravel(at)),
        _ => Ok(()),
    }
}

fn check_distance(distance: Option<f64>) -> Result<(), DomainError> {
    match distance {
        Some(d) if !d.is_finite() || !(0.0..=1_000_000.0).contains(&d) => Err(
            DomainError::InvalidMeasurement(format!("distance {d} m is outside 0..=1000000")),
        ),
        _ => Ok(()),
    }
}

/// The most GPS points one update may carry.
pub const MAX_POINTS: usize = 500;

fn check_measurements(
    distance_m: Option<f64>,
    heart_rate: Option<u32>,
    speed_mps: Option<f64>,
    points: &[GeoPoint],
) -> Result<(), DomainError> {
    check_distance(distance_m)?;
    if let Some(hr) = heart_rate {
        if !(20..=250).contains(&hr) {
            return Err(DomainError::InvalidMeasurement(format!(
                "heart rate {hr} is outside 20..=250"
            )));
        }
    }
    if let Some(v) = speed_mps {
        if !v.is_finite() || !(0.0..=100.0).contains(&v) {
            return Err(DomainError::InvalidMeasurement(format!(
                "speed {v} m/s is outside 0..=100"
            )));
        }
    }
    if points.len() > MAX_POINTS {
        return Err(DomainError::InvalidMeasurement(format!(
            "{} points in one update; at most {MAX_POINTS}",
            points.len()
        )));
    }
    for p in points {
        let ok = p.lat.is_finite()
            && p.lon.is_finite()
            && (-90.0..=90.0).contains(&p.lat)
            && (-180.0..=180.0).contains(&p.lon);
        if !ok {
            return Err(DomainError::InvalidMeasurement(format!(
                "point ({}, {}) is not a coordinate",
                p.lat, p.lon
            )));
        }
    }
    Ok(())
}

/// Running workouts accept everything; paused ones only resume/complete/cancel.
fn require_running(state: &WorkoutState) -> Result<(), DomainError> {
    match state.status {
        WorkoutStatus::Active => Ok(()),
        WorkoutStatus::Paused => Err(DomainError::WorkoutPaused),
        WorkoutStatus::None => Err(DomainError::WorkoutNotFound),
        WorkoutStatus::Completed | WorkoutStatus::Cancelled => Err(DomainError::WorkoutFinished),
    }
}

fn require_unfinished(state: &WorkoutState) -> Result<(), DomainError> {
    match state.status {
        WorkoutStatus::Active | WorkoutStatus::Paused => Ok(()),
        WorkoutStatus::None => Err(DomainError::WorkoutNotFound),
        WorkoutStatus::Completed | WorkoutStatus::Cancelled => Err(DomainError::WorkoutFinished),
    }
}

impl Aggregate for Workout {
    type State = WorkoutState;
    type Command = WorkoutCommand;

    fn decide(
        state: &WorkoutState,
        command: WorkoutCommand,
    ) -> Result<Vec<DomainEvent>, DomainError> {
        let id = state.workout_id;
        let event: DomainEvent = match command {
            WorkoutCommand::Start {
                workout_id,
                user_id,
                sport,
                goal_distance_m,
                at,
            } => {
                if state.status != WorkoutStatus::None {
                    return Err(DomainError::WorkoutAlreadyStarted);
                }
                if sport.trim().is_empty() || user_id.trim().is_empty() {
                    return Err(DomainError::InvalidMeasurement(
                        "sport and user_id are required".into(),
                    ));
                }
                check_distance(goal_distance_m)?;
                WorkoutStarted {
                    workout_id,
                    user_id,
                    sport,
                    goal_distance_m,
                    started_at: at,
                }
                .into()
            }
            WorkoutCommand::Update {
                distance_m,
                heart_rate,
                speed_mps,
                points,
                at,
            } => {
                require_running(state)?;
                check_time(state, at)?;
                check_measurements(distance_m, heart_rate, speed_mps, &points)?;
                let goal = goal_reached(state, distance_m, at);
                let updated = WorkoutUpdated {
                    workout_id: id,
                    distance_m,
                    heart_rate,
                    speed_mps,
                    points,
                    updated_at: at,
                }
                .into();
                return Ok(std::iter::once(updated).chain(goal).collect());
            }
            WorkoutCommand::Pause { at } => {
                require_running(state)?;
                check_time(state, at)?;
                WorkoutPaused {
                    workout_id: id,
                    paused_at: at,
                }
                .into()
            }
            WorkoutCommand::Resume { at } => {
                require_unfinished(state)?;
                if state.status != WorkoutStatus::Paused {
                    return Err(DomainError::WorkoutNotPaused);
                }
                check_time(state, at)?;
                WorkoutResumed {
                    workout_id: id,
                    resumed_at: at,
                }
                .into()
            }
            WorkoutCommand::Complete { distance_m, at } => {
                require_unfinished(state)?;
                check_time(state, at)?;
                check_distance(distance_m)?;
                let running = state
                    .active_since
                    .map_or(0, |since| (at - since).num_seconds().max(0));
                let active_seconds = state.active_seconds.saturating_add(running);
                let distance_m = distance_m.unwrap_or(state.distance_m);
                let avg_speed_mps = if active_seconds > 0 {
                    distance_m / active_seconds as f64
                } else {
                    0.0
                };
                let goal = goal_reached(state, Some(distance_m), at);
                let completed = WorkoutCompleted {
                    workout_id: id,
                    user_id: state.user_id.clone(),
                    sport: state.sport.clone(),
                    distance_m,
                    active_seconds,
                    avg_speed_mps,
                    max_heart_rate: state.max_heart_rate,
                    completed_at: at,
                }
                .into();
                return Ok(goal.into_iter().chain([completed]).collect());
            }
            WorkoutCommand::Cancel { reason, at } => {
                require_unfinished(state)?;
                check_time(state, at)?;
                WorkoutCancelled {
                    workout_id: id,
                    reason,
                    cancelled_at: at,
                }
                .into()
            }
        };
        Ok(vec![event])
    }

    fn evolve(mut state: WorkoutState, event: &DomainEvent) -> WorkoutState {
        match event {
            DomainEvent::WorkoutStarted(e) => {
                state.status = WorkoutStatus::Active;
                state.workout_id = e.workout_id;
                state.user_id = e.user_id.clone();
                state.sport = e.sport.clone();
                state.goal_distance_m = e.goal_distance_m;
                state.active_since = Some(e.started_at);
                state.last_at = Some(e.started_at);
            }
            DomainEvent::WorkoutUpdated(e) => {
                if let Some(d) = e.distance_m {
                    state.distance_m = d;
                }
                if let Some(hr) = e.heart_rate {
                    state.max_heart_rate = Some(state.max_heart_rate.map_or(hr, |m| m.max(hr)));
                }
                state.updates = state.updates.saturating_add(1);
                state.last_at = Some(e.updated_at);
            }
            DomainEvent::WorkoutPaused(e) => {
                if let Some(since) = state.active_since.take() {
                    state.active_seconds = state
                        .active_seconds
                        .saturating_add((e.paused_at - since).num_seconds().max(0));
                }
                state.status = WorkoutStatus::Paused;
                state.last_at = Some(e.paused_at);
            }
            DomainEvent::WorkoutResumed(e) => {
                state.status = WorkoutStatus::Active;
                state.active_since = Some(e.resumed_at);
                state.last_at = Some(e.resumed_at);
            }
            DomainEvent::WorkoutCompleted(e) => {
                state.status = WorkoutStatus::Completed;
                state.active_seconds = e.active_seconds;
                state.distance_m = e.distance_m;
                state.active_since = None;
                state.last_at = Some(e.completed_at);
            }
            DomainEvent::WorkoutCancelled(e) => {
                state.status = WorkoutStatus::Cancelled;
                state.active_since = None;
                state.last_at = Some(e.cancelled_at);
            }
            DomainEvent::WorkoutGoalReached(_) => state.goal_reached = true,
            _ => {}
        }
        state
    }
}

#[cfg(test)]
mod tests;

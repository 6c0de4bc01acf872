//! Workouts (DOMAIN.md §2). Stream `workout-{workout_id}`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A GPS fix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    /// Latitude in degrees (-90..=90).
    pub lat: f64,
    /// Longitude in degrees (-180..=180).
    pub lon: f64,
    /// When it was taken.
    pub at: DateTime<Utc>,
}

/// A workout began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkoutStarted {
    /// The workout.
    pub workout_id: Uuid,
    /// The athlete.
    pub user_id: String,
    /// `running`, `cycling`, `swimming`, …
    pub sport: String,
    /// Optional distance goal in metres.
    pub goal_distance_m: Option<f64>,
    /// When.
    pub started_at: DateTime<Utc>,
}

/// Progress of a running workout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkoutUpdated {
    /// The workout.
    pub workout_id: Uuid,
    /// Total distance so far, metres.
    pub distance_m: Option<f64>,
    /// Heart rate, beats per minute.
    pub heart_rate: Option<u32>,
    /// Current speed, metres per second.
    pub speed_mps: Option<f64>,
    /// New GPS fixes since the last update.
    pub points: Vec<GeoPoint>,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// The athlete paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkoutPaused {
    /// The workout.
    pub workout_id: Uuid,
    /// When.
    pub paused_at: DateTime<Utc>,
}

/// The athlete resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkoutResumed {
    /// The workout.
    pub workout_id: Uuid,
    /// When.
    pub resumed_at: DateTime<Utc>,
}

/// The workout finished, with its totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkoutCompleted {
    /// The workout.
    pub workout_id: Uuid,
    /// The athlete.
    pub user_id: String,
    /// The sport.
    pub sport: String,
    /// Total distance, metres.
    pub distance_m: f64,
    /// Time moving (pauses excluded), seconds.
    pub active_seconds: i64,
    /// Average speed over the active time, metres per second.
    pub avg_speed_mps: f64,
    /// Highest heart rate reported.
    pub max_heart_rate: Option<u32>,
    /// When.
    pub completed_at: DateTime<Utc>,
}

/// The workout was abandoned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkoutCancelled {
    /// The workout.
    pub workout_id: Uuid,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub cancelled_at: DateTime<Utc>,
}

/// The workout's distance goal was reached: once per workout, by the update or the
/// completion whose distance first met `goal_distance_m`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkoutGoalReached {
    /// The workout.
    pub workout_id: Uuid,
    /// The athlete.
    pub user_id: String,
    /// The sport.
    pub sport: String,
    /// The goal, metres.
    pub goal_distance_m: f64,
    /// The distance that met it, metres.
    pub distance_m: f64,
    /// When.
    pub reached_at: DateTime<Utc>,
}

//! The queries of `workouts.v2`: what the read routes answer from its tables.

use serde::Serialize;
use sqlx::Row;

use crate::sql::{from_millis, millis, ReadDb};
use crate::Result;

/// A workout's summary and details.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WorkoutView {
    /// The workout.
    #[schemars(with = "uuid::Uuid")]
    pub workout_id: String,
    /// The athlete.
    pub user_id: String,
    /// The sport.
    pub sport: String,
    /// `active`, `paused`, `completed`, `cancelled`.
    pub status: String,
    /// Start.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// End.
    pub ended_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Metres.
    pub distance_m: f64,
    /// Seconds moving (when completed).
    pub active_seconds: i64,
    /// m/s (when completed).
    pub avg_speed_mps: Option<f64>,
    /// Highest heart rate.
    pub max_heart_rate: Option<i64>,
    /// Goal, metres.
    pub goal_distance_m: Option<f64>,
    /// Progress updates received.
    pub updates: i64,
    /// Route points recorded.
    pub points: i64,
}

const COLUMNS: &str =
    "workout_id, user_id, sport, status, started_at, ended_at, distance_m, active_seconds, \
                       avg_speed_mps, max_heart_rate, goal_distance_m, updates, points";

fn view(r: &sqlx::any::AnyRow) -> Result<WorkoutView> {
    Ok(WorkoutView {
        workout_id: r.try_get("workout_id")?,
        user_id: r.try_get("user_id")?,
        sport: r.try_get("sport")?,
        status: r.try_get("status")?,
        started_at: from_millis(r.try_get("started_at")?),
        ended_at: r.try_get::<Option<i64>, _>("ended_at")?.map(from_millis),
        distance_m: r.try_get("distance_m")?,
        active_seconds: r.try_get("active_seconds")?,
        avg_speed_mps: r.try_get("avg_speed_mps")?,
        max_heart_rate: r.try_get("max_heart_rate")?,
        goal_distance_m: r.try_get("goal_distance_m")?,
        updates: r.try_get("updates")?,
        points: r.try_get("points")?,
    })
}

/// One workout.
pub async fn get(db: &ReadDb, workout_id: &str) -> Result<Option<WorkoutView>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM rm_workouts WHERE workout_id = $1"
    ))
    .bind(workout_id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(view).transpose()
}

/// A user's workouts started in `[from, to)`, newest first, paged.
pub async fn list(
    db: &ReadDb,
    user_id: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<WorkoutView>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM rm_workouts WHERE user_id = $1 AND started_at >= $2 AND started_at < $3 \
         ORDER BY started_at DESC, workout_id LIMIT $4 OFFSET $5"
    ))
    .bind(user_id)
    .bind(millis(from))
    .bind(millis(to))
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(view).collect()
}

/// A route point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RoutePoint {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A workout's route, in recording order.
pub async fn route(db: &ReadDb, workout_id: &str) -> Result<Vec<RoutePoint>> {
    let rows = sqlx::query(
        "SELECT p.lat, p.lon, p.at FROM rm_workouts w \
         JOIN rm_workout_points p ON p.workout_position = w.position \
         WHERE w.workout_id = $1 ORDER BY p.position, p.idx",
    )
    .bind(workout_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RoutePoint {
                lat: r.try_get("lat")?,
                lon: r.try_get("lon")?,
                at: from_millis(r.try_get("at")?),
            })
        })
        .collect()
}

/// A user's totals and records.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WorkoutStats {
    /// Completed workouts.
    pub workouts: i64,
    /// Seconds moving.
    pub total_seconds: i64,
    /// Metres.
    pub total_distance_m: f64,
    /// Distance over time, m/s.
    pub average_speed_mps: f64,
    /// Records.
    pub longest_distance_m: f64,
    /// Records.
    pub longest_seconds: i64,
    /// Records.
    pub fastest_avg_speed_mps: f64,
    /// Per ISO week, newest first (up to 12).
    pub weekly: Vec<WeekActivity>,
}

/// One week of activity.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WeekActivity {
    /// e.g. `2026-W48`.
    pub week: String,
    /// Completed workouts.
    pub workouts: i64,
    /// Metres.
    pub distance_m: f64,
    /// Seconds.
    pub seconds: i64,
}

/// A user's stats; `None` before their first completed workout. Summed from their
/// completed workouts (found through `rm_workouts_user`).
pub async fn stats(db: &ReadDb, user_id: &str) -> Result<Option<WorkoutStats>> {
    let r = sqlx::query(
        "SELECT COUNT(*) AS workouts, CAST(COALESCE(SUM(active_seconds), 0) AS BIGINT) AS total_seconds, \
         COALESCE(SUM(distance_m), 0.0) AS total_distance_m, \
         COALESCE(MAX(distance_m), 0.0) AS longest_distance_m, \
         CAST(COALESCE(MAX(active_seconds), 0) AS BIGINT) AS longest_seconds, \
         COALESCE(MAX(avg_speed_mps), 0.0) AS fastest_avg_speed_mps \
         FROM rm_workouts WHERE user_id = $1 AND status = 'completed'",
    )
    .bind(user_id)
    .fetch_one(db.pool())
    .await?;
    let workouts: i64 = r.try_get("workouts")?;
    if workouts == 0 {
        return Ok(None);
    }
    let weekly = sqlx::query(
        "SELECT week, COUNT(*) AS workouts, COALESCE(SUM(distance_m), 0.0) AS distance_m, \
         CAST(COALESCE(SUM(active_seconds), 0) AS BIGINT) AS seconds \
         FROM rm_workouts WHERE user_id = $1 AND status = 'completed' AND week IS NOT NULL \
         GROUP BY week ORDER BY week DESC LIMIT 12",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|w| {
        Ok(WeekActivity {
            week: w.try_get("week")?,
            workouts: w.try_get("workouts")?,
            distance_m: w.try_get("distance_m")?,
            seconds: w.try_get("seconds")?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let total_seconds: i64 = r.try_get("total_seconds")?;
    let total_distance_m: f64 = r.try_get("total_distance_m")?;
    Ok(Some(WorkoutStats {
        workouts,
        total_seconds,
        total_distance_m,
        average_speed_mps: if total_seconds > 0 {
            total_distance_m / total_seconds as f64
        } else {
            0.0
        },
        longest_distance_m: r.try_get("longest_distance_m")?,
        longest_seconds: r.try_get("longest_seconds")?,
        fastest_avg_speed_mps: r.try_get("fastest_avg_speed_mps")?,
        weekly,
    }))
}

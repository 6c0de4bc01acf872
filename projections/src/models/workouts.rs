//! `workouts.v1`: summary/details, the list per user and period, route points, stats
//! (total time, distance, average speed, records) and weekly activity.

use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use serde::Serialize;
use sqlx::Row;

use super::{iso_week, poison};
use crate::runtime::{Projection, RelationalProjection, SqlTx};
use crate::sql::{from_millis, millis, ReadDb};
use crate::Result;

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkoutsProjection;

impl Projection for WorkoutsProjection {
    fn name(&self) -> &'static str {
        "workouts.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("Workout")
    }
}

impl RelationalProjection for WorkoutsProjection {
    fn schema(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS rm_workouts (
                workout_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, sport TEXT NOT NULL, status TEXT NOT NULL,
                started_at BIGINT NOT NULL, ended_at BIGINT, goal_distance_m DOUBLE PRECISION,
                distance_m DOUBLE PRECISION NOT NULL, active_seconds BIGINT NOT NULL,
                avg_speed_mps DOUBLE PRECISION, max_heart_rate BIGINT, last_heart_rate BIGINT,
                last_speed_mps DOUBLE PRECISION, updates BIGINT NOT NULL, points BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS rm_workouts_user ON rm_workouts (user_id, started_at)",
            "CREATE TABLE IF NOT EXISTS rm_workout_points (
                workout_id TEXT NOT NULL, position BIGINT NOT NULL, idx BIGINT NOT NULL,
                lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL, at BIGINT NOT NULL,
                PRIMARY KEY (workout_id, position, idx))",
            "CREATE TABLE IF NOT EXISTS rm_workout_stats (
                user_id TEXT PRIMARY KEY, workouts BIGINT NOT NULL, total_seconds BIGINT NOT NULL,
                total_distance_m DOUBLE PRECISION NOT NULL, longest_distance_m DOUBLE PRECISION NOT NULL,
                longest_seconds BIGINT NOT NULL, fastest_avg_speed_mps DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE IF NOT EXISTS rm_workout_weeks (
                user_id TEXT NOT NULL, week TEXT NOT NULL, workouts BIGINT NOT NULL,
                distance_m DOUBLE PRECISION NOT NULL, seconds BIGINT NOT NULL, PRIMARY KEY (user_id, week))",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "rm_workouts",
            "rm_workout_points",
            "rm_workout_stats",
            "rm_workout_weeks",
        ]
    }

    async fn apply(
        &self,
        tx: &mut SqlTx<'_>,
        event: &DomainEvent,
        record: &RecordedEvent,
    ) -> Result<()> {
        match event {
            DomainEvent::WorkoutStarted(e) => {
                sqlx::query(&tx.sql("INSERT INTO rm_workouts (workout_id, user_id, sport, status, started_at, goal_distance_m, \
                     distance_m, active_seconds, updates, points) VALUES ($1, $2, $3, 'active', $4, $5, 0, 0, 0, 0) \
                     ON CONFLICT (workout_id) DO NOTHING"))
                .bind(e.workout_id.to_string())
                .bind(&e.user_id)
                .bind(&e.sport)
                .bind(millis(e.started_at))
                .bind(e.goal_distance_m)
                .execute(tx.conn())
                .await?;
            }
            DomainEvent::WorkoutUpdated(e) => {
                let id = e.workout_id.to_string();
                let updated = sqlx::query(&tx.sql("UPDATE rm_workouts SET distance_m = COALESCE($1, distance_m), \
                     last_heart_rate = COALESCE($2, last_heart_rate), last_speed_mps = COALESCE($3, last_speed_mps), \
                     max_heart_rate = CASE WHEN $2 IS NOT NULL AND (max_heart_rate IS NULL OR $2 > max_heart_rate) \
                       THEN $2 ELSE max_heart_rate END, \
                     updates = updates + 1, points = points + $4 WHERE workout_id = $5"))
                .bind(e.distance_m)
                .bind(e.heart_rate.map(i64::from))
                .bind(e.speed_mps)
                .bind(e.points.len() as i64)
                .bind(&id)
                .execute(tx.conn())
                .await?;
                if updated.rows_affected() == 0 {
                    return Err(poison(record, "update of a workout that never started"));
                }
                for (i, p) in e.points.iter().enumerate() {
                    sqlx::query(&tx.sql("INSERT INTO rm_workout_points (workout_id, position, idx, lat, lon, at) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (workout_id, position, idx) DO NOTHING"))
                    .bind(&id)
                    .bind(record.global_position.0)
                    .bind(i as i64)
                    .bind(p.lat)
                    .bind(p.lon)
                    .bind(millis(p.at))
                    .execute(tx.conn())
                    .await?;
                }
            }
            DomainEvent::WorkoutPaused(e) => {
                set_status(tx, &e.workout_id.to_string(), "paused").await?
            }
            DomainEvent::WorkoutResumed(e) => {
                set_status(tx, &e.workout_id.to_string(), "active").await?
            }
            DomainEvent::WorkoutCancelled(e) => {
                sqlx::query(&tx.sql("UPDATE rm_workouts SET status = 'cancelled', ended_at = $1 WHERE workout_id = $2"))
                    .bind(millis(e.cancelled_at))
                    .bind(e.workout_id.to_string())
                    .execute(tx.conn())
                    .await?;
            }
            DomainEvent::WorkoutCompleted(e) => {
                sqlx::query(&tx.sql("UPDATE rm_workouts SET status = 'completed', ended_at = $1, distance_m = $2, active_seconds = $3, \
                     avg_speed_mps = $4 WHERE workout_id = $5"))
                .bind(millis(e.completed_at))
                .bind(e.distance_m)
                .bind(e.active_seconds)
                .bind(e.avg_speed_mps)
                .bind(e.workout_id.to_string())
                .execute(tx.conn())
                .await?;
                sqlx::query(&tx.sql("INSERT INTO rm_workout_stats AS s (user_id, workouts, total_seconds, total_distance_m, \
                     longest_distance_m, longest_seconds, fastest_avg_speed_mps) VALUES ($1, 1, $2, $3, $3, $2, $4) \
                     ON CONFLICT (user_id) DO UPDATE SET workouts = s.workouts + 1, \
                     total_seconds = s.total_seconds + excluded.total_seconds, \
                     total_distance_m = s.total_distance_m + excluded.total_distance_m, \
                     longest_distance_m = CASE WHEN excluded.longest_distance_m > s.longest_distance_m \
                       THEN excluded.longest_distance_m ELSE s.longest_distance_m END, \
                     longest_seconds = CASE WHEN excluded.longest_seconds > s.longest_seconds \
                       THEN excluded.longest_seconds ELSE s.longest_seconds END, \
                     fastest_avg_speed_mps = CASE WHEN excluded.fastest_avg_speed_mps > s.fastest_avg_speed_mps \
                       THEN excluded.fastest_avg_speed_mps ELSE s.fastest_avg_speed_mps END"))
                .bind(&e.user_id)
                .bind(e.active_seconds)
                .bind(e.distance_m)
                .bind(e.avg_speed_mps)
                .execute(tx.conn())
                .await?;
                sqlx::query(&tx.sql("INSERT INTO rm_workout_weeks AS w (user_id, week, workouts, distance_m, seconds) VALUES ($1, $2, 1, $3, $4) \
                     ON CONFLICT (user_id, week) DO UPDATE SET workouts = w.workouts + 1, \
                     distance_m = w.distance_m + excluded.distance_m, seconds = w.seconds + excluded.seconds"))
                .bind(&e.user_id)
                .bind(iso_week(e.completed_at))
                .bind(e.distance_m)
                .bind(e.active_seconds)
                .execute(tx.conn())
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

async fn set_status(tx: &mut SqlTx<'_>, workout_id: &str, status: &str) -> Result<()> {
    sqlx::query(&tx.sql("UPDATE rm_workouts SET status = $1 WHERE workout_id = $2"))
        .bind(status)
        .bind(workout_id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// A workout's summary and details.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkoutView {
    /// The workout.
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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
        "SELECT lat, lon, at FROM rm_workout_points WHERE workout_id = $1 ORDER BY position, idx",
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// A user's stats; `None` before their first completed workout.
pub async fn stats(db: &ReadDb, user_id: &str) -> Result<Option<WorkoutStats>> {
    let Some(r) = sqlx::query(
        "SELECT workouts, total_seconds, total_distance_m, longest_distance_m, longest_seconds, fastest_avg_speed_mps \
         FROM rm_workout_stats WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?
    else {
        return Ok(None);
    };
    let weekly = sqlx::query("SELECT week, workouts, distance_m, seconds FROM rm_workout_weeks WHERE user_id = $1 ORDER BY week DESC LIMIT 12")
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
        workouts: r.try_get("workouts")?,
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

//! `workouts.v2`: summary/details, the list per user and period, route points, stats
//! (total time, distance, average speed, records) and weekly activity.
//!
//! Two tables: a row per workout and a row per route point. A user's stats and weeks
//! are summed from their completed workouts when asked (`v1` kept them in two more
//! tables, upserted for every completion: a third of the rows it wrote, and a read of
//! those rows before every batch). A route point is keyed by its workout's position in
//! the log (the position of its `WorkoutStarted`) rather than by the workout's id, so
//! the points of the workouts under way land at the end of the key's index instead of
//! at random places in it.

use eventfold_event_schemas::{DomainEvent, RecordedEvent};

use super::{iso_week, poison};
use crate::runtime::{PgBatch, PgTx, Projection, RelationalProjection, SqlTx};
use crate::sql::{in_list, millis, placeholders, ModelRow, ROWS};
use crate::Result;

mod pg;
mod queries;

pub use queries::{get, list, route, stats, RoutePoint, WeekActivity, WorkoutStats, WorkoutView};

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkoutsProjection;

impl Projection for WorkoutsProjection {
    fn name(&self) -> &'static str {
        "workouts.v2"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("Workout")
    }
}

#[async_trait::async_trait]
impl RelationalProjection for WorkoutsProjection {
    fn schema(&self) -> &'static [&'static str] {
        &[
            // `position`: of the workout's `WorkoutStarted` in the log, its route's key;
            // `week`: the ISO week it was completed in (NULL until then).
            "CREATE TABLE IF NOT EXISTS rm_workouts (
                workout_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, sport TEXT NOT NULL, status TEXT NOT NULL,
                started_at BIGINT NOT NULL, ended_at BIGINT, goal_distance_m DOUBLE PRECISION,
                distance_m DOUBLE PRECISION NOT NULL, active_seconds BIGINT NOT NULL,
                avg_speed_mps DOUBLE PRECISION, max_heart_rate BIGINT, last_heart_rate BIGINT,
                last_speed_mps DOUBLE PRECISION, updates BIGINT NOT NULL, points BIGINT NOT NULL,
                position BIGINT NOT NULL, week TEXT)",
            "CREATE INDEX IF NOT EXISTS rm_workouts_user ON rm_workouts (user_id, started_at)",
            // `position`: of the `WorkoutUpdated` that carried the point; `idx`: its
            // place among that event's points.
            "CREATE TABLE IF NOT EXISTS rm_workout_points (
                workout_position BIGINT NOT NULL, position BIGINT NOT NULL, idx BIGINT NOT NULL,
                lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL, at BIGINT NOT NULL,
                PRIMARY KEY (workout_position, position, idx))",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_workouts", "rm_workout_points"]
    }

    fn retired(&self) -> &'static [&'static str] {
        &["rm_workout_stats", "rm_workout_weeks"]
    }

    async fn apply(
        &self,
        tx: &mut SqlTx<'_>,
        event: &DomainEvent,
        record: &RecordedEvent,
    ) -> Result<()> {
        fold(tx, &[(record, event)]).await
    }

    async fn apply_batch(
        &self,
        tx: &mut SqlTx<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()> {
        fold(tx, events).await
    }

    fn postgres(&self) -> Option<&dyn PgBatch> {
        Some(self)
    }
}

/// On PostgreSQL: the same fold over the workouts kept from the batch before and the
/// others it touches (read by key, one statement), written with one statement over
/// `UNNEST`ed arrays for both tables — NULLs as NULLs.
#[async_trait::async_trait]
impl PgBatch for WorkoutsProjection {
    async fn apply_batch(
        &self,
        tx: &mut PgTx<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()> {
        // The workouts under way after the batch before are kept in memory (as it
        // wrote them): only the others are read.
        let mut workouts: Loaded = tx.take_kept().unwrap_or_default();
        let missing: Vec<String> = touched(events)
            .into_iter()
            .filter(|id| !workouts.contains_key(id))
            .collect();
        workouts.extend(pg::load(tx, &missing).await?);
        let changes = fold_in_memory(events, &mut workouts)?;
        pg::write(tx, &changes).await?;
        // What the next batch may find here: the workouts still under way.
        workouts.extend(changes.workouts.into_iter().map(|(id, w, _)| (id, w)));
        workouts.retain(|_, w| matches!(w.status, "active" | "paused"));
        if workouts.len() > KEEP {
            let over: Vec<String> = workouts.keys().skip(KEEP).cloned().collect();
            for id in over {
                workouts.remove(&id);
            }
        }
        tx.keep(workouts);
        Ok(())
    }
}

/// At most this many workouts under way are kept in memory between batches (the rest
/// are read when their next event comes).
const KEEP: usize = 10_000;

/// A row of `rm_workouts`.
#[derive(Debug, Clone)]
struct Workout {
    user_id: String,
    sport: String,
    status: &'static str,
    started_at: i64,
    ended_at: Option<i64>,
    goal_distance_m: Option<f64>,
    distance_m: f64,
    active_seconds: i64,
    avg_speed_mps: Option<f64>,
    max_heart_rate: Option<i64>,
    last_heart_rate: Option<i64>,
    last_speed_mps: Option<f64>,
    updates: i64,
    points: i64,
    /// Of its `WorkoutStarted` in the log: its route points' key.
    position: i64,
    /// The ISO week it was completed in.
    week: Option<String>,
}

/// A row of `rm_workout_points`.
#[derive(Debug, Clone)]
struct Point {
    workout_position: i64,
    position: i64,
    idx: i64,
    lat: f64,
    lon: f64,
    at: i64,
}

fn status_of(text: &str) -> &'static str {
    match text {
        "paused" => "paused",
        "completed" => "completed",
        "cancelled" => "cancelled",
        _ => "active",
    }
}

// Multi-row statements are prepared once per row count (full chunks share one text).
// A NULL `f64` must never be bound: sqlx's `Any` driver declares it `float4` on
// PostgreSQL and the prepared statement keeps that type, so a later value is rejected
// ("incorrect binary data format"). Optional doubles are bound as NaN and turned back
// into NULL in SQL (`NULLIF($n, 'NaN')`; SQLite stores a bound NaN as NULL already).

/// Wraps the placeholders of the optional-double columns (1-based `columns` of rows
/// `width` wide) of a `placeholders` list in `NULLIF(…, 'NaN')`.
fn nullable_doubles(list: &str, width: usize, columns: &[usize]) -> String {
    let mut out = String::with_capacity(list.len() * 2);
    for (i, cell) in list.split(", ").enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let (open, rest) = cell.split_at(cell.find('$').unwrap_or(0));
        let end = rest.find(')').unwrap_or(rest.len());
        let (param, close) = rest.split_at(end);
        if columns.contains(&(i % width + 1)) {
            out.push_str(&format!("{open}NULLIF({param}, 'NaN'){close}"));
        } else {
            out.push_str(cell);
        }
    }
    out
}

/// The workouts a batch must read: those it touches that may already exist. A workout
/// whose first event in the batch is its stream's first event (`WorkoutStarted` at
/// version 0 of `workout-{id}`, the only event that creates its row) cannot have a row
/// yet: it is not read. In a rebuild that is most of them.
fn touched(events: &[(&RecordedEvent, &DomainEvent)]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    for (record, event) in events {
        let id = match event {
            DomainEvent::WorkoutStarted(e) => e.workout_id,
            DomainEvent::WorkoutUpdated(e) => e.workout_id,
            DomainEvent::WorkoutPaused(e) => e.workout_id,
            DomainEvent::WorkoutResumed(e) => e.workout_id,
            DomainEvent::WorkoutCancelled(e) => e.workout_id,
            DomainEvent::WorkoutCompleted(e) => e.workout_id,
            _ => continue,
        };
        let id = id.to_string();
        if !seen.insert(id.clone()) {
            continue;
        }
        let creates = matches!(event, DomainEvent::WorkoutStarted(_))
            && record.stream_version == 0
            && record.stream_id.as_str().strip_prefix("workout-") == Some(id.as_str());
        if !creates {
            ids.insert(id);
        }
    }
    ids.into_iter().collect()
}

/// The workouts a batch read before folding.
type Loaded = std::collections::HashMap<String, Workout>;

/// The rows a batch writes.
#[derive(Debug, Default)]
struct Changes {
    /// Each changed workout, and whether the batch created its row (its
    /// `WorkoutStarted` is in the batch) rather than changed one that existed.
    workouts: Vec<(String, Workout, bool)>,
    points: Vec<Point>,
}

/// Folds a batch over the rows it read: every event applied in memory — in order,
/// with the same arithmetic as one statement per event — each changed row once.
fn fold_in_memory(
    events: &[(&RecordedEvent, &DomainEvent)],
    workouts: &mut Loaded,
) -> Result<Changes> {
    let mut changed = std::collections::BTreeSet::new();
    let mut created = std::collections::HashSet::new();
    let mut points = Vec::new();
    for (record, event) in events {
        match event {
            DomainEvent::WorkoutStarted(e) => {
                let id = e.workout_id.to_string();
                if !workouts.contains_key(&id) {
                    workouts.insert(
                        id.clone(),
                        Workout {
                            user_id: e.user_id.clone(),
                            sport: e.sport.clone(),
                            status: "active",
                            started_at: millis(e.started_at),
                            ended_at: None,
                            goal_distance_m: e.goal_distance_m,
                            distance_m: 0.0,
                            active_seconds: 0,
                            avg_speed_mps: None,
                            max_heart_rate: None,
                            last_heart_rate: None,
                            last_speed_mps: None,
                            updates: 0,
                            points: 0,
                            position: record.global_position.0,
                            week: None,
                        },
                    );
                    created.insert(id.clone());
                    changed.insert(id);
                }
            }
            DomainEvent::WorkoutUpdated(e) => {
                let id = e.workout_id.to_string();
                let Some(w) = workouts.get_mut(&id) else {
                    return Err(poison(record, "update of a workout that never started"));
                };
                let heart_rate = e.heart_rate.map(i64::from);
                w.distance_m = e.distance_m.unwrap_or(w.distance_m);
                w.last_heart_rate = heart_rate.or(w.last_heart_rate);
                w.last_speed_mps = e.speed_mps.or(w.last_speed_mps);
                if let Some(hr) = heart_rate {
                    if w.max_heart_rate.is_none_or(|max| hr > max) {
                        w.max_heart_rate = Some(hr);
                    }
                }
                w.updates += 1;
                w.points += e.points.len() as i64;
                for (i, p) in e.points.iter().enumerate() {
                    points.push(Point {
                        workout_position: w.position,
                        position: record.global_position.0,
                        idx: i as i64,
                        lat: p.lat,
                        lon: p.lon,
                        at: millis(p.at),
                    });
                }
                changed.insert(id);
            }
            DomainEvent::WorkoutPaused(e) => {
                set_status(workouts, &mut changed, e.workout_id, "paused", None)
            }
            DomainEvent::WorkoutResumed(e) => {
                set_status(workouts, &mut changed, e.workout_id, "active", None)
            }
            DomainEvent::WorkoutCancelled(e) => set_status(
                workouts,
                &mut changed,
                e.workout_id,
                "cancelled",
                Some(millis(e.cancelled_at)),
            ),
            DomainEvent::WorkoutCompleted(e) => {
                let id = e.workout_id.to_string();
                if let Some(w) = workouts.get_mut(&id) {
                    w.status = "completed";
                    w.ended_at = Some(millis(e.completed_at));
                    w.distance_m = e.distance_m;
                    w.active_seconds = e.active_seconds;
                    w.avg_speed_mps = Some(e.avg_speed_mps);
                    w.week = Some(iso_week(e.completed_at));
                    changed.insert(id);
                }
            }
            _ => {}
        }
    }
    Ok(Changes {
        workouts: changed
            .into_iter()
            .filter_map(|id| {
                let created = created.contains(&id);
                workouts.remove(&id).map(|w| (id, w, created))
            })
            .collect(),
        points,
    })
}

/// Folds a batch through portable SQL (SQLite; PostgreSQL without its native form):
/// one read of the rows it touches, multi-row upserts. One event per call gives the
/// same result (the runner isolates a poison event that way).
async fn fold(tx: &mut SqlTx<'_>, events: &[(&RecordedEvent, &DomainEvent)]) -> Result<()> {
    let mut workouts = load_workouts(tx, &touched(events)).await?;
    let changes = fold_in_memory(events, &mut workouts)?;
    write_portable(tx, &changes).await
}

async fn write_portable(tx: &mut SqlTx<'_>, changes: &Changes) -> Result<()> {
    for chunk in changes.workouts.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO rm_workouts ({WORKOUT_COLUMNS}) VALUES {} ON CONFLICT (workout_id) DO UPDATE SET \
             user_id = excluded.user_id, sport = excluded.sport, status = excluded.status, \
             started_at = excluded.started_at, ended_at = excluded.ended_at, \
             goal_distance_m = excluded.goal_distance_m, distance_m = excluded.distance_m, \
             active_seconds = excluded.active_seconds, avg_speed_mps = excluded.avg_speed_mps, \
             max_heart_rate = excluded.max_heart_rate, last_heart_rate = excluded.last_heart_rate, \
             last_speed_mps = excluded.last_speed_mps, updates = excluded.updates, points = excluded.points, \
             position = excluded.position, week = excluded.week",
            nullable_doubles(&placeholders(chunk.len(), 17), 17, &[7, 10, 13])
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for (id, w, _) in chunk {
            query = query
                .bind(id.clone())
                .bind(w.user_id.clone())
                .bind(w.sport.clone())
                .bind(w.status)
                .bind(w.started_at)
                .bind(w.ended_at)
                .bind(w.goal_distance_m.unwrap_or(f64::NAN))
                .bind(w.distance_m)
                .bind(w.active_seconds)
                .bind(w.avg_speed_mps.unwrap_or(f64::NAN))
                .bind(w.max_heart_rate)
                .bind(w.last_heart_rate)
                .bind(w.last_speed_mps.unwrap_or(f64::NAN))
                .bind(w.updates)
                .bind(w.points)
                .bind(w.position)
                .bind(w.week.clone());
        }
        query.execute(tx.conn()).await?;
    }
    for chunk in changes.points.chunks(ROWS * 2) {
        let sql = format!(
            "INSERT INTO rm_workout_points (workout_position, position, idx, lat, lon, at) VALUES {} \
             ON CONFLICT (workout_position, position, idx) DO NOTHING",
            placeholders(chunk.len(), 6)
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for p in chunk {
            query = query
                .bind(p.workout_position)
                .bind(p.position)
                .bind(p.idx)
                .bind(p.lat)
                .bind(p.lon)
                .bind(p.at);
        }
        query.execute(tx.conn()).await?;
    }
    Ok(())
}
fn set_status(
    workouts: &mut std::collections::HashMap<String, Workout>,
    changed: &mut std::collections::BTreeSet<String>,
    workout_id: uuid::Uuid,
    status: &'static str,
    ended_at: Option<i64>,
) {
    let id = workout_id.to_string();
    // Like the UPDATE it stands for: nothing to do for an unknown workout.
    if let Some(w) = workouts.get_mut(&id) {
        w.status = status;
        if ended_at.is_some() {
            w.ended_at = ended_at;
        }
        changed.insert(id);
    }
}

/// A `rm_workouts` row, from either driver.
fn workout_of(r: &impl ModelRow) -> Result<(String, Workout)> {
    Ok((
        r.text("workout_id")?,
        Workout {
            user_id: r.text("user_id")?,
            sport: r.text("sport")?,
            status: status_of(&r.text("status")?),
            started_at: r.int("started_at")?,
            ended_at: r.opt_int("ended_at")?,
            goal_distance_m: r.opt_float("goal_distance_m")?,
            distance_m: r.float("distance_m")?,
            active_seconds: r.int("active_seconds")?,
            avg_speed_mps: r.opt_float("avg_speed_mps")?,
            max_heart_rate: r.opt_int("max_heart_rate")?,
            last_heart_rate: r.opt_int("last_heart_rate")?,
            last_speed_mps: r.opt_float("last_speed_mps")?,
            updates: r.int("updates")?,
            points: r.int("points")?,
            position: r.int("position")?,
            week: r.opt_text("week")?,
        },
    ))
}

const WORKOUT_COLUMNS: &str = "workout_id, user_id, sport, status, started_at, ended_at, goal_distance_m, \
     distance_m, active_seconds, avg_speed_mps, max_heart_rate, last_heart_rate, last_speed_mps, updates, points, \
     position, week";

async fn load_workouts(
    tx: &mut SqlTx<'_>,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Workout>> {
    let mut out = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS * 2) {
        let sql = format!(
            "SELECT {WORKOUT_COLUMNS} FROM rm_workouts WHERE workout_id IN ({})",
            in_list(chunk.len())
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.clone());
        }
        for r in query.fetch_all(tx.conn()).await? {
            let (id, workout) = workout_of(&r)?;
            out.insert(id, workout);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::nullable_doubles;
    use crate::sql::placeholders;

    #[test]
    fn optional_doubles_are_wrapped_in_every_row() {
        assert_eq!(
            nullable_doubles(&placeholders(2, 3), 3, &[2]),
            "($1, NULLIF($2, 'NaN'), $3), ($4, NULLIF($5, 'NaN'), $6)"
        );
        assert_eq!(
            nullable_doubles(&placeholders(1, 2), 2, &[1, 2]),
            "(NULLIF($1, 'NaN'), NULLIF($2, 'NaN'))"
        );
    }
}

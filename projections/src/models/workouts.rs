//! `workouts.v1`: summary/details, the list per user and period, route points, stats
//! (total time, distance, average speed, records) and weekly activity.

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
        "workouts.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("Workout")
    }
}

#[async_trait::async_trait]
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

/// On PostgreSQL: the same fold, the rows it touches read with `= ANY($1)` (one array
/// bound whole) and written with one `UNNEST` statement per table — a batch's columns
/// bound as arrays, NULLs as NULLs.
#[async_trait::async_trait]
impl PgBatch for WorkoutsProjection {
    async fn apply_batch(
        &self,
        tx: &mut PgTx<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()> {
        let touched = touched(events);
        let loaded = pg::load(tx, &touched).await?;
        let changes = fold_in_memory(events, loaded)?;
        pg::write(tx, &changes).await
    }
}

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
}

/// A row of `rm_workout_stats`.
#[derive(Debug, Clone, Copy)]
struct Stats {
    workouts: i64,
    total_seconds: i64,
    total_distance_m: f64,
    longest_distance_m: f64,
    longest_seconds: i64,
    fastest_avg_speed_mps: f64,
}

/// A row of `rm_workout_weeks`.
#[derive(Debug, Clone, Copy)]
struct Week {
    workouts: i64,
    distance_m: f64,
    seconds: i64,
}

/// A row of `rm_workout_points`.
#[derive(Debug, Clone)]
struct Point {
    workout_id: String,
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

/// The rows a batch must read: the workouts it touches that may already exist, and the
/// users of completed workouts. A workout whose first event in the batch is its
/// stream's first event (`WorkoutStarted` at version 0 of `workout-{id}`, the only
/// event that creates its row) cannot have a row yet: it is not read. In a rebuild
/// that is most of them.
fn touched(events: &[(&RecordedEvent, &DomainEvent)]) -> Touched {
    let mut seen = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut users = std::collections::BTreeSet::new();
    let mut weeks = std::collections::BTreeSet::new();
    for (record, event) in events {
        let id = match event {
            DomainEvent::WorkoutStarted(e) => e.workout_id,
            DomainEvent::WorkoutUpdated(e) => e.workout_id,
            DomainEvent::WorkoutPaused(e) => e.workout_id,
            DomainEvent::WorkoutResumed(e) => e.workout_id,
            DomainEvent::WorkoutCancelled(e) => e.workout_id,
            DomainEvent::WorkoutCompleted(e) => {
                users.insert(e.user_id.clone());
                weeks.insert((e.user_id.clone(), iso_week(e.completed_at)));
                e.workout_id
            }
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
    Touched {
        ids: ids.into_iter().collect(),
        users: users.into_iter().collect(),
        weeks: weeks.into_iter().collect(),
    }
}

/// The rows a batch may change: workouts (not those it creates), users' stats, and the
/// (user, ISO week) rows of the weeks its completions fall in.
struct Touched {
    ids: Vec<String>,
    users: Vec<String>,
    weeks: Vec<(String, String)>,
}

/// The rows a batch reads before folding.
#[derive(Debug, Default)]
struct Loaded {
    workouts: std::collections::HashMap<String, Workout>,
    stats: std::collections::HashMap<String, Stats>,
    weeks: std::collections::HashMap<(String, String), Week>,
}

/// The rows a batch writes.
#[derive(Debug, Default)]
struct Changes {
    workouts: Vec<(String, Workout)>,
    points: Vec<Point>,
    stats: Vec<(String, Stats)>,
    weeks: Vec<((String, String), Week)>,
}

/// Folds a batch over the rows it read: every event applied in memory — in order,
/// with the same arithmetic as one statement per event — each changed row once.
fn fold_in_memory(events: &[(&RecordedEvent, &DomainEvent)], loaded: Loaded) -> Result<Changes> {
    let Loaded {
        mut workouts,
        mut stats,
        mut weeks,
    } = loaded;
    let mut changed = std::collections::BTreeSet::new();
    let mut changed_stats = std::collections::BTreeSet::new();
    let mut changed_weeks = std::collections::BTreeSet::new();
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
                        },
                    );
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
                        workout_id: id.clone(),
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
                set_status(&mut workouts, &mut changed, e.workout_id, "paused", None)
            }
            DomainEvent::WorkoutResumed(e) => {
                set_status(&mut workouts, &mut changed, e.workout_id, "active", None)
            }
            DomainEvent::WorkoutCancelled(e) => set_status(
                &mut workouts,
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
                    changed.insert(id);
                }
                stats
                    .entry(e.user_id.clone())
                    .and_modify(|s| {
                        s.workouts += 1;
                        s.total_seconds += e.active_seconds;
                        s.total_distance_m += e.distance_m;
                        if e.distance_m > s.longest_distance_m {
                            s.longest_distance_m = e.distance_m;
                        }
                        if e.active_seconds > s.longest_seconds {
                            s.longest_seconds = e.active_seconds;
                        }
                        if e.avg_speed_mps > s.fastest_avg_speed_mps {
                            s.fastest_avg_speed_mps = e.avg_speed_mps;
                        }
                    })
                    .or_insert(Stats {
                        workouts: 1,
                        total_seconds: e.active_seconds,
                        total_distance_m: e.distance_m,
                        longest_distance_m: e.distance_m,
                        longest_seconds: e.active_seconds,
                        fastest_avg_speed_mps: e.avg_speed_mps,
                    });
                changed_stats.insert(e.user_id.clone());
                let week = (e.user_id.clone(), iso_week(e.completed_at));
                weeks
                    .entry(week.clone())
                    .and_modify(|w| {
                        w.workouts += 1;
                        w.distance_m += e.distance_m;
                        w.seconds += e.active_seconds;
                    })
                    .or_insert(Week {
                        workouts: 1,
                        distance_m: e.distance_m,
                        seconds: e.active_seconds,
                    });
                changed_weeks.insert(week);
            }
            _ => {}
        }
    }
    let take = |changed: std::collections::BTreeSet<String>,
                rows: &mut std::collections::HashMap<String, Workout>| {
        changed
            .into_iter()
            .filter_map(|id| rows.remove(&id).map(|w| (id, w)))
            .collect::<Vec<_>>()
    };
    Ok(Changes {
        workouts: take(changed, &mut workouts),
        points,
        stats: changed_stats
            .into_iter()
            .filter_map(|u| stats.remove(&u).map(|s| (u, s)))
            .collect(),
        weeks: changed_weeks
            .into_iter()
            .filter_map(|k| weeks.remove(&k).map(|w| (k, w)))
            .collect(),
    })
}

/// Folds a batch through portable SQL (SQLite; PostgreSQL without its native form):
/// one read of the rows it touches, multi-row upserts. One event per call gives the
/// same result (the runner isolates a poison event that way).
async fn fold(tx: &mut SqlTx<'_>, events: &[(&RecordedEvent, &DomainEvent)]) -> Result<()> {
    let Touched { ids, users, weeks } = touched(events);
    let workouts = load_workouts(tx, &ids).await?;
    let (stats, weeks) = load_user_rows(tx, &users, &weeks).await?;
    let changes = fold_in_memory(
        events,
        Loaded {
            workouts,
            stats,
            weeks,
        },
    )?;
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
             last_speed_mps = excluded.last_speed_mps, updates = excluded.updates, points = excluded.points",
            nullable_doubles(&placeholders(chunk.len(), 15), 15, &[7, 10, 13])
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for (id, w) in chunk {
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
                .bind(w.points);
        }
        query.execute(tx.conn()).await?;
    }
    for chunk in changes.points.chunks(ROWS * 2) {
        let sql = format!(
            "INSERT INTO rm_workout_points (workout_id, position, idx, lat, lon, at) VALUES {} \
             ON CONFLICT (workout_id, position, idx) DO NOTHING",
            placeholders(chunk.len(), 6)
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for p in chunk {
            query = query
                .bind(p.workout_id.clone())
                .bind(p.position)
                .bind(p.idx)
                .bind(p.lat)
                .bind(p.lon)
                .bind(p.at);
        }
        query.execute(tx.conn()).await?;
    }
    for chunk in changes.stats.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO rm_workout_stats (user_id, workouts, total_seconds, total_distance_m, \
             longest_distance_m, longest_seconds, fastest_avg_speed_mps) VALUES {} \
             ON CONFLICT (user_id) DO UPDATE SET workouts = excluded.workouts, \
             total_seconds = excluded.total_seconds, total_distance_m = excluded.total_distance_m, \
             longest_distance_m = excluded.longest_distance_m, longest_seconds = excluded.longest_seconds, \
             fastest_avg_speed_mps = excluded.fastest_avg_speed_mps",
            placeholders(chunk.len(), 7)
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for (user, s) in chunk {
            query = query
                .bind(user.clone())
                .bind(s.workouts)
                .bind(s.total_seconds)
                .bind(s.total_distance_m)
                .bind(s.longest_distance_m)
                .bind(s.longest_seconds)
                .bind(s.fastest_avg_speed_mps);
        }
        query.execute(tx.conn()).await?;
    }
    for chunk in changes.weeks.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO rm_workout_weeks (user_id, week, workouts, distance_m, seconds) VALUES {} \
             ON CONFLICT (user_id, week) DO UPDATE SET workouts = excluded.workouts, \
             distance_m = excluded.distance_m, seconds = excluded.seconds",
            placeholders(chunk.len(), 5)
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for ((user, week), w) in chunk {
            query = query
                .bind(user.clone())
                .bind(week.clone())
                .bind(w.workouts)
                .bind(w.distance_m)
                .bind(w.seconds);
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
        },
    ))
}

/// A `rm_workout_stats` row, from either driver.
fn stats_of(r: &impl ModelRow) -> Result<(String, Stats)> {
    Ok((
        r.text("user_id")?,
        Stats {
            workouts: r.int("workouts")?,
            total_seconds: r.int("total_seconds")?,
            total_distance_m: r.float("total_distance_m")?,
            longest_distance_m: r.float("longest_distance_m")?,
            longest_seconds: r.int("longest_seconds")?,
            fastest_avg_speed_mps: r.float("fastest_avg_speed_mps")?,
        },
    ))
}

/// A `rm_workout_weeks` row, from either driver.
fn week_of(r: &impl ModelRow) -> Result<((String, String), Week)> {
    Ok((
        (r.text("user_id")?, r.text("week")?),
        Week {
            workouts: r.int("workouts")?,
            distance_m: r.float("distance_m")?,
            seconds: r.int("seconds")?,
        },
    ))
}

const WORKOUT_COLUMNS: &str = "workout_id, user_id, sport, status, started_at, ended_at, goal_distance_m, \
     distance_m, active_seconds, avg_speed_mps, max_heart_rate, last_heart_rate, last_speed_mps, updates, points";

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

type UserRows = (
    std::collections::HashMap<String, Stats>,
    std::collections::HashMap<(String, String), Week>,
);

async fn load_user_rows(
    tx: &mut SqlTx<'_>,
    users: &[String],
    touched_weeks: &[(String, String)],
) -> Result<UserRows> {
    let mut stats = std::collections::HashMap::new();
    let mut weeks = std::collections::HashMap::new();
    for chunk in users.chunks(ROWS * 2) {
        let list = in_list(chunk.len());
        let sql = format!(
            "SELECT user_id, workouts, total_seconds, total_distance_m, longest_distance_m, \
             longest_seconds, fastest_avg_speed_mps FROM rm_workout_stats WHERE user_id IN ({list})"
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for user in chunk {
            query = query.bind(user.clone());
        }
        for r in query.fetch_all(tx.conn()).await? {
            let (user, row) = stats_of(&r)?;
            stats.insert(user, row);
        }
    }
    // Only the weeks the batch's completions fall in, not the users' whole history.
    for chunk in touched_weeks.chunks(ROWS) {
        let list = (0..chunk.len())
            .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT user_id, week, workouts, distance_m, seconds FROM rm_workout_weeks \
             WHERE (user_id, week) IN (VALUES {list})"
        );
        let sql = tx.sql(&sql).into_owned();
        let mut query = sqlx::query(&sql);
        for (user, week) in chunk {
            query = query.bind(user.clone()).bind(week.clone());
        }
        for r in query.fetch_all(tx.conn()).await? {
            let (key, row) = week_of(&r)?;
            weeks.insert(key, row);
        }
    }
    Ok((stats, weeks))
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

//! The native PostgreSQL reads and writes of a batch.

use super::{workout_of, Changes, Loaded, Workout, WORKOUT_COLUMNS};
use crate::runtime::PgTx;
use crate::Result;

/// The workouts among `ids` that have a row, in one read (none when `ids` is empty).
/// Each key is looked up by the primary key (`LATERAL … OFFSET 0` keeps PostgreSQL
/// from turning the lookups into a join over the whole table), so the plan does not
/// depend on the keys and the statement is prepared once.
pub(super) async fn load(tx: &mut PgTx<'_>, ids: &[String]) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    if ids.is_empty() {
        return Ok(loaded);
    }
    let sql = format!(
        "SELECT w.* FROM UNNEST($1::text[]) AS k(id), LATERAL (SELECT {WORKOUT_COLUMNS} \
         FROM rm_workouts WHERE workout_id = k.id OFFSET 0) w"
    );
    let sql = tx.sql(&sql).into_owned();
    for r in sqlx::query(&sql).bind(ids).fetch_all(tx.conn()).await? {
        let (id, workout) = workout_of(&r)?;
        loaded.insert(id, workout);
    }
    Ok(loaded)
}

/// Both tables of the batch in one statement (data-modifying `WITH`): one round trip,
/// inside the batch's transaction. The workouts the batch started are plain inserts
/// (cheaper than an upsert's speculative insertion); those it read are updated. An
/// empty array writes nothing.
const WRITE: &str = "WITH batch AS (SELECT * FROM UNNEST(\
     $1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
     $7::float8[], $8::float8[], $9::int8[], $10::float8[], $11::int8[], $12::int8[], \
     $13::float8[], $14::int8[], $15::int8[], $16::int8[], $17::text[], $18::bool[]) \
     AS b(workout_id, user_id, sport, status, started_at, ended_at, goal_distance_m, \
     distance_m, active_seconds, avg_speed_mps, max_heart_rate, last_heart_rate, \
     last_speed_mps, updates, points, position, week, existed)), \
     started AS (\
     INSERT INTO rm_workouts (workout_id, user_id, sport, status, started_at, ended_at, \
     goal_distance_m, distance_m, active_seconds, avg_speed_mps, max_heart_rate, \
     last_heart_rate, last_speed_mps, updates, points, position, week) \
     SELECT workout_id, user_id, sport, status, started_at, ended_at, goal_distance_m, \
     distance_m, active_seconds, avg_speed_mps, max_heart_rate, last_heart_rate, \
     last_speed_mps, updates, points, position, week FROM batch WHERE NOT existed \
     RETURNING 1), \
     updated AS (\
     UPDATE rm_workouts w SET \
     user_id = b.user_id, sport = b.sport, status = b.status, \
     started_at = b.started_at, ended_at = b.ended_at, \
     goal_distance_m = b.goal_distance_m, distance_m = b.distance_m, \
     active_seconds = b.active_seconds, avg_speed_mps = b.avg_speed_mps, \
     max_heart_rate = b.max_heart_rate, last_heart_rate = b.last_heart_rate, \
     last_speed_mps = b.last_speed_mps, updates = b.updates, points = b.points, \
     position = b.position, week = b.week \
     FROM batch b WHERE b.existed AND w.workout_id = b.workout_id \
     RETURNING 1), \
     points AS (\
     INSERT INTO rm_workout_points (workout_position, position, idx, lat, lon, at) \
     SELECT * FROM UNNEST($19::int8[], $20::int8[], $21::int8[], $22::float8[], $23::float8[], $24::int8[]) \
     RETURNING 1) \
     SELECT (SELECT COUNT(*) FROM started) + (SELECT COUNT(*) FROM updated) \
     + (SELECT COUNT(*) FROM points)";

/// Writes a batch's changes.
pub(super) async fn write(tx: &mut PgTx<'_>, changes: &Changes) -> Result<()> {
    let (w, p) = (&changes.workouts, &changes.points);
    if w.is_empty() && p.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Workout) -> Option<f64>| w.iter().map(|(_, x, _)| f(x)).collect::<Vec<_>>();
    let int = |f: fn(&Workout) -> Option<i64>| w.iter().map(|(_, x, _)| f(x)).collect::<Vec<_>>();
    let text = |f: fn(&Workout) -> Option<&str>| w.iter().map(|(_, x, _)| f(x)).collect::<Vec<_>>();
    // Plain inserts of points: a point is keyed by its event's position, and a batch
    // is applied exactly once, so a conflict is a broken guarantee and fails loudly
    // rather than being skipped.
    let sql = tx.sql(WRITE).into_owned();
    let _: i64 = sqlx::query_scalar(&sql)
        .bind(w.iter().map(|(id, _, _)| id.as_str()).collect::<Vec<_>>())
        .bind(text(|x| Some(&x.user_id)))
        .bind(text(|x| Some(&x.sport)))
        .bind(text(|x| Some(x.status)))
        .bind(int(|x| Some(x.started_at)))
        .bind(int(|x| x.ended_at))
        .bind(col(|x| x.goal_distance_m))
        .bind(col(|x| Some(x.distance_m)))
        .bind(int(|x| Some(x.active_seconds)))
        .bind(col(|x| x.avg_speed_mps))
        .bind(int(|x| x.max_heart_rate))
        .bind(int(|x| x.last_heart_rate))
        .bind(col(|x| x.last_speed_mps))
        .bind(int(|x| Some(x.updates)))
        .bind(int(|x| Some(x.points)))
        .bind(int(|x| Some(x.position)))
        .bind(text(|x| x.week.as_deref()))
        .bind(w.iter().map(|(_, _, created)| !created).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.workout_position).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.position).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.idx).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.lat).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.lon).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.at).collect::<Vec<_>>())
        .fetch_one(tx.conn())
        .await?;
    Ok(())
}

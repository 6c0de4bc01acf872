//! The native PostgreSQL reads and writes of a batch.

use super::{stats_of, workout_of, Changes, Loaded, Touched, Week, Workout, WORKOUT_COLUMNS};
use crate::runtime::PgTx;
use crate::sql::ModelRow;
use crate::Result;

pub(super) async fn load(tx: &mut PgTx<'_>, touched: &Touched) -> Result<Loaded> {
    let (ids, users) = (&touched.ids, &touched.users);
    let (week_users, week_names): (Vec<String>, Vec<String>) =
        touched.weeks.iter().cloned().unzip();
    let mut loaded = Loaded::default();
    // Planned for each batch's ids (not prepared): a prepared `= ANY($1)` gets a
    // generic plan that scans the whole table.
    let sql = format!("SELECT {WORKOUT_COLUMNS} FROM rm_workouts WHERE workout_id = ANY($1)");
    let sql = tx.sql(&sql).into_owned();
    let rows = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query(&sql)
            .persistent(false)
            .bind(ids)
            .fetch_all(tx.conn())
            .await?
    };
    for r in rows {
        let (id, workout) = workout_of(&r)?;
        loaded.workouts.insert(id, workout);
    }
    if users.is_empty() {
        return Ok(loaded);
    }
    // A user's stats and the weeks the batch completes workouts in, in one read:
    // not every week of the user's history. Each key is looked up by its primary
    // key (`LATERAL … OFFSET 0` keeps PostgreSQL from turning the lookups into a
    // hash join over the whole table, which it prefers while the tables are small
    // and which then costs a scan of every week per batch); so the plan does not
    // depend on the keys, and the statement is prepared once.
    let sql = tx
        .sql(
            "SELECT s.user_id, s.workouts, s.total_seconds, s.total_distance_m, \
             s.longest_distance_m, s.longest_seconds, s.fastest_avg_speed_mps, \
             NULL::text AS week, NULL::int8 AS week_workouts, \
             NULL::float8 AS week_distance_m, NULL::int8 AS week_seconds \
             FROM UNNEST($1::text[]) AS u(user_id), LATERAL (SELECT * FROM rm_workout_stats s \
             WHERE s.user_id = u.user_id OFFSET 0) s \
             UNION ALL \
             SELECT w.user_id, NULL, NULL, NULL, NULL, NULL, NULL, w.week, w.workouts, \
             w.distance_m, w.seconds \
             FROM UNNEST($2::text[], $3::text[]) AS k(user_id, week), \
             LATERAL (SELECT * FROM rm_workout_weeks w \
             WHERE w.user_id = k.user_id AND w.week = k.week OFFSET 0) w",
        )
        .into_owned();
    for r in sqlx::query(&sql)
        .bind(users)
        .bind(&week_users)
        .bind(&week_names)
        .fetch_all(tx.conn())
        .await?
    {
        match r.opt_text("week")? {
            Some(week) => {
                loaded.weeks.insert(
                    (r.text("user_id")?, week),
                    Week {
                        workouts: r.int("week_workouts")?,
                        distance_m: r.float("week_distance_m")?,
                        seconds: r.int("week_seconds")?,
                    },
                );
            }
            None => {
                let (user, stats) = stats_of(&r)?;
                loaded.stats.insert(user, stats);
            }
        }
    }
    Ok(loaded)
}

/// Every table of the batch in one statement (data-modifying `WITH`): one round
/// trip, inside the batch's transaction. An empty array inserts nothing.
const WRITE: &str = "WITH workouts AS (\
     INSERT INTO rm_workouts (workout_id, user_id, sport, status, started_at, ended_at, \
     goal_distance_m, distance_m, active_seconds, avg_speed_mps, max_heart_rate, \
     last_heart_rate, last_speed_mps, updates, points) SELECT * FROM UNNEST(\
     $1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
     $7::float8[], $8::float8[], $9::int8[], $10::float8[], $11::int8[], $12::int8[], \
     $13::float8[], $14::int8[], $15::int8[]) \
     ON CONFLICT (workout_id) DO UPDATE SET \
     user_id = excluded.user_id, sport = excluded.sport, status = excluded.status, \
     started_at = excluded.started_at, ended_at = excluded.ended_at, \
     goal_distance_m = excluded.goal_distance_m, distance_m = excluded.distance_m, \
     active_seconds = excluded.active_seconds, avg_speed_mps = excluded.avg_speed_mps, \
     max_heart_rate = excluded.max_heart_rate, last_heart_rate = excluded.last_heart_rate, \
     last_speed_mps = excluded.last_speed_mps, updates = excluded.updates, points = excluded.points \
     RETURNING 1), \
     points AS (\
     INSERT INTO rm_workout_points (workout_id, position, idx, lat, lon, at) \
     SELECT * FROM UNNEST($16::text[], $17::int8[], $18::int8[], $19::float8[], $20::float8[], $21::int8[]) \
     RETURNING 1), \
     stats AS (\
     INSERT INTO rm_workout_stats (user_id, workouts, total_seconds, total_distance_m, \
     longest_distance_m, longest_seconds, fastest_avg_speed_mps) \
     SELECT * FROM UNNEST($22::text[], $23::int8[], $24::int8[], $25::float8[], $26::float8[], $27::int8[], $28::float8[]) \
     ON CONFLICT (user_id) DO UPDATE SET workouts = excluded.workouts, \
     total_seconds = excluded.total_seconds, total_distance_m = excluded.total_distance_m, \
     longest_distance_m = excluded.longest_distance_m, longest_seconds = excluded.longest_seconds, \
     fastest_avg_speed_mps = excluded.fastest_avg_speed_mps \
     RETURNING 1), \
     weeks AS (\
     INSERT INTO rm_workout_weeks (user_id, week, workouts, distance_m, seconds) \
     SELECT * FROM UNNEST($29::text[], $30::text[], $31::int8[], $32::float8[], $33::int8[]) \
     ON CONFLICT (user_id, week) DO UPDATE SET workouts = excluded.workouts, \
     distance_m = excluded.distance_m, seconds = excluded.seconds \
     RETURNING 1) \
     SELECT (SELECT COUNT(*) FROM workouts) + (SELECT COUNT(*) FROM points) \
     + (SELECT COUNT(*) FROM stats) + (SELECT COUNT(*) FROM weeks)";

pub(super) async fn write(tx: &mut PgTx<'_>, changes: &Changes) -> Result<()> {
    let (w, p, st, wk) = (
        &changes.workouts,
        &changes.points,
        &changes.stats,
        &changes.weeks,
    );
    if w.is_empty() && p.is_empty() && st.is_empty() && wk.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Workout) -> Option<f64>| w.iter().map(|(_, x)| f(x)).collect::<Vec<_>>();
    let int = |f: fn(&Workout) -> Option<i64>| w.iter().map(|(_, x)| f(x)).collect::<Vec<_>>();
    let text = |f: fn(&Workout) -> &str| w.iter().map(|(_, x)| f(x)).collect::<Vec<_>>();
    // Plain inserts of points: a point is keyed by its event's position, and a batch
    // is applied exactly once, so a conflict is a broken guarantee and fails loudly
    // rather than being skipped.
    let sql = tx.sql(WRITE).into_owned();
    let _: i64 = sqlx::query_scalar(&sql)
        .bind(w.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
        .bind(text(|x| &x.user_id))
        .bind(text(|x| &x.sport))
        .bind(text(|x| x.status))
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
        .bind(p.iter().map(|x| x.workout_id.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.position).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.idx).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.lat).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.lon).collect::<Vec<_>>())
        .bind(p.iter().map(|x| x.at).collect::<Vec<_>>())
        .bind(st.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
        .bind(st.iter().map(|(_, s)| s.workouts).collect::<Vec<_>>())
        .bind(st.iter().map(|(_, s)| s.total_seconds).collect::<Vec<_>>())
        .bind(
            st.iter()
                .map(|(_, s)| s.total_distance_m)
                .collect::<Vec<_>>(),
        )
        .bind(
            st.iter()
                .map(|(_, s)| s.longest_distance_m)
                .collect::<Vec<_>>(),
        )
        .bind(
            st.iter()
                .map(|(_, s)| s.longest_seconds)
                .collect::<Vec<_>>(),
        )
        .bind(
            st.iter()
                .map(|(_, s)| s.fastest_avg_speed_mps)
                .collect::<Vec<_>>(),
        )
        .bind(wk.iter().map(|((u, _), _)| u.as_str()).collect::<Vec<_>>())
        .bind(wk.iter().map(|((_, w), _)| w.as_str()).collect::<Vec<_>>())
        .bind(wk.iter().map(|(_, w)| w.workouts).collect::<Vec<_>>())
        .bind(wk.iter().map(|(_, w)| w.distance_m).collect::<Vec<_>>())
        .bind(wk.iter().map(|(_, w)| w.seconds).collect::<Vec<_>>())
        .fetch_one(tx.conn())
        .await?;
    Ok(())
}

//! Upgrading `eventfold serve`: a read model whose stored version is older than the
//! binary's is rebuilt beside the live one at start-up and swapped in, and retired
//! models' tables are dropped.

mod support;

use std::time::Duration;

use support::*;

use reqwest::{Client, StatusCode};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_is_rebuilt_at_start_up_and_swapped_in() {
    let (dir, url) = demo_store("bump");
    // The stored reminders model was built by an older version, with other contents.
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    sqlx::query(
        "UPDATE eventfold_checkpoints SET name = 'reminders.v0' WHERE name = 'reminders.v1'",
    )
    .execute(&pool)
    .await
    .expect("rename checkpoint");
    sqlx::query("UPDATE rm_reminders SET title = 'built by v0'")
        .execute(&pool)
        .await
        .expect("old contents");
    let reminders = status_row(&url, "reminders.v1");
    assert_eq!(reminders["state"], "version_bump_pending", "{reminders}");

    let server = Server::start(Some(url.clone()));
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("version bump: reminders.v1 replaces reminders.v0")),
        "{:?}",
        server.startup
    );
    let client = Client::new();
    assert!(
        ready_within(&client, &server, Duration::from_secs(30)).await,
        "never ready after the version-bump rebuild"
    );
    let stale: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM rm_reminders WHERE title = 'built by v0'")
            .fetch_one(&pool)
            .await
            .expect("count");
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_reminders")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(
        total > 0 && stale == 0,
        "{stale} of {total} rows still from v0"
    );
    assert_bump_forgotten(&pool, "reminders.v1", "reminders.v0").await;
    pool.close().await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The upgrade `workouts.v1` → `workouts.v2` on a store that `v1` built: `serve`
/// rebuilds the model into `v2`'s tables (its rows keyed differently, stats summed
/// when asked), swaps them in, and drops the two tables `v2` retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_workouts_from_v1_rebuilds_its_tables_and_drops_the_retired_ones() {
    let (dir, url) = demo_store("v1");
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    let (user, completed): (String, i64) = sqlx::query_as(
        "SELECT user_id, COUNT(*) FROM rm_workouts WHERE status = 'completed' \
         GROUP BY user_id ORDER BY COUNT(*) DESC, user_id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("a user with completed workouts");
    let (workouts, points): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM rm_workouts), (SELECT COUNT(*) FROM rm_workout_points)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    // What `workouts.v1` left in the store: its four tables (as it created them),
    // with contents of its own, and its checkpoint. In one transaction: a pooled
    // SQLite connection that cached the schema before another one dropped a table
    // answers `CREATE INDEX` of a dropped name with "already exists" (the check is
    // made at prepare time against the cache); a transaction's first statement
    // revalidates the schema, and the rest run on that connection.
    let mut tx = pool.begin().await.expect("begin");
    for statement in [
        "DROP TABLE rm_workouts",
        "DROP TABLE rm_workout_points",
        "CREATE TABLE rm_workouts (
            workout_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, sport TEXT NOT NULL, status TEXT NOT NULL,
            started_at BIGINT NOT NULL, ended_at BIGINT, goal_distance_m DOUBLE PRECISION,
            distance_m DOUBLE PRECISION NOT NULL, active_seconds BIGINT NOT NULL,
            avg_speed_mps DOUBLE PRECISION, max_heart_rate BIGINT, last_heart_rate BIGINT,
            last_speed_mps DOUBLE PRECISION, updates BIGINT NOT NULL, points BIGINT NOT NULL)",
        "CREATE INDEX rm_workouts_user ON rm_workouts (user_id, started_at)",
        "CREATE TABLE rm_workout_points (
            workout_id TEXT NOT NULL, position BIGINT NOT NULL, idx BIGINT NOT NULL,
            lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL, at BIGINT NOT NULL,
            PRIMARY KEY (workout_id, position, idx))",
        "CREATE TABLE rm_workout_stats (
            user_id TEXT PRIMARY KEY, workouts BIGINT NOT NULL, total_seconds BIGINT NOT NULL,
            total_distance_m DOUBLE PRECISION NOT NULL, longest_distance_m DOUBLE PRECISION NOT NULL,
            longest_seconds BIGINT NOT NULL, fastest_avg_speed_mps DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE rm_workout_weeks (
            user_id TEXT NOT NULL, week TEXT NOT NULL, workouts BIGINT NOT NULL,
            distance_m DOUBLE PRECISION NOT NULL, seconds BIGINT NOT NULL, PRIMARY KEY (user_id, week))",
        "INSERT INTO rm_workouts VALUES ('built-by-v1', 'u', 'running', 'completed', 0, 0, NULL, 1.0, 1, 1.0, NULL, NULL, NULL, 0, 0)",
        "INSERT INTO rm_workout_stats VALUES ('u', 1, 1, 1.0, 1.0, 1, 1.0)",
        "INSERT INTO rm_workout_weeks VALUES ('u', '2026-W01', 1, 1.0, 1)",
        "UPDATE eventfold_checkpoints SET name = 'workouts.v1' WHERE name = 'workouts.v2'",
    ] {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .expect(statement);
    }
    tx.commit().await.expect("commit");

    let server = Server::start(Some(url.clone()));
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("version bump: workouts.v2 replaces workouts.v1")),
        "{:?}",
        server.startup
    );
    let client = Client::new();
    assert!(
        ready_within(&client, &server, Duration::from_secs(30)).await,
        "never ready after the version-bump rebuild"
    );
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%rm_workout%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    assert_eq!(tables, ["rm_workout_points", "rm_workouts"], "{tables:?}");
    let rebuilt: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM rm_workouts), (SELECT COUNT(*) FROM rm_workout_points)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!(
        rebuilt,
        (workouts, points),
        "the rebuilt tables hold v2's rows"
    );
    let response = client
        .get(server.url(&format!("/api/v1/users/{user}/workout-stats")))
        .bearer_auth(token(&user))
        .send()
        .await
        .expect("stats");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["stats"]["workouts"], completed, "{body}");
    assert!(
        body["stats"]["weekly"]
            .as_array()
            .is_some_and(|weeks| !weeks.is_empty()),
        "{body}"
    );
    assert_bump_forgotten(&pool, "workouts.v2", "workouts.v1").await;
    pool.close().await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// After a version bump's swap the store keeps the new version's checkpoint only: the
/// old version's and the shadow build's are gone.
async fn assert_bump_forgotten(pool: &sqlx::SqlitePool, new: &str, old: &str) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM eventfold_checkpoints ORDER BY name")
            .fetch_all(pool)
            .await
            .expect("names");
    assert!(
        names.iter().any(|n| n == new)
            && !names.iter().any(|n| n == old || n.starts_with("shadow_")),
        "{names:?}"
    );
}

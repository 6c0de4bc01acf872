//! The query routes in process, over a SQLite store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use eventfold_event_log::testing::SqliteTestDb;
use eventfold_http::AuthConfig;
use eventfold_projections::{ProjectionState, ReadDb, StatusBoard};
use tower::ServiceExt;

use crate::{router, QueryApi};

async fn get(app: axum::Router, path: &str) -> (StatusCode, serde_json::Value) {
    let response = app
        .oneshot(
            Request::builder()
                .uri(path)
                .header("x-api-key", "key")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answered");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&body).expect("json"))
}

/// While `serve` rebuilds a model for a version bump, its tables still hold what the
/// previous version built, in that version's shape: its routes answer 503 `rebuilding`
/// (in the error shape, naming the model) rather than querying them; the voice route,
/// whose Redis model is the one being rebuilt, answers from the relational models.
#[tokio::test]
async fn a_model_rebuilt_for_a_version_bump_is_not_answered_from() -> anyhow::Result<()> {
    let lite = SqliteTestDb::new().await?;
    let db = ReadDb::connect(&lite.url).await?;
    let board = StatusBoard::default();
    eventfold_projections::ProjectionSet::new(
        lite.store.clone(),
        db.clone(),
        None,
        eventfold_projections::RunnerOptions::default(),
        board.clone(),
    )
    .setup()
    .await?;
    let why = "version bump from workouts.v1: rebuilding from the log";
    board.set_state("workouts.v2", ProjectionState::Rebuilding, Some(why.into()));
    let auth = AuthConfig::default()
        .with_api_keys_spec("key=service:tests")
        .map_err(anyhow::Error::msg)?;
    let auth = Arc::new(auth);
    let api = || QueryApi {
        log: lite.store.clone(),
        db: db.clone(),
        redis: None,
        board: board.clone(),
        auth: auth.clone(),
        consistency_wait: Duration::from_millis(100),
        voice_redis_budget: None,
        metrics: None,
        expected_projections: Vec::new(),
        probes: Vec::new(),
        clickhouse: None,
        feeds: None,
    };
    let app = router(api());
    for path in [
        "/api/v1/users/u1/workout-stats",
        "/api/v1/users/u1/workouts",
        "/api/v1/workouts/6f1c2d3e-1111-4222-8333-944455556666",
        "/api/v1/workouts/6f1c2d3e-1111-4222-8333-944455556666/route",
    ] {
        let (status, body) = get(app.clone(), path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["error"], "rebuilding", "{path}: {body}");
        assert_eq!(body["details"]["projection"], "workouts.v2", "{body}");
        assert_eq!(body["details"]["why"], why, "{body}");
    }
    // The other models answer as usual.
    let (status, body) = get(app.clone(), "/api/v1/users/u1/reminders").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The voice route, its Redis model being rebuilt, answers from the relational ones.
    board.set_state(
        "voice_due.v1",
        ProjectionState::Rebuilding,
        Some(why.into()),
    );
    let with_redis = router(QueryApi {
        redis: Some(eventfold_projections::RedisTarget {
            client: redis::Client::open(
                std::env::var("EVENTFOLD_TEST_REDIS")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            )?,
            keys: eventfold_projections::RedisKeys::new(format!(
                "eventfold:test:{}:",
                uuid::Uuid::new_v4()
            )),
        }),
        ..api()
    });
    let (status, body) = get(with_redis, "/api/v1/users/u1/reminders/due").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "relational", "{body}");
    // Swapped in: answered again.
    board.set_state("workouts.v2", ProjectionState::Running, None);
    let (status, body) = get(app, "/api/v1/users/u1/workout-stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}

//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use eventfold_event_log::EventStore;
use eventfold_projections::{handed_over_at, measure_lag, ProjectionState, StoreKind};
use serde_json::json;

use crate::QueryApi;

/// The process is up.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The stores answer and every projection runs.
pub(crate) async fn readyz<L: EventStore>(State(api): State<crate::Shared<L>>) -> Response {
    // Every store is asked at once, each for at most `CHECK_TIMEOUT`: the answer comes
    // within that bound even when a server stops answering (an orchestrator's probe
    // waits a second or so), and a breaker that is open answers for its store at once.
    let (log, read_db, redis, clickhouse) = tokio::join!(
        async {
            // A log that only reads (a standby after a failover) refuses every command.
            match tokio::time::timeout(CHECK_TIMEOUT, api.log.writable()).await {
                Ok(Ok(true)) => "ok",
                Ok(Ok(false)) => "read_only",
                _ => "unreachable",
            }
        },
        bounded(sqlx_ping(&api)),
        async {
            match &api.redis {
                None => "off",
                // Like any query: an open breaker answers at once, a failure has the
                // server probed.
                Some(r) => {
                    bounded(async { eventfold_projections::redis_ping(&r.client).await.is_ok() })
                        .await
                }
            }
        },
        async {
            match &api.clickhouse {
                None => "off",
                Some(target) => bounded(target.ping()).await,
            }
        },
    );
    let statuses = api.board.statuses();
    let not_running: Vec<String> = api
        .expected_projections
        .iter()
        .filter(|(name, _)| {
            !statuses.iter().any(|s| {
                s.name == *name
                    && matches!(s.state, ProjectionState::Running | ProjectionState::Standby)
            })
        })
        .map(|(name, _)| (*name).to_owned())
        .collect();
    // Redis being down degrades the voice answer (served from the relational model)
    // but does not make the service unready.
    let blocking = api
        .expected_projections
        .iter()
        .filter(|(name, _)| not_running.iter().any(|n| n == name))
        .any(|(_, store)| match store {
            StoreKind::Redis => redis == "ok",
            // Analytics being down makes only the analytics routes answer 503.
            StoreKind::ClickHouse => false,
            StoreKind::Relational => true,
        });
    let ready = log == "ok" && read_db == "ok" && !blocking;
    // Why each one is not running (e.g. "version bump from reminders.v1: rebuilding").
    let reasons: serde_json::Map<String, serde_json::Value> = statuses
        .iter()
        .filter(|s| not_running.contains(&s.name))
        .map(|s| {
            (
                s.name.clone(),
                json!({ "state": s.state, "reason": s.last_error }),
            )
        })
        .collect();
    let mut stores = json!({
        "event_log": log, "read_models": read_db, "redis": redis, "clickhouse": clickhouse,
    });
    for (name, probe) in &api.probes {
        stores[*name] = json!(probe.check());
    }
    let body = json!({
        "ready": ready,
        "stores": stores,
        "projections_not_running": not_running,
        "projections": reasons,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// How long readiness waits for one store.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `ok` when `check` says so within [`CHECK_TIMEOUT`], else `unreachable`.
async fn bounded(check: impl std::future::Future<Output = bool>) -> &'static str {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(true) => "ok",
        _ => "unreachable",
    }
}

async fn sqlx_ping<L>(api: &QueryApi<L>) -> bool {
    let ping = async {
        sqlx::query("SELECT 1")
            .execute(api.db.pool())
            .await
            .map_err(eventfold_projections::Error::from)
    };
    api.db
        .breaker()
        .run(ping, eventfold_projections::Error::database_error)
        .await
        .is_ok()
}

/// Prometheus exposition: request latencies, append and degradation counters, and the
/// projections' checkpoints and lag (measured now).
pub(crate) async fn metrics<L: EventStore>(State(api): State<crate::Shared<L>>) -> Response {
    // 1 while a store's circuit breaker is open (its server found unreachable).
    let redis = api
        .redis
        .as_ref()
        .map(|r| eventfold_projections::redis_breaker(&r.client));
    for (store, breaker) in [
        ("event_log", api.log.breaker()),
        ("read_models", Some(api.db.breaker())),
        ("redis", redis.as_ref()),
    ] {
        if let Some(breaker) = breaker {
            metrics::gauge!("eventfold_store_breaker_open", "store" => store)
                .set(f64::from(u8::from(breaker.is_open())));
        }
    }
    let mut kafka_fed = Vec::new();
    for status in api.board.statuses() {
        let labels = [("projection", status.name.clone())];
        // A model projector workers took over: its live checkpoint is a hand-over
        // marker, and its lag is not the log's to measure (no lag is exported for it,
        // rather than the whole log).
        let kafka = handed_over_at(status.checkpoint);
        metrics::gauge!("eventfold_projection_fed_from_kafka", &labels)
            .set(f64::from(u8::from(kafka.is_some())));
        metrics::gauge!("eventfold_projection_checkpoint", &labels)
            .set(kafka.unwrap_or(status.checkpoint).0 as f64);
        if kafka.is_some() {
            kafka_fed.push(status.name.clone());
            for gauge in [
                "eventfold_projection_lag_events",
                "eventfold_projection_lag_seconds",
            ] {
                metrics::gauge!(gauge, &labels).set(f64::NAN);
            }
        } else if let Ok(lag) = measure_lag(&api.log, status.checkpoint).await {
            metrics::gauge!("eventfold_projection_lag_events", &labels).set(lag.events as f64);
            metrics::gauge!("eventfold_projection_lag_seconds", &labels).set(lag.seconds);
        }
        let parked = [("projection", status.name)];
        metrics::gauge!("eventfold_projection_parked_events", &parked).set(status.parked as f64);
    }
    // Their progress is per Kafka partition, in the read stores.
    if let Some(feeds) = &api.feeds {
        feeds.export(&kafka_fed).await;
    }
    match &api.metrics {
        Some(handle) => (
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

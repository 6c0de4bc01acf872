//! The query side over HTTP: every answer comes from a precomputed read model.
//!
//! - `GET /api/v1/...` query routes with the command side's authentication rules
//!   (a user reads only their own data; a service reads anything), pagination where
//!   lists grow, and read-your-writes on demand: pass a command's consistency token as
//!   `?after=TOKEN` or `X-Consistency-Token` and the route waits (bounded) until its read
//!   model has applied it, or answers 503 with the current lag.
//! - `/healthz`, `/readyz`, `/metrics`; [`ROUTES`] describes every route for the
//!   OpenAPI document, which the service assembles with the command side's table.
//! - [`observe`] — middleware: `x-correlation-id` (echoed), a tracing span per request
//!   and a latency histogram per route.

mod analytics;
mod consistency;
mod observe;
mod openapi;
mod ops;
mod routes;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use eventfold_event_log::EventStore;
use eventfold_http::AuthConfig;
use eventfold_projections::{ReadDb, RedisTarget, StatusBoard};

pub use metrics_exporter_prometheus::PrometheusHandle;
pub use observe::{install_metrics, observe};
pub use openapi::ROUTES;

/// What the query routes share.
#[derive(Debug)]
pub struct QueryApi<L> {
    /// The log (for lag and readiness).
    pub log: L,
    /// The relational read models.
    pub db: ReadDb,
    /// The Redis read models, when configured.
    pub redis: Option<RedisTarget>,
    /// Progress of the projections running in this process.
    pub board: StatusBoard,
    /// Who may call.
    pub auth: Arc<AuthConfig>,
    /// Longest read-your-writes wait.
    pub consistency_wait: Duration,
    /// How long the voice route waits for Redis before it answers from the relational
    /// model instead (a part of the voice deadline); `None`: as long as Redis takes.
    pub voice_redis_budget: Option<Duration>,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// The projections that should be running, with their stores (for `/readyz`).
    pub expected_projections: Vec<(&'static str, eventfold_projections::StoreKind)>,
    /// Other systems this process delivers to (e.g. `nats`), each with a probe answering
    /// `ok` or `unreachable` at once; shown in `/readyz`, never making it unready (the
    /// reactions that use them retry and report their lag).
    pub probes: Vec<(&'static str, Probe)>,
    /// The ClickHouse analytics, when configured.
    pub clickhouse: Option<eventfold_projections::ClickHouseTarget>,
}

/// A readiness probe that answers without waiting (`ok`, `unreachable`).
#[derive(Clone)]
pub struct Probe(Arc<dyn Fn() -> &'static str + Send + Sync>);

impl Probe {
    /// A probe calling `check`.
    pub fn new(check: impl Fn() -> &'static str + Send + Sync + 'static) -> Self {
        Self(Arc::new(check))
    }

    /// What it says now.
    pub fn check(&self) -> &'static str {
        (self.0)()
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Probe({})", self.check())
    }
}

impl<L> Clone for QueryApi<L>
where
    L: Clone,
{
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            db: self.db.clone(),
            redis: self.redis.clone(),
            board: self.board.clone(),
            auth: self.auth.clone(),
            consistency_wait: self.consistency_wait,
            voice_redis_budget: self.voice_redis_budget,
            metrics: self.metrics.clone(),
            expected_projections: self.expected_projections.clone(),
            probes: self.probes.clone(),
            clickhouse: self.clickhouse.clone(),
        }
    }
}

/// The routes' state: one allocation shared by every request (the extractor clones
/// an `Arc`, not the whole [`QueryApi`]).
#[derive(Debug)]
pub(crate) struct Shared<L>(Arc<QueryApi<L>>);

impl<L> Clone for Shared<L> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<L> std::ops::Deref for Shared<L> {
    type Target = QueryApi<L>;
    fn deref(&self) -> &QueryApi<L> {
        &self.0
    }
}

impl<L> axum::extract::FromRef<Shared<L>> for Arc<AuthConfig> {
    fn from_ref(api: &Shared<L>) -> Self {
        api.auth.clone()
    }
}

/// The query, OpenAPI, health and metrics routes.
pub fn router<L: EventStore>(api: QueryApi<L>) -> Router {
    Router::new()
        .route(
            "/api/v1/users/{user_id}/reminders/due",
            get(routes::due::<L>),
        )
        .route(
            "/api/v1/users/{user_id}/reminders",
            get(routes::reminders::<L>),
        )
        .route(
            "/api/v1/users/{user_id}/orders",
            get(routes::user_orders::<L>),
        )
        .route("/api/v1/orders/{order_id}", get(routes::order::<L>))
        .route(
            "/api/v1/users/{user_id}/consumables",
            get(routes::consumables::<L>),
        )
        .route(
            "/api/v1/users/{user_id}/purchases",
            get(routes::purchases::<L>),
        )
        .route(
            "/api/v1/users/{user_id}/workouts",
            get(routes::workouts::<L>),
        )
        .route("/api/v1/workouts/{workout_id}", get(routes::workout::<L>))
        .route(
            "/api/v1/workouts/{workout_id}/route",
            get(routes::route::<L>),
        )
        .route(
            "/api/v1/users/{user_id}/workout-stats",
            get(routes::stats::<L>),
        )
        .route(
            "/api/v1/leaderboards/{sport}",
            get(routes::leaderboard::<L>),
        )
        .route(
            "/api/v1/analytics/users/{user_id}/weekly-activity",
            get(analytics::weekly::<L>),
        )
        .route(
            "/api/v1/analytics/users/{user_id}/workouts",
            get(analytics::workouts::<L>),
        )
        .route(
            "/api/v1/analytics/users/{user_id}/purchases",
            get(analytics::purchases::<L>),
        )
        .route(
            "/api/v1/analytics/workouts/{workout_id}/route",
            get(analytics::route::<L>),
        )
        .route(
            "/api/v1/analytics/leaderboards/{sport}/weeks/{week}",
            get(analytics::leaderboard::<L>),
        )
        .route("/api/v1/analytics/funnel", get(analytics::funnel::<L>))
        .route(
            "/api/v1/projections",
            get(routes::projections::<L>)
                .route_layer(axum::middleware::from_fn(eventfold_http::no_query)),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz::<L>))
        .route("/metrics", get(ops::metrics::<L>))
        // One allocation shared by every request, not a clone of the whole state each.
        .with_state(Shared(Arc::new(api)))
}

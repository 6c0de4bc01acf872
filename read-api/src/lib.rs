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
    /// Where projector workers have got to, per Kafka partition, for the models they
    /// took over (`/metrics`, `/api/v1/projections`); `None`: not reported.
    pub feeds: Option<Feeds>,
}

/// The per-partition progress of the models projector workers feed from Kafka, read
/// from the read stores, where the workers keep it; remembers which partitions it
/// exported so that a model handed back to the log stops reporting them.
#[derive(Debug, Clone)]
pub struct Feeds {
    progress: eventfold_projections::FeedProgress,
    exported: Arc<std::sync::Mutex<std::collections::BTreeSet<(String, String)>>>,
}

impl Feeds {
    /// Progress read through `progress`.
    pub fn new(progress: eventfold_projections::FeedProgress) -> Self {
        Self {
            progress,
            exported: Arc::default(),
        }
    }

    /// The feeds of the model called `name` and the position each has applied, or
    /// `None` when its store does not say within a second (logged).
    pub(crate) async fn of(&self, name: &str) -> Option<std::collections::BTreeMap<String, i64>> {
        match tokio::time::timeout(Duration::from_secs(1), self.progress.of(name)).await {
            Ok(Ok(feeds)) => Some(feeds),
            Ok(Err(error)) => {
                tracing::warn!(projection = name, %error, "reading its partition checkpoints failed");
                None
            }
            Err(_) => {
                tracing::warn!(
                    projection = name,
                    "reading its partition checkpoints took over 1 s"
                );
                None
            }
        }
    }

    /// Exports `eventfold_projection_partition_position` for the partitions of the
    /// Kafka-fed models in `models`; a partition exported before whose model is no
    /// longer Kafka-fed (reset, handed back to the log) is set to `NaN` once, rather
    /// than left at its last position. A model whose store did not answer keeps what
    /// it had.
    pub(crate) async fn export(&self, models: &[String]) {
        let mut now = std::collections::BTreeSet::new();
        let mut unread = Vec::new();
        for name in models {
            let Some(feeds) = self.of(name).await else {
                unread.push(name.as_str());
                continue;
            };
            for (partition, position) in feeds {
                partition_gauge(name, &partition).set(position as f64);
                now.insert((name.clone(), partition));
            }
        }
        let mut exported = self.exported.lock().unwrap_or_else(|p| p.into_inner());
        for (name, partition) in exported.iter() {
            if unread.contains(&name.as_str()) {
                now.insert((name.clone(), partition.clone()));
            } else if !now.contains(&(name.clone(), partition.clone())) {
                partition_gauge(name, partition).set(f64::NAN);
            }
        }
        *exported = now;
    }
}

/// The position a Kafka-fed model has applied from one partition.
fn partition_gauge(projection: &str, partition: &str) -> metrics::Gauge {
    metrics::gauge!(
        "eventfold_projection_partition_position",
        "projection" => projection.to_owned(),
        "partition" => partition.to_owned()
    )
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
            feeds: self.feeds.clone(),
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

//! Wiring: one process with the command routes, the query routes and the projectors.

use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::Router;
use eventfold_commands::http::{ApiError, AuthConfig, CommandApi};
use eventfold_commands::CommandService;
use eventfold_event_log::AnyEventStore;
use eventfold_projections::{
    ProjectionSet, ReadDb, RedisKeys, RedisTarget, RunnerOptions, StatusBoard, VersionBump,
};
use eventfold_read_api::QueryApi;

use crate::config::Config;

/// The assembled application.
pub(crate) struct App {
    pub(crate) router: Router,
    pub(crate) projections: ProjectionSet<AnyEventStore>,
    pub(crate) store: AnyEventStore,
    /// What is on and off, for the start-up message.
    pub(crate) report: Vec<String>,
    /// Projections to rebuild before they run (their store holds an older version).
    pub(crate) bumps: Vec<VersionBump>,
}

/// Builds the application from `config` (migrating the log on the way).
pub(crate) async fn build(config: &Config, database_url: &str) -> anyhow::Result<App> {
    let store = crate::open_store(database_url).await?;
    let db = ReadDb::connect(database_url).await?;
    let mut report = vec![format!(
        "event log and relational read models: {} ({})",
        store.backend(),
        crate::redact(database_url)
    )];
    let redis = match &config.redis_url {
        Some(url) => {
            let prefix = config
                .redis_prefix
                .clone()
                .unwrap_or_else(|| "eventfold:".to_owned());
            report.push(format!(
                "redis: {} (keys under {prefix:?}): voice cache and leaderboards on",
                crate::redact(url)
            ));
            Some(RedisTarget {
                client: redis::Client::open(url.as_str())?,
                keys: RedisKeys::new(prefix),
            })
        }
        None => {
            report.push("redis: off (REDIS_URL unset): the voice answer comes from the relational model; leaderboards answer 503".into());
            None
        }
    };
    report.push(match &config.clickhouse_url {
        Some(_) => "clickhouse: configured but analytics are not built yet: off".into(),
        None => "clickhouse: off".into(),
    });
    report.push(match &config.kafka_brokers {
        Some(_) => "kafka: configured but the relay is not built yet: off".into(),
        None => "kafka: off".into(),
    });
    let mut auth = AuthConfig::default();
    if let Some(secret) = &config.jwt_secret {
        auth = auth.with_jwt_secret(secret.as_bytes());
    }
    if let Some(keys) = &config.api_keys {
        auth = auth.with_api_keys_spec(keys).map_err(anyhow::Error::msg)?;
    }
    if config.jwt_secret.is_none() && config.api_keys.is_none() {
        report.push(
            "auth: no EVENTFOLD_JWT_SECRET or EVENTFOLD_API_KEYS: every API call will get 401"
                .into(),
        );
    }
    let auth = Arc::new(auth);
    let limits = config.edge_limits();
    let cors = config.cors()?;
    report.push(describe_limits(&limits, &cors));
    let board = StatusBoard::default();
    let projections = ProjectionSet::new(
        store.clone(),
        db.clone(),
        redis.clone(),
        RunnerOptions::default(),
        board.clone(),
    );
    let bumps = projections.version_bumps().await?;
    for bump in &bumps {
        report.push(format!(
            "version bump: {} replaces {} — rebuilding it from the log before it runs (/readyz answers 503 until it is swapped in)",
            bump.name,
            bump.previous.join(", ")
        ));
    }
    projections.setup().await?;
    let commands = eventfold_commands::http::router(CommandApi {
        service: Arc::new(CommandService::new(store.clone())),
        auth: auth.clone(),
    });
    let queries = eventfold_read_api::router(QueryApi {
        log: store.clone(),
        db,
        redis: redis.clone(),
        board,
        auth: auth.clone(),
        voice_redis_budget: limits.voice_deadline().map(|deadline| deadline / 3),
        consistency_wait: Duration::from_millis(config.consistency_wait_ms.unwrap_or(2000)),
        metrics: metrics_handle(),
        expected_projections: projections
            .active()
            .map(|m| (m.name(), m.store()))
            .collect(),
    });
    let router = eventfold_http::harden_with(
        commands
            .merge(queries)
            .route_layer(middleware::from_fn(eventfold_read_api::observe))
            .fallback(|| async { ApiError::no_route() }),
        &eventfold_http::EdgeConfig {
            limits,
            cors,
            auth: auth.clone(),
        },
    );
    Ok(App {
        router,
        projections,
        store,
        report,
        bumps,
    })
}

/// One line for the start-up message.
fn describe_limits(limits: &eventfold_http::EdgeLimits, cors: &eventfold_http::Cors) -> String {
    let class = |name: &str, c: &eventfold_http::ClassLimits| {
        let rate = match c.per_second {
            0 => "no rate limit".to_owned(),
            n => format!("{n}/s per caller (burst {})", c.burst.unwrap_or(n).max(n)),
        };
        let deadline = match c.timeout_ms {
            0 => "no deadline".to_owned(),
            ms => format!("deadline {ms} ms"),
        };
        format!("{name} {rate}, {deadline}")
    };
    let cors = match cors {
        eventfold_http::Cors::Off => "CORS off".to_owned(),
        eventfold_http::Cors::Any => "CORS any origin".to_owned(),
        eventfold_http::Cors::Origins(list) => format!("CORS {}", list.join(" ")),
    };
    format!(
        "edge: {}; {}; {}; {cors}",
        class("commands", &limits.commands),
        class("voice", &limits.voice),
        class("queries", &limits.queries)
    )
}

/// The process-wide Prometheus recorder, installed once.
fn metrics_handle() -> Option<eventfold_read_api::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<eventfold_read_api::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(eventfold_read_api::install_metrics)
        .clone()
}

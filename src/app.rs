//! Wiring: one process with the command routes, the query routes and the projectors.

use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::Router;
use eventfold_commands::http::{ApiError, AuthConfig, CommandApi};
use eventfold_commands::CommandService;
use eventfold_event_log::AnyEventStore;
use eventfold_projections::{
    ProjectionSet, ProjectionState, ReadDb, RedisKeys, RedisTarget, RunnerOptions, StatusBoard,
    VersionBump,
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
    /// The relational read models' pool (the shared slot book lives there too).
    pub(crate) read_pool: sqlx::AnyPool,
    /// Reminder slots: length, capacity.
    pub(crate) planner: eventfold_domain::slotting::SlotPlanner,
    /// The commands (the reactions use them too).
    pub(crate) service: Arc<CommandService<AnyEventStore>>,
    /// Progress of everything running in this process.
    pub(crate) board: StatusBoard,
    /// Where notifications go, when NATS is configured.
    pub(crate) nats: Option<(crate::notify::NatsSettings, async_nats::Client)>,
    /// Where the relay produces to, when Kafka is configured.
    pub(crate) kafka: Option<crate::relay::KafkaSettings>,
    /// Which projections and reactions this process runs now.
    pub(crate) leases: eventfold_projections::Leases,
    /// The analytics store and how many months of route points it keeps.
    pub(crate) clickhouse: Option<(eventfold_projections::ClickHouseTarget, u32)>,
}

impl App {
    /// Starts the reactions following the log live, until `shutdown` changes.
    pub(crate) fn spawn_reactions(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinSet<eventfold_projections::Result<()>> {
        let mut set = tokio::task::JoinSet::new();
        let options = RunnerOptions {
            // One purchase that cannot be planned (or "yes" whose order cannot be
            // drafted) must not hold the others back.
            poison: eventfold_projections::PoisonPolicy::Skip,
            ..RunnerOptions::default()
        };
        for reaction in [
            crate::reactions::ServiceReaction::planner(
                self.service.clone(),
                self.read_pool.clone(),
            ),
            crate::reactions::ServiceReaction::drafter(
                self.service.clone(),
                self.read_pool.clone(),
            ),
        ] {
            let runner = eventfold_projections::Runner::new(
                self.store.clone(),
                reaction,
                options.clone(),
                self.board.clone(),
            );
            let (shutdown, leases, board) =
                (shutdown.clone(), self.leases.clone(), self.board.clone());
            set.spawn(async move { leases.run(&runner, &board, shutdown).await });
        }
        if let Some((settings, client)) = &self.nats {
            let dispatcher = crate::notify::Dispatcher::new(
                settings.clone(),
                client.clone(),
                self.read_pool.clone(),
            );
            let runner = eventfold_projections::Runner::new(
                self.store.clone(),
                dispatcher,
                options.clone(),
                self.board.clone(),
            );
            let (shutdown, leases, board) =
                (shutdown.clone(), self.leases.clone(), self.board.clone());
            set.spawn(async move { leases.run(&runner, &board, shutdown).await });
        }
        if let Some(settings) = &self.kafka {
            match crate::relay::Relay::new(
                settings.clone(),
                self.read_pool.clone(),
                self.board.clone(),
            ) {
                Ok(relay) => {
                    let runner =
                        crate::relay::runner(self.store.clone(), relay, self.board.clone());
                    let (leases, board) = (self.leases.clone(), self.board.clone());
                    set.spawn(async move { leases.run(&runner, &board, shutdown).await });
                }
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "the Kafka relay cannot start")
                }
            }
        }
        set
    }

    /// Drops route-point months past the retention, at start-up and every hour, in the
    /// process that holds the retention's lease.
    pub(crate) fn spawn_retention(
        &self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let (target, months) = self.clickhouse.clone()?;
        let mut held = self.leases.want("route_points.retention");
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = held.wait_for(|held| *held) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                match eventfold_projections::models::analytics::drop_expired_route_points(
                    &target,
                    months,
                    chrono::Utc::now(),
                )
                .await
                {
                    Ok(dropped) if !dropped.is_empty() => {
                        tracing::info!(?dropped, months, "route points past the retention dropped");
                    }
                    Ok(_) => {}
                    // Not created yet, or ClickHouse down: next hour.
                    Err(error) => tracing::debug!(%error, "route-point retention skipped"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }))
    }

    /// The reactions this process runs.
    pub(crate) fn reaction_names(&self) -> Vec<&'static str> {
        let mut names = vec![
            crate::reactions::REMINDER_PLANNER,
            crate::reactions::ORDER_DRAFTER,
        ];
        if self.nats.is_some() {
            names.push(crate::notify::DISPATCHER);
        }
        if self.kafka.is_some() {
            names.push(crate::relay::RELAY);
        }
        names
    }
}

/// What `/readyz` says of Kafka: the relay's state as this process knows it (`standby`
/// when another process relays; `unreachable` while the brokers do not acknowledge).
fn kafka_probe(on: bool, board: &StatusBoard) -> eventfold_read_api::Probe {
    if !on {
        return eventfold_read_api::Probe::new(|| "off");
    }
    let board = board.clone();
    eventfold_read_api::Probe::new(move || {
        match board.status(crate::relay::RELAY).map(|s| s.state) {
            Some(ProjectionState::Retrying) => "unreachable",
            Some(ProjectionState::Standby) => "standby",
            Some(ProjectionState::Stopped) => "stopped",
            _ => "ok",
        }
    })
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
            let prefix = config.redis_prefix()?;
            report.push(format!(
                "redis: {} (keys under {prefix:?}): voice cache and leaderboards on",
                crate::redact(url)
            ));
            let client = crate::projections::redis_client(url)?;
            if let Some(policy) = crate::projections::evicting_policy(&client).await {
                tracing::warn!(%policy, "Redis evicts keys under memory pressure: read-model keys can vanish while their checkpoint stays");
                report.push(format!(
                    "redis: WARNING maxmemory-policy is {policy}: under memory pressure Redis drops read-model keys while their checkpoint stays, and the models answer without them; set maxmemory-policy noeviction (or give Redis the memory) — `eventfold replay` rebuilds a model that lost keys"
                ));
            }
            Some(RedisTarget {
                client,
                keys: RedisKeys::new(prefix),
            })
        }
        None => {
            report.push("redis: off (REDIS_URL unset): the voice answer comes from the relational model; leaderboards answer 503".into());
            None
        }
    };
    let retention = config.route_retention_months()?;
    let clickhouse = match &config.clickhouse_url {
        Some(url) => {
            let database = config.clickhouse_database.as_deref().unwrap_or("eventfold");
            let target = eventfold_projections::ClickHouseTarget::new(url, database)?;
            report.push(format!(
                "clickhouse: {} (database {database}): analytics on (workout facts, route points kept {} months, purchase facts, re-order funnel)",
                crate::redact(url),
                retention
            ));
            Some(target)
        }
        None => {
            report.push(
                "clickhouse: off (CLICKHOUSE_URL unset): /api/v1/analytics answers 503".into(),
            );
            None
        }
    };
    let nats = match &config.nats_url {
        Some(url) => {
            let settings = crate::notify::NatsSettings::new(
                url.clone(),
                config.nats_stream.clone(),
                config.nats_subject.clone(),
            )?;
            report.push(format!(
                "nats: {} (stream {}, subjects {}.push.{{user}} and {}.goal.{{user}}): notifications on",
                crate::redact(url),
                settings.stream,
                settings.subject,
                settings.subject
            ));
            let client = crate::notify::connect(&settings).await?;
            Some((settings, client))
        }
        None => {
            report.push("nats: off (NATS_URL unset): payment pushes and goal notifications are not delivered".into());
            None
        }
    };
    let kafka = config.kafka()?;
    if let Some(settings) = &kafka {
        crate::relay::claim_destination(db.pool(), &settings.prefix, false).await?;
    }
    report.push(match &kafka {
        Some(settings) => format!(
            "kafka: {} (topics {}{{category}}, {} partitions): the log is relayed to Kafka",
            settings.brokers, settings.prefix, settings.partitions
        ),
        None => "kafka: off (KAFKA_BROKERS unset): the log is not relayed".into(),
    });
    let mut auth = AuthConfig::default();
    if let Some(secret) = &config.jwt_secret {
        // An empty HS256 key signs tokens anyone can make (the environment cannot give
        // one — empty means unset — but the file can).
        if secret.is_empty() {
            anyhow::bail!("jwt_secret is empty: anyone could sign a token; set a long random secret or leave it out");
        }
        if secret.len() < 32 {
            tracing::warn!(
                bytes = secret.len(),
                "EVENTFOLD_JWT_SECRET is shorter than 32 bytes (HS256 wants at least 256 bits): tokens signed with it can be guessed"
            );
        }
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
    let leases = eventfold_projections::Leases::start(&db, owner_name(), board.clone());
    report.push(match (leases.shared(), db.sqlite_file()) {
        (true, Some(file)) => format!(
            "leases: one serve at a time runs the projections and reactions on this SQLite file (this one: {:?}, when it holds the lock on {}-eventfold.lock); another stands by and takes over within seconds of its death",
            leases.owner(),
            file.display()
        ),
        (true, None) => format!(
            "leases: each projection and reaction runs in one process at a time across every serve on this database (this one: {:?}); another takes over within seconds of its death",
            leases.owner()
        ),
        (false, _) => "leases: an in-memory SQLite database has one process".to_owned(),
    });
    let projections = ProjectionSet::new(
        store.clone(),
        db.clone(),
        redis.clone(),
        RunnerOptions::default(),
        board.clone(),
    )
    .with_clickhouse(clickhouse.clone());
    let bumps = projections.version_bumps().await?;
    for bump in &bumps {
        report.push(format!(
            "version bump: {} replaces {} — rebuilding it from the log before it runs (/readyz answers 503 until it is swapped in)",
            bump.name,
            bump.previous.join(", ")
        ));
    }
    projections.setup().await?;
    // The board counts what this process parks, from what the stores hold already: after
    // a restart `/metrics` and `/api/v1/projections` said 0 while parked events waited
    // (and an alert on them cleared itself).
    // (Only those with some: the board lists what it has entries for.)
    for progress in projections.stored_progress().await? {
        if progress.parked > 0 {
            board.set_parked(progress.name, progress.parked);
        }
    }
    for (name, _, parked) in crate::reactions::stored_progress(db.pool()).await {
        if parked > 0 {
            board.set_parked(name, u64::try_from(parked).unwrap_or_default());
        }
    }
    let planner = config.slot_planner()?;
    report.push(format!(
        "reminder slots: {} minutes, at most {} reminders each, shared by every process on this database",
        planner.slot_minutes, planner.capacity
    ));
    let service = Arc::new(
        command_service(
            store.clone(),
            planner,
            db.pool(),
            Arc::new(chrono::Utc::now),
        )
        .await?
        .with_planning(eventfold_commands::Planning::Reaction {
            progress: {
                let board = board.clone();
                Arc::new(move || {
                    board.want(crate::reactions::REMINDER_PLANNER);
                    board.checkpoint_of(crate::reactions::REMINDER_PLANNER)
                })
            },
            wait: Duration::from_millis(config.consistency_wait_ms.unwrap_or(2000)),
        }),
    );
    let commands = eventfold_commands::http::router(CommandApi {
        service: service.clone(),
        auth: auth.clone(),
    });
    let read_pool = db.pool().clone();
    let queries = eventfold_read_api::router(QueryApi {
        log: store.clone(),
        db,
        redis: redis.clone(),
        board: board.clone(),
        auth: auth.clone(),
        voice_redis_budget: limits.voice_deadline().map(|deadline| deadline / 3),
        consistency_wait: Duration::from_millis(config.consistency_wait_ms.unwrap_or(2000)),
        metrics: metrics_handle(),
        expected_projections: projections
            .active()
            .map(|m| (m.name(), m.store()))
            .collect(),
        probes: vec![
            (
                "nats",
                match &nats {
                    Some((_, client)) => {
                        let client = client.clone();
                        eventfold_read_api::Probe::new(move || match client.connection_state() {
                            async_nats::connection::State::Connected => "ok",
                            _ => "unreachable",
                        })
                    }
                    None => eventfold_read_api::Probe::new(|| "off"),
                },
            ),
            ("kafka", kafka_probe(kafka.is_some(), &board)),
        ],
        clickhouse: clickhouse.clone(),
        feeds: Some(eventfold_read_api::Feeds::new(projections.feed_progress())),
    });
    let document = Arc::new(openapi_document());
    let router = eventfold_http::harden_with(
        commands
            .merge(queries)
            .route(
                "/api/v1/openapi.json",
                axum::routing::get(move || {
                    let document = document.clone();
                    async move { axum::Json(document.as_ref().clone()) }
                })
                .route_layer(middleware::from_fn(eventfold_http::no_query)),
            )
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
        read_pool,
        planner,
        service,
        board,
        nats,
        kafka,
        leases,
        clickhouse: clickhouse.map(|t| (t, retention)),
    })
}

/// This process as lease owner: host and pid (what `projections status` shows).
pub(crate) fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("eventfold {host} pid {}", std::process::id())
}

/// The OpenAPI document of every route this service serves.
pub(crate) fn openapi_document() -> serde_json::Value {
    eventfold_http::openapi::document(
        "Eventfold",
        env!("CARGO_PKG_VERSION"),
        "Commands append events; queries answer from read models. Every error answer is \
         {error, message, code, details}. Rate limits per caller and route class answer 429 \
         with Retry-After; deadlines answer 503 deadline_exceeded.",
        &[
            eventfold_commands::http::ROUTES,
            eventfold_read_api::ROUTES,
            eventfold_http::openapi::ROUTES,
        ],
    )
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

/// The command service over `store` on `clock`, placing reminders in the slot book
/// every process on the read store's database shares (`pool`): what `serve`, the demo
/// and `projections retry` run commands with.
pub(crate) async fn command_service(
    store: AnyEventStore,
    planner: eventfold_domain::slotting::SlotPlanner,
    pool: &sqlx::AnyPool,
    clock: eventfold_commands::Clock,
) -> anyhow::Result<CommandService<AnyEventStore>> {
    let slots = eventfold_commands::SlotBook::shared(planner, pool.clone()).await?;
    Ok(CommandService::with(
        store,
        eventfold_domain::consumables::ConsumablePolicy::default(),
        planner,
        clock,
    )
    .with_slot_book(slots))
}

#[cfg(test)]
mod tests {
    /// Every `.route("…")` registered in the routers is documented, and every documented
    /// route is registered (`tests/serve.rs` also calls each documented route).
    #[test]
    fn every_registered_route_is_documented() {
        let sources = [
            include_str!("../read-api/src/lib.rs"),
            include_str!("../commands/src/http/mod.rs"),
            include_str!("app.rs"),
        ];
        let shape = |p: &str| {
            p.split('/')
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .collect::<Vec<_>>()
                .join("/")
        };
        let mut registered: Vec<String> = sources
            .iter()
            .flat_map(|s| s.split(".route(").skip(1))
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .filter(|path| path.starts_with('/'))
            .map(shape)
            .collect();
        registered.sort();
        registered.dedup();
        let mut documented: Vec<String> = [
            eventfold_commands::http::ROUTES,
            eventfold_read_api::ROUTES,
            eventfold_http::openapi::ROUTES,
        ]
        .iter()
        .flat_map(|t| t.iter())
        .map(|r| shape(r.path))
        .collect();
        documented.sort();
        documented.dedup();
        assert_eq!(registered, documented);
    }

    #[test]
    fn the_document_has_a_schema_for_every_body_and_answer() {
        let doc = super::openapi_document();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in paths {
            for (method, op) in methods.as_object().expect("methods") {
                let ok = op["responses"]
                    .as_object()
                    .and_then(|r| r.iter().find(|(s, _)| s.starts_with('2')))
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default();
                assert!(
                    ok.get("content").is_some(),
                    "{method} {path}: no answer schema"
                );
                if method == "post" {
                    assert!(
                        op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                        "{method} {path}: no body schema"
                    );
                }
            }
        }
        let text = doc.to_string();
        // Every reference resolves.
        for reference in text.split("\"$ref\":\"").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            let name = name.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}

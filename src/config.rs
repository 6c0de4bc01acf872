//! Configuration: an optional TOML file, overridden by environment variables.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use eventfold_http::{Cors, EdgeLimits, RouteClass};
use serde::Deserialize;

/// Everything `serve` (and `demo`) can be told. Each store but the log is optional.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `DATABASE_URL`: the event log and the relational read models.
    pub(crate) database_url: Option<String>,
    /// `REDIS_URL`: the Redis read models (voice cache, leaderboards).
    pub(crate) redis_url: Option<String>,
    /// `EVENTFOLD_REDIS_PREFIX`: prefix of every Redis key.
    pub(crate) redis_prefix: Option<String>,
    /// `EVENTFOLD_LISTEN`: address to serve HTTP on.
    pub(crate) listen: Option<String>,
    /// `EVENTFOLD_JWT_SECRET`: HS256 secret for bearer tokens.
    pub(crate) jwt_secret: Option<String>,
    /// `EVENTFOLD_API_KEYS`: `KEY=service:NAME,KEY2=user:ID`.
    pub(crate) api_keys: Option<String>,
    /// `EVENTFOLD_CONSISTENCY_WAIT_MS`: longest read-your-writes wait (default 2000).
    pub(crate) consistency_wait_ms: Option<u64>,
    /// `EVENTFOLD_SLOT_CAPACITY`: most reminders one 30-minute slot holds (default 100).
    pub(crate) slot_capacity: Option<u32>,
    /// `CLICKHOUSE_URL`: ClickHouse's HTTP interface for the analytics read models.
    pub(crate) clickhouse_url: Option<String>,
    /// `EVENTFOLD_CLICKHOUSE_DATABASE`: the database they live in (default `eventfold`).
    pub(crate) clickhouse_database: Option<String>,
    /// `EVENTFOLD_ROUTE_RETENTION_MONTHS`: months of route points kept in ClickHouse
    /// (default 6, the seed's; `0` keeps only the current month).
    pub(crate) route_retention_months: Option<u32>,
    /// `KAFKA_BROKERS`: `host:port[,…]`; turns on the relay of the log to Kafka.
    pub(crate) kafka_brokers: Option<String>,
    /// `EVENTFOLD_KAFKA_TOPIC_PREFIX`: topics are `{prefix}{category}` (default
    /// `eventfold.`).
    pub(crate) kafka_topic_prefix: Option<String>,
    /// `EVENTFOLD_KAFKA_PARTITIONS`: partitions of the topics the relay creates (3).
    pub(crate) kafka_partitions: Option<i32>,
    /// `EVENTFOLD_KAFKA_REPLICATION`: replicas of the topics the relay creates (1).
    pub(crate) kafka_replication: Option<i32>,
    /// `NATS_URL`: NATS with JetStream; turns on the notification dispatcher.
    pub(crate) nats_url: Option<String>,
    /// `EVENTFOLD_NATS_STREAM`: the JetStream stream notifications go to (default
    /// `EVENTFOLD_NOTIFICATIONS`; created when missing).
    pub(crate) nats_stream: Option<String>,
    /// `EVENTFOLD_NATS_SUBJECT`: the subjects' first token(s) (default `notifications`:
    /// `notifications.push.{user}`, `notifications.goal.{user}`).
    pub(crate) nats_subject: Option<String>,
    /// `EVENTFOLD_CORS_ORIGINS`: `*` or `https://a.example,https://b.example`; off
    /// when unset.
    pub(crate) cors_origins: Option<String>,
    /// `EVENTFOLD_MAX_CONNECTIONS`: client connections held at once (default 10000,
    /// lowered to fit the open-files limit).
    pub(crate) max_connections: Option<usize>,
    /// `EVENTFOLD_HEADER_TIMEOUT_MS`: how long a client may take to send a request's
    /// head, and how long an idle kept-alive connection stays open (default 30000).
    pub(crate) header_timeout_ms: Option<u64>,
    /// `EVENTFOLD_SHUTDOWN_GRACE_MS`: how long a shutdown waits for the requests under
    /// way (default 20000).
    pub(crate) shutdown_grace_ms: Option<u64>,
    /// `[limits.commands]`, `[limits.voice]`, `[limits.queries]`: rate limits and
    /// deadlines per route class (see [`Config::edge_limits`]).
    #[serde(default)]
    pub(crate) limits: LimitsFile,
}

/// The `[limits.*]` tables; what is left out keeps its default.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    pub(crate) commands: Option<ClassOverride>,
    pub(crate) voice: Option<ClassOverride>,
    pub(crate) queries: Option<ClassOverride>,
}

impl LimitsFile {
    /// Every limit and deadline off (benches measure the server, not its limits).
    pub(crate) fn off() -> Self {
        let off = Some(ClassOverride {
            per_second: Some(0),
            burst: None,
            timeout_ms: Some(0),
        });
        Self {
            commands: off,
            voice: off,
            queries: off,
        }
    }
}

/// One route class's limits as the file or the environment gives them; `0` is off.
#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClassOverride {
    /// Sustained requests per second per caller.
    pub(crate) per_second: Option<u32>,
    /// Requests at once above the sustained rate.
    pub(crate) burst: Option<u32>,
    /// Deadline in milliseconds.
    pub(crate) timeout_ms: Option<u64>,
}

impl Config {
    /// Reads `file` (if given) and applies the environment on top.
    pub(crate) fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("{} is not a valid configuration", path.display()))?
            }
            None => Config::default(),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let overrides = [
            ("DATABASE_URL", &mut config.database_url),
            ("REDIS_URL", &mut config.redis_url),
            ("EVENTFOLD_REDIS_PREFIX", &mut config.redis_prefix),
            ("EVENTFOLD_LISTEN", &mut config.listen),
            ("EVENTFOLD_JWT_SECRET", &mut config.jwt_secret),
            ("EVENTFOLD_API_KEYS", &mut config.api_keys),
            ("CLICKHOUSE_URL", &mut config.clickhouse_url),
            (
                "EVENTFOLD_CLICKHOUSE_DATABASE",
                &mut config.clickhouse_database,
            ),
            ("KAFKA_BROKERS", &mut config.kafka_brokers),
            (
                "EVENTFOLD_KAFKA_TOPIC_PREFIX",
                &mut config.kafka_topic_prefix,
            ),
            ("EVENTFOLD_CORS_ORIGINS", &mut config.cors_origins),
            ("NATS_URL", &mut config.nats_url),
            ("EVENTFOLD_NATS_STREAM", &mut config.nats_stream),
            ("EVENTFOLD_NATS_SUBJECT", &mut config.nats_subject),
        ];
        for (name, slot) in overrides {
            if let Some(value) = env(name) {
                *slot = Some(value);
            }
        }
        if let Some(n) = env("EVENTFOLD_SLOT_CAPACITY") {
            config.slot_capacity = Some(
                n.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .context("EVENTFOLD_SLOT_CAPACITY must be a number of reminders >= 1")?,
            );
        }
        for (name, slot) in [
            ("EVENTFOLD_KAFKA_PARTITIONS", &mut config.kafka_partitions),
            ("EVENTFOLD_KAFKA_REPLICATION", &mut config.kafka_replication),
        ] {
            if let Some(n) = env(name) {
                *slot = Some(
                    n.parse()
                        .with_context(|| format!("{name} must be a number"))?,
                );
            }
        }
        if let Some(months) = env("EVENTFOLD_ROUTE_RETENTION_MONTHS") {
            config.route_retention_months = Some(
                months
                    .parse()
                    .context("EVENTFOLD_ROUTE_RETENTION_MONTHS must be a number of months")?,
            );
        }
        if let Some(n) = env("EVENTFOLD_MAX_CONNECTIONS") {
            config.max_connections = Some(
                n.parse()
                    .context("EVENTFOLD_MAX_CONNECTIONS must be a number of connections")?,
            );
        }
        for (name, slot) in [
            ("EVENTFOLD_HEADER_TIMEOUT_MS", &mut config.header_timeout_ms),
            ("EVENTFOLD_SHUTDOWN_GRACE_MS", &mut config.shutdown_grace_ms),
        ] {
            if let Some(ms) = env(name) {
                *slot = Some(
                    ms.parse()
                        .with_context(|| format!("{name} must be milliseconds"))?,
                );
            }
        }
        if let Some(ms) = env("EVENTFOLD_CONSISTENCY_WAIT_MS") {
            config.consistency_wait_ms = Some(
                ms.parse()
                    .context("EVENTFOLD_CONSISTENCY_WAIT_MS must be milliseconds")?,
            );
        }
        let classes = [
            ("COMMANDS", &mut config.limits.commands),
            ("VOICE", &mut config.limits.voice),
            ("QUERIES", &mut config.limits.queries),
        ];
        for (class, slot) in classes {
            let entry = slot.get_or_insert_with(ClassOverride::default);
            let rate = format!("EVENTFOLD_RATE_{class}");
            if let Some(v) = env(&rate) {
                entry.per_second = Some(v.parse().with_context(|| {
                    format!("{rate} must be requests per second (0 turns it off)")
                })?);
            }
            let burst = format!("EVENTFOLD_BURST_{class}");
            if let Some(v) = env(&burst) {
                entry.burst = Some(
                    v.parse()
                        .with_context(|| format!("{burst} must be a number of requests"))?,
                );
            }
            let timeout = format!("EVENTFOLD_TIMEOUT_{class}_MS");
            if let Some(v) = env(&timeout) {
                entry.timeout_ms =
                    Some(v.parse().with_context(|| {
                        format!("{timeout} must be milliseconds (0 turns it off)")
                    })?);
            }
        }
        Ok(config)
    }

    /// The rate limits and deadlines: the defaults of [`EdgeLimits`] with the file's
    /// and the environment's overrides.
    pub(crate) fn edge_limits(&self) -> EdgeLimits {
        let mut limits = EdgeLimits::default();
        let classes = [
            (RouteClass::Commands, self.limits.commands),
            (RouteClass::Voice, self.limits.voice),
            (RouteClass::Queries, self.limits.queries),
        ];
        for (class, given) in classes {
            let (Some(given), Some(slot)) = (given, limits.class_mut(class)) else {
                continue;
            };
            if let Some(rate) = given.per_second {
                slot.per_second = rate;
                // A rate given without a burst gets one second's worth.
                slot.burst = given.burst;
            }
            if given.burst.is_some() {
                slot.burst = given.burst;
            }
            if let Some(ms) = given.timeout_ms {
                slot.timeout_ms = ms;
            }
        }
        limits
    }

    /// The prefix of every Redis key (default `eventfold:`), checked: an empty one, or
    /// one with spaces or control characters, is refused.
    pub(crate) fn redis_prefix(&self) -> anyhow::Result<String> {
        let prefix = self.redis_prefix.as_deref().unwrap_or("eventfold:");
        if prefix.is_empty()
            || prefix.len() > 100
            || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            anyhow::bail!(
                "EVENTFOLD_REDIS_PREFIX / redis_prefix {prefix:?}: use 1 to 100 characters, \
                 no spaces or control characters, e.g. `eventfold:` (every key Eventfold \
                 writes, scans and deletes — on a reset or a swap — begins with it; an empty \
                 one would reach other applications' keys in the same Redis database)"
            );
        }
        Ok(prefix.to_owned())
    }

    /// Months of route points ClickHouse keeps (default 6). Zero is refused: it would
    /// not turn the retention off, as `0` does for rate limits and deadlines, but drop
    /// every month before the current one.
    pub(crate) fn route_retention_months(&self) -> anyhow::Result<u32> {
        match self.route_retention_months.unwrap_or(6) {
            0 => anyhow::bail!(
                "EVENTFOLD_ROUTE_RETENTION_MONTHS / route_retention_months must be 1 or more: \
                 route points older than that many months are dropped (0 would keep only the current month)"
            ),
            months => Ok(months),
        }
    }

    /// The server's bounds on connections: the defaults of
    /// [`eventfold_http::ServeOptions`] with the file's and the environment's values.
    /// Zero connections or a zero head timeout are refused: the one would serve nobody,
    /// the other (no bound at all) lets a client that never finishes its request hold
    /// its connection forever.
    pub(crate) fn serve_options(&self) -> anyhow::Result<eventfold_http::ServeOptions> {
        let defaults = eventfold_http::ServeOptions::default();
        let max_connections = match self.max_connections {
            Some(0) => {
                anyhow::bail!("EVENTFOLD_MAX_CONNECTIONS / max_connections must be 1 or more")
            }
            Some(n) => n,
            None => defaults.max_connections,
        };
        let header_timeout = match self.header_timeout_ms {
            Some(0) => anyhow::bail!(
                "EVENTFOLD_HEADER_TIMEOUT_MS / header_timeout_ms must be 1 or more: without a \
                 bound a client that never finishes a request holds its connection forever"
            ),
            Some(ms) => Duration::from_millis(ms),
            None => defaults.header_timeout,
        };
        let grace = self
            .shutdown_grace_ms
            .map_or(defaults.grace, Duration::from_millis);
        Ok(eventfold_http::ServeOptions {
            max_connections,
            header_timeout,
            grace,
        })
    }

    /// The slot planner: the default with the configured capacity.
    pub(crate) fn slot_planner(&self) -> anyhow::Result<eventfold_domain::slotting::SlotPlanner> {
        let defaults = eventfold_domain::slotting::SlotPlanner::default();
        let capacity = self.slot_capacity.unwrap_or(defaults.capacity);
        if capacity == 0 {
            anyhow::bail!("slot_capacity must be >= 1");
        }
        Ok(eventfold_domain::slotting::SlotPlanner {
            capacity,
            ..defaults
        })
    }

    /// Where the relay produces to, when `KAFKA_BROKERS` is set (checked).
    pub(crate) fn kafka(&self) -> anyhow::Result<Option<crate::relay::KafkaSettings>> {
        self.kafka_brokers
            .clone()
            .map(|brokers| {
                crate::relay::KafkaSettings::new(
                    brokers,
                    self.kafka_topic_prefix.clone(),
                    self.kafka_partitions,
                    self.kafka_replication,
                )
            })
            .transpose()
    }

    /// Cross-origin access.
    pub(crate) fn cors(&self) -> anyhow::Result<Cors> {
        Cors::parse(self.cors_origins.as_deref().unwrap_or("off"))
            .map_err(anyhow::Error::msg)
            .context("EVENTFOLD_CORS_ORIGINS / cors_origins")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_retention_of_zero_months_is_refused_not_taken_as_off() {
        let zero: Config = toml::from_str("route_retention_months = 0\n").expect("valid TOML");
        let error = zero
            .route_retention_months()
            .expect_err("0 would drop every past month");
        assert!(error.to_string().contains("must be 1 or more"), "{error}");
        assert_eq!(Config::default().route_retention_months().ok(), Some(6));
        let one: Config = toml::from_str("route_retention_months = 1\n").expect("valid TOML");
        assert_eq!(one.route_retention_months().ok(), Some(1));
    }

    #[test]
    fn connection_bounds_come_from_the_file_and_zero_is_refused() {
        let defaults = eventfold_http::ServeOptions::default();
        assert_eq!(Config::default().serve_options().ok(), Some(defaults));
        let given: Config = toml::from_str(
            "max_connections = 50\nheader_timeout_ms = 1500\nshutdown_grace_ms = 0\n",
        )
        .expect("valid TOML");
        assert_eq!(
            given.serve_options().ok(),
            Some(eventfold_http::ServeOptions {
                max_connections: 50,
                header_timeout: Duration::from_millis(1500),
                grace: Duration::ZERO,
            })
        );
        for refused in ["max_connections = 0\n", "header_timeout_ms = 0\n"] {
            let config: Config = toml::from_str(refused).expect("valid TOML");
            let error = config.serve_options().expect_err(refused);
            assert!(error.to_string().contains("1 or more"), "{error}");
        }
    }

    #[test]
    fn the_file_overrides_only_what_it_names() {
        let config: Config =
            toml::from_str("[limits.voice]\ntimeout_ms = 100\n[limits.commands]\nper_second = 0\n")
                .expect("valid");
        let limits = config.edge_limits();
        let defaults = EdgeLimits::default();
        assert_eq!(limits.voice.timeout_ms, 100);
        assert_eq!(limits.voice.per_second, defaults.voice.per_second);
        assert_eq!(limits.commands.per_second, 0);
        assert_eq!(limits.commands.timeout_ms, defaults.commands.timeout_ms);
        assert_eq!(limits.queries, defaults.queries);
        assert!(toml::from_str::<Config>("[limits.voice]\nrate = 1\n").is_err());
    }
}

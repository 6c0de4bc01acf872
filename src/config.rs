//! Configuration: an optional TOML file, overridden by environment variables.

use std::path::Path;

use anyhow::Context;
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
    /// `CLICKHOUSE_URL`: analytics (not built yet: reported as off).
    pub(crate) clickhouse_url: Option<String>,
    /// `KAFKA_BROKERS`: the event bus (not built yet: reported as off).
    pub(crate) kafka_brokers: Option<String>,
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
            ("KAFKA_BROKERS", &mut config.kafka_brokers),
        ];
        for (name, slot) in overrides {
            if let Some(value) = env(name) {
                *slot = Some(value);
            }
        }
        if let Some(ms) = env("EVENTFOLD_CONSISTENCY_WAIT_MS") {
            config.consistency_wait_ms = Some(
                ms.parse()
                    .context("EVENTFOLD_CONSISTENCY_WAIT_MS must be milliseconds")?,
            );
        }
        Ok(config)
    }
}

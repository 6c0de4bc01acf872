//! The Redis store port.
//!
//! Guarantee: a batch's commands and its checkpoint move go in one `MULTI/EXEC`,
//! guarded by `WATCH` on the checkpoint and the replay's hold key (exactly-once
//! effects). Namespaces are key prefixes under the configured one: `shadow:`,
//! `asof:{label}:`, `old:`. A model's keys are found by its key families.

use std::sync::Arc;

use eventfold_event_schemas::Position;
use redis::AsyncCommands;

use super::redis_swap::{self, OLD_NAMESPACE, SHADOW_NAMESPACE};
use super::{CatchUp, Namespace, ParkedEvent, ReadStore, StoredProgress, SwapReport};
use crate::redis_sink::{connect, scan_keys, RedisKeys, RedisProjection, RedisSink};
use crate::registry::{Model, StoreKind};
use crate::runtime::Sink;
use crate::set::version_of;
use crate::{Error, Result};

/// Where the Redis read models live: a server and a key prefix.
#[derive(Debug, Clone)]
pub struct RedisStore {
    /// The client.
    pub client: redis::Client,
    /// Key naming.
    pub keys: RedisKeys,
}

/// The former name of [`RedisStore`].
pub type RedisTarget = RedisStore;

impl RedisStore {
    /// The sub-namespace of a namespace: `""`, `shadow:`, `asof:{label}:`, `old:`.
    pub fn namespace(namespace: &Namespace) -> String {
        match namespace {
            Namespace::Live => String::new(),
            Namespace::Shadow => SHADOW_NAMESPACE.to_owned(),
            Namespace::Old => OLD_NAMESPACE.to_owned(),
            Namespace::AsOf(label) => format!("asof:{label}:"),
        }
    }

    /// The keys of a namespace.
    pub fn keys_of(&self, namespace: &Namespace) -> RedisKeys {
        self.keys.nested(&Self::namespace(namespace))
    }

    fn projection<'m>(&self, model: &'m Model) -> Result<&'m Arc<dyn RedisProjection>> {
        match model {
            Model::Redis(p) => Ok(p),
            other => Err(Error::WrongStore {
                projection: other.name().to_owned(),
                store: "redis",
            }),
        }
    }
}

#[async_trait::async_trait]
impl ReadStore for RedisStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }

    fn place(&self, namespace: &Namespace) -> String {
        format!("{}{}… keys", self.keys.prefix(), Self::namespace(namespace))
    }

    fn unit(&self) -> &'static str {
        "keys"
    }

    fn sink(&self, model: &Model, namespace: &Namespace) -> Result<Arc<dyn Sink>> {
        let projection = self.projection(model)?.clone();
        Ok(Arc::new(RedisSink::shared(
            self.client.clone(),
            self.keys_of(namespace),
            projection,
        )))
    }

    fn source_sink(&self, model: &Model, source: &str) -> Result<Arc<dyn Sink>> {
        let projection = self.projection(model)?.clone();
        Ok(Arc::new(
            RedisSink::shared(
                self.client.clone(),
                self.keys_of(&Namespace::Live),
                projection,
            )
            .from_source(source),
        ))
    }

    /// Nothing to create: keys appear with their first write, and a query of a model
    /// that never ran finds none.
    async fn setup(&self, model: &Model) -> Result<()> {
        self.projection(model).map(|_| ())
    }

    async fn parked(&self, model: &Model) -> Result<Vec<ParkedEvent>> {
        let mut conn = connect(&self.client).await?;
        let entries: Vec<String> = conn
            .lrange(self.keys.key(format!("parked:{}", model.name())), 0, -1)
            .await?;
        // Each entry is the JSON the sink parked it with (`RedisSink::park`); one that
        // is not is shown as it is rather than hidden.
        let mut parked: Vec<ParkedEvent> = entries
            .into_iter()
            .map(|entry| {
                let v: serde_json::Value = serde_json::from_str(&entry).unwrap_or_default();
                ParkedEvent {
                    position: v["position"].as_i64().unwrap_or_default(),
                    event_type: v["event_type"].as_str().unwrap_or_default().to_owned(),
                    error: v["error"].as_str().map_or(entry.clone(), str::to_owned),
                }
            })
            .collect();
        parked.sort_by_key(|p| p.position);
        Ok(parked)
    }

    async fn progress(&self, model: &Model) -> Result<StoredProgress> {
        let name = model.name();
        let mut conn = connect(&self.client).await?;
        let checkpoint: Option<i64> = conn.get(self.keys.checkpoint(name)).await?;
        let parked: u64 = conn.llen(self.keys.key(format!("parked:{name}"))).await?;
        let rebuilding: bool = conn
            .exists(self.keys_of(&Namespace::Shadow).checkpoint(name))
            .await?;
        // The feeds' checkpoints, `{prefix}checkpoint:{name}@{source}`: found with the
        // port's key scan, read in one round trip.
        let family = format!("checkpoint:{}", crate::runtime::source_checkpoint(name, ""));
        let feeds: Vec<String> = scan_keys(&mut conn, &self.keys, &[&family])
            .await?
            .into_iter()
            .collect();
        let mut sources = std::collections::BTreeMap::new();
        if !feeds.is_empty() {
            let keys: Vec<String> = feeds.iter().map(|f| self.keys.key(f)).collect();
            let positions: Vec<Option<i64>> = conn.mget(&keys).await?;
            for (feed, position) in feeds.iter().zip(positions) {
                if let (Some(source), Some(position)) = (feed.strip_prefix(&family), position) {
                    sources.insert(source.to_owned(), position);
                }
            }
        }
        Ok(StoredProgress {
            name,
            store: StoreKind::Redis.as_str(),
            checkpoint: checkpoint.map(Position),
            parked,
            rebuilding,
            sources,
        })
    }

    async fn reset(&self, model: &Model) -> Result<u64> {
        let name = model.name();
        let families = self.projection(model)?.key_families();
        let mut conn = connect(&self.client).await?;
        let mut doomed: Vec<String> = scan_keys(&mut conn, &self.keys, families)
            .await?
            .iter()
            .map(|k| self.keys.key(k))
            .collect();
        let deleted = doomed.len() as u64;
        doomed.push(self.keys.checkpoint(name));
        // Every source's checkpoint (`checkpoint:{name}@…`).
        let sources = format!("checkpoint:{name}@");
        doomed.extend(
            scan_keys(&mut conn, &self.keys, &[sources.as_str()])
                .await?
                .iter()
                .map(|k| self.keys.key(k)),
        );
        doomed.push(self.keys.key(format!("parked:{name}")));
        for chunk in doomed.chunks(1000) {
            let _: i64 = conn.del(chunk).await?;
        }
        Ok(deleted)
    }

    async fn stored_versions(&self, models: &[&Model]) -> Result<Vec<String>> {
        let mut conn = connect(&self.client).await?;
        let families: Vec<String> = models
            .iter()
            .filter_map(|m| version_of(m.name()))
            .map(|(base, _)| format!("checkpoint:{base}.v"))
            .collect();
        let families: Vec<&str> = families.iter().map(String::as_str).collect();
        Ok(scan_keys(&mut conn, &self.keys, &families)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix("checkpoint:").map(str::to_owned))
            .collect())
    }

    async fn forget(&self, name: &str) -> Result<()> {
        let mut conn = connect(&self.client).await?;
        let _: i64 = conn
            .del(&[
                self.keys.checkpoint(name),
                self.keys.key(format!("parked:{name}")),
            ])
            .await?;
        Ok(())
    }

    async fn swap(
        &self,
        model: &Model,
        keep_old: bool,
        catch_up: &dyn CatchUp,
    ) -> Result<SwapReport> {
        let projection = self.projection(model)?;
        redis_swap::verify_and_swap(&self.client, &self.keys, projection, keep_old, catch_up).await
    }

    async fn interrupted(&self, model: &Model, namespace: &Namespace) -> Result<Position> {
        let mut conn = connect(&self.client).await?;
        // A hold left by an interrupted swap would pause the live model until it
        // expires: free it now.
        let _: i64 = conn.del(self.keys.hold(model.name())).await?;
        let at: Option<i64> = conn
            .get(self.keys_of(namespace).checkpoint(model.name()))
            .await?;
        Ok(Position(at.unwrap_or(0)))
    }
}

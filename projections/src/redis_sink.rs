//! The Redis sink: a batch's writes and the checkpoint in one `MULTI/EXEC`, with
//! `WATCH` on the checkpoint so a second runner of the same projection cannot apply a
//! batch twice.

use std::sync::Arc;
use std::time::Duration;

use eventfold_event_schemas::{DomainEvent, Position, RecordedEvent};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, Client, Pipeline};
use tokio::sync::Mutex;

use crate::runtime::{FailPoint, Projection, Sink};
use crate::{Error, Result};

/// Key naming under a configurable prefix (e.g. `eventfold:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// `{prefix}{name}`.
    pub fn key(&self, name: impl std::fmt::Display) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Keys under `{prefix}{sub}` — e.g. a shadow namespace for a rebuild.
    pub fn nested(&self, sub: &str) -> Self {
        Self::new(format!("{}{sub}", self.prefix))
    }

    /// The checkpoint of `projection`.
    pub fn checkpoint(&self, projection: &str) -> String {
        self.key(format!("checkpoint:{projection}"))
    }

    /// The hold of `projection`: while it exists its runner applies nothing (a replay
    /// is verifying and swapping in a rebuilt model). It carries a time to live.
    pub fn hold(&self, projection: &str) -> String {
        self.key(format!("hold:{projection}"))
    }
}

/// A projection into Redis: it adds commands to the batch's transaction.
pub trait RedisProjection: Projection {
    /// The key families it owns, relative to the prefix (e.g. `["due:", "offer:"]`):
    /// every key it writes starts with one of them, and no other projection's does.
    /// Replay finds, compares and swaps the model's keys by them.
    fn key_families(&self) -> &'static [&'static str];

    /// Queues the commands for one event.
    fn apply(
        &self,
        pipe: &mut Pipeline,
        keys: &RedisKeys,
        event: &DomainEvent,
        record: &RecordedEvent,
    ) -> Result<()>;
}

/// A Redis projection with its checkpoint key.
///
/// Guarantee: a batch's commands and its checkpoint move go in one `MULTI/EXEC`,
/// guarded by `WATCH` on the checkpoint (and the replay's hold): exactly once.
#[derive(Debug)]
pub struct RedisSink<P: ?Sized = dyn RedisProjection> {
    client: Client,
    keys: RedisKeys,
    projection: Arc<P>,
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
    fail_point: FailPoint,
    /// `Some(source)`: its checkpoint is the source's (see [`RedisSink::from_source`]).
    source: Option<String>,
}

/// Connects with short timeouts, so a dead Redis fails fast instead of hanging.
pub(crate) async fn connect(client: &Client) -> Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

impl<P: ?Sized> Clone for RedisSink<P> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            keys: self.keys.clone(),
            projection: self.projection.clone(),
            connection: self.connection.clone(),
            fail_point: self.fail_point.clone(),
            source: self.source.clone(),
        }
    }
}

impl<P: RedisProjection> RedisSink<P> {
    /// The sink of `projection` at `client`, keys under `keys`.
    pub fn new(client: Client, keys: RedisKeys, projection: P) -> Self {
        Self::shared(client, keys, Arc::new(projection))
    }
}

impl<P: RedisProjection + ?Sized> RedisSink<P> {
    /// The sink of a shared projection (the registry's).
    pub fn shared(client: Client, keys: RedisKeys, projection: Arc<P>) -> Self {
        Self {
            client,
            keys,
            projection,
            connection: Arc::new(Mutex::new(None)),
            fail_point: FailPoint::default(),
            source: None,
        }
    }

    /// The same sink with its checkpoint under `checkpoint:{name}@{source}`: one of
    /// several independent feeds of the live model (a Kafka partition), each with its
    /// own checkpoint moved in the `MULTI/EXEC` of its writes.
    pub fn from_source(mut self, source: &str) -> Self {
        self.source = Some(source.to_owned());
        self
    }

    /// The fail point of this sink (tests).
    pub fn fail_point(&self) -> FailPoint {
        self.fail_point.clone()
    }

    fn checkpoint_key(&self) -> String {
        match &self.source {
            None => self.keys.checkpoint(self.projection.name()),
            Some(source) => self.keys.checkpoint(&crate::runtime::source_checkpoint(
                self.projection.name(),
                source,
            )),
        }
    }

    /// The keys.
    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// Runs `f` on the sink's own connection, reconnecting after failures.
    async fn with_connection<T>(
        &self,
        f: impl AsyncFnOnce(&mut MultiplexedConnection) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.connection.lock().await;
        let conn = match guard.as_mut() {
            Some(conn) => conn,
            None => guard.insert(connect(&self.client).await?),
        };
        let result = f(conn).await;
        if result
            .as_ref()
            .is_err_and(|e| matches!(e, Error::Redis(_) | Error::Injected(_)))
        {
            // Unknown connection state (a WATCH may be pending): start afresh.
            *guard = None;
        }
        result
    }
}

#[async_trait::async_trait]
impl<P: RedisProjection + ?Sized> Sink for RedisSink<P> {
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn fail_point(&self) -> FailPoint {
        self.fail_point.clone()
    }

    fn handles(&self, event_type: &str) -> bool {
        self.projection.handles(event_type)
    }

    async fn setup(&self) -> Result<()> {
        let key = self.checkpoint_key();
        self.with_connection(async |conn| {
            let _: bool = conn.set_nx(&key, 0).await?;
            Ok(())
        })
        .await
    }

    async fn checkpoint(&self) -> Result<Position> {
        let key = self.checkpoint_key();
        self.with_connection(async |conn| {
            let position: Option<i64> = conn.get(&key).await?;
            Ok(Position(position.unwrap_or(0)))
        })
        .await
    }

    async fn apply(
        &self,
        from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()> {
        let key = self.checkpoint_key();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (record, event) in events {
            self.projection
                .apply(&mut pipe, &self.keys, event, record)?;
        }
        pipe.set(&key, to.0).ignore();
        let hold = self.keys.hold(self.projection.name());
        self.with_connection(async |conn| {
            // The hold is watched too: a replay that sets it aborts this transaction,
            // so once its SET returns, the model stays still until the swap.
            redis::cmd("WATCH")
                .arg(&key)
                .arg(&hold)
                .exec_async(conn)
                .await?;
            let (current, held): (Option<i64>, Option<String>) = redis::cmd("MGET")
                .arg(&key)
                .arg(&hold)
                .query_async(conn)
                .await?;
            if held.is_some() {
                redis::cmd("UNWATCH").exec_async(conn).await?;
                return Err(Error::Held(self.name().to_owned()));
            }
            if current.unwrap_or(0) != from.0 {
                redis::cmd("UNWATCH").exec_async(conn).await?;
                return Err(Error::CheckpointMoved(self.name().to_owned()));
            }
            if !events.is_empty() {
                self.fail_point.trip()?;
            }
            // Nil: EXEC was aborted because the checkpoint changed after WATCH.
            let result: redis::Value = pipe.query_async(conn).await?;
            if matches!(result, redis::Value::Nil) {
                return Err(Error::CheckpointMoved(self.name().to_owned()));
            }
            Ok(())
        })
        .await
    }

    async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()> {
        let key = self.keys.key(format!("parked:{}", self.projection.name()));
        let entry = serde_json::json!({
            "position": record.global_position, "event_id": record.event_id,
            "event_type": record.event_type, "error": error,
        })
        .to_string();
        self.with_connection(async |conn| {
            let _: i64 = conn.rpush(&key, entry).await?;
            Ok(())
        })
        .await
    }
}

/// Escapes glob characters for `SCAN MATCH`.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The names (relative to the prefix) of the keys under `keys` in `families`.
pub async fn scan_keys(
    conn: &mut MultiplexedConnection,
    keys: &RedisKeys,
    families: &[&str],
) -> Result<std::collections::BTreeSet<String>> {
    let mut names = std::collections::BTreeSet::new();
    for family in families {
        let pattern = format!("{}*", glob_escape(&keys.key(family)));
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await?;
            for key in page {
                if let Some(name) = key.strip_prefix(keys.prefix()) {
                    names.insert(name.to_owned());
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(names)
}

/// Connections shared by queries, one per Redis server: a multiplexed connection
/// pipelines concurrent requests, so queries need not connect each time.
static SHARED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, MultiplexedConnection>>,
> = std::sync::LazyLock::new(Default::default);

fn server_of(client: &Client) -> String {
    client.get_connection_info().addr.to_string()
}

/// A connection shared by every query to `client`'s server.
pub(crate) async fn shared(client: &Client) -> Result<MultiplexedConnection> {
    let server = server_of(client);
    let cached = SHARED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&server)
        .cloned();
    if let Some(conn) = cached {
        return Ok(conn);
    }
    let conn = connect(client).await?;
    SHARED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(server, conn.clone());
    Ok(conn)
}

/// One circuit breaker per Redis server, shared by every query to it (see
/// [`eventfold_event_log::Breaker`]): while the server does not answer its probe (a
/// `PING` on a connection of its own within the probe's bound), queries are refused at
/// once instead of each waiting for its response timeout.
static BREAKERS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, eventfold_event_log::Breaker>>,
> = std::sync::LazyLock::new(Default::default);

/// The breaker of `client`'s server.
pub fn breaker_for(client: &Client) -> eventfold_event_log::Breaker {
    use eventfold_event_log::breaker::{ProbeResult, PROBE_TIMEOUT};
    BREAKERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(server_of(client))
        .or_insert_with(|| {
            let client = client.clone();
            eventfold_event_log::Breaker::with_probe("Redis", move || {
                let client = client.clone();
                Box::pin(async move {
                    let ping = async {
                        let mut conn = connect(&client).await?;
                        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
                        Ok::<_, Error>(pong)
                    };
                    match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
                        Ok(Ok(_)) => ProbeResult::Up,
                        // The server answered, with an error of its own (loading,
                        // authentication): it is there.
                        Ok(Err(Error::Redis(e))) if !gone(&e) => ProbeResult::Up,
                        Ok(Err(e)) => ProbeResult::Down(e.to_string()),
                        Err(_) => ProbeResult::Down(format!(
                            "no answer to PING within {} ms",
                            PROBE_TIMEOUT.as_millis()
                        )),
                    }
                })
            })
        })
        .clone()
}

/// Whether a Redis error may mean the server is gone (or frozen).
fn gone(error: &redis::RedisError) -> bool {
    broken(error) || error.is_connection_refusal()
}

/// A query on the connection shared by every query to `client`'s server, behind its
/// breaker: refused at once while the breaker is open; retried once on a fresh
/// connection when the shared one is broken; a failure that may mean the server is
/// gone, or a query abandoned after waiting [`eventfold_event_log::breaker::SLOW`], has
/// the server probed.
pub(crate) async fn query<T, F, Fut>(client: &Client, op: F) -> Result<T>
where
    F: Fn(MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let attempts = async {
        let mut attempt = 0;
        loop {
            match op(shared(client).await?).await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    evict(client);
                    attempt += 1;
                    if attempt > 1 || !broken(&error) {
                        return Err(Error::Redis(error));
                    }
                }
            }
        }
    };
    breaker_for(client)
        .run_with(attempts, |error| match error {
            Error::Redis(e) => gone(e),
            _ => false,
        })
        .await
}

/// `PING` as a query (through `query`): on the shared connection, behind the breaker.
pub async fn ping(client: &Client) -> Result<()> {
    query(client, |mut conn| async move {
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await
    .map(drop)
}

/// Forgets the shared connection after a failure, so the next query reconnects.
pub(crate) fn evict(client: &Client) {
    SHARED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&server_of(client));
}

/// Whether a Redis error means the connection is broken (server restarted, or the
/// runtime that drove the shared connection is gone): worth one fresh try.
pub(crate) fn broken(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_timeout()
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn escapes_globs() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

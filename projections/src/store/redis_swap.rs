//! Rebuilding Redis read models without downtime.
//!
//! The rebuild folds the log into a shadow namespace (`{prefix}shadow:…`, with its own
//! checkpoint) while the live keys keep serving and following the log. When it has
//! caught up, the replay sets the model's *hold* key (with a time to live): the live
//! runner watches it, so from then on it applies nothing. The shadow takes the last
//! events, both namespaces are read key by key and compared at the same checkpoint,
//! and one `MULTI/EXEC` (guarded by `WATCH` on both checkpoints) deletes the live keys
//! (or renames them to `{prefix}old:…`), renames every shadow key over its live name,
//! moves the live checkpoint and drops the hold. Queries see the old model until the
//! `EXEC` and the new one after it; writes pause for the hold (catching up the tail,
//! comparing, swapping — tens of milliseconds for a few thousand keys).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use eventfold_event_schemas::Position;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use super::{fed_from_kafka, CatchUp, LiveWatch, SwapReport};
use crate::redis_sink::{scan_keys, RedisKeys, RedisProjection, RedisSink};
use crate::runtime::Sink;
use crate::{Error, Result};

/// Sub-namespace of shadow builds.
pub const SHADOW_NAMESPACE: &str = "shadow:";
/// Sub-namespace of replaced models kept with `--keep-old`.
pub const OLD_NAMESPACE: &str = "old:";
/// How long a hold lasts unless renewed: a replay that dies frees the live model.
const HOLD_MS: u64 = 30_000;
/// Keys per SCAN step and per pipelined read.
const CHUNK: usize = 1000;

/// A value rendered canonically: hashes and sets sorted, sorted sets by member.
fn render(kind: &str, value: &redis::Value) -> Result<String> {
    Ok(match kind {
        "string" => format!("string:{:?}", redis::from_redis_value::<String>(value)?),
        "hash" => format!(
            "hash:{:?}",
            redis::from_redis_value::<BTreeMap<String, String>>(value)?
        ),
        "zset" => {
            let mut entries: Vec<(String, f64)> = redis::from_redis_value(value)?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            format!("zset:{entries:?}")
        }
        "set" => format!(
            "set:{:?}",
            redis::from_redis_value::<BTreeSet<String>>(value)?
        ),
        "list" => format!("list:{:?}", redis::from_redis_value::<Vec<String>>(value)?),
        other => format!("{other}:?"),
    })
}

/// Every key of a model under `keys`, by name relative to the prefix, with its value
/// rendered canonically — for comparing two namespaces key by key.
pub async fn snapshot(
    conn: &mut MultiplexedConnection,
    keys: &RedisKeys,
    families: &[&str],
) -> Result<BTreeMap<String, String>> {
    let names: Vec<String> = scan_keys(conn, keys, families).await?.into_iter().collect();
    let mut out = BTreeMap::new();
    for chunk in names.chunks(CHUNK) {
        let mut types = redis::pipe();
        for name in chunk {
            types.cmd("TYPE").arg(keys.key(name));
        }
        let kinds: Vec<String> = types.query_async(conn).await?;
        let mut reads = redis::pipe();
        for (name, kind) in chunk.iter().zip(&kinds) {
            let key = keys.key(name);
            match kind.as_str() {
                "string" => reads.cmd("GET").arg(key),
                "hash" => reads.cmd("HGETALL").arg(key),
                "zset" => reads
                    .cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
                "set" => reads.cmd("SMEMBERS").arg(key),
                "list" => reads.cmd("LRANGE").arg(key).arg(0).arg(-1),
                _ => reads.cmd("EXISTS").arg(key),
            };
        }
        let values: Vec<redis::Value> = reads.query_async(conn).await?;
        for ((name, kind), value) in chunk.iter().zip(&kinds).zip(&values) {
            // "none": deleted between SCAN and read (only in a model that is moving).
            if kind != "none" {
                out.insert(name.clone(), render(kind, value)?);
            }
        }
    }
    Ok(out)
}

/// Keys per family, for the report.
fn counts(snapshot: &BTreeMap<String, String>, families: &[&'static str]) -> Vec<(String, u64)> {
    families
        .iter()
        .map(|f| {
            let n = snapshot.keys().filter(|k| k.starts_with(f)).count() as u64;
            (format!("{f}*"), n)
        })
        .collect()
}

/// How two snapshots differ (a few keys, for the error).
fn differences(live: &BTreeMap<String, String>, rebuilt: &BTreeMap<String, String>) -> String {
    let mut out = vec![format!(
        "live {} keys, rebuilt {} keys",
        live.len(),
        rebuilt.len()
    )];
    let names: BTreeSet<&String> = live.keys().chain(rebuilt.keys()).collect();
    for name in names
        .into_iter()
        .filter(|n| live.get(*n) != rebuilt.get(*n))
        .take(3)
    {
        out.push(format!(
            "{name}: live {:?}, rebuilt {:?}",
            live.get(name),
            rebuilt.get(name)
        ));
    }
    out.join("; ")
}

async fn position(conn: &mut MultiplexedConnection, key: &str) -> Result<Option<i64>> {
    Ok(conn.get(key).await?)
}

/// Holds the live model still, takes the tail into the shadow, compares, swaps.
pub(crate) async fn verify_and_swap(
    client: &redis::Client,
    keys: &RedisKeys,
    projection: &Arc<dyn RedisProjection>,
    keep_old: bool,
    catch_up: &dyn CatchUp,
) -> Result<SwapReport> {
    let name = projection.name();
    let shadow = RedisSink::shared(
        client.clone(),
        keys.nested(SHADOW_NAMESPACE),
        projection.clone(),
    );
    let mut conn = client.get_multiplexed_async_connection().await?;
    let live_checkpoint = keys.checkpoint(name);
    let shadow_checkpoint = shadow.keys().checkpoint(name);
    let hold = keys.hold(name);
    let mut watch = LiveWatch::default();
    for _ in 0..50 {
        let mut live_at = position(&mut conn, &live_checkpoint).await?;
        let shadow_at = position(&mut conn, &shadow_checkpoint).await?.unwrap_or(0);
        fed_from_kafka(name, Position(live_at.unwrap_or(0)))?;
        // A live model behind the shadow and moving is waited for (see the relational
        // swap); one that never ran is simply replaced.
        while live_at.is_some_and(|at| shadow_at > at && watch.keep_waiting(at)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            live_at = position(&mut conn, &live_checkpoint).await?;
        }
        // Freeze the live model (its runner watches the hold). A shadow behind it takes
        // the tail under the hold, in swap_held: chasing a busy live model from here
        // could go on for ever.
        let _: () = redis::cmd("SET")
            .arg(&hold)
            .arg("replay")
            .arg("PX")
            .arg(HOLD_MS)
            .query_async(&mut conn)
            .await?;
        let attempt = swap_held(&mut conn, keys, projection, &shadow, keep_old, catch_up).await;
        match attempt {
            Ok(Some(report)) => return Ok(report),
            Ok(None) => {
                let _: i64 = conn.del(&hold).await?;
            }
            Err(error) => {
                let _: Result<i64, _> = conn.del(&hold).await;
                return Err(error);
            }
        }
    }
    Err(Error::NoCommonCheckpoint(name.to_owned()))
}

/// With the live model held: catch the shadow up, compare, swap. `None`: the
/// checkpoints moved under the swap (retry).
async fn swap_held(
    conn: &mut MultiplexedConnection,
    keys: &RedisKeys,
    projection: &Arc<dyn RedisProjection>,
    shadow: &RedisSink,
    keep_old: bool,
    catch_up: &dyn CatchUp,
) -> Result<Option<SwapReport>> {
    let name = projection.name();
    let families = projection.key_families();
    let live_checkpoint = keys.checkpoint(name);
    let shadow_checkpoint = shadow.keys().checkpoint(name);
    let live_at = position(conn, &live_checkpoint).await?;
    let mut shadow_at = position(conn, &shadow_checkpoint).await?.unwrap_or(0);
    // Taken over by projector workers meanwhile (the `WATCH` below sees any later
    // change): not the log's to replace.
    fed_from_kafka(name, Position(live_at.unwrap_or(0)))?;
    if let Some(live_at) = live_at.filter(|l| *l > shadow_at) {
        // The tail that arrived since the last catch-up: a few events.
        let sink: Arc<dyn Sink> = Arc::new(shadow.clone());
        shadow_at = catch_up.catch_up(sink, Position(live_at)).await?.0;
    }
    let compare = live_at == Some(shadow_at);
    let rebuilt = snapshot(conn, shadow.keys(), families).await?;
    let live = snapshot(conn, keys, families).await?;
    if compare && rebuilt != live {
        return Err(Error::Mismatch {
            projection: name.to_owned(),
            position: shadow_at,
            details: differences(&live, &rebuilt),
        });
    }
    let old_keys = keys.nested(OLD_NAMESPACE);
    let stale_old = if keep_old {
        scan_keys(conn, &old_keys, families).await?
    } else {
        BTreeSet::new()
    };
    redis::cmd("WATCH")
        .arg(&live_checkpoint)
        .arg(&shadow_checkpoint)
        .exec_async(conn)
        .await?;
    let (live_now, shadow_now): (Option<i64>, Option<i64>) = redis::cmd("MGET")
        .arg(&live_checkpoint)
        .arg(&shadow_checkpoint)
        .query_async(conn)
        .await?;
    if live_now != live_at || shadow_now != Some(shadow_at) {
        redis::cmd("UNWATCH").exec_async(conn).await?;
        return Ok(None);
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    let stale: Vec<String> = stale_old.iter().map(|n| old_keys.key(n)).collect();
    for chunk in stale.chunks(CHUNK) {
        pipe.del(chunk).ignore();
    }
    if keep_old {
        for key in live.keys() {
            pipe.rename(keys.key(key), old_keys.key(key)).ignore();
        }
        pipe.set(old_keys.checkpoint(name), live_at.unwrap_or(0))
            .ignore();
    } else {
        let doomed: Vec<String> = live.keys().map(|n| keys.key(n)).collect();
        for chunk in doomed.chunks(CHUNK) {
            pipe.del(chunk).ignore();
        }
    }
    for key in rebuilt.keys() {
        pipe.rename(shadow.keys().key(key), keys.key(key)).ignore();
    }
    pipe.set(&live_checkpoint, shadow_at).ignore();
    pipe.del(&shadow_checkpoint).ignore();
    pipe.del(keys.hold(name)).ignore();
    let result: redis::Value = pipe.query_async(conn).await?;
    if matches!(result, redis::Value::Nil) {
        return Ok(None);
    }
    tracing::info!(
        projection = name,
        position = shadow_at,
        keys = rebuilt.len(),
        "rebuilt Redis model swapped in"
    );
    Ok(Some(SwapReport {
        projection: name.to_owned(),
        position: shadow_at,
        verified_against_live: compare,
        rows: counts(&rebuilt, families),
        kept_old: keep_old,
    }))
}

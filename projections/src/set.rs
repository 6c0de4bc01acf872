//! Every read model of the reference domain, run together.

use eventfold_event_log::EventStore;
use eventfold_event_schemas::Position;
use tokio::task::JoinSet;

use crate::models::catalog::CatalogProjection;
use crate::models::leaderboard::LeaderboardProjection;
use crate::models::orders::OrdersProjection;
use crate::models::purchases::PurchasesProjection;
use crate::models::reminders::RemindersProjection;
use crate::models::voice::VoiceDueProjection;
use crate::models::workouts::WorkoutsProjection;
use crate::{
    ReadDb, RedisKeys, RedisSink, RelationalSink, Result, Runner, RunnerOptions, Sink, StatusBoard,
};

/// The key families of a Redis read model, by name.
pub fn redis_families(name: &str) -> Option<&'static [&'static str]> {
    use crate::RedisProjection;
    match name {
        "voice_due.v1" => Some(VoiceDueProjection.key_families()),
        "leaderboards.v1" => Some(LeaderboardProjection.key_families()),
        _ => None,
    }
}

/// Where the Redis read models live.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    /// The client.
    pub client: redis::Client,
    /// Key naming.
    pub keys: RedisKeys,
}

/// The relational read models, always on.
pub const RELATIONAL: &[&str] = &[
    "reminders.v1",
    "orders.v1",
    "purchases.v1",
    "catalog.v1",
    "workouts.v1",
];
/// The Redis read models, on when Redis is configured.
pub const REDIS: &[&str] = &["voice_due.v1", "leaderboards.v1"];

/// All projections over one log, one read store and (optionally) Redis.
#[derive(Debug, Clone)]
pub struct ProjectionSet<L> {
    log: L,
    db: ReadDb,
    redis: Option<RedisTarget>,
    options: RunnerOptions,
    board: StatusBoard,
}

impl<L: EventStore> ProjectionSet<L> {
    /// The set; status goes to `board`.
    pub fn new(
        log: L,
        db: ReadDb,
        redis: Option<RedisTarget>,
        options: RunnerOptions,
        board: StatusBoard,
    ) -> Self {
        Self {
            log,
            db,
            redis,
            options,
            board,
        }
    }

    /// The names of the projections that run.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = RELATIONAL.to_vec();
        if self.redis.is_some() {
            names.extend_from_slice(REDIS);
        }
        names
    }

    /// The status board.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    fn runner<K: Sink>(&self, sink: K) -> Runner<L, K> {
        Runner::new(
            self.log.clone(),
            sink,
            self.options.clone(),
            self.board.clone(),
        )
    }

    /// Creates every relational read model's tables (and checkpoint), so queries work
    /// before the projectors have run.
    pub async fn setup(&self) -> Result<()> {
        let db = &self.db;
        RelationalSink::new(db.clone(), RemindersProjection)
            .setup()
            .await?;
        RelationalSink::new(db.clone(), OrdersProjection)
            .setup()
            .await?;
        RelationalSink::new(db.clone(), PurchasesProjection)
            .setup()
            .await?;
        RelationalSink::new(db.clone(), CatalogProjection)
            .setup()
            .await?;
        RelationalSink::new(db.clone(), WorkoutsProjection)
            .setup()
            .await?;
        Ok(())
    }

    /// Applies everything up to the log's current head, projection by projection.
    pub async fn catch_up(&self) -> Result<Position> {
        let head = self.log.head().await?;
        let target = Some(head);
        let db = &self.db;
        self.runner(RelationalSink::new(db.clone(), RemindersProjection))
            .run_until(target)
            .await?;
        self.runner(RelationalSink::new(db.clone(), OrdersProjection))
            .run_until(target)
            .await?;
        self.runner(RelationalSink::new(db.clone(), PurchasesProjection))
            .run_until(target)
            .await?;
        self.runner(RelationalSink::new(db.clone(), CatalogProjection))
            .run_until(target)
            .await?;
        self.runner(RelationalSink::new(db.clone(), WorkoutsProjection))
            .run_until(target)
            .await?;
        if let Some(r) = &self.redis {
            self.runner(RedisSink::new(
                r.client.clone(),
                r.keys.clone(),
                VoiceDueProjection,
            ))
            .run_until(target)
            .await?;
            self.runner(RedisSink::new(
                r.client.clone(),
                r.keys.clone(),
                LeaderboardProjection,
            ))
            .run_until(target)
            .await?;
        }
        Ok(head)
    }

    /// Starts every projection following the log live, until `shutdown` changes.
    pub fn spawn(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> JoinSet<Result<()>> {
        self.spawn_except(shutdown, &[])
    }

    /// Starts every projection but those in `skip` (e.g. being rebuilt after a version
    /// bump; start them with [`ProjectionSet::run_one`] when ready).
    pub fn spawn_except(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
        skip: &[&str],
    ) -> JoinSet<Result<()>> {
        let mut set = JoinSet::new();
        for name in self.names() {
            if !skip.contains(&name) {
                let this = self.clone();
                let shutdown = shutdown.clone();
                set.spawn(async move { this.run_one(name, shutdown).await });
            }
        }
        set
    }

    /// Runs one projection following the log until `shutdown` changes.
    pub async fn run_one(
        &self,
        name: &str,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let db = &self.db;
        match (name, &self.redis) {
            ("voice_due.v1", Some(r)) => {
                let sink = RedisSink::new(r.client.clone(), r.keys.clone(), VoiceDueProjection);
                self.runner(sink).run(stop).await
            }
            ("leaderboards.v1", Some(r)) => {
                let sink = RedisSink::new(r.client.clone(), r.keys.clone(), LeaderboardProjection);
                self.runner(sink).run(stop).await
            }
            ("reminders.v1", _) => {
                let sink = RelationalSink::new(db.clone(), RemindersProjection);
                self.runner(sink).run(stop).await
            }
            ("orders.v1", _) => {
                let sink = RelationalSink::new(db.clone(), OrdersProjection);
                self.runner(sink).run(stop).await
            }
            ("purchases.v1", _) => {
                let sink = RelationalSink::new(db.clone(), PurchasesProjection);
                self.runner(sink).run(stop).await
            }
            ("catalog.v1", _) => {
                let sink = RelationalSink::new(db.clone(), CatalogProjection);
                self.runner(sink).run(stop).await
            }
            ("workouts.v1", _) => {
                let sink = RelationalSink::new(db.clone(), WorkoutsProjection);
                self.runner(sink).run(stop).await
            }
            (other, _) => Err(crate::Error::UnknownProjection(other.to_owned())),
        }
    }
}

/// `("reminders", 1)` for `reminders.v1`.
pub fn version_of(name: &str) -> Option<(&str, u32)> {
    let (base, version) = name.rsplit_once(".v")?;
    Some((base, version.parse().ok()?))
}

/// A projection whose stored model was built by another version of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionBump {
    /// The version this build runs, e.g. `reminders.v2`.
    pub name: &'static str,
    /// The versions found in the store, e.g. `["reminders.v1"]`.
    pub previous: Vec<String>,
    /// `relational` or `redis`.
    pub store: &'static str,
}

/// The bumps among `names` given the checkpoint names found in a store: an older
/// version's checkpoint is still there (it is removed once the new version has been
/// rebuilt and swapped in — so a rebuild interrupted by a shutdown is found again).
/// Newer versions are ignored: an old build running beside a new one leaves it alone.
fn bumps_in(names: &[&'static str], stored: &[String], store: &'static str) -> Vec<VersionBump> {
    names
        .iter()
        .filter_map(|name| {
            let (base, version) = version_of(name)?;
            let previous: Vec<String> = stored
                .iter()
                .filter(|s| version_of(s).is_some_and(|(b, v)| b == base && v < version))
                .cloned()
                .collect();
            (!previous.is_empty()).then_some(VersionBump {
                name,
                previous,
                store,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_names() {
        assert_eq!(version_of("reminders.v12"), Some(("reminders", 12)));
        assert_eq!(version_of("voice_due.v1"), Some(("voice_due", 1)));
        assert_eq!(version_of("reminders"), None);
        assert_eq!(version_of("reminders.vx"), None);
    }

    #[test]
    fn only_older_versions_of_the_same_model_are_bumps() {
        let stored: Vec<String> = [
            "reminders.v0",
            "shadow_orders.v0",
            "orders.v1",
            "catalog.v2",
            "asof_x_workouts.v0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let bumps = bumps_in(RELATIONAL, &stored, "relational");
        assert_eq!(
            bumps,
            vec![VersionBump {
                name: "reminders.v1",
                previous: vec!["reminders.v0".to_owned()],
                store: "relational",
            }]
        );
    }
}

impl<L: EventStore> ProjectionSet<L> {
    /// Projections whose read model in the store was built by an older version of them
    /// (a checkpoint under an older `.vN` name is still there). Their tables or keys
    /// hold the old version's data: they need a rebuild before they run, and
    /// [`ProjectionSet::forget_previous`] once the rebuilt model is swapped in.
    pub async fn version_bumps(&self) -> Result<Vec<VersionBump>> {
        let stored: Vec<String> = sqlx::query_scalar("SELECT name FROM eventfold_checkpoints")
            .fetch_all(self.db.pool())
            .await?;
        let mut out = bumps_in(RELATIONAL, &stored, "relational");
        if let Some(r) = &self.redis {
            let mut conn = crate::redis_sink::connect(&r.client).await?;
            let families: Vec<String> = REDIS
                .iter()
                .filter_map(|name| version_of(name))
                .map(|(base, _)| format!("checkpoint:{base}.v"))
                .collect();
            let families: Vec<&str> = families.iter().map(String::as_str).collect();
            let stored: Vec<String> = crate::scan_keys(&mut conn, &r.keys, &families)
                .await?
                .into_iter()
                .filter_map(|k| k.strip_prefix("checkpoint:").map(str::to_owned))
                .collect();
            out.extend(bumps_in(REDIS, &stored, "redis"));
        }
        Ok(out)
    }

    /// Forgets the previous versions of a bumped projection once the new one has been
    /// rebuilt and swapped in: their checkpoints and parked events.
    pub async fn forget_previous(&self, bump: &VersionBump) -> Result<()> {
        for old in &bump.previous {
            match (bump.store, &self.redis) {
                ("redis", Some(r)) => {
                    let mut conn = crate::redis_sink::connect(&r.client).await?;
                    let _: i64 = redis::AsyncCommands::del(
                        &mut conn,
                        &[r.keys.checkpoint(old), r.keys.key(format!("parked:{old}"))],
                    )
                    .await?;
                }
                _ => {
                    sqlx::query("DELETE FROM eventfold_checkpoints WHERE name = $1")
                        .bind(old)
                        .execute(self.db.pool())
                        .await?;
                    sqlx::query("DELETE FROM eventfold_parked_events WHERE projection = $1")
                        .bind(old)
                        .execute(self.db.pool())
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// A projection's progress as its store records it (works from any process).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredProgress {
    /// Versioned name.
    pub name: &'static str,
    /// `relational` or `redis`.
    pub store: &'static str,
    /// Last applied position (`None`: never ran).
    pub checkpoint: Option<Position>,
    /// Parked events.
    pub parked: u64,
    /// A replay's shadow build of it exists (running, or interrupted and resumable).
    pub rebuilding: bool,
}

impl<L: EventStore> ProjectionSet<L> {
    /// Every projection's checkpoint and parked events, read from the stores.
    pub async fn stored_progress(&self) -> Result<Vec<StoredProgress>> {
        use redis::AsyncCommands;
        use sqlx::Row;
        let mut out = Vec::new();
        for name in RELATIONAL {
            let row = sqlx::query(
                "SELECT (SELECT position FROM eventfold_checkpoints WHERE name = $1) AS position, \
                 (SELECT COUNT(*) FROM eventfold_parked_events WHERE projection = $1) AS parked, \
                 (SELECT COUNT(*) FROM eventfold_checkpoints WHERE name = $2) AS shadows",
            )
            .bind(*name)
            .bind(format!("shadow_{name}"))
            .fetch_one(self.db.pool())
            .await?;
            let parked: i64 = row.try_get("parked")?;
            let shadows: i64 = row.try_get("shadows")?;
            out.push(StoredProgress {
                name,
                store: "relational",
                checkpoint: row.try_get::<Option<i64>, _>("position")?.map(Position),
                parked: parked.max(0) as u64,
                rebuilding: shadows > 0,
            });
        }
        if let Some(r) = &self.redis {
            let mut conn = crate::redis_sink::connect(&r.client).await?;
            for name in REDIS {
                let checkpoint: Option<i64> = conn.get(r.keys.checkpoint(name)).await?;
                let parked: u64 = conn.llen(r.keys.key(format!("parked:{name}"))).await?;
                let rebuilding: bool = conn
                    .exists(r.keys.nested("shadow:").checkpoint(name))
                    .await?;
                out.push(StoredProgress {
                    name,
                    store: "redis",
                    checkpoint: checkpoint.map(Position),
                    parked,
                    rebuilding,
                });
            }
        }
        Ok(out)
    }

    /// Deletes a Redis read model: its keys, checkpoint and parked events. A running
    /// runner notices its checkpoint is gone and rebuilds it from the log. Returns the
    /// keys deleted; `None` when Redis is not configured or `name` is not a Redis model.
    pub async fn reset_redis(&self, name: &str) -> Result<Option<u64>> {
        let (Some(r), Some(families)) = (&self.redis, redis_families(name)) else {
            return Ok(None);
        };
        let mut conn = crate::redis_sink::connect(&r.client).await?;
        let mut doomed: Vec<String> = crate::scan_keys(&mut conn, &r.keys, families)
            .await?
            .iter()
            .map(|k| r.keys.key(k))
            .collect();
        let deleted = doomed.len() as u64;
        doomed.push(r.keys.checkpoint(name));
        doomed.push(r.keys.key(format!("parked:{name}")));
        for chunk in doomed.chunks(1000) {
            let _: i64 = redis::AsyncCommands::del(&mut conn, chunk).await?;
        }
        Ok(Some(deleted))
    }

    /// The relational read store.
    pub fn db(&self) -> &ReadDb {
        &self.db
    }

    /// The log.
    pub fn log(&self) -> &L {
        &self.log
    }
}

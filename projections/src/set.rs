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
        let mut set = JoinSet::new();
        let db = &self.db;
        spawn_one(
            &mut set,
            self.runner(RelationalSink::new(db.clone(), RemindersProjection)),
            shutdown.clone(),
        );
        spawn_one(
            &mut set,
            self.runner(RelationalSink::new(db.clone(), OrdersProjection)),
            shutdown.clone(),
        );
        spawn_one(
            &mut set,
            self.runner(RelationalSink::new(db.clone(), PurchasesProjection)),
            shutdown.clone(),
        );
        spawn_one(
            &mut set,
            self.runner(RelationalSink::new(db.clone(), CatalogProjection)),
            shutdown.clone(),
        );
        spawn_one(
            &mut set,
            self.runner(RelationalSink::new(db.clone(), WorkoutsProjection)),
            shutdown.clone(),
        );
        if let Some(r) = &self.redis {
            let voice = RedisSink::new(r.client.clone(), r.keys.clone(), VoiceDueProjection);
            spawn_one(&mut set, self.runner(voice), shutdown.clone());
            let boards = RedisSink::new(r.client.clone(), r.keys.clone(), LeaderboardProjection);
            spawn_one(&mut set, self.runner(boards), shutdown);
        }
        set
    }
}

fn spawn_one<L: EventStore, K: Sink + 'static>(
    set: &mut JoinSet<Result<()>>,
    runner: Runner<L, K>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    set.spawn(async move {
        runner
            .run(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });
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

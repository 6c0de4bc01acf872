//! The connections appends (and the stream reads commands make before them) run on,
//! kept warm.
//!
//! sqlx's pool hands out its idle connections in turn, first in, first out: under a
//! steady stream of appends each one went to the backend that had waited longest, its
//! caches (the CPU's and PostgreSQL's own) gone cold, its process asleep. Appends take
//! their connection here instead: the most recently used one first, so that the same
//! few backends run them. `bench append --group-commit on`, the pool's turn against
//! this, two runs each taking turns: 1 writer 2,277–2,369 → 2,876–3,051 appends/s,
//! 8 writers 8,187–8,399 → 9,558–9,605, 32 writers 18,429–19,396 → 20,776–22,288.
//!
//! A connection is kept only while it is in use often: one left unused for
//! [`IDLE_PING`] goes back to the pool (which would ping it before handing it out
//! again), so the pool's other users are never short of connections appends have
//! stopped using. At most `keep` are kept, a quarter of the pool at most.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgDatabaseError, PgPool, PgSeverity};
use sqlx::Postgres;

use crate::pool::IDLE_PING;

/// Connections kept for appends and stream reads, the most recently used last.
#[derive(Debug)]
pub(crate) struct Warm {
    pool: PgPool,
    keep: usize,
    idle: Mutex<Vec<(Instant, PoolConnection<Postgres>)>>,
    /// Started with the first connection kept (it needs a Tokio runtime).
    sweeper: OnceLock<()>,
}

impl Warm {
    /// Keeps up to `keep` connections of `pool` (fewer when the pool is small).
    pub(crate) fn new(pool: PgPool, keep: usize) -> Arc<Self> {
        let quarter = usize::try_from(pool.options().get_max_connections() / 4).unwrap_or(0);
        Arc::new(Self {
            keep: keep.min(quarter),
            pool,
            idle: Mutex::new(Vec::new()),
            sweeper: OnceLock::new(),
        })
    }

    /// The most recently used connection, or one from the pool.
    pub(crate) async fn take(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let kept = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .filter(|(since, _)| since.elapsed() < IDLE_PING);
        match kept {
            Some((_, conn)) => Ok(conn),
            None => self.pool.acquire().await,
        }
    }

    /// Keeps `conn` for the next append if it is `usable` (see [`usable`]). One not kept
    /// goes back to the pool, which closes it if it is broken.
    pub(crate) fn give(self: &Arc<Self>, conn: PoolConnection<Postgres>, usable: bool) {
        if !usable {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.keep {
            return;
        }
        idle.push((Instant::now(), conn));
        drop(idle);
        self.sweeper.get_or_init(|| {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(sweep(Arc::downgrade(self)));
            }
        });
    }

    /// Connections kept now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Warm {
    /// sqlx returns a dropped connection to its pool on a Tokio task: outside a runtime
    /// (a store dropped after its runtime) that panicked. There the connections are
    /// detached from the pool and closed with their sockets instead.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            let idle = self.idle.get_mut().unwrap_or_else(|e| e.into_inner());
            for (_, conn) in idle.drain(..) {
                drop(conn.detach());
            }
        }
    }
}

/// Whether a connection is still usable after a statement that ended with `error`:
/// the server's own error (a conflict, a collision) leaves it ready for the next one;
/// a fatal one (the server ended the session: terminated, shutting down) or any other
/// (the socket, the protocol) does not. (sqlx's pool pings every connection returned to
/// it and drops the dead; kept here, one is not returned, so this is that check.)
pub(crate) fn usable(error: Option<&sqlx::Error>) -> bool {
    match error {
        None => true,
        Some(sqlx::Error::Database(db)) => !db
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|e| matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
        Some(_) => false,
    }
}

/// Returns connections unused for [`IDLE_PING`] to the pool, until the store is gone.
async fn sweep(warm: Weak<Warm>) {
    loop {
        tokio::time::sleep(IDLE_PING / 2).await;
        let Some(warm) = warm.upgrade() else {
            return;
        };
        let stale: Vec<_> = {
            let mut idle = warm.idle.lock().unwrap_or_else(|e| e.into_inner());
            let stale = idle
                .iter()
                .position(|(since, _)| since.elapsed() < IDLE_PING)
                .unwrap_or(idle.len());
            idle.drain(..stale).collect()
        };
        drop(stale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PgTestDb;
    use sqlx::postgres::PgPoolOptions;

    type Outcome = std::result::Result<(), Box<dyn std::error::Error>>;

    async fn pid(conn: &mut PoolConnection<Postgres>) -> std::result::Result<i32, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await
    }

    #[tokio::test]
    async fn keeps_at_most_a_quarter_of_the_pool() {
        let pool = |max| {
            PgPoolOptions::new()
                .max_connections(max)
                .connect_lazy("postgres://nobody@127.0.0.1:1/none")
                .expect("a lazy pool")
        };
        assert_eq!(Warm::new(pool(16), 3).keep, 3);
        assert_eq!(Warm::new(pool(8), 3).keep, 2);
        assert_eq!(Warm::new(pool(3), 3).keep, 0);
    }

    #[test]
    fn dropped_outside_a_runtime_it_lets_its_connections_go() {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let (db, warm) = runtime
            .block_on(async {
                let db = PgTestDb::new().await?;
                let warm = Warm::new(db.store.pool().clone(), 2);
                let conn = warm.take().await?;
                warm.give(conn, true);
                Ok::<_, Box<dyn std::error::Error>>((db, warm))
            })
            .expect("a connection kept");
        assert_eq!(warm.kept(), 1);
        drop(runtime);
        // Panicked: "this functionality requires a Tokio context".
        drop(warm);
        drop(db);
    }

    #[tokio::test]
    async fn the_last_connection_kept_is_taken_first_and_an_unused_one_goes_back() -> Outcome {
        let db = PgTestDb::new().await?;
        let warm = Warm::new(db.store.pool().clone(), 2);
        let (mut a, mut b, mut c) = (warm.take().await?, warm.take().await?, warm.take().await?);
        let (pa, pb, pc) = (pid(&mut a).await?, pid(&mut b).await?, pid(&mut c).await?);
        assert!(pa != pb && pb != pc && pa != pc);
        warm.give(a, true);
        warm.give(b, true);
        // Two at most.
        warm.give(c, true);
        assert_eq!(warm.kept(), 2);
        let mut again = warm.take().await?;
        assert_eq!(pid(&mut again).await?, pb, "not the most recently used one");

        // The server's error leaves the connection usable; any other may not.
        let failed = sqlx::query("SELECT 1/0").execute(&mut *again).await;
        assert!(matches!(failed, Err(sqlx::Error::Database(_))));
        warm.give(again, usable(failed.as_ref().err()));
        assert_eq!(warm.kept(), 2);
        let mut broken = warm.take().await?;
        assert_eq!(pid(&mut broken).await?, pb);
        warm.give(broken, usable(Some(&sqlx::Error::PoolTimedOut)));
        assert_eq!(warm.kept(), 1);
        // Ended by the server (a fatal error): not kept either.
        let mut ended = warm.take().await?;
        let fatal = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
            .execute(&mut *ended)
            .await;
        assert!(matches!(fatal, Err(sqlx::Error::Database(_))), "{fatal:?}");
        warm.give(ended, usable(fatal.as_ref().err()));
        assert_eq!(warm.kept(), 0);

        // Unused for a second: back to the pool.
        let one = warm.take().await?;
        warm.give(one, true);
        assert_eq!(warm.kept(), 1);
        tokio::time::sleep(IDLE_PING).await;
        for _ in 0..40 {
            if warm.kept() == 0 {
                break;
            }
            tokio::time::sleep(IDLE_PING / 10).await;
        }
        assert_eq!(warm.kept(), 0, "an unused connection was kept");
        Ok(())
    }
}

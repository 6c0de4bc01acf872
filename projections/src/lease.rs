//! One active runner per projection or reaction across `serve` processes.
//!
//! On PostgreSQL a lease is a session advisory lock, `pg_try_advisory_lock(k1, k2)` with
//! `k1` fixed and `k2` a hash of the name, held by one connection per process (the
//! *keeper*, `application_name` = the owner's description). A process that dies loses
//! its connection and with it every lock at once — PostgreSQL notices the closed socket
//! immediately after a `kill -9`, and by TCP keep-alive when a machine vanishes — and the
//! other processes, which try every second, take over. The keeper also checks its
//! connection every second: a process that cannot reach PostgreSQL stops its runners
//! (it can no longer tell whether it still owns them) and reconnects.
//!
//! Who owns what is read from `pg_locks` joined with `pg_stat_activity`, so
//! `projections status` in any process, or a stopped one, can say it.
//!
//! On SQLite (one writer, a file) the process holding an exclusive lock on a file beside
//! the database (`{database}-eventfold.lock`, the holder's description written in it)
//! holds every lease at once; other processes on the same file stand by, try every
//! second, and take over when the holder dies (the operating system releases the lock
//! with the process, `kill -9` included). Before, every `serve` on one file ran every
//! projection and reaction side by side. In memory there is only this process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{Connection, Row};
use tokio::sync::{watch, Notify};

use crate::status::{ProjectionState, StatusBoard};
use crate::{Error, ReadDb, Result, Runner, Sink};
use eventfold_event_log::EventStore;

/// The first key of every Eventfold lease ("EvLs").
const LEASE_SPACE: i32 = 0x4576_4c73;

/// How often leases are tried and the keeper's connection is checked.
const TICK: Duration = Duration::from_secs(1);

/// The second key of `name`'s lease: FNV-1a of the name, stable across builds.
pub fn lease_key(name: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

struct Shared {
    wanted: Mutex<BTreeMap<&'static str, watch::Sender<bool>>>,
    wake: Notify,
}

/// This process's leases. The keeper ends, releasing every lease, once the last clone
/// is dropped.
#[derive(Clone)]
pub struct Leases {
    owner: String,
    shared: Arc<Shared>,
    /// Dropped with the last clone: the keeper's signal to end.
    _alive: Arc<watch::Sender<()>>,
    /// Whether other processes are excluded by a keeper (PostgreSQL) rather than there
    /// being only one (SQLite: every lease held from the start).
    exclusive: bool,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("owner", &self.owner)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

impl Leases {
    /// Leases on `db`: advisory locks on PostgreSQL (a keeper task starts), all held at
    /// once on SQLite. `owner` describes this process (host, pid, address).
    pub fn start(db: &ReadDb, owner: String, board: StatusBoard) -> Self {
        let owner: String = owner.chars().take(63).collect();
        let shared = Arc::new(Shared {
            wanted: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
        });
        let (alive, dropped) = watch::channel(());
        let exclusive = match (db.native_pg(), db.sqlite_file()) {
            (Some(pool), _) => {
                let keeper = keep(pool.clone(), owner.clone(), shared.clone(), board);
                tokio::spawn(until_dropped(dropped, keeper));
                true
            }
            (None, Some(file)) => {
                let keeper = keep_file(lock_file(file), owner.clone(), shared.clone(), board);
                tokio::spawn(until_dropped(dropped, keeper));
                true
            }
            (None, None) => false,
        };
        Self {
            owner,
            shared,
            _alive: Arc::new(alive),
            exclusive,
        }
    }

    /// This process, as the owner column shows it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether leases exclude other processes (PostgreSQL, a SQLite file) or there is
    /// only one (SQLite in memory).
    pub fn shared(&self) -> bool {
        self.exclusive
    }

    /// Asks for `name`'s lease; the receiver says whether this process holds it now.
    pub fn want(&self, name: &'static str) -> watch::Receiver<bool> {
        let receiver = {
            let mut wanted = self.shared.wanted.lock().unwrap_or_else(|e| e.into_inner());
            wanted
                .entry(name)
                .or_insert_with(|| watch::channel(!self.exclusive).0)
                .subscribe()
        };
        self.shared.wake.notify_one();
        receiver
    }

    /// Runs `runner` whenever this process holds its lease, until `shutdown`: standing by
    /// (its checkpoint refreshed from the store, often while a query waits on it)
    /// otherwise. A runner that fails is started again after a pause; one stopped on a
    /// parked event (policy `Stop`) stays stopped.
    pub async fn run<L: EventStore, K: Sink>(
        &self,
        runner: &Runner<L, K>,
        board: &StatusBoard,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let name = runner.sink().name();
        let mut held = self.want(name);
        let mut pause = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            if !*held.borrow_and_update() {
                board.set_state(name, ProjectionState::Standby, None);
                let wait = if board.wanted(name) {
                    Duration::from_millis(10)
                } else {
                    TICK
                };
                tokio::select! {
                    _ = held.changed() => {}
                    _ = shutdown.changed() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                if !*held.borrow() {
                    if let Ok(checkpoint) = runner.sink().checkpoint().await {
                        board.set_standby_checkpoint(name, checkpoint);
                    }
                }
                continue;
            }
            board.set_owner(name, Some(self.owner.clone()));
            tracing::info!(projection = name, owner = %self.owner, "lease held: running");
            let stop = {
                let (mut shutdown, mut held) = (shutdown.clone(), held.clone());
                async move {
                    tokio::select! {
                        _ = shutdown.wait_for(|stop| *stop) => {}
                        _ = held.wait_for(|held| !*held) => {}
                    }
                }
            };
            match runner.run(stop).await {
                Ok(()) if *shutdown.borrow() => return Ok(()),
                Ok(()) => {
                    tracing::warn!(projection = name, "lease lost: standing by");
                }
                // Neither a parked event it stopped on nor a setting it refuses goes away
                // by starting it again.
                Err(error @ (Error::Stopped { .. } | Error::InvalidSetting(_))) => {
                    return Err(error)
                }
                Err(error) => {
                    tracing::error!(projection = name, %error, "runner failed; starting it again");
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Runs `keeper` until every [`Leases`] clone is dropped; the keeper's connection (or
/// lock file) goes with it, and with that every lease it held. Before, keepers outlived
/// their leases: one whose database was then dropped (a bench's, a test's scratch one)
/// warned that it had lost its connection.
async fn until_dropped(
    mut dropped: watch::Receiver<()>,
    keeper: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        // Only ever an error: the sender never sends.
        _ = dropped.changed() => {}
        () = keeper => {}
    }
}

/// The keeper: one connection holding this process's advisory locks.
async fn keep(pool: sqlx::PgPool, owner: String, shared: Arc<Shared>, board: StatusBoard) {
    loop {
        let mut conn = match connect(&pool, &owner).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "lease keeper cannot reach PostgreSQL; retrying");
                tokio::time::sleep(TICK).await;
                continue;
            }
        };
        if let Err(error) = tend(&mut conn, &shared, &board).await {
            tracing::warn!(%error, "lease keeper lost its connection: every lease is released");
        }
        let wanted = shared.wanted.lock().unwrap_or_else(|e| e.into_inner());
        for held in wanted.values() {
            held.send_replace(false);
        }
    }
}

async fn connect(pool: &sqlx::PgPool, owner: &str) -> Result<sqlx::PgConnection> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SELECT set_config('application_name', $1, false)")
        .bind(owner)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Tries the wanted leases and checks the connection every tick (or when a lease is
/// first wanted), until the connection fails.
async fn tend(conn: &mut sqlx::PgConnection, shared: &Shared, board: &StatusBoard) -> Result<()> {
    loop {
        let names: Vec<(&'static str, bool)> = {
            let wanted = shared.wanted.lock().unwrap_or_else(|e| e.into_inner());
            wanted
                .iter()
                .map(|(n, held)| (*n, *held.borrow()))
                .collect()
        };
        for (name, held) in &names {
            if !held {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                    .bind(LEASE_SPACE)
                    .bind(lease_key(name))
                    .fetch_one(&mut *conn)
                    .await?;
                if got {
                    let wanted = shared.wanted.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(sender) = wanted.get(name) {
                        sender.send_replace(true);
                    }
                }
            }
        }
        let owners = owners_on(&mut *conn).await?;
        for (name, _) in &names {
            board.set_owner(name, owners.get(&lease_key(name)).cloned());
        }
        conn.ping().await?;
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Who holds each lease now, by its second key.
async fn owners_on(conn: &mut sqlx::PgConnection) -> Result<BTreeMap<i32, String>> {
    let rows = sqlx::query(
        "SELECT l.objid::text::bigint AS key, COALESCE(a.application_name, '') AS owner
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.classid::text::bigint = $1
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(i64::from(LEASE_SPACE))
    .fetch_all(&mut *conn)
    .await?;
    let mut by_key = BTreeMap::new();
    for row in rows {
        let key: i64 = row.try_get("key")?;
        let owner: String = row.try_get("owner")?;
        // `objid` holds the key's bits as an unsigned oid.
        let key = i32::from_ne_bytes(u32::try_from(key).unwrap_or_default().to_ne_bytes());
        by_key.insert(key, owner);
    }
    Ok(by_key)
}

/// The lock file of the SQLite database `file`.
fn lock_file(file: &std::path::Path) -> std::path::PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push("-eventfold.lock");
    std::path::PathBuf::from(name)
}

/// Takes the lock on `path` if no other process holds it, and writes `owner` in it;
/// `None` while another holds it.
fn try_lock_file(path: &std::path::Path, owner: &str) -> std::io::Result<Option<std::fs::File>> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.write_all(owner.as_bytes())?;
            file.flush()?;
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

/// Who holds the lock on `path` (what the holder wrote in it), if anyone does.
fn lock_holder(path: &std::path::Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    match file.try_lock() {
        // Free: nobody runs the projections now (the lock goes with `file`).
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => std::fs::read_to_string(path)
            .ok()
            .map(|owner| owner.trim().to_owned())
            .filter(|owner| !owner.is_empty()),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// The SQLite keeper: tries the database's lock file every tick (or when a lease is
/// first wanted) and, once it holds it, holds every wanted lease until the process
/// ends.
async fn keep_file(
    path: std::path::PathBuf,
    owner: String,
    shared: Arc<Shared>,
    board: StatusBoard,
) {
    let mut held: Option<std::fs::File> = None;
    let mut warned = false;
    loop {
        if held.is_none() {
            match try_lock_file(&path, &owner) {
                Ok(file) => held = file,
                Err(error) if !warned => {
                    warned = true;
                    tracing::warn!(path = %path.display(), %error, "cannot use the lease lock file; retrying");
                }
                Err(_) => {}
            }
        }
        let holder = if held.is_some() {
            Some(owner.clone())
        } else {
            lock_holder(&path)
        };
        let names: Vec<&'static str> = {
            let wanted = shared.wanted.lock().unwrap_or_else(|e| e.into_inner());
            for sender in wanted.values() {
                sender.send_if_modified(|now| {
                    let changed = *now != held.is_some();
                    *now = held.is_some();
                    changed
                });
            }
            wanted.keys().copied().collect()
        };
        for name in names {
            board.set_owner(name, holder.clone());
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Who holds the lease of each of `names` now (PostgreSQL's advisory locks, or the
/// SQLite file's lock: the same holder for every name).
pub async fn owners(db: &ReadDb, names: &[&str]) -> Result<BTreeMap<String, String>> {
    if let Some(file) = db.sqlite_file() {
        return Ok(match lock_holder(&lock_file(file)) {
            Some(holder) => names
                .iter()
                .map(|name| ((*name).to_owned(), holder.clone()))
                .collect(),
            None => BTreeMap::new(),
        });
    }
    let Some(pool) = db.native_pg() else {
        return Ok(BTreeMap::new());
    };
    let mut conn = pool.acquire().await?;
    let by_key = owners_on(&mut conn).await?;
    Ok(names
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), by_key.get(&lease_key(name))?.clone())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_are_stable_and_distinct() {
        assert_eq!(lease_key("reminders.v1"), lease_key("reminders.v1"));
        assert_ne!(lease_key("reminders.v1"), lease_key("reminders.v2"));
        // FNV-1a of the empty string is its offset basis.
        assert_eq!(
            lease_key(""),
            i32::from_ne_bytes(0x811c_9dc5u32.to_ne_bytes())
        );
    }
}

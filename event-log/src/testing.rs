//! Throw-away databases for tests (feature `testing`): each test gets its own, dropped
//! when the value is dropped, so tests run in parallel and leave nothing behind.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::{GroupCommit, Limits, PgEventStore, Result, SqliteEventStore};

/// The server tests create their databases on: `EVENTFOLD_TEST_POSTGRES`, else the
/// local server as `postgres` without TLS.
pub fn admin_url() -> String {
    std::env::var("EVENTFOLD_TEST_POSTGRES").unwrap_or_else(|_| {
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_owned()
    })
}

/// A fresh, migrated PostgreSQL database, dropped (with its connections) on drop.
#[derive(Debug)]
pub struct PgTestDb {
    /// The event store on it.
    pub store: PgEventStore,
    /// How to connect to it.
    pub options: PgConnectOptions,
    name: String,
}

impl PgTestDb {
    /// Creates and migrates a database with default limits.
    pub async fn new() -> Result<Self> {
        Self::with_limits(Limits::default()).await
    }

    /// Creates and migrates a database.
    pub async fn with_limits(limits: Limits) -> Result<Self> {
        Self::with(limits, GroupCommit::default()).await
    }

    /// Creates and migrates a database whose store groups commits as `group` says.
    pub async fn with(limits: Limits, group: GroupCommit) -> Result<Self> {
        let admin = PgConnectOptions::from_str(&admin_url())?;
        let name = format!("eventfold_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.connect().await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let options = admin.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(24)
            .connect_with(options.clone())
            .await?;
        let store = PgEventStore::from_pool_with(pool, limits, group);
        store.migrate().await?;
        Ok(Self {
            store,
            options,
            name,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        let admin = admin_url();
        let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        if query.is_empty() {
            format!("{server}/{}", self.name)
        } else {
            format!("{server}/{}?{query}", self.name)
        }
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| crate::Error::Database(sqlx::Error::Io(e)))?;
            runtime.block_on(async {
                let mut conn = PgConnectOptions::from_str(&admin_url())?.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A fresh SQLite file in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct SqliteTestDb {
    /// The event store on it.
    pub store: SqliteEventStore,
    /// Its URL.
    pub url: String,
    dir: std::path::PathBuf,
}

impl SqliteTestDb {
    /// Creates and migrates a database with default limits.
    pub async fn new() -> Result<Self> {
        Self::with_limits(Limits::default()).await
    }

    /// Creates and migrates a database.
    pub async fn with_limits(limits: Limits) -> Result<Self> {
        Self::with(limits, GroupCommit::default()).await
    }

    /// Creates and migrates a database whose store groups commits as `group` says.
    pub async fn with(limits: Limits, group: GroupCommit) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("eventfold-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::Database(sqlx::Error::Io(e)))?;
        let url = format!("sqlite://{}", dir.join("log.db").display());
        let store = SqliteEventStore::connect_with(&url, limits, group).await?;
        store.migrate().await?;
        Ok(Self { store, url, dir })
    }
}

impl Drop for SqliteTestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Appends `events` on `conn` with the statement the store itself uses for them (the
/// single-event statement for one, `eventfold_append` for more), inside whatever
/// transaction the caller holds open there: an append that has taken its positions and
/// commits when the caller says. `Ok(None)` when the expected version did not hold.
pub async fn append_in_transaction(
    conn: &mut sqlx::PgConnection,
    stream: &eventfold_event_schemas::StreamId,
    expected: eventfold_event_schemas::ExpectedVersion,
    events: &[eventfold_event_schemas::NewEvent],
) -> Result<Option<crate::AppendResult>> {
    let prepared = crate::append::prepare(&Limits::default(), expected, events)?;
    match crate::postgres::try_append(conn, stream, expected, &prepared).await? {
        crate::postgres::Tried::Stored(rows) => crate::postgres::result_of(&rows).map(Some),
        crate::postgres::Tried::Conflict(_) => Ok(None),
    }
}

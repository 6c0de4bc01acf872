//! Test databases: each test gets its own, dropped when the test ends.

use std::str::FromStr;

use eventfold_event_log::{Limits, PgEventStore, SqliteEventStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

/// The server tests create their databases on (`EVENTFOLD_TEST_POSTGRES` overrides).
pub fn admin_url() -> String {
    std::env::var("EVENTFOLD_TEST_POSTGRES").unwrap_or_else(|_| {
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_owned()
    })
}

/// A fresh, migrated PostgreSQL database, dropped (with its connections) on drop.
pub struct PgTestDb {
    pub store: PgEventStore,
    pub options: PgConnectOptions,
    name: String,
}

impl PgTestDb {
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> anyhow::Result<Self> {
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
        let store = PgEventStore::from_pool(pool, limits);
        store.migrate().await?;
        Ok(Self {
            store,
            options,
            name,
        })
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = PgConnectOptions::from_str(&admin_url())?.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A fresh SQLite file in a temporary directory, removed on drop.
pub struct SqliteTestDb {
    pub store: SqliteEventStore,
    dir: std::path::PathBuf,
}

impl SqliteTestDb {
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("eventfold-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite://{}", dir.join("log.db").display());
        let store = SqliteEventStore::connect_with_limits(&url, limits).await?;
        store.migrate().await?;
        Ok(Self { store, dir })
    }
}

impl Drop for SqliteTestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

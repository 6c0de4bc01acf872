//! The relational read store: PostgreSQL or SQLite through `sqlx::Any`, one SQL text
//! for both (`$1` placeholders work on both; `INSERT … ON CONFLICT … DO UPDATE` too).
//! Times are stored as epoch milliseconds (BIGINT), ids as TEXT.

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::{Error, Result};

/// How a read model's batch transaction begins on PostgreSQL: its commit does not wait
/// for the WAL flush (`synchronous_commit = off` for this transaction only; one round
/// trip with the `BEGIN`). This is safe for exactly-once because a batch's rows and its
/// checkpoint commit in one transaction, and PostgreSQL loses only a suffix of such
/// commits, whole, and only when its server crashes (not when this process dies):
/// the model is then consistently at an earlier checkpoint and folds those events
/// again. What it trades is durability of the last ~0.6 s (3 × `wal_writer_delay`) of
/// read-model progress across a database crash, which the log can always rebuild; the
/// log's own appends keep synchronous commits.
pub(crate) const PG_BATCH_BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// Which SQL engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The engine behind a connection of `sqlx::Any`.
    pub fn of(conn: &sqlx::AnyConnection) -> Self {
        if conn.backend_name() == "PostgreSQL" {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }
}

/// Whether `table` exists where the model's statements would find it (PostgreSQL: by
/// the search path).
pub(crate) async fn table_exists(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    table: &str,
) -> Result<bool> {
    let found: i64 = sqlx::query_scalar(match dialect {
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM (SELECT to_regclass($1) AS t) AS found WHERE t IS NOT NULL"
        }
        Dialect::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
    })
    .bind(table)
    .fetch_one(&mut *conn)
    .await?;
    Ok(found > 0)
}

/// Deletes what a relational model has stored about its progress: its checkpoint, its
/// feeds' checkpoints (`name@…`) and its parked events.
pub(crate) async fn forget_progress(conn: &mut sqlx::AnyConnection, name: &str) -> Result<()> {
    sqlx::query("DELETE FROM eventfold_checkpoints WHERE name = $1 OR name LIKE $2")
        .bind(name)
        .bind(format!("{name}@%"))
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM eventfold_parked_events WHERE projection = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A pool on the relational read store.
#[derive(Debug, Clone)]
pub struct ReadDb {
    pool: AnyPool,
    dialect: Dialect,
    /// On PostgreSQL, a pool of the native driver too: for the projections' native
    /// batch forms (arrays bound whole to `UNNEST`), which `sqlx::Any` cannot bind.
    native: Option<sqlx::PgPool>,
    /// Fails queries fast while the server is unreachable (PostgreSQL; never on SQLite).
    breaker: eventfold_event_log::Breaker,
    /// On SQLite, the database file (`None` in memory): the leases' lock file is kept
    /// beside it.
    sqlite_file: Option<std::path::PathBuf>,
}

const RUNTIME_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS eventfold_checkpoints (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL,
        updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS eventfold_parked_events (
        projection TEXT NOT NULL,
        position BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        error TEXT NOT NULL,
        parked_at BIGINT NOT NULL,
        PRIMARY KEY (projection, position))",
];

impl ReadDb {
    /// Connects to `url` (`postgres://…` or `sqlite://…`) and creates the runtime tables.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(Error::UnsupportedUrl(url.to_owned()));
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        if dialect == Dialect::Postgres {
            // The server's own error (refused, unknown host) rather than the pool's
            // "pool timed out" after 10 s of retries.
            let options: sqlx::postgres::PgConnectOptions = url.parse()?;
            eventfold_event_log::breaker::first_connection(&options, Duration::from_secs(10))
                .await?;
        }
        let sqlite_file = match dialect {
            Dialect::Sqlite => {
                let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
                let file = options.get_filename();
                (file.as_os_str() != ":memory:" && !url.contains("mode=memory"))
                    .then(|| file.to_path_buf())
            }
            Dialect::Postgres => None,
        };
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Postgres => 8,
                Dialect::Sqlite => 4,
            })
            .acquire_timeout(match dialect {
                Dialect::Postgres => eventfold_event_log::ACQUIRE_TIMEOUT,
                Dialect::Sqlite => Duration::from_secs(10),
            })
            // sqlx pings every connection it hands out (a round trip per batch); only
            // one idle for a while is pinged, as in the log's pool.
            .test_before_acquire(false)
            .before_acquire(eventfold_event_log::ping_when_idle::<sqlx::Any>)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 30000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let native = match dialect {
            Dialect::Postgres => Some(
                eventfold_event_log::PgEventStore::pool_options()
                    .max_connections(8)
                    .connect(&url)
                    .await?,
            ),
            Dialect::Sqlite => None,
        };
        let breaker = match &native {
            Some(native) => eventfold_event_log::Breaker::postgres(
                "the read store",
                (*native.connect_options()).clone(),
            ),
            None => eventfold_event_log::Breaker::never(),
        };
        let db = Self {
            pool,
            dialect,
            native,
            breaker,
            sqlite_file,
        };
        db.run_schema(RUNTIME_SCHEMA).await?;
        Ok(db)
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// On SQLite, the database file (`None` in memory and on PostgreSQL).
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.sqlite_file.as_deref()
    }

    /// The circuit breaker of the store's server: callers that answer users check it
    /// before a query and report failures to it (see `eventfold_event_log::breaker`).
    pub fn breaker(&self) -> &eventfold_event_log::Breaker {
        &self.breaker
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The native PostgreSQL pool (`None` on SQLite).
    pub fn native_pg(&self) -> Option<&sqlx::PgPool> {
        self.native.as_ref()
    }

    /// Begins a read model's batch transaction (writes and checkpoint). On PostgreSQL
    /// its commit does not wait for the WAL to reach disk (see `PG_BATCH_BEGIN`).
    pub async fn begin_batch(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.dialect {
            Dialect::Postgres => self.pool.begin_with(PG_BATCH_BEGIN).await?,
            Dialect::Sqlite => self.pool.begin().await?,
        })
    }

    /// Runs idempotent DDL (`CREATE … IF NOT EXISTS`), one statement at a time.
    pub async fn run_schema(&self, statements: &[&str]) -> Result<()> {
        for statement in statements {
            sqlx::query(statement).execute(&self.pool).await?;
        }
        Ok(())
    }
}

/// Serialises read-model DDL on PostgreSQL for the rest of the transaction on `conn`:
/// two sessions running `CREATE TABLE IF NOT EXISTS` for the same new table at once make
/// one fail (`pg_type_typname_nsp_index`), and a table swap must not interleave with a
/// runner creating its tables. SQLite has one writer: nothing to do.
pub async fn lock_ddl(conn: &mut sqlx::AnyConnection, dialect: Dialect) -> Result<()> {
    if dialect == Dialect::Postgres {
        // Any fixed key, shared by every Eventfold process on this database.
        sqlx::query("SELECT pg_advisory_xact_lock(7734000001)")
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Begins a transaction that reads before it writes. On SQLite `BEGIN IMMEDIATE`: the
/// write lock is taken at its start, waiting for another writer as any write does; a
/// deferred transaction that reads first fails at its first write, at once and whatever
/// the busy timeout, with `SQLITE_BUSY_SNAPSHOT` (517, "database is locked") when
/// another connection wrote meanwhile — a `projections reset` beside a running `serve`
/// did. On PostgreSQL a plain `BEGIN`.
pub async fn begin_write(
    pool: &sqlx::AnyPool,
) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    if pool
        .connect_options()
        .database_url
        .scheme()
        .starts_with("sqlite")
    {
        pool.begin_with("BEGIN IMMEDIATE").await
    } else {
        pool.begin().await
    }
}

/// `($1, …, $w), ($w+1, …)`: placeholders of `rows` rows of `width` values, for
/// multi-row statements.
pub(crate) fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$1, …, $n`: an `IN (…)` list.
pub(crate) fn in_list(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row statement (and ids per `IN` list, twice that): well under both
/// engines' parameter limits (PostgreSQL 65535, SQLite 32766).
pub(crate) const ROWS: usize = 200;

/// A row of either driver (`sqlx::Any`, native PostgreSQL) read by column name with the
/// column types read models use, so a model decodes its rows once for both.
pub(crate) trait ModelRow {
    /// A TEXT column.
    fn text(&self, column: &str) -> Result<String>;
    /// A nullable TEXT column.
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    /// A BIGINT column.
    fn int(&self, column: &str) -> Result<i64>;
    /// A nullable BIGINT column.
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    /// A DOUBLE PRECISION column.
    fn float(&self, column: &str) -> Result<f64>;
    /// A nullable DOUBLE PRECISION column.
    fn opt_float(&self, column: &str) -> Result<Option<f64>>;
}

macro_rules! model_row {
    ($row:ty) => {
        impl ModelRow for $row {
            fn text(&self, column: &str) -> Result<String> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn int(&self, column: &str) -> Result<i64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn float(&self, column: &str) -> Result<f64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_float(&self, column: &str) -> Result<Option<f64>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}

model_row!(sqlx::any::AnyRow);
model_row!(sqlx::postgres::PgRow);

/// Epoch milliseconds of a time, the storage format of times in read models.
pub fn millis(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

/// The time of stored epoch milliseconds.
pub fn from_millis(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(in_list(3), "$1, $2, $3");
    }
}

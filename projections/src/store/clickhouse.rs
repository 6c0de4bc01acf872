//! The ClickHouse store port: analytical read models.
//!
//! Guarantee: **re-applying is idempotent**. Every table is a `ReplacingMergeTree`
//! versioned by the event's global position and keyed by what the row describes, so a
//! batch applied twice collapses to one row per key (reads use `FINAL`). A batch's rows
//! are inserted first, its checkpoint after; a crash in between re-applies the batch.
//!
//! Each model has a checkpoint table (`ch_checkpoint__{base}`) and a parked-events table
//! (`ch_parked__{base}`) of its own beside its data tables, all named with the
//! namespace's prefix (`shadow_`, `old_`, `asof_{label}_`): a shadow build is a set of
//! tables with their checkpoint, and the swap is one multi-table `RENAME` — data and
//! checkpoint move together, which ClickHouse (no transactions) needs — though 18.16
//! runs it table by table (a table's directory before its metadata), so a server
//! killed mid-RENAME can leave it half done, a table back empty or missing. The swap
//! marks its RENAME as sent and done (`{model}#renaming:{token}` in `eventfold_holds`);
//! the live sink that finds a mark past its time builds the model again from the log
//! (see [`ClickHouseSink`]). The replaced tables go to names of the swap's own
//! (`retired_{token}_…`, dropped after it or by the next swap), and a shadow missing a
//! data table starts over instead of resuming. During the swap
//! the live model is held (`eventfold_holds`: its sink refuses batches until the hold
//! expires or is lifted), so shadow and live are compared at one checkpoint by row
//! counts and checksums (`sum(cityHash64(…))` over `FINAL`).
//!
//! SQL runs on ClickHouse 18.16 (Debian's) and on current releases: no TTL, no
//! DateTime64, no window functions, no `EXCHANGE TABLES`, no lightweight `DELETE`;
//! monthly partitions and `DROP PARTITION` for retention. Row validation
//! (`RowBinaryWithNamesAndTypes`) is on against servers from 22 on, off before (18.16
//! does not have the format).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventfold_event_schemas::{DomainEvent, Position, RecordedEvent};

use super::{CatchUp, LiveWatch, Namespace, ParkedEvent, ReadStore, StoredProgress, SwapReport};
use crate::registry::{Model, StoreKind};
use crate::runtime::{Projection, Sink};
use crate::set::version_of;
use crate::{Error, Result};

mod sink;
mod store;

pub use sink::ClickHouseSink;
pub use store::ClickHouseStore;

/// Where the ClickHouse read models live: a server and a database.
#[derive(Clone)]
pub struct ClickHouseTarget {
    url: String,
    database: String,
    plain: clickhouse::Client,
    detected: Arc<OnceLock<clickhouse::Client>>,
}

impl std::fmt::Debug for ClickHouseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseTarget")
            .field("url", &self.url)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// A ClickHouse failure as the runtime sees it: unreachable (retried without end) or a
/// refusal (the batch, then the event, fails).
/// Whether a ClickHouse error message carries one of `codes` ("Code: 60, e.displayText()
/// = …" on 18.16, "Code: 60. DB::Exception: …" on current releases).
pub(crate) fn has_code(message: &str, codes: &[&str]) -> bool {
    message.split("Code: ").skip(1).any(|rest| {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        codes.contains(&&rest[..end])
    })
}

pub(crate) fn ch(error: clickhouse::error::Error) -> Error {
    use clickhouse::error::Error as E;
    match error {
        E::Network(_) | E::TimedOut => Error::Unavailable {
            store: "clickhouse",
            reason: error.to_string(),
        },
        other => Error::ClickHouse(other.to_string()),
    }
}

impl ClickHouseTarget {
    /// A target (nothing connects yet): `url` like `http://127.0.0.1:8123`, `database`
    /// a plain identifier (1 to 100 letters, digits and `_`, not beginning with a digit)
    /// other than ClickHouse's own `system` and `information_schema`.
    pub fn new(url: &str, database: &str) -> Result<Self> {
        let identifier = (1..=100).contains(&database.len())
            && database.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            return Err(Error::InvalidSetting(format!(
                "the ClickHouse database (EVENTFOLD_CLICKHOUSE_DATABASE) {database:?}: 1 to 100 \
                 letters, digits and '_', not beginning with a digit"
            )));
        }
        if ["system", "information_schema"]
            .iter()
            .any(|own| own.eq_ignore_ascii_case(database))
        {
            return Err(Error::InvalidSetting(format!(
                "the ClickHouse database (EVENTFOLD_CLICKHOUSE_DATABASE) {database:?} is \
                 ClickHouse's own: name one for Eventfold's analytics (default: eventfold)"
            )));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::InvalidSetting(format!(
                "CLICKHOUSE_URL {url:?} is not ClickHouse's HTTP interface: use http://HOST:8123"
            )));
        }
        let plain = http_client()
            .with_url(url)
            .with_database(database)
            .with_validation(false);
        Ok(Self {
            url: url.to_owned(),
            database: database.to_owned(),
            plain,
            detected: Arc::new(OnceLock::new()),
        })
    }

    /// The HTTP interface's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The client (with row validation once the server's version is known to have it).
    pub fn client(&self) -> &clickhouse::Client {
        self.detected.get().unwrap_or(&self.plain)
    }

    /// Creates the database and learns the server's version (once).
    pub async fn ensure(&self) -> Result<()> {
        if self.detected.get().is_some() {
            return Ok(());
        }
        let server = http_client().with_url(&self.url).with_validation(false);
        server
            .query_raw(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
            .execute()
            .await
            .map_err(ch)?;
        let version: String = server
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(ch)?;
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let client = self.plain.clone().with_validation(major >= 22);
        tracing::info!(%version, validation = major >= 22, "clickhouse connected");
        let _ = self.detected.set(client);
        Ok(())
    }

    /// Whether the server answers now.
    pub async fn ping(&self) -> bool {
        self.plain.query("SELECT 1").fetch_one::<u8>().await.is_ok()
    }

    /// Drops the database and everything in it.
    pub async fn drop_database(&self) -> Result<()> {
        self.run(&format!("DROP DATABASE IF EXISTS {}", self.database))
            .await
    }

    /// Runs a statement without bind parameters.
    pub async fn run(&self, sql: &str) -> Result<()> {
        self.plain.query_raw(sql).execute().await.map_err(ch)
    }

    /// Drops `table`, and with it, on ClickHouse 18.16 (an Ordinary database, a
    /// table's directory named after it), a directory left under its name without a
    /// table: a server stopped in the middle of a RENAME moves a table's directory
    /// before its metadata. Such a directory makes a CREATE of the name fail ("data
    /// directory for table already containing data parts") for good; it is attached
    /// with `definition` (what follows the name in the table's CREATE: columns and
    /// engine), then dropped. Where there is nothing to attach the attach makes an
    /// empty table, or fails, harmlessly.
    pub(crate) async fn discard(&self, table: &str, definition: &str) -> Result<()> {
        self.run(&format!("DROP TABLE IF EXISTS {table}")).await?;
        let attach = format!(
            "ATTACH TABLE {table} /* a directory left without its table (18.16 only, not replayed) */ {definition}"
        );
        if self.run(&attach).await.is_ok() {
            tracing::warn!(
                database = %self.database,
                table,
                "a directory left without its table (a RENAME cut short) was attached and dropped"
            );
        }
        self.run(&format!("DROP TABLE IF EXISTS {table}")).await
    }

    /// Whether `table` is in the database. `EXISTS TABLE` looks the one name up; a
    /// query of `system.tables` lists the database, and 18.16 fails it ("Code: 60 …
    /// doesn't exist") when another table is dropped while it lists (another model's
    /// swap or reset), which stopped a `replay`.
    async fn exists(&self, table: &str) -> Result<bool> {
        self.ensure().await?;
        let n: u8 = self
            .plain
            .query(&format!("EXISTS TABLE {table}"))
            .fetch_one()
            .await
            .map_err(ch)?;
        Ok(n > 0)
    }

    /// Rows of a query of the catalogue (`system.tables`, `system.columns`,
    /// `system.parts`, built by `query` for each attempt). 18.16 fails such a query for
    /// a table dropped while it lists the database ("Code: 60 … doesn't exist"; another
    /// model's swap or reset), which stopped a `replay`: asked again then, a few times.
    pub(crate) async fn catalogue<T>(
        &self,
        query: impl Fn(&clickhouse::Client) -> clickhouse::query::Query,
    ) -> Result<Vec<T>>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let mut attempt = 0;
        loop {
            match query(&self.plain).fetch_all().await {
                Err(clickhouse::error::Error::BadResponse(message))
                    if attempt < 5 && has_code(&message, &["60"]) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                }
                other => return other.map_err(ch),
            }
        }
    }

    /// The names of the database's tables that begin with `prefix`.
    async fn tables_beginning(&self, prefix: &str) -> Result<Vec<String>> {
        self.catalogue(|client| {
            client
                .query("SELECT name FROM system.tables WHERE database = ? AND startsWith(name, ?)")
                .bind(&self.database)
                .bind(prefix)
        })
        .await
    }
}

/// The crate's HTTP client with `TCP_NODELAY`: without it, the small last chunk of
/// every streamed insert waits for the server's delayed ACK (about 25 ms an insert
/// here, against 2 ms with it).
fn http_client() -> clickhouse::Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .build(connector);
    clickhouse::Client::with_http_client(client)
}

/// Tables are named `{prefix}ch_…` in a namespace.
pub fn ch_prefix(namespace: &Namespace) -> String {
    super::RelationalStore::prefix(namespace)
}

/// What a ClickHouse model writes through: the client and its namespace's prefix.
#[derive(Debug, Clone, Copy)]
pub struct ChTables<'a> {
    /// The client.
    pub client: &'a clickhouse::Client,
    /// `""`, `shadow_`, …
    pub prefix: &'a str,
}

impl ChTables<'_> {
    /// The name of `table` (`ch_…`) in this namespace.
    pub fn table(&self, table: &str) -> String {
        format!("{}{table}", self.prefix)
    }
}

/// A read model in ClickHouse.
#[async_trait::async_trait]
pub trait ClickHouseProjection: Projection {
    /// `CREATE TABLE IF NOT EXISTS ch_… (…, version UInt64) ENGINE = ReplacingMergeTree(version) …`
    /// statements; `ch_` is replaced by the namespace's prefix.
    fn schema(&self) -> &'static [&'static str];

    /// The data tables it owns (`ch_…`).
    fn tables(&self) -> &'static [&'static str];

    /// Inserts the rows of `events` (each versioned by its event's position).
    async fn insert(
        &self,
        tables: ChTables<'_>,
        events: &[(&RecordedEvent, &DomainEvent)],
    ) -> Result<()>;
}

/// The base of a model's name: `workout_facts` of `workout_facts.v1`.
fn base(name: &str) -> &str {
    version_of(name).map_or(name, |(base, _)| base)
}

fn checkpoint_table(name: &str) -> String {
    format!("ch_checkpoint__{}", base(name))
}

/// Every table of a model: its data tables, parked events, and its checkpoint last (so
/// that dropping them in this order and stopping half-way leaves the checkpoint).
pub(crate) fn every_table(projection: &dyn ClickHouseProjection) -> Vec<String> {
    let mut tables: Vec<String> = projection
        .tables()
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    tables.push(parked_table(projection.name()));
    tables.push(checkpoint_table(projection.name()));
    tables
}

fn parked_table(name: &str) -> String {
    format!("ch_parked__{}", base(name))
}

/// Serialises the DROP/RENAME statements of swaps within a process (see the swap).
static SWAP_DDL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a swap holds the live model at most (it expires by itself if the replay
/// dies).
const HOLD: Duration = Duration::from_secs(30);

/// How long a sink trusts a "not held" answer: a batch starts at most this long after a
/// hold began, so a swap waits [`SETTLE`] (this, plus time for the batch's insert)
/// before it compares.
const HOLD_RECHECK: Duration = Duration::from_millis(100);

/// How long a swap waits after setting its hold before it compares (see
/// [`HOLD_RECHECK`]).
const SETTLE: Duration = Duration::from_millis(400);

#[derive(clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct CheckpointRow {
    name: String,
    position: i64,
    at: u32,
}

#[derive(clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct ParkedRow {
    name: String,
    position: i64,
    event_type: String,
    error: String,
}

#[derive(clickhouse::Row, serde::Serialize)]
struct HoldRow {
    name: String,
    until: u32,
    at: u64,
}

fn now_secs() -> u32 {
    u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX)
}

/// Inserts `rows` into `table` (nothing when there are none): one insert, one part.
pub(crate) async fn insert_rows<T: clickhouse::RowOwned + clickhouse::RowWrite>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[T],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await.map_err(ch)?;
    for row in rows {
        insert.write(row).await.map_err(ch)?;
    }
    insert.end().await.map_err(ch)
}

/// The name of the hold row that marks a swap's RENAME as sent (`until` its longest
/// time in flight) and, once it is back, as done (`until` 0): a mark left past its time
/// is a RENAME the server may have stopped in the middle of (see
/// [`ClickHouseSink`]'s set-up). The swap's token is in the name.
fn renaming_mark(name: &str, token: &str) -> String {
    format!("{}{token}", renaming_prefix(name))
}

fn renaming_prefix(name: &str) -> String {
    format!("{name}#renaming:")
}

/// How long a swap's RENAME may be in flight before its mark, still there, says it was
/// cut short (a RENAME takes milliseconds).
const RENAME_IN_FLIGHT: Duration = Duration::from_secs(30);

/// Whether `token` is a swap's own (8 hex digits, from `retired_{token}_…` or a
/// RENAME mark): only such a token goes into a table name.
fn is_swap_token(token: &str) -> bool {
    token.len() == 8 && token.chars().all(|c| c.is_ascii_hexdigit())
}

/// A table's CREATE split into its name and what follows (columns and engine).
pub(crate) fn split_create(sql: &str) -> Option<(&str, &str)> {
    let rest = sql.strip_prefix("CREATE TABLE IF NOT EXISTS ")?;
    let (table, definition) = rest.split_once(' ')?;
    Some((table, definition))
}

async fn hold(target: &ClickHouseTarget, name: &str, until: u32) -> Result<()> {
    let at = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0);
    let row = HoldRow {
        name: name.to_owned(),
        until,
        at,
    };
    insert_rows(target.client(), "eventfold_holds", &[row]).await
}

#[cfg(test)]
mod tests;

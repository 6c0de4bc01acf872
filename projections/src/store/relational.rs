//! The relational store port: PostgreSQL or SQLite, next to the log.
//!
//! Guarantee: a batch's writes and its checkpoint move commit in one transaction
//! (exactly-once effects). Portable SQL goes through `sqlx::Any`; on PostgreSQL a model
//! with a native batch form ([`crate::RelationalProjection::postgres`]) is written
//! through the native driver (`UNNEST` over bound arrays), checkpoint in the same
//! native transaction. Shadow and as-of builds write `{prefix}rm_…` tables with their
//! own checkpoint row; the swap compares order-independent table checksums (in the
//! server on PostgreSQL) and renames tables in one transaction.

use std::sync::Arc;

use eventfold_event_schemas::Position;
use sqlx::Row;

use super::{
    relational_swap, CatchUp, Namespace, ParkedEvent, ReadStore, StoredProgress, SwapReport,
};
use crate::registry::{Model, StoreKind};
use crate::runtime::{RelationalProjection, RelationalSink, Sink};
use crate::sql::{Dialect, ReadDb};
use crate::{Error, Result};

/// Prefix of shadow tables (and of a shadow build's checkpoint row).
pub const SHADOW: &str = "shadow_";

/// The relational read store.
#[derive(Debug, Clone)]
pub struct RelationalStore {
    db: ReadDb,
}

impl RelationalStore {
    /// The store over `db`.
    pub fn new(db: ReadDb) -> Self {
        Self { db }
    }

    /// The database.
    pub fn db(&self) -> &ReadDb {
        &self.db
    }

    /// The table prefix of a namespace.
    pub fn prefix(namespace: &Namespace) -> String {
        match namespace {
            Namespace::Live => String::new(),
            Namespace::Shadow => SHADOW.to_owned(),
            Namespace::Old => "old_".to_owned(),
            Namespace::AsOf(label) => format!("asof_{label}_"),
        }
    }

    fn projection<'m>(&self, model: &'m Model) -> Result<&'m Arc<dyn RelationalProjection>> {
        match model {
            Model::Relational(p) => Ok(p),
            other => Err(Error::WrongStore {
                projection: other.name().to_owned(),
                store: "relational",
            }),
        }
    }
}

#[async_trait::async_trait]
impl ReadStore for RelationalStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Relational
    }

    fn place(&self, namespace: &Namespace) -> String {
        format!("{}rm_… tables", Self::prefix(namespace))
    }

    fn unit(&self) -> &'static str {
        "rows"
    }

    fn single_writer(&self) -> bool {
        self.db.dialect() == Dialect::Sqlite
    }

    fn sink(&self, model: &Model, namespace: &Namespace) -> Result<Arc<dyn Sink>> {
        let projection = self.projection(model)?.clone();
        Ok(Arc::new(RelationalSink::shared(
            self.db.clone(),
            projection,
            &Self::prefix(namespace),
        )))
    }

    fn source_sink(&self, model: &Model, source: &str) -> Result<Arc<dyn Sink>> {
        let projection = self.projection(model)?.clone();
        Ok(Arc::new(
            RelationalSink::shared(self.db.clone(), projection, "").from_source(source),
        ))
    }

    async fn setup(&self, model: &Model) -> Result<()> {
        self.sink(model, &Namespace::Live)?.setup().await
    }

    async fn parked(&self, model: &Model) -> Result<Vec<ParkedEvent>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT position, event_type, error FROM eventfold_parked_events \
             WHERE projection = $1 ORDER BY position",
        )
        .bind(model.name())
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.into_iter().map(ParkedEvent::from).collect())
    }

    async fn progress(&self, model: &Model) -> Result<StoredProgress> {
        let name = model.name();
        let row = sqlx::query(
            "SELECT (SELECT position FROM eventfold_checkpoints WHERE name = $1) AS position, \
             (SELECT COUNT(*) FROM eventfold_parked_events WHERE projection = $1) AS parked, \
             (SELECT COUNT(*) FROM eventfold_checkpoints WHERE name = $2) AS shadows",
        )
        .bind(name)
        .bind(format!("{SHADOW}{name}"))
        .fetch_one(self.db.pool())
        .await?;
        let parked: i64 = row.try_get("parked")?;
        let shadows: i64 = row.try_get("shadows")?;
        // The feeds' rows are `{name}@{source}`, found by prefix here (a few dozen rows
        // at most; `LIKE` would read the `_` in the names as a wildcard).
        let feeds = crate::runtime::source_checkpoint(name, "");
        let sources: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, position FROM eventfold_checkpoints")
                .fetch_all(self.db.pool())
                .await?;
        Ok(StoredProgress {
            name,
            store: StoreKind::Relational.as_str(),
            checkpoint: row.try_get::<Option<i64>, _>("position")?.map(Position),
            parked: parked.max(0) as u64,
            rebuilding: shadows > 0,
            sources: sources
                .into_iter()
                .filter_map(|(n, p)| {
                    Some((
                        n.strip_prefix(&feeds).filter(|s| !s.is_empty())?.to_owned(),
                        p,
                    ))
                })
                .collect(),
        })
    }

    async fn reset(&self, model: &Model) -> Result<u64> {
        let projection = self.projection(model)?;
        // It reads (whether each table exists, its rows) before it writes.
        let mut tx = crate::sql::begin_write(self.db.pool()).await?;
        crate::sql::lock_ddl(&mut tx, self.db.dialect()).await?;
        // Its own checkpoint, every source's (`name@…`) and its parked events — first:
        // a live runner's batch takes the checkpoint's row, then the model's tables;
        // taken the other way round (the tables dropped first), a reset beside a
        // running `serve` deadlocked with it on PostgreSQL.
        crate::sql::forget_progress(&mut tx, model.name()).await?;
        let mut deleted = 0u64;
        for table in projection.tables() {
            // Counted first, for the report; a table that never existed counts 0.
            if crate::sql::table_exists(&mut tx, self.db.dialect(), table).await? {
                let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(&mut *tx)
                    .await?;
                deleted += rows.max(0) as u64;
            }
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn stored_versions(&self, _models: &[&Model]) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM eventfold_checkpoints")
            .fetch_all(self.db.pool())
            .await?)
    }

    async fn forget(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM eventfold_checkpoints WHERE name = $1")
            .bind(name)
            .execute(self.db.pool())
            .await?;
        sqlx::query("DELETE FROM eventfold_parked_events WHERE projection = $1")
            .bind(name)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn retire(&self, model: &Model) -> Result<()> {
        for table in self.projection(model)?.retired() {
            for prefix in ["", SHADOW, "old_"] {
                sqlx::query(&format!("DROP TABLE IF EXISTS {prefix}{table}"))
                    .execute(self.db.pool())
                    .await?;
            }
        }
        Ok(())
    }

    async fn swap(
        &self,
        model: &Model,
        keep_old: bool,
        catch_up: &dyn CatchUp,
    ) -> Result<SwapReport> {
        let projection = self.projection(model)?;
        relational_swap::verify_and_swap(&self.db, projection, keep_old, catch_up).await
    }

    async fn interrupted(&self, model: &Model, namespace: &Namespace) -> Result<Position> {
        self.sink(model, namespace)?.checkpoint().await
    }
}

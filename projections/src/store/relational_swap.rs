//! Verify the shadow against the live model at a common checkpoint, then swap tables.

use std::sync::Arc;
use std::time::Duration;

use eventfold_event_schemas::Position;

use super::checksum::table_checksum;
use super::relational::SHADOW;
use super::{fed_from_kafka, CatchUp, LiveWatch, SwapReport};
use crate::runtime::{with_prefix, RelationalProjection, RelationalSink, Sink};
use crate::sql::{Dialect, ReadDb};
use crate::{Error, Result};

/// Index names and statements of a projection's schema.
fn indexes(schema: &[&'static str]) -> Vec<(String, &'static str)> {
    schema
        .iter()
        .filter_map(|s| {
            let rest = s.trim_start().strip_prefix("CREATE INDEX IF NOT EXISTS ")?;
            Some((rest.split_whitespace().next()?.to_owned(), *s))
        })
        .collect()
}

async fn position(db: &ReadDb, name: &str) -> Result<Position> {
    let p: Option<i64> =
        sqlx::query_scalar("SELECT position FROM eventfold_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(db.pool())
            .await?;
    Ok(Position(p.unwrap_or(0)))
}

pub(crate) async fn verify_and_swap(
    db: &ReadDb,
    projection: &Arc<dyn RelationalProjection>,
    keep_old: bool,
    catch_up: &dyn CatchUp,
) -> Result<SwapReport> {
    let name = projection.name();
    let live = RelationalSink::shared(db.clone(), projection.clone(), "");
    let shadow: Arc<dyn Sink> = Arc::new(RelationalSink::shared(
        db.clone(),
        projection.clone(),
        SHADOW,
    ));
    let shadow_name = format!("{SHADOW}{name}");
    live.setup().await?;
    let mut watch = LiveWatch::default();
    for _ in 0..50 {
        let (mut live_at, shadow_at) =
            (position(db, name).await?, position(db, &shadow_name).await?);
        fed_from_kafka(name, live_at)?;
        // A live model behind the shadow and moving (a running `serve` catching up) is
        // waited for, to compare at the same checkpoint.
        while shadow_at > live_at && watch.keep_waiting(live_at.0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            live_at = position(db, name).await?;
        }
        let postgres = db.dialect() == Dialect::Postgres;
        if shadow_at < live_at && !postgres {
            // SQLite: one writer, so the shadow catches up before the lock (a busy
            // live model may need a few rounds).
            catch_up.catch_up(shadow.clone(), live_at).await?;
            continue;
        }
        let mut tx = db.pool().begin().await?;
        // Freeze the live checkpoint: the live runner's next batch waits for this swap
        // (its transaction updates the checkpoint row first).
        sqlx::query("UPDATE eventfold_checkpoints SET updated_at = updated_at WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let read = |n: &str| {
            sqlx::query_scalar::<_, i64>(
                "SELECT position FROM eventfold_checkpoints WHERE name = $1",
            )
            .bind(n.to_owned())
        };
        let live_now = read(name).fetch_one(&mut *tx).await?;
        // Taken over by projector workers while the shadow was built: swapping the log's
        // build in would hand it back to the log behind the workers' backs.
        if let Err(error) = fed_from_kafka(name, Position(live_now)) {
            tx.rollback().await?;
            return Err(error);
        }
        if postgres && position(db, &shadow_name).await?.0 < live_now {
            // PostgreSQL: with the live model held, the shadow takes the last events on
            // other connections — a tail of a few batches, so a busy log cannot keep
            // the swap chasing it.
            catch_up
                .catch_up(shadow.clone(), Position(live_now))
                .await?;
        }
        sqlx::query("UPDATE eventfold_checkpoints SET updated_at = updated_at WHERE name = $1")
            .bind(&shadow_name)
            .execute(&mut *tx)
            .await?;
        let shadow_now = read(&shadow_name).fetch_one(&mut *tx).await?;
        if shadow_now < live_now || (!postgres && live_now != live_at.0) {
            tx.rollback().await?;
            continue;
        }
        let compare = live_now == shadow_now;
        // No runner creates tables while this one renames them.
        crate::sql::lock_ddl(&mut tx, db.dialect()).await?;
        let mut rows = Vec::new();
        let mut differences = Vec::new();
        for table in projection.tables() {
            let new = table_checksum(&mut tx, &format!("{SHADOW}{table}")).await?;
            if compare {
                let old = table_checksum(&mut tx, table).await?;
                if old != new {
                    differences.push(format!(
                        "{table}: live {} rows / {:x}, rebuilt {} rows / {:x}",
                        old.rows, old.sum, new.rows, new.sum
                    ));
                }
            }
            rows.push(((*table).to_owned(), new.rows));
        }
        if !differences.is_empty() {
            tx.rollback().await?;
            return Err(Error::Mismatch {
                projection: name.to_owned(),
                position: shadow_now,
                details: differences.join("; "),
            });
        }
        let sqlite = db.dialect() == Dialect::Sqlite;
        let indexes = indexes(projection.schema());
        for table in projection.tables() {
            sqlx::query(&format!("DROP TABLE IF EXISTS old_{table}"))
                .execute(&mut *tx)
                .await?;
        }
        if sqlite {
            // SQLite cannot rename indexes: drop them, recreate on the new tables.
            for (index, _) in &indexes {
                sqlx::query(&format!("DROP INDEX IF EXISTS {index}"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("DROP INDEX IF EXISTS {SHADOW}{index}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for table in projection.tables() {
            sqlx::query(&format!("ALTER TABLE {table} RENAME TO old_{table}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("ALTER TABLE {SHADOW}{table} RENAME TO {table}"))
                .execute(&mut *tx)
                .await?;
        }
        for (index, statement) in &indexes {
            if sqlite {
                sqlx::query(&with_prefix("", statement))
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(&format!(
                    "ALTER INDEX IF EXISTS {index} RENAME TO old_{index}"
                ))
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!("ALTER INDEX {SHADOW}{index} RENAME TO {index}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("UPDATE eventfold_checkpoints SET position = $1 WHERE name = $2")
            .bind(shadow_now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM eventfold_checkpoints WHERE name = $1")
            .bind(&shadow_name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if !keep_old {
            for table in projection.tables() {
                sqlx::query(&format!("DROP TABLE IF EXISTS old_{table}"))
                    .execute(db.pool())
                    .await?;
            }
        }
        tracing::info!(
            projection = name,
            position = shadow_now,
            "rebuilt model swapped in"
        );
        return Ok(SwapReport {
            projection: name.to_owned(),
            position: shadow_now,
            verified_against_live: compare,
            rows,
            kept_old: keep_old,
        });
    }
    Err(Error::NoCommonCheckpoint(name.to_owned()))
}

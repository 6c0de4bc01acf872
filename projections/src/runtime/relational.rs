//! The sink of a relational projection: its writes and its checkpoint in one transaction.

use std::sync::Arc;

use eventfold_event_schemas::{DomainEvent, Position, RecordedEvent};

use super::{
    source_checkpoint, with_prefix, FailPoint, Kept, PgBatch, PgTx, RelationalProjection, Sink,
    SqlTx,
};
use crate::sql::{millis, Dialect, ReadDb};
use crate::{Error, Result};

/// Moves a batch's checkpoint from where the batch began (`$4`) to its end (`$1`):
/// compare-and-set, so two runners of one projection never both apply a batch.
const MOVE_CHECKPOINT: &str = "UPDATE eventfold_checkpoints SET position = $1, updated_at = $2 \
     WHERE name = $3 AND position = $4";

/// The SQLSTATE [`begin_and_move`] raises when the checkpoint was not where the batch
/// began.
const MOVED: &str = "EF001";

/// A batch's first round trip on PostgreSQL (native and portable paths): `BEGIN`, its
/// settings (its commit does not wait for the WAL, see `PG_BATCH_BEGIN`) and the
/// checkpoint's compare-and-set move from `from` to `to`, which takes the checkpoint
/// row's lock before any write (so a second runner of the projection waits here, then
/// fails) and raises [`MOVED`] when the row was not at `from` — all as one simple query,
/// which can carry no bound parameters: the name goes in hex, the positions are numbers.
fn begin_and_move(name: &str, from: Position, to: Position) -> String {
    use std::fmt::Write as _;
    let hex = name.bytes().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    format!(
        "{}; DO $move$ BEGIN UPDATE eventfold_checkpoints SET position = {}, updated_at = {} \
         WHERE name = convert_from(decode('{hex}', 'hex'), 'UTF8') AND position = {}; \
         IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = '{MOVED}', \
         MESSAGE = 'the checkpoint moved'; END IF; END $move$",
        crate::sql::PG_BATCH_BEGIN,
        to.0,
        millis(chrono::Utc::now()),
        from.0,
    )
}

/// A relational projection with its checkpoint in the same database.
///
/// Guarantee: a batch's writes and its checkpoint move commit in one transaction, so a
/// batch is applied exactly once (a crash between them leaves neither).
#[derive(Debug)]
pub struct RelationalSink<P: ?Sized = dyn RelationalProjection> {
    db: ReadDb,
    projection: Arc<P>,
    fail_point: FailPoint,
    /// Table prefix: empty for the live model, e.g. `shadow_` for a rebuild.
    prefix: String,
    /// Its checkpoint's row: the projection's name, prefixed like the tables.
    checkpoint_name: String,
    /// Whom its parked events are listed under: the projection's name, prefixed.
    park_name: String,
    /// What the projection kept from the last batch this sink committed on
    /// PostgreSQL's native path, and the checkpoint that batch moved to.
    kept: Arc<std::sync::Mutex<Option<(Position, Kept)>>>,
}

impl<P: ?Sized> Clone for RelationalSink<P> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            projection: self.projection.clone(),
            fail_point: self.fail_point.clone(),
            prefix: self.prefix.clone(),
            checkpoint_name: self.checkpoint_name.clone(),
            park_name: self.park_name.clone(),
            // A clone is a sink of its own: it does not take what another committed.
            kept: Arc::default(),
        }
    }
}

impl<P: RelationalProjection> RelationalSink<P> {
    /// The live sink of `projection` in `db`.
    pub fn new(db: ReadDb, projection: P) -> Self {
        Self::with_prefix(db, projection, "")
    }

    /// A sink writing to `{prefix}rm_…` tables with its own checkpoint (a shadow or an
    /// as-of build).
    pub fn with_prefix(db: ReadDb, projection: P, prefix: &str) -> Self {
        Self::shared(db, Arc::new(projection), prefix)
    }
}

impl<P: RelationalProjection + ?Sized> RelationalSink<P> {
    /// A sink of a shared projection (the registry's).
    pub fn shared(db: ReadDb, projection: Arc<P>, prefix: &str) -> Self {
        let checkpoint_name = format!("{prefix}{}", projection.name());
        Self {
            db,
            projection,
            fail_point: FailPoint::default(),
            prefix: prefix.to_owned(),
            park_name: checkpoint_name.clone(),
            checkpoint_name,
            kept: Arc::default(),
        }
    }

    /// The same sink with its checkpoint in the row `{name}@{source}`: one of several
    /// independent feeds of the live model (a Kafka partition), each with its own
    /// checkpoint moved in the transaction of its writes.
    pub fn from_source(mut self, source: &str) -> Self {
        self.checkpoint_name = source_checkpoint(&self.checkpoint_name, source);
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// A live model whose tables are gone while its checkpoint says it applied events
    /// (a table dropped by hand, a partial restore) would go on, its tables created
    /// again empty, from where the checkpoint was: a model missing every row it had.
    /// Its checkpoint, its Kafka feeds' checkpoints, its parked events and the rows of
    /// its tables still there are deleted instead, so that it is rebuilt from the log.
    async fn forget_lost_model(&self, conn: &mut sqlx::AnyConnection) -> Result<()>
    where
        P: RelationalProjection,
    {
        // Shadow builds and Kafka feeds of the live model are not its owner.
        if !self.prefix.is_empty() || self.checkpoint_name != self.projection.name() {
            return Ok(());
        }
        let at: Option<i64> =
            sqlx::query_scalar("SELECT position FROM eventfold_checkpoints WHERE name = $1")
                .bind(&self.checkpoint_name)
                .fetch_optional(&mut *conn)
                .await?;
        // Nothing applied yet. A model fed from Kafka (its checkpoint a hand-over marker)
        // whose tables are lost is handed back to the log the same way: its partition
        // feeds' checkpoints go too, so a worker taking it over again starts from its
        // partitions' first offsets — or refuses, naming them, if its group has read past
        // them — instead of going on from where the lost rows ended.
        let Some(at) = at.filter(|at| *at != 0) else {
            return Ok(());
        };
        let mut lost = Vec::new();
        let mut kept = Vec::new();
        for table in self.projection.tables() {
            if crate::sql::table_exists(conn, self.db.dialect(), table).await? {
                kept.push(*table);
            } else {
                lost.push(*table);
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        let name = self.projection.name();
        tracing::warn!(
            projection = name,
            checkpoint = at,
            lost = %lost.join(", "),
            "the model's tables are gone while its checkpoint says it applied events \
             through {at}: rebuilding it from the log"
        );
        for table in kept {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await?;
        }
        crate::sql::forget_progress(conn, name).await
    }

    /// The name of its checkpoint row.
    pub fn checkpoint_name(&self) -> &str {
        &self.checkpoint_name
    }

    /// The fail point of this sink (tests).
    pub fn fail_point(&self) -> FailPoint {
        self.fail_point.clone()
    }

    /// The database.
    pub fn db(&self) -> &ReadDb {
        &self.db
    }

    /// Whether the batch's checkpoint move (`MOVE_CHECKPOINT`) found the checkpoint where
    /// the batch began: else another runner of this projection moved it.
    fn moved(&self, rows: u64) -> Result<()> {
        if rows == 1 {
            Ok(())
        } else {
            Err(Error::CheckpointMoved(self.projection.name().to_owned()))
        }
    }

    /// Begins a portable batch's transaction with its checkpoint moved from `from` to
    /// `to` first (it takes the write lock at once on SQLite, and fails fast if another
    /// runner of this projection moved it): on PostgreSQL in one round trip
    /// ([`begin_and_move`]), on SQLite as `BEGIN` and the compare-and-set update.
    async fn begin_and_move(
        &self,
        from: Position,
        to: Position,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        if self.db.dialect() == Dialect::Postgres {
            let sql = begin_and_move(&self.checkpoint_name, from, to);
            return self.begun(self.db.pool().begin_with(sql).await);
        }
        let mut tx = self.db.begin_batch().await?;
        let moved = sqlx::query(MOVE_CHECKPOINT)
            .bind(to.0)
            .bind(millis(chrono::Utc::now()))
            .bind(&self.checkpoint_name)
            .bind(from.0)
            .execute(&mut *tx)
            .await?;
        self.moved(moved.rows_affected())?;
        Ok(tx)
    }

    /// The batch through PostgreSQL's native driver: checkpoint, the projection's
    /// native fold, commit — one transaction.
    async fn apply_native(
        &self,
        pool: &sqlx::PgPool,
        native: &dyn PgBatch,
        from: Position,
        events: &[(&RecordedEvent, &DomainEvent)],
        to: Position,
    ) -> Result<()> {
        // What the last committed batch kept, if this batch begins where it ended;
        // taken out either way, and put back only by a batch that commits.
        let kept = self
            .kept
            .lock()
            .ok()
            .and_then(|mut kept| kept.take())
            .and_then(|(at, kept)| (at == from).then_some(kept));
        let sql = begin_and_move(&self.checkpoint_name, from, to);
        let mut tx = PgTx {
            tx: self.begun(pool.begin_with(sql).await)?,
            prefix: &self.prefix,
            kept,
            keep: None,
        };
        native.apply_batch(&mut tx, events).await?;
        if !events.is_empty() {
            self.fail_point.trip()?;
        }
        let keep = tx.keep.take();
        tx.tx.commit().await?;
        if let (Some(keep), Ok(mut kept)) = (keep, self.kept.lock()) {
            *kept = Some((to, keep));
        }
        Ok(())
    }

    /// A transaction [`begin_and_move`] began, or [`Error::CheckpointMoved`] when its
    /// move found the checkpoint elsewhere. A `BEGIN` that failed, or whose future was
    /// dropped, leaves its connection with a `ROLLBACK` queued before the pool hands it
    /// out again (vendor/sqlx-postgres/PATCHED.md).
    fn begun<T>(&self, begun: std::result::Result<T, sqlx::Error>) -> Result<T> {
        match begun {
            Ok(tx) => Ok(tx),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(MOVED) => {
                Err(Error::CheckpointMoved(self.projection.name().to_owned()))
            }
            Err(other) => Err(other.into()),
        }
    }
}

#[async_trait::async_trait]
impl<P: RelationalProjection + ?Sized> Sink for RelationalSink<P> {
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn handles(&self, event_type: &str) -> bool {
        self.projection.handles(event_type)
    }

    fn fail_point(&self) -> FailPoint {
        self.fail_point.clone()
    }

    async fn setup(&self) -> Result<()> {
        if self.db.dialect() == Dialect::Postgres {
            // One transaction holding the DDL lock (see `lock_ddl`).
            let mut tx = self.db.pool().begin().await?;
            crate::sql::lock_ddl(&mut tx, self.db.dialect()).await?;
            self.forget_lost_model(&mut tx).await?;
            for statement in self.projection.schema() {
                sqlx::query(&with_prefix(&self.prefix, statement))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        } else {
            // SQLite: statement by statement. In one transaction, a `CREATE … IF NOT
            // EXISTS` that only reads and a later one that writes would upgrade a read
            // snapshot to a write, which fails at once (SQLITE_BUSY) if anyone wrote
            // meanwhile.
            let mut conn = self.db.pool().acquire().await?;
            self.forget_lost_model(&mut conn).await?;
            drop(conn);
            for statement in self.projection.schema() {
                sqlx::query(&with_prefix(&self.prefix, statement))
                    .execute(self.db.pool())
                    .await?;
            }
        }
        sqlx::query(
            "INSERT INTO eventfold_checkpoints (name, position, updated_at) VALUES ($1, 0, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&self.checkpoint_name)
        .bind(millis(chrono::Utc::now()))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Position> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM eventfold_checkpoints WHERE name = $1")
                .bind(&self.checkpoint_name)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(Position(position.unwrap_or(0)))
    }

    async fn apply(
        &self,
        from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()> {
        let events: Vec<(&RecordedEvent, &DomainEvent)> =
            events.iter().map(|(r, e)| (r, e)).collect();
        if let (Some(pool), Some(native)) = (self.db.native_pg(), self.projection.postgres()) {
            return self.apply_native(pool, native, from, &events, to).await;
        }
        let mut tx = SqlTx {
            tx: self.begin_and_move(from, to).await?,
            dialect: self.db.dialect(),
            prefix: &self.prefix,
        };
        self.projection.apply_batch(&mut tx, &events).await?;
        if !events.is_empty() {
            self.fail_point.trip()?;
        }
        tx.tx.commit().await?;
        Ok(())
    }

    async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO eventfold_parked_events (projection, position, event_id, event_type, error, parked_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (projection, position) DO UPDATE SET error = excluded.error",
        )
        // A shadow or as-of build parks under its own name, not the live model's.
        .bind(&self.park_name)
        .bind(record.global_position.0)
        .bind(record.event_id.to_string())
        .bind(&record.event_type)
        .bind(error)
        .bind(millis(chrono::Utc::now()))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

//! The ClickHouse sink: a batch's rows, then its checkpoint, and the swap's hold.

use std::sync::Arc;

use eventfold_event_schemas::{DomainEvent, Position, RecordedEvent};

use super::{
    ch, ch_prefix, checkpoint_table, every_table, hold, insert_rows, is_swap_token, now_secs,
    parked_table, renaming_mark, renaming_prefix, split_create, ChTables, CheckpointRow,
    ClickHouseProjection, ClickHouseTarget, ParkedRow, HOLD_RECHECK,
};
use crate::runtime::{FailPoint, Sink};
use crate::store::Namespace;
use crate::{Error, Result};

/// The checkpoint write of the last batch, still in flight.
type PendingCheckpoint = tokio::task::JoinHandle<Result<()>>;

/// A model's sink in one namespace.
///
/// One round trip a batch: the batch's insert goes out together with the previous
/// batch's checkpoint write (already covered: its rows were acknowledged), and a
/// "not held" answer is trusted for `HOLD_RECHECK` (100 ms). A crash loses at most the last
/// checkpoint write, and re-applying that batch is idempotent.
pub struct ClickHouseSink {
    target: ClickHouseTarget,
    projection: Arc<dyn ClickHouseProjection>,
    prefix: String,
    fail_point: FailPoint,
    free_at: std::sync::Mutex<Option<std::time::Instant>>,
    pending: tokio::sync::Mutex<Option<PendingCheckpoint>>,
    /// The `name` of its checkpoint rows: the projection's, or `{name}@{source}`.
    checkpoint_name: String,
}

impl std::fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSink")
            .field("projection", &self.projection.name())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ClickHouseSink {
    /// The sink of `projection` in the namespace of `prefix`.
    pub fn new(
        target: ClickHouseTarget,
        projection: Arc<dyn ClickHouseProjection>,
        prefix: &str,
    ) -> Self {
        Self {
            target,
            checkpoint_name: projection.name().to_owned(),
            projection,
            prefix: prefix.to_owned(),
            fail_point: FailPoint::default(),
            free_at: std::sync::Mutex::new(None),
            pending: tokio::sync::Mutex::new(None),
        }
    }

    /// The same sink with its checkpoint rows under `{name}@{source}`: one of several
    /// feeds of the live model (a Kafka partition), each with its own checkpoint.
    pub fn from_source(mut self, source: &str) -> Self {
        self.checkpoint_name = crate::runtime::source_checkpoint(self.projection.name(), source);
        self
    }

    /// Whether a swap holds the live model (answered from a recent check if there is one).
    /// A swap's RENAME cut short under the live log-fed model is a broken schema: the
    /// runner sets the model up again, which builds it again from the log.
    async fn held_now(&self) -> Result<bool> {
        let recent = self
            .free_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < HOLD_RECHECK);
        if recent {
            return Ok(false);
        }
        let marks = self.marks().await?;
        if !marks.held && !marks.cut.is_empty() && self.owns_live() {
            return Err(Error::SchemaBroken {
                projection: self.projection.name().to_owned(),
                reason: "a swap's RENAME was cut short (the server stopped in the middle of \
                         it): the model is built again from the log"
                    .to_owned(),
            });
        }
        *self.free_at.lock().unwrap_or_else(|e| e.into_inner()) =
            (!marks.held).then(std::time::Instant::now);
        Ok(marks.held)
    }

    /// Whether this is the live model's own sink (not a shadow, an as-of build or a
    /// Kafka feed).
    fn owns_live(&self) -> bool {
        self.prefix.is_empty() && self.checkpoint_name == self.projection.name()
    }

    /// The statements that create every table of the model in this namespace (data,
    /// checkpoint, parked events).
    fn creates(&self) -> Vec<String> {
        let name = self.projection.name();
        let mut creates: Vec<String> = self
            .projection
            .schema()
            .iter()
            .map(|statement| statement.replace("ch_", &format!("{}ch_", self.prefix)))
            .collect();
        creates.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (name String, position Int64, at DateTime) ENGINE = MergeTree ORDER BY name",
            self.own(&checkpoint_table(name))
        ));
        creates.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (name String, position Int64, event_type String, error String) ENGINE = MergeTree ORDER BY (name, position)",
            self.own(&parked_table(name))
        ));
        creates
    }

    /// Creates a table; one whose name a directory without a table holds (ClickHouse
    /// 18.16 after a RENAME cut short: "data directory for table already containing
    /// data parts", code 117, for good) is freed first.
    async fn create(&self, sql: &str) -> Result<()> {
        let error = match self.target.run(sql).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let Some((table, definition)) = split_create(sql) else {
            return Err(error);
        };
        let message = error.to_string();
        let held = [
            "Code: 117",
            "already containing data parts",
            "already exists",
        ]
        .iter()
        .any(|sign| message.contains(sign));
        if !held || self.target.exists(table).await? {
            return Err(error);
        }
        self.target.discard(table, definition).await?;
        self.target.run(sql).await
    }

    /// A swap's RENAME the server stopped in the middle of (its mark left past the
    /// time it may be in flight) leaves the live model a mix of old and rebuilt tables,
    /// and on ClickHouse 18.16 — which moves a table's directory before its metadata —
    /// possibly a table back empty under its old name while the checkpoint says its
    /// rows were written. Nothing in the catalogue tells how far it got, so the live
    /// model is built again from the log: its tables and those under the swap's names
    /// are dropped (directories left without their tables with them), and so is the
    /// rebuilt model the swap was moving in, unless a build written since the RENAME
    /// was sent holds the shadow names now. (A RENAME that went through and only lost
    /// its "done" — the `replay` killed at that moment — costs a rebuild.)
    async fn recover_cut_rename(&self) -> Result<()> {
        if !self.owns_live() {
            return Ok(());
        }
        let marks = self.marks().await?;
        if marks.held {
            return Ok(());
        }
        let name = self.projection.name();
        let shadow = ch_prefix(&Namespace::Shadow);
        for (token, sent) in &marks.cut {
            tracing::warn!(
                projection = name,
                token,
                "a swap's RENAME was cut short (the server stopped in the middle of it): the \
                 model's tables may be a mix of the live and the rebuilt ones, one of them \
                 empty; building it again from the log"
            );
            let shadow_checkpoints = format!("{shadow}{}", checkpoint_table(name));
            let shadow_since: u32 = if self.target.exists(&shadow_checkpoints).await? {
                self.target
                    .plain
                    .query(&format!(
                        "SELECT toUInt32(max(at)) FROM {shadow_checkpoints} WHERE name = ?"
                    ))
                    .bind(name)
                    .fetch_one()
                    .await
                    .map_err(ch)?
            } else {
                0
            };
            let shadow_cut = shadow_since <= *sent;
            for sql in self.creates() {
                let Some((table, definition)) = split_create(&sql) else {
                    continue;
                };
                let mut names = vec![table.to_owned()];
                if shadow_cut {
                    names.push(format!("{shadow}{table}"));
                }
                if is_swap_token(token) {
                    names.push(format!("retired_{token}_{table}"));
                }
                for discarded in names {
                    self.target.discard(&discarded, definition).await?;
                }
            }
            hold(&self.target, &renaming_mark(name, token), 0).await?;
        }
        Ok(())
    }

    fn tables(&self) -> ChTables<'_> {
        ChTables {
            client: self.target.client(),
            prefix: &self.prefix,
        }
    }

    fn own(&self, table: &str) -> String {
        format!("{}{table}", self.prefix)
    }

    /// A model whose data tables are gone while its checkpoint says it applied events
    /// would go on, its tables created again empty, from that checkpoint: every table
    /// of the model (checkpoint and parked events too) is dropped instead, so that it is
    /// rebuilt from the log. The same for a shadow or as-of build resumed after an
    /// interruption: ClickHouse 18.16 renames table by table, so a swap cut short (the
    /// server killed, or a rename refused halfway) can leave the shadow's checkpoint
    /// without its data; resumed from that checkpoint into empty tables, every rebuild
    /// after it failed its verification (found by `scripts/stateful-load
    /// --replay-every` with ClickHouse killed). Such a build starts over instead.
    async fn forget_lost_model(&self) -> Result<()> {
        let name = self.projection.name();
        // Kafka feeds of the live model are not its owner.
        if self.checkpoint_name != name {
            return Ok(());
        }
        let checkpoints = self.own(&checkpoint_table(name));
        if !self.target.exists(&checkpoints).await? {
            return Ok(());
        }
        // A swap renames the rebuilt tables in table by table while it holds the model:
        // a table missing then is not lost.
        if self.marks().await?.held {
            return Ok(());
        }
        let mut lost = Vec::new();
        for table in self.projection.tables() {
            let table = self.own(table);
            if !self.target.exists(&table).await? {
                lost.push(table);
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        let at = self.checkpoint().await?;
        if at.0 <= 0 {
            return Ok(());
        }
        tracing::warn!(
            projection = name,
            namespace = %self.prefix,
            checkpoint = at.0,
            lost = %lost.join(", "),
            "the model's tables are gone while its checkpoint says it applied events \
             through {}: building it again from the log",
            at.0
        );
        // The checkpoint last: a crash before it finds the loss again.
        for table in every_table(self.projection.as_ref()) {
            self.target
                .run(&format!("DROP TABLE IF EXISTS {}", self.own(&table)))
                .await?;
        }
        Ok(())
    }

    /// The swap's marks on the live model (none for a shadow or as-of build): whether a
    /// swap holds it now, and the tokens of swaps whose RENAME was sent and not seen
    /// done, past the time it may be in flight.
    async fn marks(&self) -> Result<Marks> {
        if !self.prefix.is_empty() {
            return Ok(Marks::default());
        }
        let name = self.projection.name();
        let prefix = renaming_prefix(name);
        let rows: Vec<(String, u32, u64)> = self
            .target
            .plain
            .query(
                "SELECT name, toUInt32(argMax(until, at)), max(at) FROM eventfold_holds \
                 WHERE name = ? OR startsWith(name, ?) GROUP BY name",
            )
            .bind(name)
            .bind(&prefix)
            .fetch_all()
            .await
            .map_err(ch)?;
        let now = now_secs();
        let mut marks = Marks::default();
        for (row, until, at) in rows {
            if row == name {
                marks.held = until > now;
            } else if let Some(token) = row.strip_prefix(&prefix) {
                if until != 0 && until <= now {
                    let sent = u32::try_from(at / 1_000_000).unwrap_or(u32::MAX);
                    marks.cut.push((token.to_owned(), sent));
                }
            }
        }
        Ok(marks)
    }
}

/// See [`ClickHouseSink::marks`].
#[derive(Debug, Default)]
struct Marks {
    held: bool,
    /// Each cut swap's token and when its RENAME was sent (seconds).
    cut: Vec<(String, u32)>,
}

#[async_trait::async_trait]
impl Sink for ClickHouseSink {
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn handles(&self, event_type: &str) -> bool {
        self.projection.handles(event_type)
    }

    async fn setup(&self) -> Result<()> {
        self.target.ensure().await?;
        self.target
            .run(
                "CREATE TABLE IF NOT EXISTS eventfold_holds (name String, until DateTime, at UInt64) \
                 ENGINE = MergeTree ORDER BY name",
            )
            .await?;
        self.recover_cut_rename().await?;
        self.forget_lost_model().await?;
        for sql in self.creates() {
            self.create(&sql).await?;
        }
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Position> {
        self.settle().await?;
        let position: i64 = self
            .target
            .plain
            .query(&format!(
                "SELECT max(position) FROM {} WHERE name = ?",
                self.own(&checkpoint_table(self.projection.name()))
            ))
            .bind(&self.checkpoint_name)
            .fetch_one()
            .await
            .map_err(ch)?;
        Ok(Position(position))
    }

    async fn apply(
        &self,
        _from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()> {
        if self.held_now().await? {
            return Err(Error::Held(self.projection.name().to_owned()));
        }
        let insert = async {
            if events.is_empty() {
                return Ok(());
            }
            let refs: Vec<(&RecordedEvent, &DomainEvent)> =
                events.iter().map(|(r, e)| (r, e)).collect();
            self.projection.insert(self.tables(), &refs).await
        };
        let (inserted, previous) = tokio::join!(insert, self.settle());
        inserted?;
        previous?;
        self.fail_point.trip()?;
        let (client, table, name) = (
            self.target.client().clone(),
            self.own(&checkpoint_table(self.projection.name())),
            self.checkpoint_name.clone(),
        );
        let write = tokio::spawn(async move {
            let row = CheckpointRow {
                name,
                position: to.0,
                at: now_secs(),
            };
            insert_rows(&client, &table, &[row]).await
        });
        *self.pending.lock().await = Some(write);
        Ok(())
    }

    async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()> {
        let row = ParkedRow {
            name: self.projection.name().to_owned(),
            position: record.global_position.0,
            event_type: record.event_type.clone(),
            error: error.to_owned(),
        };
        let table = self.own(&parked_table(self.projection.name()));
        insert_rows(self.target.client(), &table, &[row]).await
    }

    fn fail_point(&self) -> FailPoint {
        self.fail_point.clone()
    }

    /// Waits for the last batch's checkpoint write.
    async fn settle(&self) -> Result<()> {
        let pending = self.pending.lock().await.take();
        match pending {
            Some(write) => write
                .await
                .map_err(|e| Error::ClickHouse(format!("checkpoint write: {e}")))?,
            None => Ok(()),
        }
    }
}

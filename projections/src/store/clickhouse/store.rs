//! The port itself: setup, catch-up, shadow builds, comparison and the swap (the
//! module's docs say how).

use super::*;

/// The ClickHouse read store.
#[derive(Debug, Clone)]
pub struct ClickHouseStore {
    target: ClickHouseTarget,
}

impl ClickHouseStore {
    /// The store on `target`.
    pub fn new(target: ClickHouseTarget) -> Self {
        Self { target }
    }

    /// The target.
    pub fn target(&self) -> &ClickHouseTarget {
        &self.target
    }

    fn projection<'m>(&self, model: &'m Model) -> Result<&'m Arc<dyn ClickHouseProjection>> {
        match model {
            Model::ClickHouse(p) => Ok(p),
            other => Err(Error::WrongStore {
                projection: other.name().to_owned(),
                store: "clickhouse",
            }),
        }
    }

    /// Rows of a table; with `replacing`, as queries of a `ReplacingMergeTree` see them.
    async fn count(&self, table: &str, replacing: bool) -> Result<u64> {
        if !self.target.exists(table).await? {
            return Ok(0);
        }
        let last = if replacing { " FINAL" } else { "" };
        self.target
            .plain
            .query(&format!("SELECT count() FROM {table}{last}"))
            .fetch_one()
            .await
            .map_err(ch)
    }

    /// The tables swaps cut short left of `tables` (`retired_{token}_{table}`), in one
    /// look at the catalogue.
    pub(super) async fn retired(&self, tables: &[String]) -> Result<Vec<String>> {
        let names = self.target.tables_beginning("retired_").await?;
        Ok(names
            .into_iter()
            .filter(|n| {
                n.strip_prefix("retired_")
                    .and_then(|rest| rest.split_once('_'))
                    .is_some_and(|(token, rest)| {
                        is_swap_token(token) && tables.iter().any(|t| t == rest)
                    })
            })
            .collect())
    }

    /// Rows and an order-independent checksum of a table as its queries see it.
    pub(super) async fn checksum(&self, table: &str) -> Result<(u64, u64)> {
        let columns: Vec<String> = self
            .target
            .catalogue(|client| {
                client
                    .query("SELECT name FROM system.columns WHERE database = ? AND table = ? ORDER BY name")
                    .bind(self.target.database())
                    .bind(table)
            })
            .await?;
        let hashed: Vec<String> = columns
            .iter()
            .map(|c| format!("ifNull(toString({c}), '\\\\N')"))
            .collect();
        let (rows, sum): (u64, u64) = self
            .target
            .plain
            .query(&format!(
                "SELECT count(), sum(cityHash64({})) FROM {table} FINAL",
                hashed.join(", ")
            ))
            .fetch_one()
            .await
            .map_err(ch)?;
        Ok((rows, sum))
    }
}

#[async_trait::async_trait]
impl ReadStore for ClickHouseStore {
    fn kind(&self) -> StoreKind {
        StoreKind::ClickHouse
    }

    fn place(&self, namespace: &Namespace) -> String {
        format!(
            "{}.{}ch_… tables",
            self.target.database(),
            ch_prefix(namespace)
        )
    }

    fn unit(&self) -> &'static str {
        "rows"
    }

    fn batch_size(&self) -> usize {
        5_000
    }

    fn linger(&self) -> Duration {
        // Few large inserts, not many small ones: each insert makes a part.
        Duration::from_millis(200)
    }

    fn sink(&self, model: &Model, namespace: &Namespace) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(ClickHouseSink::new(
            self.target.clone(),
            self.projection(model)?.clone(),
            &ch_prefix(namespace),
        )))
    }

    fn source_sink(&self, model: &Model, source: &str) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(
            ClickHouseSink::new(self.target.clone(), self.projection(model)?.clone(), "")
                .from_source(source),
        ))
    }

    async fn setup(&self, model: &Model) -> Result<()> {
        self.sink(model, &Namespace::Live)?.setup().await
    }

    async fn parked(&self, model: &Model) -> Result<Vec<ParkedEvent>> {
        let table = parked_table(model.name());
        if !self.target.exists(&table).await? {
            return Ok(Vec::new());
        }
        let rows: Vec<ParkedRow> = self
            .target
            .plain
            .query(&format!(
                "SELECT name, position, event_type, error FROM {table} ORDER BY position"
            ))
            .fetch_all()
            .await
            .map_err(ch)?;
        Ok(rows
            .into_iter()
            .map(|r| ParkedEvent {
                position: r.position,
                event_type: r.event_type,
                error: r.error,
            })
            .collect())
    }

    async fn progress(&self, model: &Model) -> Result<StoredProgress> {
        let name = model.name();
        let checkpoint = if self.target.exists(&checkpoint_table(name)).await? {
            Some(self.sink(model, &Namespace::Live)?.checkpoint().await?)
        } else {
            None
        };
        let parked = self.count(&parked_table(name), false).await?;
        let rebuilding = self
            .target
            .exists(&format!(
                "{}{}",
                ch_prefix(&Namespace::Shadow),
                checkpoint_table(name)
            ))
            .await?;
        Ok(StoredProgress {
            name,
            store: StoreKind::ClickHouse.as_str(),
            checkpoint,
            parked,
            rebuilding,
            // Fed by workers beside the log-fed runner (idempotent), never handed over;
            // their partition checkpoints are not listed here.
            sources: Default::default(),
        })
    }

    async fn reset(&self, model: &Model) -> Result<u64> {
        let projection = self.projection(model)?;
        let mut deleted = 0;
        for table in projection.tables() {
            deleted += self.count(table, true).await?;
        }
        for table in every_table(projection.as_ref()) {
            self.target
                .run(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(deleted)
    }

    async fn stored_versions(&self, models: &[&Model]) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for model in models {
            let table = checkpoint_table(model.name());
            if self.target.exists(&table).await? {
                let stored: Vec<String> = self
                    .target
                    .plain
                    .query(&format!("SELECT DISTINCT name FROM {table}"))
                    .fetch_all()
                    .await
                    .map_err(ch)?;
                names.extend(stored);
            }
        }
        Ok(names)
    }

    async fn forget(&self, name: &str) -> Result<()> {
        // The swap replaced the checkpoint table with the new version's: only rows of
        // the old name left behind by a live table that was never swapped remain.
        let table = checkpoint_table(name);
        if self.target.exists(&table).await? {
            self.target
                .plain
                .query(&format!("ALTER TABLE {table} DELETE WHERE name = ?"))
                .bind(name)
                .execute()
                .await
                .map_err(ch)?;
        }
        Ok(())
    }

    async fn swap(
        &self,
        model: &Model,
        keep_old: bool,
        catch_up: &dyn CatchUp,
    ) -> Result<SwapReport> {
        let projection = self.projection(model)?.clone();
        let name = projection.name();
        let shadow = ch_prefix(&Namespace::Shadow);
        let live_sink = ClickHouseSink::new(self.target.clone(), projection.clone(), "");
        let shadow_sink: Arc<dyn Sink> = Arc::new(ClickHouseSink::new(
            self.target.clone(),
            projection.clone(),
            &shadow,
        ));
        live_sink.setup().await?;
        let mut watch = LiveWatch::default();
        let mut live_at = live_sink.checkpoint().await?;
        let shadow_at = shadow_sink.checkpoint().await?;
        while shadow_at > live_at && watch.keep_waiting(live_at.0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            live_at = live_sink.checkpoint().await?;
        }
        // Hold the live model still, take the last events into the shadow, compare.
        hold(
            &self.target,
            name,
            now_secs().saturating_add(HOLD.as_secs() as u32),
        )
        .await?;
        let result = async {
            // A batch that was being inserted when the hold began finishes first.
            tokio::time::sleep(SETTLE).await;
            let live_now = live_sink.checkpoint().await?;
            if shadow_sink.checkpoint().await? < live_now {
                catch_up.catch_up(shadow_sink.clone(), live_now).await?;
            }
            let shadow_now = shadow_sink.checkpoint().await?;
            let compare = shadow_now == live_now;
            let mut rows = Vec::new();
            let mut differences = Vec::new();
            for table in projection.tables() {
                let new = self.checksum(&format!("{shadow}{table}")).await?;
                if compare {
                    let old = self.checksum(table).await?;
                    if old != new {
                        differences.push(format!(
                            "{table}: live {} rows / {:x}, rebuilt {} rows / {:x}",
                            old.0, old.1, new.0, new.1
                        ));
                    }
                }
                rows.push(((*table).to_owned(), new.0));
            }
            if !differences.is_empty() {
                return Err(Error::Mismatch {
                    projection: name.to_owned(),
                    position: shadow_now.0,
                    details: differences.join("; "),
                });
            }
            let tables = every_table(projection.as_ref());
            // One model's swap at a time in this process: ClickHouse 18.16 (an
            // Ordinary database) answered a RENAME TABLE with "Table old_… doesn't exist"
            // for another model's table being dropped at the same moment (two swaps of
            // `replay --all`, seen under scripts/stateful-load).
            let _ddl = SWAP_DDL.lock().await;
            // The replaced tables go to names of this swap's own (`retired_{token}_…`):
            // ClickHouse 18.16 renames table by table, and one killed mid-RENAME can
            // leave a table's directory without its metadata; a later RENAME onto that
            // name was refused ("Target path already exists") halfway through, on
            // every later swap of the model (found by `scripts/stateful-load` with
            // ClickHouse killed). Tables of earlier swaps cut short are dropped first.
            for leftover in self.retired(&tables).await? {
                self.target
                    .run(&format!("DROP TABLE IF EXISTS {leftover}"))
                    .await?;
            }
            for table in &tables {
                self.target
                    .run(&format!("DROP TABLE IF EXISTS old_{table}"))
                    .await?;
            }
            let token = &uuid::Uuid::new_v4().simple().to_string()[..8];
            // Marked before it is sent: a server stopped halfway through it leaves the
            // model's tables a mix of the live and the rebuilt ones — on 18.16 one of
            // them possibly back empty under its old name — and the live sink's
            // set-up, finding the mark past its time, builds the model again.
            let mark = renaming_mark(name, token);
            hold(
                &self.target,
                &mark,
                now_secs().saturating_add(RENAME_IN_FLIGHT.as_secs() as u32),
            )
            .await?;
            // One statement: data, checkpoint and parked tables move together.
            let mut renames = Vec::new();
            let mut replaced = Vec::new();
            for table in &tables {
                if self.target.exists(table).await? {
                    renames.push(format!("{table} TO retired_{token}_{table}"));
                    replaced.push(table);
                }
                renames.push(format!("{shadow}{table} TO {table}"));
            }
            self.target
                .run(&format!("RENAME TABLE {}", renames.join(", ")))
                .await?;
            hold(&self.target, &mark, 0).await?;
            for table in replaced {
                let retired = format!("retired_{token}_{table}");
                if !keep_old {
                    self.target
                        .run(&format!("DROP TABLE IF EXISTS {retired}"))
                        .await?;
                } else if let Err(error) = self
                    .target
                    .run(&format!("RENAME TABLE {retired} TO old_{table}"))
                    .await
                {
                    tracing::warn!(projection = name, %error, "the replaced table is kept as {retired}, not old_{table}");
                }
            }
            Ok(SwapReport {
                projection: name.to_owned(),
                position: shadow_now.0,
                verified_against_live: compare,
                rows,
                kept_old: keep_old,
            })
        }
        .await;
        hold(&self.target, name, 0).await?;
        result
    }

    async fn interrupted(&self, model: &Model, namespace: &Namespace) -> Result<Position> {
        let _ = hold(&self.target, model.name(), 0).await;
        let sink = self.sink(model, namespace)?;
        sink.setup().await?;
        sink.checkpoint().await
    }
}

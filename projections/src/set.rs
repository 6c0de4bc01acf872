//! Every read model of a build, run together: the registry's models over the stores of
//! a deployment. Nothing here knows a model by name.

use std::sync::Arc;

use eventfold_event_log::EventStore;
use eventfold_event_schemas::Position;
use tokio::task::JoinSet;

use crate::registry::{Model, Registry, StoreKind};
use crate::store::{Namespace, ReadStore, RedisStore, RelationalStore, StoredProgress, Stores};
use crate::{Error, ReadDb, Result, Runner, RunnerOptions, Sink, StatusBoard};

/// All projections over one log, one relational read store and (optionally) Redis.
#[derive(Debug, Clone)]
pub struct ProjectionSet<L> {
    log: L,
    db: ReadDb,
    registry: Registry,
    stores: Stores,
    options: RunnerOptions,
    board: StatusBoard,
}

impl<L: EventStore> ProjectionSet<L> {
    /// The reference domain's models ([`crate::models::reference`]) over `db` and, when
    /// configured, Redis; status goes to `board`.
    pub fn new(
        log: L,
        db: ReadDb,
        redis: Option<RedisStore>,
        options: RunnerOptions,
        board: StatusBoard,
    ) -> Self {
        let mut stores = Stores::new().with(Arc::new(RelationalStore::new(db.clone())));
        if let Some(redis) = redis {
            stores = stores.with(Arc::new(redis));
        }
        Self::with_registry(log, db, crate::models::reference(), stores, options, board)
    }

    /// The same set with the ClickHouse store (its models run from now on).
    pub fn with_clickhouse(mut self, target: Option<crate::ClickHouseTarget>) -> Self {
        if let Some(target) = target {
            self.stores = self
                .stores
                .with(Arc::new(crate::ClickHouseStore::new(target)));
        }
        self
    }

    /// Any registry over any stores.
    pub fn with_registry(
        log: L,
        db: ReadDb,
        registry: Registry,
        stores: Stores,
        options: RunnerOptions,
        board: StatusBoard,
    ) -> Self {
        Self {
            log,
            db,
            registry,
            stores,
            options,
            board,
        }
    }

    /// The models whose store is configured: the ones that run.
    pub fn active(&self) -> impl Iterator<Item = &Model> {
        self.registry
            .models()
            .iter()
            .filter(|m| self.stores.of(m.store()).is_some())
    }

    /// The names of the projections that run.
    pub fn names(&self) -> Vec<&'static str> {
        self.active().map(Model::name).collect()
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The status board.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// The model called `name` and its store, or why not.
    pub fn model(&self, name: &str) -> Result<(&Model, &Arc<dyn ReadStore>)> {
        let model = self
            .registry
            .get(name)
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))?;
        Ok((model, self.stores.for_model(model)?))
    }

    fn runner(&self, model: &Model) -> Result<Runner<L, Arc<dyn Sink>>> {
        let store = self.stores.for_model(model)?;
        let sink = store.sink(model, &Namespace::Live)?;
        let options = RunnerOptions {
            linger: store.linger().max(self.options.linger),
            batch_size: store.batch_size().max(self.options.batch_size),
            ..self.options.clone()
        };
        Ok(Runner::new(
            self.log.clone(),
            sink,
            options,
            self.board.clone(),
        ))
    }

    /// Creates what every model's queries need (tables and checkpoints), so queries
    /// work before the projectors have run. An optional store that is unreachable
    /// (ClickHouse, Redis) is left to its runners, which retry until it answers.
    pub async fn setup(&self) -> Result<()> {
        for model in self.active() {
            let store = self.stores.for_model(model)?;
            match store.setup(model).await {
                Err(error) if store.kind() != StoreKind::Relational => {
                    tracing::warn!(projection = model.name(), %error, "store failed at start-up; its runner retries and reports");
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Applies everything up to the log's current head, projection by projection.
    pub async fn catch_up(&self) -> Result<Position> {
        let head = self.log.head().await?;
        for model in self.active() {
            self.runner(model)?.run_until(Some(head)).await?;
        }
        Ok(head)
    }

    /// Starts every projection following the log live, until `shutdown` changes.
    pub fn spawn(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> JoinSet<Result<()>> {
        self.spawn_except(shutdown, &[])
    }

    /// Starts every projection but those in `skip` (e.g. being rebuilt after a version
    /// bump; start them with [`ProjectionSet::run_one`] when ready).
    pub fn spawn_except(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
        skip: &[&str],
    ) -> JoinSet<Result<()>> {
        let mut set = JoinSet::new();
        for name in self.names() {
            if !skip.contains(&name) {
                let this = self.clone();
                let shutdown = shutdown.clone();
                set.spawn(async move { this.run_one(name, shutdown).await });
            }
        }
        set
    }

    /// Starts every projection but those in `skip`, each running only while this
    /// process holds its lease (standing by otherwise), until `shutdown` changes.
    pub fn spawn_leased(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
        skip: &[&str],
        leases: &crate::Leases,
    ) -> JoinSet<Result<()>> {
        let mut set = JoinSet::new();
        for name in self.names() {
            if !skip.contains(&name) {
                let (this, shutdown, leases) = (self.clone(), shutdown.clone(), leases.clone());
                set.spawn(async move { this.run_leased(name, shutdown, &leases).await });
            }
        }
        set
    }

    /// Runs one projection whenever this process holds its lease, until `shutdown`.
    pub async fn run_leased(
        &self,
        name: &str,
        shutdown: tokio::sync::watch::Receiver<bool>,
        leases: &crate::Leases,
    ) -> Result<()> {
        let (model, _) = self.model(name)?;
        let runner = self.runner(model)?;
        leases.run(&runner, &self.board, shutdown).await
    }

    /// Runs one projection following the log until `shutdown` changes.
    pub async fn run_one(
        &self,
        name: &str,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let (model, _) = self.model(name)?;
        self.runner(model)?.run(stop).await
    }
}

/// `("reminders", 1)` for `reminders.v1`.
pub fn version_of(name: &str) -> Option<(&str, u32)> {
    let (base, version) = name.rsplit_once(".v")?;
    Some((base, version.parse().ok()?))
}

/// A projection whose stored model was built by another version of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionBump {
    /// The version this build runs, e.g. `reminders.v2`.
    pub name: &'static str,
    /// The versions found in the store, e.g. `["reminders.v1"]`.
    pub previous: Vec<String>,
    /// Its store: `relational` or `redis`.
    pub store: StoreKind,
}

/// The bumps among `names` given the checkpoint names found in a store: an older
/// version's checkpoint is still there (it is removed once the new version has been
/// rebuilt and swapped in — so a rebuild interrupted by a shutdown is found again).
/// Newer versions are ignored: an old build running beside a new one leaves it alone.
fn bumps_in(names: &[&'static str], stored: &[String], store: StoreKind) -> Vec<VersionBump> {
    names
        .iter()
        .filter_map(|name| {
            let (base, version) = version_of(name)?;
            let previous: Vec<String> = stored
                .iter()
                // A source's checkpoint (`name@source`) is not a version of its own.
                .filter(|s| !s.contains('@'))
                .filter(|s| version_of(s).is_some_and(|(b, v)| b == base && v < version))
                .cloned()
                .collect();
            (!previous.is_empty()).then_some(VersionBump {
                name,
                previous,
                store,
            })
        })
        .collect()
}

impl<L: EventStore> ProjectionSet<L> {
    /// Projections whose read model in the store was built by an older version of them
    /// (a checkpoint under an older `.vN` name is still there). Their tables or keys
    /// hold the old version's data: they need a rebuild before they run, and
    /// [`ProjectionSet::forget_previous`] once the rebuilt model is swapped in.
    pub async fn version_bumps(&self) -> Result<Vec<VersionBump>> {
        let mut out = Vec::new();
        for store in self.stores.iter() {
            let kind = store.kind();
            let models: Vec<&Model> = self.registry.in_store(kind).collect();
            if models.is_empty() {
                continue;
            }
            let stored = match store.stored_versions(&models).await {
                Err(error) if kind != StoreKind::Relational => {
                    tracing::warn!(store = kind.as_str(), %error, "store failed: version bumps not checked");
                    continue;
                }
                other => other?,
            };
            let names: Vec<&'static str> = models.iter().map(|m| m.name()).collect();
            out.extend(bumps_in(&names, &stored, kind));
        }
        Ok(out)
    }

    /// Forgets the previous versions of a bumped projection once the new one has been
    /// rebuilt and swapped in: their checkpoints and parked events, and the tables they
    /// had that the new one does not ([`crate::RelationalProjection::retired`]).
    pub async fn forget_previous(&self, bump: &VersionBump) -> Result<()> {
        let Some(store) = self.stores.of(bump.store) else {
            return Ok(());
        };
        for old in &bump.previous {
            store.forget(old).await?;
        }
        if let Some(model) = self.registry.get(bump.name) {
            store.retire(model).await?;
        }
        Ok(())
    }

    /// A handle reading where projector workers have got to (for the query side).
    pub fn feed_progress(&self) -> FeedProgress {
        FeedProgress {
            registry: self.registry.clone(),
            stores: self.stores.clone(),
        }
    }

    /// Every running projection's checkpoint and parked events, read from the stores.
    pub async fn stored_progress(&self) -> Result<Vec<StoredProgress>> {
        let mut out = Vec::new();
        for model in self.active() {
            let store = self.stores.for_model(model)?;
            match store.progress(model).await {
                Err(error) if store.kind() != StoreKind::Relational => {
                    tracing::warn!(projection = model.name(), %error, "store unreachable");
                    out.push(StoredProgress {
                        name: model.name(),
                        store: store.kind().as_str(),
                        checkpoint: None,
                        parked: 0,
                        rebuilding: false,
                        sources: Default::default(),
                    });
                }
                other => out.push(other?),
            }
        }
        Ok(out)
    }

    /// The events a read model parked, oldest first.
    pub async fn parked(&self, name: &str) -> Result<Vec<crate::ParkedEvent>> {
        let (model, store) = self.model(name)?;
        store.parked(model).await
    }

    /// Deletes a read model — tables or keys — with its checkpoint and parked events; a
    /// running runner notices its checkpoint is gone and rebuilds it from the log.
    /// Returns the rows or keys deleted, and what they were (`rows`/`keys`).
    pub async fn reset(&self, name: &str) -> Result<(u64, &'static str)> {
        let (model, store) = self.model(name)?;
        Ok((store.reset(model).await?, store.unit()))
    }

    /// The relational read store.
    pub fn db(&self) -> &ReadDb {
        &self.db
    }

    /// The log.
    pub fn log(&self) -> &L {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_names() {
        assert_eq!(version_of("reminders.v12"), Some(("reminders", 12)));
        assert_eq!(version_of("voice_due.v1"), Some(("voice_due", 1)));
        assert_eq!(version_of("reminders"), None);
        assert_eq!(version_of("reminders.vx"), None);
    }

    #[test]
    fn only_older_versions_of_the_same_model_are_bumps() {
        let stored: Vec<String> = [
            "reminders.v0",
            "shadow_orders.v0",
            "orders.v1",
            "catalog.v2",
            "asof_x_workouts.v0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let names = crate::models::reference().names();
        let bumps = bumps_in(&names, &stored, StoreKind::Relational);
        assert_eq!(
            bumps,
            vec![VersionBump {
                name: "reminders.v1",
                previous: vec!["reminders.v0".to_owned()],
                store: StoreKind::Relational,
            }]
        );
    }
}

/// Where the feeds of a model other than the log have got to — for a model projector
/// workers took over, the global position each Kafka partition has applied
/// (`{topic}#{partition}` → position), read from the model's store, where the workers
/// keep those checkpoints. A cheap handle: the registry and the stores, no log.
#[derive(Debug, Clone)]
pub struct FeedProgress {
    registry: Registry,
    stores: Stores,
}

impl FeedProgress {
    /// The feeds of the model called `name` and the position each has applied; empty
    /// for a model fed from the log alone.
    pub async fn of(&self, name: &str) -> Result<std::collections::BTreeMap<String, i64>> {
        let model = self
            .registry
            .get(name)
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))?;
        let store = self.stores.for_model(model)?;
        Ok(store.progress(model).await?.sources)
    }
}

//! The registry of read models: each is described once — its versioned name, its store,
//! the tables or key families it owns, the event types it handles — and everything that
//! walks "every read model" (serve's runners, status, reset, replay, version bumps,
//! readiness, metrics) iterates the registry instead of matching on names.

use std::sync::Arc;

use crate::redis_sink::RedisProjection;
use crate::runtime::RelationalProjection;
use crate::store::ClickHouseProjection;

/// The kind of store a read model lives in. A closed set: each kind has one store port
/// ([`crate::ReadStore`]) per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// PostgreSQL or SQLite tables, next to the log.
    Relational,
    /// Redis keys.
    Redis,
    /// ClickHouse tables (analytics).
    ClickHouse,
}

impl StoreKind {
    /// `relational` or `redis`, as status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Relational => "relational",
            StoreKind::Redis => "redis",
            StoreKind::ClickHouse => "clickhouse",
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One read model, type-erased: what its store port needs to run, reset, rebuild and
/// compare it.
#[derive(Clone)]
pub enum Model {
    /// Tables in the relational read store.
    Relational(Arc<dyn RelationalProjection>),
    /// Keys in Redis.
    Redis(Arc<dyn RedisProjection>),
    /// Tables in ClickHouse.
    ClickHouse(Arc<dyn ClickHouseProjection>),
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name())
            .field("store", &self.store())
            .field("owns", &self.owns())
            .finish()
    }
}

impl Model {
    /// A relational read model.
    pub fn relational(projection: impl RelationalProjection) -> Self {
        Model::Relational(Arc::new(projection))
    }

    /// A Redis read model.
    pub fn redis(projection: impl RedisProjection) -> Self {
        Model::Redis(Arc::new(projection))
    }

    /// Versioned name, e.g. `reminders.v1`.
    pub fn name(&self) -> &'static str {
        match self {
            Model::Relational(p) => p.name(),
            Model::Redis(p) => p.name(),
            Model::ClickHouse(p) => p.name(),
        }
    }

    /// Its store.
    pub fn store(&self) -> StoreKind {
        match self {
            Model::Relational(_) => StoreKind::Relational,
            Model::Redis(_) => StoreKind::Redis,
            Model::ClickHouse(_) => StoreKind::ClickHouse,
        }
    }

    /// The tables (relational) or key families (Redis) it owns: nobody else writes them.
    pub fn owns(&self) -> &'static [&'static str] {
        match self {
            Model::Relational(p) => p.tables(),
            Model::Redis(p) => p.key_families(),
            Model::ClickHouse(p) => p.tables(),
        }
    }

    /// Whether it folds events of this type.
    pub fn handles(&self, event_type: &str) -> bool {
        match self {
            Model::Relational(p) => p.handles(event_type),
            Model::Redis(p) => p.handles(event_type),
            Model::ClickHouse(p) => p.handles(event_type),
        }
    }
}

/// The read models of a build, in registration order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    models: Vec<Model>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a model. Two models of one name are a programming error, caught by
    /// [`Registry::check`] (and the registry's test).
    pub fn with(mut self, model: Model) -> Self {
        self.models.push(model);
        self
    }

    /// Registers a relational read model.
    pub fn relational(self, projection: impl RelationalProjection) -> Self {
        self.with(Model::relational(projection))
    }

    /// Registers a ClickHouse read model.
    pub fn clickhouse(self, projection: impl ClickHouseProjection) -> Self {
        self.with(Model::ClickHouse(Arc::new(projection)))
    }

    /// Registers a Redis read model.
    pub fn redis(self, projection: impl RedisProjection) -> Self {
        self.with(Model::redis(projection))
    }

    /// Every model.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name() == name)
    }

    /// Every name.
    pub fn names(&self) -> Vec<&'static str> {
        self.models.iter().map(Model::name).collect()
    }

    /// The models in stores of `kind`.
    pub fn in_store(&self, kind: StoreKind) -> impl Iterator<Item = &Model> {
        self.models.iter().filter(move |m| m.store() == kind)
    }

    /// Names are unique and versioned (`name.vN`); no two models of one store own the
    /// same table or key family, or a prefix of another's family.
    pub fn check(&self) -> Result<(), String> {
        for (i, a) in self.models.iter().enumerate() {
            if crate::set::version_of(a.name()).is_none() {
                return Err(format!("{}: the name must end in .vN", a.name()));
            }
            for b in &self.models[i + 1..] {
                if a.name() == b.name() {
                    return Err(format!("{} is registered twice", a.name()));
                }
                if a.store() != b.store() {
                    continue;
                }
                for x in a.owns() {
                    for y in b.owns() {
                        let clash = match a.store() {
                            StoreKind::Relational | StoreKind::ClickHouse => x == y,
                            StoreKind::Redis => x.starts_with(y) || y.starts_with(x),
                        };
                        if clash {
                            return Err(format!(
                                "{} and {} both own {x:?}/{y:?}",
                                a.name(),
                                b.name()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Result of projection work.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong folding events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The relational read store failed.
    #[error("read store: {0}")]
    Sql(#[from] sqlx::Error),
    /// Redis failed or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The event log failed.
    #[error("event log: {0}")]
    Log(#[from] eventfold_event_log::Error),
    /// ClickHouse refused a statement (unreachable is [`Error::Unavailable`]).
    #[error("clickhouse: {0}")]
    ClickHouse(String),
    /// An external system a reaction publishes to (NATS, a broker) is unreachable or did
    /// not acknowledge: retried without end.
    #[error("{store}: {reason}")]
    Unavailable {
        /// Which system.
        store: &'static str,
        /// What failed.
        reason: String,
    },
    /// An event could not be applied (bad payload, broken invariant).
    #[error("event at position {position} ({event_type}) cannot be applied: {reason}")]
    Poison {
        /// Where.
        position: i64,
        /// Its type.
        event_type: String,
        /// Why.
        reason: String,
    },
    /// Another runner moved the checkpoint: two instances of one projection are running.
    #[error("checkpoint of {0} moved under this runner: is another instance running?")]
    CheckpointMoved(String),
    /// The projection stopped on a parked event (policy `Stop`).
    #[error("projection {name} stopped at parked event {position}: {reason}")]
    Stopped {
        /// The projection.
        name: String,
        /// The parked event.
        position: i64,
        /// Why it failed.
        reason: String,
    },
    /// A replay is swapping a rebuilt model in: the live runner waits (a short, bounded
    /// pause; the hold expires by itself if the replay dies).
    #[error("{0} is held while a rebuilt model is swapped in")]
    Held(String),
    /// The model is fed from Kafka by projector workers, who took it over from the log
    /// at `position`: the log-fed runner does not write it (and a replay cannot rebuild
    /// it from the log) until `projections reset` hands it back.
    #[error(
        "{name} is fed from Kafka (taken over at position {position}); `eventfold projections reset {name}` hands it back to the log"
    )]
    FedFromKafka {
        /// The projection.
        name: String,
        /// Where the workers took over.
        position: i64,
    },
    /// The read store refused a statement for its schema, not for the event: a table or
    /// column the model needs is missing (dropped by hand, a partial restore) or the
    /// store's user may not touch it. Retrying the statement cannot help and parking the
    /// event would be wrong: the runner sets the model up again (which rebuilds a model
    /// whose tables were lost) and retries, saying why on the status board.
    #[error("{projection}: the read store's schema does not fit the model: {reason}")]
    SchemaBroken {
        /// The projection.
        projection: String,
        /// What the store said.
        reason: String,
    },
    /// An injected failure (tests of crash recovery).
    #[error("injected failure: {0}")]
    Injected(&'static str),
    /// The rebuilt model differs from the live model at the same checkpoint.
    #[error("verification failed for {projection} at position {position}: {details}")]
    Mismatch {
        /// The projection.
        projection: String,
        /// The common checkpoint.
        position: i64,
        /// Which tables or keys differ and how.
        details: String,
    },
    /// The live model kept moving; the swap gave up.
    #[error("could not catch the live model of {0} at a common checkpoint; retry")]
    NoCommonCheckpoint(String),
    /// The model's store is not configured in this deployment.
    #[error("{projection} lives in {store}, which is not configured")]
    StoreNotConfigured {
        /// The projection.
        projection: String,
        /// Its store kind.
        store: &'static str,
    },
    /// A model was handed to a store of another kind (a wiring bug).
    #[error("{projection} is not a {store} read model")]
    WrongStore {
        /// The projection.
        projection: String,
        /// The store it was handed to.
        store: &'static str,
    },
    /// No projection of that name in this build.
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    /// The read store URL is not supported.
    #[error("unsupported read store URL {0:?}")]
    UnsupportedUrl(String),
    /// A setting of a read store is malformed (the message names it and what it takes).
    #[error("{0}")]
    InvalidSetting(String),
}

impl Error {
    /// Whether retrying the same work later may succeed (the store was down) rather than
    /// the event itself being bad.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Sql(_)
                | Error::Redis(_)
                | Error::Log(_)
                | Error::Unavailable { .. }
                | Error::Injected(_)
                | Error::Held(_)
        )
    }

    /// The database error under this one, if any (the read store's, or the log's).
    pub fn database_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Sql(e) => Some(e),
            Error::Log(e) => e.database_error(),
            _ => None,
        }
    }
}

impl From<eventfold_event_log::breaker::Open> for Error {
    fn from(open: eventfold_event_log::breaker::Open) -> Self {
        Error::Unavailable {
            store: open.store,
            reason: open.to_string(),
        }
    }
}

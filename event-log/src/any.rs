use eventfold_event_schemas::{
    ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId, StreamVersion,
};
use tokio::sync::watch;

use crate::store::{EventReader, EventWriter, Page, ReadDirection};
use crate::{
    AppendResult, Error, GroupCommit, InMemoryEventStore, Limits, PgEventStore, Result,
    SqliteEventStore,
};

/// One of the backends, chosen at run time from a database URL.
#[derive(Debug, Clone)]
pub enum AnyEventStore {
    /// PostgreSQL.
    Postgres(PgEventStore),
    /// SQLite.
    Sqlite(SqliteEventStore),
    /// In process memory.
    InMemory(InMemoryEventStore),
}

impl AnyEventStore {
    /// Opens the store `url` names — `postgres://…`, `sqlite://…` or `memory:` — and
    /// runs its migrations. Group commit is on.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, GroupCommit::default()).await
    }

    /// Like [`open`](Self::open), with group commit configured by `group` (the in-memory
    /// store has no commits to group and ignores it).
    pub async fn open_with(url: &str, group: GroupCommit) -> Result<Self> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = PgEventStore::connect_with(url, None, group).await?;
            store.migrate().await?;
            Self::Postgres(store)
        } else if url.starts_with("sqlite:") {
            let store = SqliteEventStore::connect_with(url, Limits::default(), group).await?;
            store.migrate().await?;
            Self::Sqlite(store)
        } else if url == "memory:" {
            Self::InMemory(InMemoryEventStore::default())
        } else {
            return Err(Error::UnsupportedUrl(url.to_owned()));
        };
        Ok(store)
    }

    /// The backend's name, for logs and reports.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
            Self::InMemory(_) => "in-memory",
        }
    }
}

/// Forwards a call to whichever backend is inside.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyEventStore::Postgres($store) => $call,
            AnyEventStore::Sqlite($store) => $call,
            AnyEventStore::InMemory($store) => $call,
        }
    };
}

impl EventReader for AnyEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: ReadDirection,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        dispatch!(self, s => s.read_stream(stream, direction, from, max).await)
    }

    async fn read_all(
        &self,
        after: Position,
        category: Option<&str>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        dispatch!(self, s => s.read_all(after, category, max).await)
    }

    async fn read_all_of_types(
        &self,
        after: Position,
        category: Option<&str>,
        event_types: Option<&[String]>,
        max: usize,
    ) -> Result<Page> {
        dispatch!(self, s => s.read_all_of_types(after, category, event_types, max).await)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<StreamVersion>> {
        dispatch!(self, s => s.stream_version(stream).await)
    }

    async fn version_of_event(
        &self,
        stream: &StreamId,
        event_id: uuid::Uuid,
    ) -> Result<Option<StreamVersion>> {
        dispatch!(self, s => s.version_of_event(stream, event_id).await)
    }

    async fn head(&self) -> Result<Position> {
        dispatch!(self, s => s.head().await)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        dispatch!(self, s => s.changes())
    }

    async fn writable(&self) -> Result<bool> {
        dispatch!(self, s => s.writable().await)
    }

    fn breaker(&self) -> Option<&crate::Breaker> {
        dispatch!(self, s => s.breaker())
    }
}

impl EventWriter for AnyEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        dispatch!(self, s => s.append(stream, expected, events).await)
    }
}

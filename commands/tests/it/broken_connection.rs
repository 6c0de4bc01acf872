//! A command whose append's connection breaks with the append in flight: the append may
//! have committed, and the answer must not say otherwise. Stored, the command answers
//! its outcome (read back by its first event's id); not stored or unreadable, 503
//! `outcome_unknown` — never `unavailable`, whose promise is that nothing was written.
//! A pool that gives no connection or a server that refuses stays `unavailable`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use eventfold_event_log::testing::PgTestDb;
use eventfold_event_log::{
    AppendResult, Error, EventReader, EventWriter, PgEventStore, ReadDirection, Result,
};
use eventfold_event_schemas::{ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use serde_json::json;

use crate::support::{app, call, As};

/// What the next append does.
const PASS: u8 = 0;
/// The append commits, then its answer is lost (the connection reset).
const LOSE_ANSWER: u8 = 1;
/// The connection resets before the append reaches the server.
const RESET_BEFORE: u8 = 2;
/// The pool gives no connection.
const NO_CONNECTION: u8 = 3;
/// The connection resets before the append, and every read after it fails too.
const SERVER_GONE: u8 = 4;

/// The real PostgreSQL store, with the next append's connection broken on demand.
#[derive(Clone)]
struct Breaking {
    inner: PgEventStore,
    next: Arc<AtomicU8>,
    reads_fail: Arc<AtomicU8>,
}

fn reset() -> Error {
    Error::Database(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset by peer",
    )))
}

impl Breaking {
    fn arm(&self, what: u8) {
        self.next.store(what, Ordering::SeqCst);
    }

    fn read_ok(&self) -> Result<()> {
        match self.reads_fail.load(Ordering::SeqCst) {
            0 => Ok(()),
            _ => Err(reset()),
        }
    }
}

impl EventReader for Breaking {
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: ReadDirection,
        from: i64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_ok()?;
        self.inner.read_stream(stream, direction, from, max).await
    }

    async fn read_all(
        &self,
        after: Position,
        category: Option<&str>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, category, max).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<i64>> {
        self.read_ok()?;
        self.inner.stream_version(stream).await
    }

    async fn version_of_event(&self, stream: &StreamId, id: uuid::Uuid) -> Result<Option<i64>> {
        self.read_ok()?;
        self.inner.version_of_event(stream, id).await
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
}

impl EventWriter for Breaking {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        match self.next.swap(PASS, Ordering::SeqCst) {
            LOSE_ANSWER => {
                self.inner.append(stream, expected, events).await?;
                Err(reset())
            }
            RESET_BEFORE => Err(reset()),
            NO_CONNECTION => Err(Error::Database(sqlx::Error::PoolTimedOut)),
            SERVER_GONE => {
                self.reads_fail.store(1, Ordering::SeqCst);
                Err(reset())
            }
            _ => self.inner.append(stream, expected, events).await,
        }
    }
}

const PRICES: &str = "/api/v1/catalog/prices";

async fn stored(db: &PgTestDb, stream: &str) -> usize {
    let stream = StreamId::new(stream).expect("stream id");
    db.store
        .read_stream(&stream, ReadDirection::Forwards, 0, 100)
        .await
        .expect("read")
        .len()
}

/// A 503 with `code`.
fn refused(answer: &crate::support::Answer, code: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["error"], code, "{}", answer.body);
}

/// A test database, the breaking store over it and the command routes over that.
async fn start() -> (PgTestDb, Breaking, axum::Router) {
    let db = PgTestDb::new().await.expect("test database");
    let store = Breaking {
        inner: db.store.clone(),
        next: Arc::default(),
        reads_fail: Arc::default(),
    };
    let app = app(store.clone());
    (db, store, app)
}

fn price(sku: &str, minor: i64) -> serde_json::Value {
    json!({"sku": sku, "title": "Capsules", "unit_price": minor, "delivery_days": 2})
}

#[tokio::test]
async fn an_append_whose_answer_is_lost_answers_what_it_stored_keyed_or_not() {
    let (db, store, app) = start().await;

    // Keyed: the first answer is the stored outcome, and a retry replays it.
    store.arm(LOSE_ANSWER);
    let first = call(&app, As::Service, PRICES, price("CAPS", 100), Some("k1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert!(!first.replayed, "the first answer is not a replay");
    let again = call(&app, As::Service, PRICES, price("CAPS", 100), Some("k1")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert!(again.replayed);
    assert_eq!(stored(&db, "price-CAPS").await, 1);

    // Without a key: found by this attempt's own event id all the same.
    store.arm(LOSE_ANSWER);
    let unkeyed = call(&app, As::Service, PRICES, price("CAPS", 120), None).await;
    assert_eq!(unkeyed.status, StatusCode::CREATED, "{}", unkeyed.body);
    assert_eq!(stored(&db, "price-CAPS").await, 2);
}

#[tokio::test]
async fn an_append_not_stored_or_not_readable_is_an_unknown_outcome_never_unavailable() {
    let (db, store, app) = start().await;

    // The connection broke before the append reached the server: the read afterwards
    // finds nothing, but a commit still under way could not be ruled out.
    store.arm(RESET_BEFORE);
    let answer = call(&app, As::Service, PRICES, price("CAPS", 100), Some("k")).await;
    refused(&answer, "outcome_unknown");
    assert_eq!(stored(&db, "price-CAPS").await, 0);
    // The retry the answer asks for stores it once.
    let retry = call(&app, As::Service, PRICES, price("CAPS", 100), Some("k")).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(stored(&db, "price-CAPS").await, 1);

    // Nothing can be read afterwards either.
    store.arm(SERVER_GONE);
    let answer = call(&app, As::Service, PRICES, price("TABS", 100), None).await;
    refused(&answer, "outcome_unknown");
    store.reads_fail.store(0, Ordering::SeqCst);

    // No connection to be had: nothing was tried, and the answer says so.
    store.arm(NO_CONNECTION);
    let answer = call(&app, As::Service, PRICES, price("PODS", 100), None).await;
    refused(&answer, "unavailable");
    assert_eq!(stored(&db, "price-PODS").await, 0);
}

//! Group commit: concurrent appends queued and written together in one transaction,
//! each keeping its own expected-version check, idempotency check and result.
//!
//! An append is validated and serialised by its caller ([`prepare`](crate::append)),
//! then queued. A committer task takes the first append waiting and every other one
//! queued behind it at that moment (bounded in appends and bytes) and hands the group to
//! the backend, which writes it in one transaction and decides every append on its own:
//! committed, a version conflict, or "decide it alone" (it collided with a concurrent
//! writer or carries an event id stored already). Nothing waits for company: when no
//! other append is queued, a group of one goes out at once, so low load pays no latency.
//! Under load the appends that arrive while a group commits form the next group, and one
//! commit (one WAL flush) acknowledges them all.
//!
//! The outcome of an append is only sent once its group's transaction committed; a group
//! that fails as a whole (the database went away mid-commit) answers every append in it
//! with [`Error::GroupCommitFailed`]: the outcome is unknown, exactly as for a single
//! append whose connection died, and re-appending the same events is safe (idempotent).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use eventfold_event_schemas::{ExpectedVersion, NewEvent, StreamId, StreamVersion};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};

use crate::append::{prepare, PreparedEvent};
use crate::{AppendResult, Error, Limits, Result};

/// How concurrent appends are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Whether appends are grouped at all (default on). Off: every append is its own
    /// transaction, as before group commit.
    pub enabled: bool,
    /// Most appends in one group (default 256).
    pub max_appends: usize,
    /// Most serialised event bytes in one group (default 8 MiB). An append larger than
    /// this alone still goes out, as a group of one.
    pub max_bytes: usize,
    /// Groups in flight at once (PostgreSQL, default 2). SQLite writes one transaction
    /// at a time and ignores it.
    pub committers: usize,
    /// A group goes out beside one in flight only once it holds this many appends
    /// (default 4) and its share of the appends under way (their number divided by
    /// `committers`); a smaller one waits for the group in flight and grows meanwhile.
    pub join_at: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            enabled: true,
            max_appends: 256,
            max_bytes: 8 * 1024 * 1024,
            committers: 2,
            join_at: 4,
        }
    }
}

impl GroupCommit {
    /// Group commit turned off.
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// One append of a group, validated and serialised.
#[derive(Debug, Clone)]
pub(crate) struct Append {
    pub(crate) stream: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Arc<Vec<PreparedEvent>>,
}

impl Append {
    /// Roughly what it weighs in a group.
    fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.data.len() + e.metadata.len() + e.event_type.len() + 64)
            .sum()
    }
}

/// An append under way (see [`Queue::enter`]).
pub(crate) struct Ticket<'a> {
    active: &'a AtomicUsize,
    alone: bool,
}

impl Ticket<'_> {
    /// No other append was under way when this one entered.
    pub(crate) fn alone(&self) -> bool {
        self.alone
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One queued append and where its outcome goes.
struct Pending {
    append: Append,
    bytes: usize,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// How group commit has grouped so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Transactions written.
    pub groups: u64,
    /// Appends in them.
    pub appends: u64,
    /// Appends in the largest group.
    pub largest: u64,
}

/// What the group decided for one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written and committed.
    Committed(AppendResult),
    /// The stream was at `actual`, which the expectation does not accept; nothing written.
    /// (It may still be the retry of an append that committed earlier.)
    Conflict { actual: Option<StreamVersion> },
    /// It collided with a concurrent writer or an event id stored already; nothing
    /// written: decide it alone.
    Alone,
}

/// A backend's way of writing one group in one transaction.
pub(crate) trait GroupWriter: Send + Sync + 'static {
    /// Writes `group` in one transaction, one outcome per append in the same order, as if
    /// the appends had run one after another in that order. An `Err` means the
    /// transaction did not (knowingly) commit.
    fn write(&self, group: &[Append]) -> impl Future<Output = Result<Vec<Outcome>>> + Send;
}

struct Intake {
    rx: mpsc::UnboundedReceiver<Pending>,
    /// An append that did not fit the previous group: first of the next one.
    carry: Option<Pending>,
}

/// The queue in front of a backend's [`GroupWriter`]; committer tasks start with the
/// first append (they need a Tokio runtime) and end when the queue is dropped.
pub(crate) struct Queue<W> {
    config: GroupCommit,
    writer: Arc<W>,
    stats: Arc<Counters>,
    tx: OnceLock<mpsc::UnboundedSender<Pending>>,
}

#[derive(Debug, Default)]
struct Counters {
    groups: AtomicU64,
    appends: AtomicU64,
    largest: AtomicU64,
    /// Groups being written by the committers.
    in_flight: AtomicUsize,
    /// Signalled whenever a committer finished a group.
    done: Notify,
    /// Appends between [`Queue::enter`] and their answer.
    active: AtomicUsize,
}

impl Counters {
    fn count(&self, appends: usize) {
        let appends = appends as u64;
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.appends.fetch_add(appends, Ordering::Relaxed);
        self.largest.fetch_max(appends, Ordering::Relaxed);
    }
}

impl<W> std::fmt::Debug for Queue<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<W: GroupWriter> Queue<W> {
    pub(crate) fn new(writer: W, config: GroupCommit) -> Self {
        Self {
            config,
            writer: Arc::new(writer),
            stats: Arc::default(),
            tx: OnceLock::new(),
        }
    }

    /// Registers an append about to be written; [`Ticket::alone`] says whether no other
    /// append is under way, in which case it goes out directly, without the queue's hop
    /// (nothing to group it with). Keep the ticket until the append is answered.
    pub(crate) fn enter(&self) -> Ticket<'_> {
        let before = self.stats.active.fetch_add(1, Ordering::AcqRel);
        Ticket {
            active: &self.stats.active,
            alone: before == 0,
        }
    }

    /// How it has grouped so far.
    pub(crate) fn stats(&self) -> GroupStats {
        GroupStats {
            groups: self.stats.groups.load(Ordering::Relaxed),
            appends: self.stats.appends.load(Ordering::Relaxed),
            largest: self.stats.largest.load(Ordering::Relaxed),
        }
    }

    /// Writes `appends` as one group now, bypassing the queue (no other append joins).
    pub(crate) async fn write_now(&self, appends: &[Append]) -> Result<Vec<Outcome>> {
        let outcomes = self.writer.write(appends).await?;
        self.stats.count(appends.len());
        if outcomes.len() != appends.len() {
            return Err(mismatch(appends.len(), outcomes.len()));
        }
        Ok(outcomes)
    }

    /// Queues one append and waits for its group's decision.
    pub(crate) async fn submit(&self, append: Append) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            bytes: append.bytes(),
            append,
            reply,
        };
        if self.sender().send(pending).is_err() {
            return Err(Error::GroupCommitStopped);
        }
        answer.await.map_err(|_| Error::GroupCommitStopped)?
    }

    fn sender(&self) -> &mpsc::UnboundedSender<Pending> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let intake = Arc::new(Mutex::new(Intake { rx, carry: None }));
            for _ in 0..self.config.committers.max(1) {
                tokio::spawn(commit_loop(
                    self.writer.clone(),
                    intake.clone(),
                    self.stats.clone(),
                    self.config,
                ));
            }
            tx
        })
    }
}

async fn commit_loop<W: GroupWriter>(
    writer: Arc<W>,
    intake: Arc<Mutex<Intake>>,
    stats: Arc<Counters>,
    config: GroupCommit,
) {
    loop {
        let Some(group) = next_group(&intake, &config, &stats).await else {
            return;
        };
        let (appends, replies): (Vec<Append>, Vec<_>) =
            group.into_iter().map(|p| (p.append, p.reply)).unzip();
        let written = writer.write(&appends).await;
        stats.count(appends.len());
        stats.in_flight.fetch_sub(1, Ordering::AcqRel);
        stats.done.notify_waiters();
        match written {
            Ok(outcomes) if outcomes.len() == replies.len() => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Ok(outcomes) => {
                let error = Arc::new(mismatch(replies.len(), outcomes.len()));
                for reply in replies {
                    let _ = reply.send(Err(Error::GroupCommitFailed(error.clone())));
                }
            }
            Err(error) => {
                tracing::debug!(%error, appends = replies.len(), "group commit failed");
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(Error::GroupCommitFailed(error.clone())));
                }
            }
        }
    }
}

pub(crate) fn mismatch(appends: usize, outcomes: usize) -> Error {
    Error::Corrupt {
        position: -1,
        reason: format!("a group of {appends} appends came back with {outcomes} outcomes"),
    }
}

/// A group being gathered.
struct Gathering<'a> {
    config: &'a GroupCommit,
    appends: Vec<Pending>,
    bytes: usize,
    /// Full: in appends, or an append did not fit its bytes (it is carried over).
    full: bool,
}

impl Gathering<'_> {
    /// Adds `next` if it fits; an append whose caller gave up (a deadline) is dropped
    /// unwritten.
    fn admit(&mut self, next: Pending, carry: &mut Option<Pending>) {
        if next.reply.is_closed() {
            return;
        }
        if !self.appends.is_empty() && self.bytes + next.bytes > self.config.max_bytes {
            *carry = Some(next);
            self.full = true;
            return;
        }
        self.bytes += next.bytes;
        self.appends.push(next);
        if self.appends.len() >= self.config.max_appends.max(1) {
            self.full = true;
        }
    }

    /// Adds whatever is queued now, until full.
    fn drain(&mut self, intake: &mut Intake) {
        while !self.full {
            match intake.rx.try_recv() {
                Ok(next) => self.admit(next, &mut intake.carry),
                Err(_) => return,
            }
        }
    }
}

/// The first append waiting (waits for one) and whatever is queued behind it, within the
/// bounds.
///
/// While another group is in flight, a small group does not go out beside it: it waits
/// for that group to finish, gathering what arrives meanwhile, unless it first reaches
/// [`GroupCommit::join_at`] appends and its share of the appends under way. Two transactions
/// at once pay off when both are large (the server works on both); at moderate load they
/// would only split the appends into small groups, and under heavy load a second group
/// that left early would be small while the one after it waited for both. With nothing
/// in flight the group goes out at once.
async fn next_group(
    intake: &Mutex<Intake>,
    config: &GroupCommit,
    flight: &Counters,
) -> Option<Vec<Pending>> {
    let mut intake = intake.lock().await;
    let mut group = Gathering {
        config,
        appends: Vec::new(),
        bytes: 0,
        full: false,
    };
    while group.appends.is_empty() {
        let next = match intake.carry.take() {
            Some(pending) => pending,
            None => intake.rx.recv().await?,
        };
        group.admit(next, &mut intake.carry);
    }
    group.drain(&mut intake);
    let join_at = join_threshold(config, flight.active.load(Ordering::Acquire));
    if !group.full && group.appends.len() < join_at {
        let done = flight.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        while !group.full
            && group.appends.len() < join_at
            && flight.in_flight.load(Ordering::Acquire) > 0
        {
            tokio::select! {
                _ = &mut done => break,
                next = intake.rx.recv() => match next {
                    Some(next) => group.admit(next, &mut intake.carry),
                    None => break,
                },
            }
        }
        group.drain(&mut intake);
    }
    flight.in_flight.fetch_add(1, Ordering::AcqRel);
    Some(group.appends)
}

/// How many appends a group needs to go out beside one in flight, with `active` appends
/// under way: [`GroupCommit::join_at`], or their share per committer when that is more —
/// the groups in flight then split the load evenly. (Measured at 32 writers with two
/// committers, `bench append`: joining at 4 formed groups of ~10 and reached 1.5-1.7x
/// plain INSERTs; at half the appends under way, groups of ~15 and 1.6-1.9x. Three
/// committers, each joining at a third: groups of ~10, 1.45-1.55x.)
fn join_threshold(config: &GroupCommit, active: usize) -> usize {
    config.join_at.max(active / config.committers.max(1))
}

/// A backend's part in the append paths group commit shares (PostgreSQL and SQLite).
pub(crate) trait GroupedStore: Sync {
    /// How the backend writes a group.
    type Writer: GroupWriter;

    /// The store's limits.
    fn limits(&self) -> &Limits;
    /// The queue, when group commit is on.
    fn queue(&self) -> Option<&Queue<Self::Writer>>;
    /// A writer for an explicit group while group commit is off.
    fn writer(&self) -> Self::Writer;
    /// Tells subscribers that something may have been appended.
    fn announce(&self);
    /// One append in a transaction of its own (announcing it itself).
    fn append_alone(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[PreparedEvent],
    ) -> impl Future<Output = Result<AppendResult>> + Send;
    /// Turns a group's decision into the append's result.
    fn settle(
        &self,
        append: &Append,
        outcome: Outcome,
    ) -> impl Future<Output = Result<AppendResult>> + Send;
}

/// One append: alone when nothing else is under way (or group commit is off), else
/// through the queue.
pub(crate) async fn append<S: GroupedStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendResult> {
    let prepared = Arc::new(prepare(store.limits(), expected, events)?);
    let Some(queue) = store.queue() else {
        return store.append_alone(stream, expected, &prepared).await;
    };
    let ticket = queue.enter();
    if ticket.alone() {
        return store.append_alone(stream, expected, &prepared).await;
    }
    let append = Append {
        stream: stream.clone(),
        expected,
        events: prepared,
    };
    let outcome = queue.submit(append.clone()).await;
    store.announce();
    store.settle(&append, outcome?).await
}

/// An explicit group in one transaction, each append with its own result; `Err` when
/// the transaction failed as a whole ([`Error::GroupCommitFailed`]).
pub(crate) async fn append_group<S: GroupedStore>(
    store: &S,
    appends: Vec<(StreamId, ExpectedVersion, Vec<NewEvent>)>,
) -> Result<Vec<Result<AppendResult>>> {
    let (valid, places) = prepare_group(store.limits(), appends);
    let outcomes = match store.queue() {
        Some(queue) => queue.write_now(&valid).await,
        None => {
            Queue::new(store.writer(), GroupCommit::off())
                .write_now(&valid)
                .await
        }
    }
    .map_err(|e| Error::GroupCommitFailed(Arc::new(e)))?;
    store.announce();
    let mut decided = valid.iter().zip(outcomes);
    let mut results = Vec::with_capacity(places.len());
    for place in places {
        results.push(match place.map(|_| decided.next()) {
            Err(invalid) => Err(invalid),
            Ok(Some((append, outcome))) => store.settle(append, outcome).await,
            Ok(None) => Err(mismatch(valid.len(), 0)),
        });
    }
    Ok(results)
}

/// Validates and serialises the appends of an explicit group: the valid ones to write
/// and, per input, either its place among them or its validation error.
fn prepare_group(
    limits: &Limits,
    appends: Vec<(StreamId, ExpectedVersion, Vec<NewEvent>)>,
) -> (Vec<Append>, Vec<Result<usize>>) {
    let mut valid = Vec::with_capacity(appends.len());
    let places = appends
        .into_iter()
        .map(|(stream, expected, events)| {
            let events = Arc::new(prepare(limits, expected, &events)?);
            valid.push(Append {
                stream,
                expected,
                events,
            });
            Ok(valid.len() - 1)
        })
        .collect();
    (valid, places)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    /// Records the size of every group and holds each write until released.
    struct Recorder {
        sizes: StdMutex<Vec<usize>>,
        release: tokio::sync::Semaphore,
    }

    impl Default for Recorder {
        fn default() -> Self {
            Self {
                sizes: StdMutex::default(),
                release: tokio::sync::Semaphore::new(0),
            }
        }
    }

    impl GroupWriter for Arc<Recorder> {
        async fn write(&self, group: &[Append]) -> Result<Vec<Outcome>> {
            self.sizes.lock().expect("lock").push(group.len());
            let permit = self
                .release
                .acquire()
                .await
                .map_err(|_| Error::EmptyAppend)?;
            permit.forget();
            Ok(group.iter().map(|_| Outcome::Alone).collect())
        }
    }

    fn append(bytes: usize) -> Append {
        Append {
            stream: StreamId::new("order-1").expect("valid"),
            expected: ExpectedVersion::Any,
            events: Arc::new(vec![PreparedEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type: "T".into(),
                schema_version: 1,
                data: "x".repeat(bytes),
                metadata: "{}".into(),
            }]),
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn queue(config: GroupCommit) -> (Arc<Queue<Arc<Recorder>>>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (Arc::new(Queue::new(recorder.clone(), config)), recorder)
    }

    /// Submits `n` small appends, each from a task of its own.
    fn submit_many(
        queue: &Arc<Queue<Arc<Recorder>>>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<Outcome>>> {
        (0..n)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.submit(append(10)).await })
            })
            .collect()
    }

    #[tokio::test]
    async fn appends_arriving_while_a_group_is_in_flight_form_the_next_group() {
        let (queue, recorder) = queue(GroupCommit {
            committers: 1,
            ..GroupCommit::default()
        });
        let first = tokio::spawn({
            let queue = queue.clone();
            async move { queue.submit(append(10)).await }
        });
        settle().await;
        assert_eq!(
            *recorder.sizes.lock().expect("lock"),
            vec![1],
            "alone: at once"
        );
        let mut rest = Vec::new();
        for _ in 0..5 {
            let queue = queue.clone();
            rest.push(tokio::spawn(async move { queue.submit(append(10)).await }));
        }
        settle().await;
        recorder.release.add_permits(2);
        assert!(matches!(first.await.expect("task"), Ok(Outcome::Alone)));
        for r in rest {
            assert!(matches!(r.await.expect("task"), Ok(Outcome::Alone)));
        }
        assert_eq!(*recorder.sizes.lock().expect("lock"), vec![1, 5]);
        assert_eq!(queue.stats().largest, 5);
    }

    #[tokio::test]
    async fn a_small_group_waits_for_the_one_in_flight_a_large_one_goes_beside_it() {
        let (queue, recorder) = queue(GroupCommit::default());
        let submit = |n: usize| submit_many(&queue, n);
        let mut tasks = submit(1);
        settle().await;
        tasks.extend(submit(3));
        settle().await;
        // Three waiting behind one in flight: they wait (and grow) instead of going out.
        assert_eq!(*recorder.sizes.lock().expect("lock"), vec![1]);
        tasks.extend(submit(GroupCommit::default().join_at - 3));
        settle().await;
        // Now join_at: the second committer writes them beside the first group.
        assert_eq!(
            *recorder.sizes.lock().expect("lock"),
            vec![1, GroupCommit::default().join_at]
        );
        recorder.release.add_permits(10);
        for t in tasks {
            assert!(t.await.expect("task").is_ok());
        }
    }

    #[tokio::test]
    async fn under_heavy_load_a_group_goes_beside_one_in_flight_only_with_half_the_appends() {
        let (queue, recorder) = queue(GroupCommit::default());
        // Twelve appends under way: a second group needs six, not join_at's four.
        let tickets: Vec<_> = (0..12).map(|_| queue.enter()).collect();
        let submit = |n: usize| submit_many(&queue, n);
        let mut tasks = submit(1);
        settle().await;
        tasks.extend(submit(5));
        settle().await;
        assert_eq!(*recorder.sizes.lock().expect("lock"), vec![1], "five wait");
        tasks.extend(submit(1));
        settle().await;
        assert_eq!(*recorder.sizes.lock().expect("lock"), vec![1, 6]);
        recorder.release.add_permits(10);
        for t in tasks {
            assert!(t.await.expect("task").is_ok());
        }
        drop(tickets);
        assert_eq!(join_threshold(&GroupCommit::default(), 3), 4);
        assert_eq!(join_threshold(&GroupCommit::default(), 32), 16);
    }

    #[tokio::test]
    async fn groups_are_bounded_in_appends_and_bytes_and_drop_abandoned_appends() {
        let (queue, recorder) = queue(GroupCommit {
            committers: 1,
            max_appends: 3,
            max_bytes: 1000,
            ..GroupCommit::default()
        });
        let blocker = tokio::spawn({
            let queue = queue.clone();
            async move { queue.submit(append(1)).await }
        });
        settle().await;
        let mut tasks = Vec::new();
        for bytes in [10, 10, 10, 10, 600, 600] {
            let queue = queue.clone();
            tasks.push(tokio::spawn(
                async move { queue.submit(append(bytes)).await },
            ));
            tokio::task::yield_now().await;
            settle().await;
        }
        // An append whose caller gave up before its group formed is not written.
        let abandoned = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.submit(append(10)).await })
        };
        settle().await;
        abandoned.abort();
        settle().await;
        recorder.release.add_permits(10);
        assert!(blocker.await.expect("task").is_ok());
        for t in tasks {
            assert!(t.await.expect("task").is_ok());
        }
        // 3 by count; then 10 + 600 (the second 600 would pass 1000 bytes); then 600.
        assert_eq!(*recorder.sizes.lock().expect("lock"), vec![1, 3, 2, 1]);
    }
}

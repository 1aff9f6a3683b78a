//! The journal as the daemon's tasks use it: one thread owns the connection
//! and runs queued calls in batches (group commit).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::{EventKind, Journal, JournalError};

/// The journal as the daemon's tasks use it: one thread owns the
/// connection and runs queued calls in batches, each batch one transaction
/// with one fsync (group commit). Every call still gets its own savepoint,
/// so one failing call does not undo the others, and none is answered
/// before its batch is durable.
#[derive(Clone)]
pub struct Db {
    jobs: std::sync::mpsc::Sender<Job>,
    later: Arc<Mutex<Later>>,
    /// Batches committed.
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// A connection of its own for [`Db::read`] (SQLite only).
    reader: Option<Arc<Mutex<Journal>>>,
}

/// Events the journal refused (a shared journal out of reach), kept to be
/// written with the next batch that commits, with the time they happened.
#[derive(Default)]
struct Later {
    events: VecDeque<Deferred>,
    /// Refused while the queue was full: counted, then recorded as one
    /// `journal.events_dropped` event.
    dropped: u64,
}

struct Deferred {
    at: i64,
    session: Option<String>,
    kind: EventKind,
    detail: serde_json::Value,
}

/// Events kept at most while the journal refuses them.
pub const LATER_MAX: usize = 10_000;

/// Runs a call (saying whether it succeeded), then reports the batch's
/// commit result to its caller.
type Job = Box<dyn FnOnce(&mut Journal) -> (bool, Report) + Send>;
type Report = Box<dyn FnOnce(Option<&str>) + Send>;

/// Calls in one batch at most.
const BATCH: usize = 256;

/// A call that arrives within this of the previous commit, when that
/// commit held more than one call, finds the journal busy: its batch waits
/// up to [`WINDOW`] for more calls. On the journal alone (`loadgen
/// journal`) a commit costs about as much CPU as three calls (its fsync,
/// the WAL frames of the pages the batch changed), so fewer, larger batches
/// cost less per session; a journal called one call at a time commits each
/// at once.
const BUSY: std::time::Duration = std::time::Duration::from_millis(2);

/// How long a busy batch waits, at most, after its first call. Kept short:
/// in the daemon at P2, 3 ms (and up to four times the last batch) halved
/// the commits again, 0.39 -> 0.21 per session, without lowering its CPU
/// per session (1.04 on `bench/ab`) and cost 15 % of the rate, the
/// callers waiting longer.
const WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

impl Db {
    /// Starts the journal thread.
    pub fn new(mut j: Journal) -> Db {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let later = Arc::new(Mutex::new(Later::default()));
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let committed = commits.clone();
        let pending = later.clone();
        std::thread::Builder::new()
            .name("tollgate-journal".into())
            .spawn(move || {
                // When the previous batch committed this recently, calls
                // are arriving faster than batches commit: wait for more.
                let mut last_commit: Option<std::time::Instant> = None;
                let mut last_size = 0;
                while let Ok(first) = rx.recv() {
                    let arrived = std::time::Instant::now();
                    let busy = last_size > 1
                        && last_commit.is_some_and(|t| arrived.duration_since(t) < BUSY);
                    let began = j.begin_batch();
                    let mut broken = began.as_ref().err().map(|e| e.to_string());
                    // Events refused earlier go first, in a call of their own.
                    let (flushed, dropped) = {
                        let mut l = pending.lock().unwrap_or_else(|e| e.into_inner());
                        (std::mem::take(&mut l.events), std::mem::take(&mut l.dropped))
                    };
                    let mut kept_later = false;
                    // Calls are numbered in the order they begin (for
                    // failures found after they returned).
                    let mut calls = 0;
                    if broken.is_none() && (!flushed.is_empty() || dropped > 0) {
                        calls += 1;
                        kept_later = j.begin_call().is_ok()
                            && flushed.iter().all(|d| {
                                j.event_at(d.at, d.session.as_deref(), d.kind, d.detail.clone())
                                    .is_ok()
                            })
                            && (dropped == 0
                                || j.event(
                                    None,
                                    EventKind::JournalEventsDropped,
                                    serde_json::json!({"dropped": dropped, "kept_at_most": LATER_MAX}),
                                )
                                .is_ok());
                        if j.end_call(kept_later).is_err() {
                            kept_later = false;
                        }
                    }
                    let mut reports = Vec::new();
                    let mut next = Some(first);
                    // Runs each call as it comes, with those queued meanwhile,
                    // up to BATCH; while busy, waits up to WINDOW after the
                    // first for as many as the last batch had.
                    while let Some(job) = next.take() {
                        if let Err(e) = j.begin_call() {
                            broken.get_or_insert(e.to_string());
                        }
                        let (ok, report) = job(&mut j);
                        if let Err(e) = j.end_call(ok) {
                            broken.get_or_insert(e.to_string());
                        }
                        reports.push((report, calls));
                        calls += 1;
                        if reports.len() >= BATCH {
                            break;
                        }
                        next = rx.try_recv().ok().or_else(|| {
                            // Until as many calls as the last batch had.
                            let left = WINDOW
                                .checked_sub(arrived.elapsed())
                                .filter(|_| busy && reports.len() < last_size)?;
                            rx.recv_timeout(left).ok()
                        });
                    }
                    let outcome = match broken {
                        None => {
                            let at = std::time::Instant::now();
                            let r = j.commit_batch().err().map(|e| e.to_string());
                            last_commit = Some(std::time::Instant::now());
                            last_size = reports.len();
                            committed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            crate::metrics::get()
                                .journal_commit
                                .observe(crate::metrics::seconds(at.elapsed()));
                            r
                        }
                        Some(e) => {
                            let _ = j.commit_batch();
                            Some(e)
                        }
                    };
                    // A write that failed after its call returned (sent
                    // without waiting, on PostgreSQL) fails that call alone.
                    let late = j.late_failures();
                    let late_of = |n: usize| {
                        late.iter()
                            .find(|(k, _)| *k == n)
                            .map(|(_, e)| e.to_string())
                    };
                    if kept_later && late_of(0).is_some() {
                        kept_later = false;
                    }
                    if outcome.is_some() || !kept_later {
                        // Not written after all: back to the front.
                        let mut l = pending.lock().unwrap_or_else(|e| e.into_inner());
                        for d in flushed.into_iter().rev() {
                            l.events.push_front(d);
                        }
                        l.dropped += dropped;
                    }
                    for (report, n) in reports {
                        report(late_of(n).as_deref().or(outcome.as_deref()));
                    }
                }
            })
            .expect("cannot start the journal thread");
        Db {
            jobs: tx,
            later,
            commits,
            reader: None,
        }
    }

    /// Gives [`Db::read`] a connection of its own: a SQLite journal in WAL
    /// mode reads what was committed while the journal thread writes.
    pub fn with_reader(mut self, reader: Journal) -> Db {
        self.reader = Some(Arc::new(Mutex::new(reader)));
        self
    }

    /// Runs a read that needs nothing of a batch (no write, no lock held
    /// across calls) at once in the caller's thread, on the reader's
    /// connection: no hop to the journal thread and back, no transaction
    /// of the writer's. Without a reader, or while another caller uses it,
    /// or if it fails there, it runs as a [`Db::call`].
    pub async fn read<R, F>(&self, f: F) -> Result<R, JournalError>
    where
        R: Send + 'static,
        F: Fn(&mut Journal) -> Result<R, JournalError> + Send + 'static,
    {
        if let Some(Ok(mut j)) = self.reader.as_ref().map(|r| r.try_lock()) {
            if let Ok(r) = f(&mut j) {
                return Ok(r);
            }
        }
        self.call(f).await
    }

    /// Keeps an event the journal refused, to be written (with the time it
    /// happened) with the next batch that commits; past [`LATER_MAX`] it is
    /// counted instead, and the count recorded then.
    pub fn event_later(
        &self,
        at: i64,
        session: Option<&str>,
        kind: EventKind,
        detail: serde_json::Value,
    ) {
        let mut l = self.later.lock().unwrap_or_else(|e| e.into_inner());
        if l.events.len() >= LATER_MAX {
            l.dropped += 1;
            return;
        }
        l.events.push_back(Deferred {
            at,
            session: session.map(str::to_string),
            kind,
            detail,
        });
    }

    /// Batches committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events kept for later, and those dropped since the last write.
    pub fn later(&self) -> (usize, u64) {
        let l = self.later.lock().unwrap_or_else(|e| e.into_inner());
        (l.events.len(), l.dropped)
    }

    /// Runs `f` with the journal on the journal thread; returns once the
    /// batch it ran in is committed.
    pub async fn call<R, F>(&self, f: F) -> Result<R, JournalError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Journal) -> Result<R, JournalError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |j: &mut Journal| {
            let result = f(j);
            let ok = result.is_ok();
            let report: Report = Box::new(move |commit_error: Option<&str>| {
                let _ = tx.send(settled(result, commit_error));
            });
            (ok, report)
        });
        if self.jobs.send(job).is_err() {
            return Err(JournalError::gone());
        }
        rx.await.unwrap_or_else(|_| Err(JournalError::gone()))
    }

    /// Queues `f` for the journal thread without waiting for its batch to
    /// commit: calls run in the order they were queued, so any call made
    /// after this one sees its writes. `done` gets the outcome (the call's
    /// error, or its batch's commit error) on the journal thread.
    pub fn queue<F, D>(&self, f: F, done: D)
    where
        F: FnOnce(&mut Journal) -> Result<(), JournalError> + Send + 'static,
        D: FnOnce(Result<(), JournalError>) + Clone + Send + 'static,
    {
        let gone = done.clone();
        let job: Job = Box::new(move |j: &mut Journal| {
            let result = f(j);
            let ok = result.is_ok();
            let report: Report =
                Box::new(move |commit_error: Option<&str>| done(settled(result, commit_error)));
            (ok, report)
        });
        if self.jobs.send(job).is_err() {
            gone(Err(JournalError::gone()));
        }
    }
}

/// A call's outcome once its batch has committed: its own result, or the
/// commit's failure.
fn settled<R>(
    result: Result<R, JournalError>,
    commit_error: Option<&str>,
) -> Result<R, JournalError> {
    match commit_error {
        None => result,
        Some(e) => Err(JournalError::Io {
            path: "journal".into(),
            source: std::io::Error::other(format!("commit failed: {e}")),
        }),
    }
}

impl JournalError {
    /// The thread or task that held the journal is gone.
    pub fn gone() -> JournalError {
        JournalError::Io {
            path: "journal".into(),
            source: std::io::Error::other("the journal thread is gone"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::EventKind;
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_on_the_reader_sees_what_the_writer_committed() {
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-db-").unwrap());
        let path = dir.join("j.db");
        let db = Db::new(Journal::open(&path).unwrap()).with_reader(Journal::open(&path).unwrap());
        for i in 0..20 {
            db.call(move |j| j.event(None, EventKind::TestWrite, json!({"i": i})))
                .await
                .unwrap();
            // Read on another connection, right after the commit.
            let seen = db.read(|j| j.events(None, 0, None)).await.unwrap();
            assert_eq!(seen.len(), i + 1);
            assert_eq!(seen[i].detail["i"], i);
        }
        // The reader is its own connection: a read runs while the writer
        // holds its write lock across a batch.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let writer = {
            let db = db.clone();
            tokio::spawn(async move {
                db.call(move |j| {
                    j.event(None, EventKind::TestWrite, json!({"i": "held"}))?;
                    let _ = held_tx.send(());
                    let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
                    Ok(())
                })
                .await
            })
        };
        held_rx.await.unwrap();
        let seen = db.read(|j| j.events(None, 0, None)).await.unwrap();
        assert_eq!(seen.len(), 20, "the uncommitted write is not seen");
        tx.send(()).unwrap();
        writer.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_call_runs_before_later_calls_and_reports_its_outcome() {
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-db-").unwrap());
        let db = Db::new(Journal::open(&dir.join("j.db")).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..10 {
            let tx = tx.clone();
            db.queue(
                move |j| {
                    j.event(None, EventKind::TestWrite, json!({"i": i}))?;
                    if i == 7 {
                        return Err(JournalError::TooNew { found: 0, known: 0 });
                    }
                    Ok(())
                },
                move |r| {
                    let _ = tx.send((i, r.is_ok()));
                },
            );
        }
        // A call queued after them, not waiting for them, sees their writes.
        let seen = db.call(|j| j.events(None, 0, None)).await.unwrap();
        let seen: Vec<_> = seen.iter().map(|e| e.detail["i"].clone()).collect();
        assert_eq!(
            seen,
            (0..10)
                .filter(|&i| i != 7)
                .map(|i| json!(i))
                .collect::<Vec<_>>()
        );
        let mut outcomes = Vec::new();
        for _ in 0..10 {
            outcomes.push(rx.recv().await.unwrap());
        }
        outcomes.sort();
        assert_eq!(outcomes, (0..10).map(|i| (i, i != 7)).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_call_in_a_batch_undoes_only_itself() {
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-db-").unwrap());
        let db = Db::new(Journal::open(&dir.join("j.db")).unwrap());
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.call(move |j| {
                        j.event(None, EventKind::TestWrite, json!({"i": i}))?;
                        if i % 2 == 0 {
                            // Fails after writing: its write must not survive.
                            j.event(None, EventKind::TestWrite, json!({"i": i, "again": true}))?;
                            return Err(JournalError::TooNew { found: 0, known: 0 });
                        }
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        let mut ok = 0;
        for c in calls {
            if c.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 25);
        let events = db.call(|j| j.events(None, 0, None)).await.unwrap();
        assert_eq!(events.len(), 25, "only the successful calls' writes remain");
        assert!(events
            .iter()
            .all(|e| e.detail["i"].as_i64().unwrap() % 2 == 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_caller_commits_each_call_and_many_share_commits() {
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-db-").unwrap());
        let db = Db::new(Journal::open(&dir.join("j.db")).unwrap());
        // One call at a time: nothing to wait for, each its own commit.
        for i in 0..30 {
            db.call(move |j| j.event(None, EventKind::TestWrite, json!({"i": i})))
                .await
                .unwrap();
        }
        assert_eq!(db.commits(), 30);
        // Sixteen callers, each doing something else between its calls (as
        // sessions do between redeem, start and end), so their calls arrive
        // spread out: the busy journal waits for them, and gathers far more
        // calls per commit than arrive at once.
        let before = db.commits();
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let db = db.clone();
                tokio::spawn(async move {
                    for i in 0..40 {
                        db.call(move |j| {
                            j.event(None, EventKind::TestWrite, json!({"t": t, "i": i}))
                        })
                        .await
                        .unwrap();
                        tokio::task::spawn_blocking(move || {
                            std::thread::sleep(std::time::Duration::from_micros(50 + 37 * t))
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let commits = db.commits() - before;
        assert!(commits * 4 < 16 * 40, "{commits} commits for 640 calls");
        let events = db.call(|j| j.events(None, 0, None)).await.unwrap();
        assert_eq!(events.len(), 30 + 640);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

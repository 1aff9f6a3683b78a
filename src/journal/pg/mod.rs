//! The PostgreSQL backend behind [`super::sql::Conn`]: one connection per
//! journal handle ([`link`]), statements prepared once per connection, and
//! a pipeline. A statement whose answer nobody reads (an event appended, a
//! row updated) is sent without waiting and travels with whatever is sent
//! next; only a statement whose answer the caller needs waits, and with it
//! everything sent before it. The writer's batch thus costs a round trip
//! per answer it needs and one to commit, not one per statement.
//!
//! Each call of the writer's batch runs in a savepoint of its own. A
//! statement sent without waiting can fail after its call has returned:
//! the transaction then refuses everything after it, so the calls sent
//! since are undone with the failed one and sent again (they read nothing
//! back in that time, so their statements are all they did), and the
//! failed call alone is reported as failed ([`Pg::late_failures`]).

mod link;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_postgres::types::ToSql;

pub use link::PgTarget;
use link::{close, reason, Link};
use wire::{dollars, read, PgParam};

use super::sql::{Row, ToParam};
use super::JournalError;

pub(super) struct Pg {
    /// `None` after the connection was lost and not yet made again (and
    /// while dropping).
    link: Option<Link>,
    statements: HashMap<String, tokio_postgres::Statement>,
    /// Sent and not yet answered, oldest first, with what was sent (to
    /// send it again).
    pending: VecDeque<(Sent, Pending)>,
    /// `BEGIN`, `SAVEPOINT` and `RELEASE` not sent yet: they go in one
    /// message with whatever is sent next.
    held: String,
    /// The call of the writer's batch running now (numbered from 0 in each
    /// transaction), and the next number.
    call: Option<usize>,
    next_call: usize,
    /// Calls that failed after they returned, with why.
    late: Vec<(usize, JournalError)>,
    /// `postgres://host:port/db`, for errors.
    name: String,
    /// How to connect again after losing the connection.
    target: PgTarget,
    /// A transaction is open on the connection: if it is lost meanwhile,
    /// every statement fails until the transaction is ended (never run
    /// outside it on a new connection), and its COMMIT fails.
    in_tx: bool,
    /// When the last attempt to connect again failed: the next waits a
    /// second, so an outage is not hammered.
    failed_at: Option<std::time::Instant>,
}

/// A statement's answer, still to come.
type Pending = Pin<Box<dyn Future<Output = Result<Answer, tokio_postgres::Error>> + Send>>;

enum Answer {
    Count(u64),
    Rows(Vec<tokio_postgres::Row>),
}

/// What was sent, and for whom.
#[derive(Clone)]
struct Sent {
    /// The call of the writer's batch it belongs to; `None`: outside any
    /// call, or the savepoints between calls.
    call: Option<usize>,
    what: Statement,
}

#[derive(Clone)]
enum Statement {
    Prepared {
        st: tokio_postgres::Statement,
        params: Vec<PgParam>,
        rows: bool,
    },
    /// Without parameters, one or more separated by `;`.
    Simple(String),
}

impl Pg {
    pub(super) fn connect(t: &PgTarget) -> Result<Pg, JournalError> {
        let name = format!("postgres://{}:{}/{}", t.host, t.port, t.dbname);
        let link = Link::connect(t, &name)?;
        Ok(Pg {
            link: Some(link),
            statements: HashMap::new(),
            pending: VecDeque::new(),
            held: String::new(),
            call: None,
            next_call: 0,
            late: Vec::new(),
            name,
            target: t.clone(),
            in_tx: false,
            failed_at: None,
        })
    }

    fn lost(&self) -> JournalError {
        JournalError::Postgres {
            name: self.name.clone(),
            reason: "the connection was lost".into(),
        }
    }

    fn err(&self, e: &tokio_postgres::Error) -> JournalError {
        JournalError::Postgres {
            name: self.name.clone(),
            reason: reason(e),
        }
    }

    fn closed(&self) -> bool {
        self.link
            .as_ref()
            .is_none_or(|l| l.ended || l.client.as_ref().is_none_or(|c| c.is_closed()))
    }

    /// The client, connected again when the connection was lost (outside a
    /// transaction).
    fn client(&mut self) -> Result<Arc<tokio_postgres::Client>, JournalError> {
        if self.closed() {
            if self.in_tx
                || self
                    .failed_at
                    .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
            {
                return Err(self.lost());
            }
            self.forget();
            if let Some(old) = self.link.take() {
                close(old);
            }
            match Link::connect(&self.target, &self.name) {
                Ok(l) => {
                    self.failed_at = None;
                    tracing::info!(journal = %self.name, "connected to the journal again");
                    self.link = Some(l);
                }
                Err(e) => {
                    self.failed_at = Some(std::time::Instant::now());
                    return Err(e);
                }
            }
        }
        let link = self.link.as_ref().expect("connected above");
        Ok(link.client.clone().expect("taken only when dropped"))
    }

    /// Forgets what the connection held: prepared statements, what was
    /// sent, the transaction's calls.
    fn forget(&mut self) {
        self.statements.clear();
        self.pending.clear();
        self.held.clear();
        self.call = None;
        self.next_call = 0;
    }

    /// Sends without waiting: the first poll of a request sends it.
    fn push(&mut self, sent: Sent) -> Result<(), JournalError> {
        let client = self.client()?;
        let what = sent.what.clone();
        let mut f: Pending = Box::pin(async move {
            match what {
                Statement::Prepared { st, params, rows } => {
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                    if rows {
                        client.query(&st, &refs).await.map(Answer::Rows)
                    } else {
                        client.execute(&st, &refs).await.map(Answer::Count)
                    }
                }
                Statement::Simple(text) => {
                    client.batch_execute(&text).await.map(|()| Answer::Count(0))
                }
            }
        });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(r) = f.as_mut().poll(&mut cx) {
            f = Box::pin(std::future::ready(r));
        }
        self.pending.push_back((sent, f));
        Ok(())
    }

    fn hold(&mut self, sql: &str) {
        if !self.held.is_empty() {
            self.held.push_str("; ");
        }
        self.held.push_str(sql);
    }

    /// Sends what is held, as one message.
    fn send_held(&mut self) -> Result<(), JournalError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.held);
        self.push(Sent {
            call: None,
            what: Statement::Simple(text),
        })
    }

    /// Waits for everything sent; the answers, oldest first.
    fn wait_each(&mut self) -> Vec<(Sent, Result<Answer, JournalError>)> {
        if let Err(e) = self.send_held() {
            let mut out: Vec<_> = std::mem::take(&mut self.pending)
                .into_iter()
                .map(|(s, _)| (s, Err(self.lost())))
                .collect();
            out.push((
                Sent {
                    call: None,
                    what: Statement::Simple(String::new()),
                },
                Err(e),
            ));
            return out;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let mut answers = Vec::with_capacity(pending.len());
        match self.link.as_mut() {
            Some(link) => link.wait(|cx, _, _| {
                while let Some((_, f)) = pending.front_mut() {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(r) => {
                            let (sent, _) = pending.pop_front().expect("just polled");
                            answers.push((sent, r));
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Poll::Ready(())
            }),
            None => {
                return pending
                    .into_iter()
                    .map(|(s, _)| (s, Err(self.lost())))
                    .collect()
            }
        }
        answers
            .into_iter()
            .map(|(s, r)| (s, r.map_err(|e| self.err(&e))))
            .collect()
    }

    /// Waits for everything sent. A failure of a call that has already
    /// returned is recorded as its own (see [`Pg::late_failures`]), and
    /// the calls sent after it are sent again; any other failure is
    /// returned. Else the answer of the last statement sent.
    fn settle(&mut self) -> Result<Option<Answer>, JournalError> {
        loop {
            let mut answers = self.wait_each();
            let Some(i) = answers.iter().position(|(_, r)| r.is_err()) else {
                return Ok(answers.pop().and_then(|(_, r)| r.ok()));
            };
            let failed = answers[i].0.call;
            let Some(k) = failed.filter(|&k| !self.closed() && self.call.is_none_or(|m| k < m))
            else {
                let (_, r) = answers.swap_remove(i);
                return Err(r.err().expect("found failing"));
            };
            // In order: what comes after it is sent again in order.
            let (_, r) = answers.remove(i);
            self.late.push((k, r.err().expect("found failing")));
            // Undo the failed call (its savepoint is the only one left:
            // every later one was refused), then send the later calls
            // again, each in a savepoint of its own.
            let again: Vec<Sent> = answers
                .into_iter()
                .filter(|(s, _)| s.call.is_some_and(|c| c > k))
                .filter(|(s, _)| matches!(s.what, Statement::Prepared { .. }))
                .map(|(s, _)| s)
                .collect();
            self.hold("ROLLBACK TO call; RELEASE call");
            let mut open = None;
            for s in again {
                if open != s.call {
                    if open.is_some() {
                        self.hold("RELEASE call");
                    }
                    self.hold("SAVEPOINT call");
                    open = s.call;
                }
                self.send_held()?;
                self.push(s)?;
            }
            match self.call {
                Some(_) if open == self.call => {}
                Some(_) => {
                    if open.is_some() {
                        self.hold("RELEASE call");
                    }
                    self.hold("SAVEPOINT call");
                }
                None if open.is_some() => self.hold("RELEASE call"),
                None => {}
            }
        }
    }

    fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement, JournalError> {
        if !self.closed() {
            if let Some(s) = self.statements.get(sql) {
                return Ok(s.clone());
            }
        }
        // Preparing waits for its answer, after what was sent before it (a
        // failed transaction refuses it).
        self.settle()?;
        let client = self.client()?;
        let text = dollars(sql);
        let mut prepare = Box::pin(async move { client.prepare(&text).await });
        let link = self.link.as_mut().expect("connected by client()");
        let s = link
            .wait(|cx, _, _| prepare.as_mut().poll(cx))
            .map_err(|e| self.err(&e))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Sends one statement with its parameters, without waiting.
    fn request(
        &mut self,
        sql: &str,
        params: &[&dyn ToParam],
        rows: bool,
    ) -> Result<(), JournalError> {
        let st = self.statement(sql)?;
        self.send_held()?;
        let params = params.iter().map(|p| PgParam::from(p.to_param())).collect();
        self.push(Sent {
            call: self.call,
            what: Statement::Prepared { st, params, rows },
        })
    }

    /// Sends a statement whose answer nobody reads: it travels with the
    /// next one that waits (which returns its error, if it failed and its
    /// call is still running).
    pub(super) fn send(&mut self, sql: &str, params: &[&dyn ToParam]) -> Result<(), JournalError> {
        self.request(sql, params, false)
    }

    pub(super) fn execute(
        &mut self,
        sql: &str,
        params: &[&dyn ToParam],
    ) -> Result<usize, JournalError> {
        self.request(sql, params, false)?;
        match self.settle()? {
            Some(Answer::Count(n)) => Ok(n as usize),
            _ => Ok(0),
        }
    }

    pub(super) fn query(
        &mut self,
        sql: &str,
        params: &[&dyn ToParam],
    ) -> Result<Vec<Row>, JournalError> {
        self.request(sql, params, true)?;
        match self.settle()? {
            Some(Answer::Rows(rows)) => rows.iter().map(read).collect(),
            _ => Ok(Vec::new()),
        }
    }

    /// Statements without parameters. `BEGIN` and `SAVEPOINT` are held
    /// (they travel with what follows them); `ROLLBACK` answers for itself
    /// alone; anything else waits (a `COMMIT` only after everything sent
    /// before it has succeeded).
    pub(super) fn batch(&mut self, sql: &str) -> Result<(), JournalError> {
        match sql {
            // The transaction died with the connection: its work is gone,
            // which a COMMIT must not report as kept.
            "COMMIT" if self.closed() && self.in_tx => {
                self.in_tx = false;
                self.forget();
                return Err(self.lost());
            }
            "ROLLBACK" if self.closed() => {
                self.in_tx = false;
                self.forget();
                return Ok(());
            }
            _ => {}
        }
        if sql == "BEGIN" || sql.starts_with("SAVEPOINT ") {
            if sql == "BEGIN" {
                // Connected (again, after a loss) before the transaction
                // counts as open: a lost connection is never made again
                // inside one.
                self.client()?;
                self.in_tx = true;
                self.next_call = 0;
                self.late.clear();
            }
            self.hold(sql);
            return Ok(());
        }
        if sql.starts_with("ROLLBACK") {
            // Whatever failed before it is what it undoes.
            self.hold(sql);
            let r = self.wait_each().pop().map_or(Ok(()), |(_, r)| r.map(drop));
            if sql == "ROLLBACK" {
                self.in_tx = false;
                self.call = None;
            }
            return r;
        }
        if sql == "COMMIT" {
            self.settle()?;
        }
        self.hold(sql);
        self.settle()?;
        if sql == "COMMIT" {
            self.in_tx = false;
        }
        Ok(())
    }

    /// A call of the writer's batch begins, in the savepoint `call` (held:
    /// it travels with what the call sends first).
    pub(super) fn begin_call(&mut self) {
        self.call = Some(self.next_call);
        self.next_call += 1;
        self.hold("SAVEPOINT call");
    }

    /// Ends a call of the writer's batch. Kept: its savepoint released,
    /// held to travel with what comes next (a failure after this is a late
    /// one). Undone: rolled back to its savepoint, after the calls before
    /// it are known to have succeeded (or were sent again).
    pub(super) fn end_call(&mut self, keep: bool) -> Result<(), JournalError> {
        if keep {
            self.call = None;
            self.hold("RELEASE call");
            return Ok(());
        }
        // Its own failures are why it is undone.
        let _ = self.settle();
        self.call = None;
        self.hold("ROLLBACK TO call; RELEASE call");
        self.settle().map(drop)
    }

    /// Listens on `channel` (LISTEN): see [`Pg::wait_notified`].
    pub(super) fn listen(&mut self, channel: &str) -> Result<(), JournalError> {
        self.batch(&format!("LISTEN {channel}"))
    }

    /// Waits up to `timeout` for a notification on a channel listened to;
    /// an error when the connection is lost (listen again on a new one).
    pub(super) fn wait_notified(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<bool, JournalError> {
        self.settle()?;
        let got = match self.link.as_mut() {
            Some(link) => link.wait_notified(timeout),
            None => false,
        };
        if self.closed() {
            return Err(self.lost());
        }
        Ok(got)
    }

    /// Calls of this transaction that failed after they returned (their
    /// number, from 0, and why); taken once.
    pub(super) fn late_failures(&mut self) -> Vec<(usize, JournalError)> {
        std::mem::take(&mut self.late)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.pending.clear();
        if let Some(link) = self.link.take() {
            close(link);
        }
    }
}

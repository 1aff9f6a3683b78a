//! Sessions: issued with a token's hash, redeemed once, started, finished,
//! canceled, expired, and closed at start-up when an earlier run left them live.
use super::sql::{params, Conn, Row, ToParam};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

use super::{
    append_event, fmt_time, now_ms, EndReason, EventKind, Journal, JournalError, SessionKind,
    SessionState,
};

/// A session an earlier run left live, found at start-up.
#[derive(Debug)]
pub struct StaleSession {
    pub id: String,
    pub pid: Option<i64>,
    /// The leader's identity when it started (`exec::process_identity`).
    pub leader: Option<String>,
}

/// A session row as the CLI shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SessionRow {
    pub id: String,
    pub kind: SessionKind,
    pub state: SessionState,
    pub profile: Option<String>,
    pub login_user: String,
    pub command: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub max_duration_s: i64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<EndReason>,
    pub exit_status: Option<i64>,
    pub exit_signal: Option<String>,
    pub client_addr: Option<String>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// Tunnel sessions: the target, its per-session connection limit, and
    /// how many connections were forwarded.
    pub target: Option<String>,
    pub connection_limit: Option<u32>,
    pub forwards: i64,
}

const SESSION_COLUMNS: &str = "id, kind, state, profile, login_user, command, reason, created_at, expires_at, max_duration_ms, started_at, ended_at, end_reason, exit_status, exit_signal, client_addr, bytes_in, bytes_out, target, connection_limit, forwards";

/// A column holding one of a closed set of names.
fn named<T>(r: &Row, i: usize, parse: fn(&str) -> Option<T>) -> Result<T, JournalError> {
    let s: String = r.get(i)?;
    parse(&s).ok_or_else(|| unknown(i, &s))
}

fn unknown(i: usize, s: &str) -> JournalError {
    JournalError::Column(format!(
        "column {i}: unknown value {s:?} (a journal from a newer tollgate?)"
    ))
}

fn session_row(r: &Row) -> Result<SessionRow, JournalError> {
    let opt_time = |i: usize| -> Result<Option<String>, JournalError> {
        Ok(r.get::<Option<i64>>(i)?.map(fmt_time))
    };
    Ok(SessionRow {
        id: r.get(0)?,
        kind: named(r, 1, SessionKind::parse)?,
        state: named(r, 2, SessionState::parse)?,
        profile: r.get(3)?,
        login_user: r.get(4)?,
        command: r.get(5)?,
        reason: r.get(6)?,
        created_at: fmt_time(r.get(7)?),
        expires_at: fmt_time(r.get(8)?),
        max_duration_s: r.get::<i64>(9)? / 1000,
        started_at: opt_time(10)?,
        ended_at: opt_time(11)?,
        end_reason: r
            .get::<Option<String>>(12)?
            .map(|s| EndReason::parse(&s).ok_or_else(|| unknown(12, &s)))
            .transpose()?,
        exit_status: r.get(13)?,
        exit_signal: r.get(14)?,
        client_addr: r.get(15)?,
        bytes_in: r.get(16)?,
        bytes_out: r.get(17)?,
        target: r.get(18)?,
        connection_limit: r.get(19)?,
        forwards: r.get(20)?,
    })
}

/// What `issue` needs.
pub struct NewSession<'a> {
    pub id: &'a str,
    pub token_sha256: &'a str,
    pub profile: &'a str,
    pub login_user: &'a str,
    pub command: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub ttl: Duration,
    pub max_duration: Duration,
    /// A tunnel session: the target's name (then `profile` is empty).
    pub target: Option<&'a str>,
    pub connection_limit: Option<u32>,
}

/// What a token grants, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A process under `profile`: its own command, or `command` when the
    /// token was issued with one.
    Command {
        profile: String,
        command: Option<String>,
    },
    /// Forwarded connections to the one named target, nothing else; at
    /// most `connection_limit` open at once.
    Tunnel {
        target: String,
        connection_limit: Option<u32>,
    },
}

/// What a successful redemption hands to the daemon. Only the journal
/// builds one (the sealed field), and only in [`Journal::redeem`]: the
/// value is the proof that a person presented a live token, which `exec`
/// asks for before it plans a process.
#[derive(Debug)]
pub struct Redeemed {
    pub id: String,
    pub grant: Grant,
    pub max_duration: Duration,
    pub(super) _sealed: Sealed,
}

/// Only the journal can name it, so only its redemption (in whichever
/// backend) builds a [`Redeemed`].
#[derive(Debug)]
pub(super) struct Sealed;

/// How a session ended.
#[derive(Debug, Clone)]
pub struct Ending {
    pub reason: EndReason,
    pub exit_status: Option<i64>,
    pub exit_signal: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections forwarded (tunnel sessions).
    pub forwards: u64,
}

/// Result of `cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// A pending token was voided at once.
    Voided,
    /// An active session was marked `canceling`; the daemon ends it.
    Requested,
    /// Nothing to do: already canceling, terminated or expired.
    AlreadyOver,
}

impl Journal {
    /// Creates a pending session for a token (given as its hash).
    pub fn issue(&mut self, s: &NewSession) -> Result<SessionRow, JournalError> {
        let tx = self.conn.savepoint()?;
        let row = insert_session(&tx, s)?;
        tx.commit()?;
        Ok(row)
    }

    /// Creates many pending sessions in one transaction (one fsync).
    pub fn issue_many(&mut self, sessions: &[NewSession]) -> Result<(), JournalError> {
        let tx = self.conn.savepoint()?;
        for s in sessions {
            insert_session(&tx, s)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The one conditional UPDATE that decides a login: of any number of
    /// concurrent attempts with the same token exactly one gets a row back.
    /// Wrong token, wrong user, used, expired and canceled all give `None`.
    pub fn redeem(
        &mut self,
        token_sha256: &str,
        login_user: &str,
        client_addr: &str,
    ) -> Result<Option<Redeemed>, JournalError> {
        // The database's clock: every node sharing it agrees on expiry.
        let clock = self.conn.clock_sql(6);
        let local = now_ms();
        let (p4, p5, p6): (&dyn ToParam, &dyn ToParam, &dyn ToParam) =
            (&self.node, &self.owner, &local);
        let bound: &[&dyn ToParam] = &[&client_addr, &token_sha256, &login_user, p4, p5, p6];
        let bound = if self.conn.is_postgres() {
            &bound[..5]
        } else {
            bound
        };
        let tx = self.conn.savepoint()?;
        let won = tx.query_opt(
            &format!(
                "UPDATE sessions SET state = 'active', started_at = {clock}, client_addr = ?1, node = ?4,
                     owner = ?5
                 WHERE token_sha256 = ?2 AND login_user = ?3 AND state = 'pending' AND expires_at > {clock}
                 RETURNING id, profile, command, max_duration_ms, target, connection_limit, started_at"
            ),
            bound,
            |r| {
                let grant = match r.get::<Option<String>>(4)? {
                    Some(target) => Grant::Tunnel {
                        target,
                        connection_limit: r.get(5)?,
                    },
                    None => Grant::Command {
                        profile: r.get::<Option<String>>(1)?.unwrap_or_default(),
                        command: r.get(2)?,
                    },
                };
                let redeemed = Redeemed {
                    id: r.get(0)?,
                    grant,
                    max_duration: Duration::from_millis(r.get::<i64>(3)?.max(0) as u64),
                    _sealed: Sealed,
                };
                Ok((redeemed, r.get::<i64>(6)?))
            },
        )?;
        let (won, now) = match won {
            Some((r, at)) => (Some(r), at),
            None => (None, local),
        };
        match &won {
            Some(r) => append_event(
                &tx,
                now,
                Some(&r.id),
                EventKind::SessionRedeemed,
                &json!({"client_addr": client_addr, "login_user": login_user,
                        // The daemon process serving it, and its version.
                        "daemon_pid": self.owner.as_deref().and_then(|o| o.split(':').next()?.parse::<i64>().ok()),
                        "version": self.version}),
            )?,
            None => append_event(
                &tx,
                now,
                None,
                EventKind::AuthFailed,
                &json!({"client_addr": client_addr,
                        "login_user": crate::text::clip(login_user, crate::text::USER_MAX)}),
            )?,
        }
        tx.commit()?;
        Ok(won)
    }

    /// Records that the session's process started: its pid and the
    /// leader's identity (boot id and start time), to find what is left of
    /// it after a crash.
    pub fn started(
        &mut self,
        id: &str,
        pid: u32,
        leader: Option<String>,
        detail: Value,
    ) -> Result<(), JournalError> {
        let tx = self.conn.savepoint()?;
        tx.write(
            "UPDATE sessions SET pid = ?2, leader = ?3 WHERE id = ?1",
            params![id, pid, leader],
        )?;
        append_event(&tx, now_ms(), Some(id), EventKind::SessionStarted, &detail)?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a session terminated with why, status and byte counts, and
    /// records its exit (when a process ran) and its end as events.
    pub fn finish(&mut self, id: &str, end: &Ending) -> Result<(), JournalError> {
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        tx.write(
            "UPDATE sessions SET state = 'terminated', ended_at = ?2, end_reason = ?3, exit_status = ?4,
                    exit_signal = ?5, bytes_in = ?6, bytes_out = ?7, forwards = ?8
             WHERE id = ?1 AND (state = 'active' OR state = 'canceling')",
            params![
                id,
                now,
                end.reason.as_str(),
                end.exit_status,
                end.exit_signal,
                end.bytes_in as i64,
                end.bytes_out as i64,
                end.forwards as i64
            ],
        )?;
        if end.exit_status.is_some() || end.exit_signal.is_some() {
            append_event(
                &tx,
                now,
                Some(id),
                EventKind::SessionExited,
                &json!({"exit_status": end.exit_status, "exit_signal": end.exit_signal}),
            )?;
        }
        append_event(
            &tx,
            now,
            Some(id),
            EventKind::SessionTerminated,
            &json!({"reason": end.reason, "exit_status": end.exit_status, "exit_signal": end.exit_signal,
                    "bytes_in": end.bytes_in, "bytes_out": end.bytes_out}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Cancels a session; idempotent. `Ok(None)` when there is no such id.
    pub fn cancel(&mut self, id: &str) -> Result<Option<CancelOutcome>, JournalError> {
        let now = now_ms();
        let tx = self.conn.immediate()?;
        let state: Option<String> = tx.query_opt(
            "SELECT state FROM sessions WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        let outcome = match state.as_deref() {
            None => return Ok(None),
            Some("pending") => {
                tx.execute(
                    "UPDATE sessions SET state = 'terminated', ended_at = ?2, end_reason = 'canceled' WHERE id = ?1",
                    params![id, now],
                )?;
                append_event(
                    &tx,
                    now,
                    Some(id),
                    EventKind::SessionCanceled,
                    &json!({"while": "pending"}),
                )?;
                CancelOutcome::Voided
            }
            Some("active") => {
                tx.execute(
                    "UPDATE sessions SET state = 'canceling' WHERE id = ?1",
                    params![id],
                )?;
                // Whichever node holds it ends it at once.
                tx.notify_nodes()?;
                append_event(
                    &tx,
                    now,
                    Some(id),
                    EventKind::SessionCancelRequested,
                    &json!({}),
                )?;
                CancelOutcome::Requested
            }
            Some(_) => CancelOutcome::AlreadyOver,
        };
        tx.commit()?;
        Ok(Some(outcome))
    }

    /// Ids of sessions the CLI asked to cancel.
    pub fn canceling(&self) -> Result<Vec<String>, JournalError> {
        self.conn.query(
            "SELECT id FROM sessions WHERE state = 'canceling'",
            params![],
            |r| r.get(0),
        )
    }

    /// Moves pending sessions whose token TTL has passed to `expired`.
    pub fn expire_due(&mut self) -> Result<Vec<String>, JournalError> {
        let now = self.conn.now_ms()?;
        let tx = self.conn.savepoint()?;
        let ids: Vec<String> = tx.query(
            "UPDATE sessions SET state = 'expired', ended_at = ?1, end_reason = 'expired'
             WHERE state = 'pending' AND expires_at <= ?1 RETURNING id",
            params![now],
            |r| r.get(0),
        )?;
        for id in &ids {
            append_event(&tx, now, Some(id), EventKind::SessionExpired, &json!({}))?;
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Sessions an earlier daemon process of this node left live can't be
    /// resumed (on a shared journal, other nodes' sessions are theirs):
    /// each whose owner is neither this process nor one `alive` vouches
    /// for (a process draining after a hand-over) ends `terminated
    /// (daemon_stopped)`. Run at start and with every heartbeat. Returns
    /// their ids, recorded pids and leader identities.
    pub fn recover_stale(
        &mut self,
        alive: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<StaleSession>, JournalError> {
        let now = now_ms();
        let me = self.owner.clone();
        // Read first: this runs with every heartbeat, and there is
        // usually nothing to end.
        let live: Vec<(String, Option<String>)> = self.conn.query(
            "SELECT id, owner FROM sessions
             WHERE (state = 'active' OR state = 'canceling') AND (node IS NULL OR node = ?1)
               AND (CAST(?2 AS TEXT) IS NULL OR owner IS NULL OR owner <> ?2)",
            params![self.node, me],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let gone: Vec<(String, Option<String>)> = live
            .into_iter()
            .filter(|(_, owner)| !owner.as_deref().is_some_and(alive))
            .collect();
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.conn.immediate()?;
        let mut rows = Vec::new();
        for (id, owner) in gone {
            let row = tx.query_opt(
                "UPDATE sessions SET state = 'terminated', ended_at = ?1, end_reason = 'daemon_stopped'
                 WHERE id = ?2 AND (state = 'active' OR state = 'canceling')
                 RETURNING id, pid, leader",
                params![now, id],
                stale_row,
            )?;
            let Some(row) = row else { continue };
            append_event(
                &tx,
                now,
                Some(&row.id),
                EventKind::SessionTerminated,
                &json!({"reason": "daemon_stopped", "found_at_startup": true, "owner": owner}),
            )?;
            rows.push(row);
        }
        tx.commit()?;
        Ok(rows)
    }

    /// The live sessions of this node and the process serving each
    /// (`PID:BOOT:TICKS`; none for a session redeemed before owners were
    /// recorded).
    pub fn live_owners(&self) -> Result<Vec<(String, Option<String>)>, JournalError> {
        self.conn.query(
            "SELECT id, owner FROM sessions
             WHERE (state = 'active' OR state = 'canceling') AND (node IS NULL OR node = ?1)",
            params![self.node],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// All sessions, newest first, optionally in one state.
    pub fn list(&self, state: Option<SessionState>) -> Result<Vec<SessionRow>, JournalError> {
        self.conn.query(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1) ORDER BY created_at DESC, id"
            ),
            params![state.map(SessionState::as_str)],
            session_row,
        )
    }

    /// At most `limit` sessions, newest first, after the session `after`
    /// (the last of the previous page) when given.
    pub fn list_page(
        &self,
        state: Option<SessionState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRow>, JournalError> {
        self.conn.query(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1)
                 AND (CAST(?2 AS TEXT) IS NULL OR created_at < (SELECT created_at FROM sessions WHERE id = ?2)
                      OR (created_at = (SELECT created_at FROM sessions WHERE id = ?2) AND id > ?2))
                 ORDER BY created_at DESC, id LIMIT ?3"
            ),
            params![state.map(SessionState::as_str), after, limit as i64],
            session_row,
        )
    }

    /// One session.
    pub fn get(&self, id: &str) -> Result<Option<SessionRow>, JournalError> {
        self.conn.query_opt(
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
            params![id],
            session_row,
        )
    }
}

/// `id, pid, leader` of a session left live.
pub(super) fn stale_row(r: &Row) -> Result<StaleSession, JournalError> {
    Ok(StaleSession {
        id: r.get(0)?,
        pid: r.get(1)?,
        leader: r.get(2)?,
    })
}

fn insert_session(tx: &Conn, s: &NewSession) -> Result<SessionRow, JournalError> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO sessions (id, kind, state, token_sha256, profile, login_user, command, reason, created_at, expires_at,
             max_duration_ms, target, connection_limit)
         VALUES (?1, ?10, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?11, ?12)",
        params![
            s.id,
            s.token_sha256,
            (!s.profile.is_empty()).then_some(s.profile),
            s.login_user,
            s.command,
            s.reason,
            now,
            now + s.ttl.as_millis() as i64,
            s.max_duration.as_millis() as i64,
            if s.target.is_some() { "tunnel" } else { "ephemeral" },
            s.target,
            s.connection_limit
        ],
    )?;
    append_event(
        tx,
        now,
        Some(s.id),
        EventKind::SessionIssued,
        &json!({"profile": (!s.profile.is_empty()).then_some(s.profile), "target": s.target,
                "connection_limit": s.connection_limit, "login_user": s.login_user, "command": s.command,
                "reason": s.reason, "ttl_s": s.ttl.as_secs(), "max_duration_s": s.max_duration.as_secs()}),
    )?;
    tx.query_one(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
        params![s.id],
        session_row,
    )
}

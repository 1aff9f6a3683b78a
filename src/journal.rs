//! The journal: one SQLite file holding sessions and an append-only event
//! log. It is also the interface between the admin CLI and the daemon: the
//! CLI writes here, the daemon notices through `PRAGMA data_version`.
//!
//! Tokens never reach this module in plaintext; only their SHA-256.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

/// Errors from the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("journal {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("journal {path}: permission denied; {hint}")]
    Denied { path: String, hint: String },
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("journal schema version {found} is newer than this tollgate understands ({known})")]
    TooNew { found: i64, known: i64 },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, UTC.
pub fn fmt_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Schema migrations; `PRAGMA user_version` is the index of the last applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending','active','canceling','terminated','expired')),
    token_sha256    TEXT NOT NULL UNIQUE,
    profile         TEXT,
    login_user      TEXT NOT NULL,
    command         TEXT,
    reason          TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    max_duration_ms INTEGER NOT NULL,
    started_at      INTEGER,
    ended_at        INTEGER,
    end_reason      TEXT,
    exit_status     INTEGER,
    exit_signal     TEXT,
    client_addr     TEXT,
    pid             INTEGER,
    bytes_in        INTEGER NOT NULL DEFAULT 0,
    bytes_out       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    session_id TEXT,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_session ON events(session_id, seq);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"#,
    r#"
CREATE TABLE drains (
    name                TEXT PRIMARY KEY,
    url                 TEXT NOT NULL,
    connected           INTEGER NOT NULL,
    delivered           INTEGER NOT NULL,
    queued              INTEGER NOT NULL,
    queued_bytes        INTEGER NOT NULL,
    dropped             INTEGER NOT NULL,
    dropped_bytes       INTEGER NOT NULL,
    failures            INTEGER NOT NULL,
    last_error          TEXT,
    event_seq           INTEGER NOT NULL,
    daemon_pid          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE collect_sessions (
    id                    TEXT PRIMARY KEY,
    connection_identifier TEXT NOT NULL UNIQUE,
    status                TEXT NOT NULL CHECK (status IN ('pending','completed')),
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    expired_at            INTEGER,
    deleted_at            INTEGER,
    external_id           TEXT,
    multi_connection      INTEGER NOT NULL,
    multi_key             INTEGER NOT NULL,
    must_confirm          INTEGER NOT NULL,
    ssh_banner            TEXT,
    ssh_message           TEXT
);
CREATE TABLE collect_connections (
    id             TEXT PRIMARY KEY,
    collect_id     TEXT NOT NULL REFERENCES collect_sessions(id),
    client_version TEXT,
    ip_address     TEXT,
    created_at     INTEGER NOT NULL
);
CREATE INDEX collect_connections_by_session ON collect_connections(collect_id, created_at);
CREATE TABLE collect_keys (
    id                   TEXT PRIMARY KEY,
    collect_id           TEXT NOT NULL REFERENCES collect_sessions(id),
    connection_id        TEXT NOT NULL REFERENCES collect_connections(id),
    created_at           INTEGER NOT NULL,
    public_key_algorithm TEXT NOT NULL,
    public_key_md5       TEXT NOT NULL,
    public_key_sha256    TEXT NOT NULL,
    public_key_pem       TEXT NOT NULL,
    public_key_ssh       TEXT NOT NULL,
    public_key_openssh   TEXT NOT NULL
);
CREATE INDEX collect_keys_by_connection ON collect_keys(connection_id, created_at);
"#,
    r#"
CREATE TABLE collect_webhooks (
    id                 TEXT PRIMARY KEY,
    collect_id         TEXT NOT NULL REFERENCES collect_sessions(id),
    url                TEXT NOT NULL,
    method             TEXT NOT NULL CHECK (method IN ('post','put','patch')),
    headers            TEXT NOT NULL,
    events             TEXT NOT NULL,
    retries            INTEGER NOT NULL,
    initial_backoff    INTEGER NOT NULL,
    backoff_multiplier REAL NOT NULL,
    secret             TEXT,
    created_at         INTEGER NOT NULL,
    removed_at         INTEGER
);
CREATE INDEX collect_webhooks_by_session ON collect_webhooks(collect_id);
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES collect_webhooks(id),
    collect_id      TEXT NOT NULL REFERENCES collect_sessions(id),
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending','delivered','failed','canceled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_session ON webhook_deliveries(collect_id, created_at);
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id),
    n           INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    PRIMARY KEY (delivery_id, n)
);
"#,
    r#"
ALTER TABLE sessions ADD COLUMN target TEXT;
ALTER TABLE sessions ADD COLUMN connection_limit INTEGER;
ALTER TABLE sessions ADD COLUMN forwards INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE daemon_health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    checked_at INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE sessions ADD COLUMN leader TEXT;
"#,
];

/// A session an earlier run left live, found at start-up.
#[derive(Debug)]
pub struct StaleSession {
    pub id: String,
    pub pid: Option<i64>,
    /// The leader's identity when it started (`exec::process_identity`).
    pub leader: Option<String>,
}

/// One drain as the daemon last recorded it (`tollgate drain status`).
/// Counters are since the daemon started; `event_seq` is the newest
/// journal event the drain delivered, where delivery resumes after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainRow {
    pub name: String,
    pub url: String,
    pub connected: bool,
    pub delivered: u64,
    pub queued: u64,
    pub queued_bytes: u64,
    pub dropped: u64,
    pub dropped_bytes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub event_seq: i64,
    pub daemon_pid: u32,
    pub updated_at: String,
}

/// A session row as the CLI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub profile: Option<String>,
    pub login_user: String,
    pub command: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub max_duration_s: i64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
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

fn session_row(r: &Row) -> rusqlite::Result<SessionRow> {
    let opt_time = |i: usize| -> rusqlite::Result<Option<String>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(fmt_time))
    };
    Ok(SessionRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        state: r.get(2)?,
        profile: r.get(3)?,
        login_user: r.get(4)?,
        command: r.get(5)?,
        reason: r.get(6)?,
        created_at: fmt_time(r.get(7)?),
        expires_at: fmt_time(r.get(8)?),
        max_duration_s: r.get::<_, i64>(9)? / 1000,
        started_at: opt_time(10)?,
        ended_at: opt_time(11)?,
        end_reason: r.get(12)?,
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

/// One journal event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub seq: i64,
    pub at: String,
    pub session_id: Option<String>,
    pub kind: String,
    pub detail: Value,
}

fn event_row(r: &Row) -> rusqlite::Result<Event> {
    let detail: String = r.get(4)?;
    Ok(Event {
        seq: r.get(0)?,
        at: fmt_time(r.get(1)?),
        session_id: r.get(2)?,
        kind: r.get(3)?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
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

/// What a successful redemption hands to the daemon.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub id: String,
    pub profile: String,
    pub command: Option<String>,
    pub max_duration: Duration,
    pub target: Option<String>,
    pub connection_limit: Option<u32>,
}

/// How a session ended.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    pub reason: String,
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

/// A new journal in a directory its group may write (the unit's
/// `StateDirectory`, group `tollgate`, mode 2770) is that group's too, mode
/// 0660: its members may run the admin commands. Anywhere else it stays
/// 0600. SQLite gives the `-wal` and `-shm` files the journal's mode and,
/// when root makes them, its owner and group.
fn share_with_group(path: &Path, file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.metadata()?,
        None => Path::new(".").metadata()?,
    };
    if dir.mode() & 0o020 == 0 {
        return Ok(());
    }
    if file.metadata()?.gid() != dir.gid() {
        std::os::unix::fs::fchown(file, None, Some(dir.gid()))?;
    }
    // Explicitly: the unit's UMask=0077 would have taken the group's bits.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o660))
}

/// When the journal or its directory is out of this user's reach: who may
/// use it instead.
fn denied(path: &Path) -> Option<JournalError> {
    use nix::unistd::{access, AccessFlags};
    use std::os::unix::fs::MetadataExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let blocked = access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
        .err()
        .or_else(|| access(path, AccessFlags::R_OK | AccessFlags::W_OK).err());
    if blocked != Some(nix::errno::Errno::EACCES) {
        return None;
    }
    let meta = dir.metadata().ok();
    let group = meta
        .as_ref()
        .filter(|m| m.mode() & 0o070 == 0o070)
        .and_then(|m| nix::unistd::Group::from_gid(m.gid().into()).ok().flatten());
    let hint = match group {
        Some(g) => format!(
            "run this as root or as a member of group \"{}\", which may use it",
            g.name
        ),
        None => format!(
            "only root may use it ({} is not shared with a group; see FILES in tollgate(8))",
            dir.display()
        ),
    };
    Some(JournalError::Denied {
        path: path.display().to_string(),
        hint,
    })
}

/// An open journal.
pub struct Journal {
    pub(crate) conn: Connection,
}

impl Journal {
    /// Opens (creating it if missing: mode 0600, or 0660 in a directory its
    /// group may write) and migrates the journal.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Self::open_as_is(path).map_err(|e| denied(path).unwrap_or(e))
    }

    fn open_as_is(path: &Path) -> Result<Journal, JournalError> {
        let p = path.display().to_string();
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| JournalError::Io {
                    path: p.clone(),
                    source: e,
                })?;
            }
            use std::os::unix::fs::OpenOptionsExt;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match created {
                Ok(file) => share_with_group(path, &file).map_err(|e| JournalError::Io {
                    path: p.clone(),
                    source: e,
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(JournalError::Io {
                        path: p.clone(),
                        source: e,
                    })
                }
            }
        }
        let conn = Connection::open(path).map_err(|e| JournalError::Open {
            path: p.clone(),
            source: e,
        })?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL lets the CLI write while the daemon reads; FULL makes every
        // commit durable (a redeemed token stays redeemed after power loss).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| JournalError::Open { path: p, source: e })?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut j = Journal { conn };
        j.migrate()?;
        Ok(j)
    }

    fn migrate(&mut self) -> Result<(), JournalError> {
        // Read first: a journal that is up to date is not written to (an
        // admin can still read it when the disk is full).
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current == MIGRATIONS.len() as i64 {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(JournalError::TooNew {
                found: version,
                known,
            });
        }
        for sql in &MIGRATIONS[version as usize..] {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(())
    }

    /// Opens a write transaction that several calls then share (group
    /// commit): each call runs in a savepoint of its own inside it.
    pub fn begin_batch(&mut self) -> Result<(), JournalError> {
        self.run_cached("BEGIN IMMEDIATE")
    }

    /// Runs a parameterless statement, prepared once per connection.
    fn run_cached(&self, sql: &str) -> Result<(), JournalError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Marks where one call of a batch begins.
    pub fn begin_call(&mut self) -> Result<(), JournalError> {
        self.run_cached("SAVEPOINT call")
    }

    /// Ends one call of a batch: keeps its writes, or undoes them alone.
    pub fn end_call(&mut self, keep: bool) -> Result<(), JournalError> {
        if !keep {
            self.run_cached("ROLLBACK TO call")?;
        }
        self.run_cached("RELEASE call")
    }

    /// Commits the batch (one fsync for all of it); rolls back on failure.
    pub fn commit_batch(&mut self) -> Result<(), JournalError> {
        if let Err(e) = self.run_cached("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        Ok(())
    }

    /// Changes whenever another connection commits (cheap to poll).
    pub fn data_version(&self) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Appends one event outside any other write.
    pub fn event(
        &self,
        session: Option<&str>,
        kind: &str,
        detail: Value,
    ) -> Result<(), JournalError> {
        append_event(&self.conn, now_ms(), session, kind, &detail)?;
        Ok(())
    }

    /// Creates a pending session for a token (given as its hash).
    pub fn issue(&mut self, s: &NewSession) -> Result<SessionRow, JournalError> {
        let tx = self.conn.transaction()?;
        let row = insert_session(&tx, s)?;
        tx.commit()?;
        Ok(row)
    }

    /// Creates many pending sessions in one transaction (one fsync).
    pub fn issue_many(&mut self, sessions: &[NewSession]) -> Result<(), JournalError> {
        let tx = self.conn.transaction()?;
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
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        let won = tx
            .prepare_cached(
                "UPDATE sessions SET state = 'active', started_at = ?1, client_addr = ?2
                 WHERE token_sha256 = ?3 AND login_user = ?4 AND state = 'pending' AND expires_at > ?1
                 RETURNING id, profile, command, max_duration_ms, target, connection_limit",
            )?
            .query_row(
                params![now, client_addr, token_sha256, login_user],
                |r| {
                    Ok(Redeemed {
                        id: r.get(0)?,
                        profile: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        command: r.get(2)?,
                        max_duration: Duration::from_millis(r.get::<_, i64>(3)?.max(0) as u64),
                        target: r.get(4)?,
                        connection_limit: r.get(5)?,
                    })
                },
            )
            .optional()?;
        match &won {
            Some(r) => append_event(
                &tx,
                now,
                Some(&r.id),
                "session.redeemed",
                &json!({"client_addr": client_addr, "login_user": login_user}),
            )?,
            None => append_event(
                &tx,
                now,
                None,
                "auth.failed",
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
        tx.prepare_cached("UPDATE sessions SET pid = ?2, leader = ?3 WHERE id = ?1")?
            .execute(params![id, pid, leader])?;
        append_event(&tx, now_ms(), Some(id), "session.started", &detail)?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a session terminated with why, status and byte counts, and
    /// records its exit (when a process ran) and its end as events.
    pub fn finish(&mut self, id: &str, end: &Ending) -> Result<(), JournalError> {
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        tx.prepare_cached(
            "UPDATE sessions SET state = 'terminated', ended_at = ?2, end_reason = ?3, exit_status = ?4,
                    exit_signal = ?5, bytes_in = ?6, bytes_out = ?7, forwards = ?8
             WHERE id = ?1 AND state IN ('active', 'canceling')",
        )?
        .execute(params![
                id,
                now,
                end.reason,
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
                "session.exited",
                &json!({"exit_status": end.exit_status, "exit_signal": end.exit_signal}),
            )?;
        }
        append_event(
            &tx,
            now,
            Some(id),
            "session.terminated",
            &json!({"reason": end.reason, "exit_status": end.exit_status, "exit_signal": end.exit_signal,
                    "bytes_in": end.bytes_in, "bytes_out": end.bytes_out}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Cancels a session; idempotent. `Ok(None)` when there is no such id.
    pub fn cancel(&mut self, id: &str) -> Result<Option<CancelOutcome>, JournalError> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let state: Option<String> = tx
            .query_row("SELECT state FROM sessions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
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
                    "session.canceled",
                    &json!({"while": "pending"}),
                )?;
                CancelOutcome::Voided
            }
            Some("active") => {
                tx.execute(
                    "UPDATE sessions SET state = 'canceling' WHERE id = ?1",
                    [id],
                )?;
                append_event(&tx, now, Some(id), "session.cancel_requested", &json!({}))?;
                CancelOutcome::Requested
            }
            Some(_) => CancelOutcome::AlreadyOver,
        };
        tx.commit()?;
        Ok(Some(outcome))
    }

    /// Ids of sessions the CLI asked to cancel.
    pub fn canceling(&self) -> Result<Vec<String>, JournalError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM sessions WHERE state = 'canceling'")?;
        let ids = st
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// Moves pending sessions whose token TTL has passed to `expired`.
    pub fn expire_due(&mut self) -> Result<Vec<String>, JournalError> {
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        let ids = {
            let mut st = tx.prepare(
                "UPDATE sessions SET state = 'expired', ended_at = ?1, end_reason = 'expired'
                 WHERE state = 'pending' AND expires_at <= ?1 RETURNING id",
            )?;
            let ids = st
                .query_map([now], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            ids
        };
        for id in &ids {
            append_event(&tx, now, Some(id), "session.expired", &json!({}))?;
        }
        tx.commit()?;
        Ok(ids)
    }

    /// On daemon start: sessions an earlier run left live can't be resumed.
    /// Returns their ids, recorded pids and leader identities.
    pub fn recover_stale(&mut self) -> Result<Vec<StaleSession>, JournalError> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rows = {
            let mut st = tx.prepare(
                "UPDATE sessions SET state = 'terminated', ended_at = ?1, end_reason = 'daemon_stopped'
                 WHERE state IN ('active', 'canceling') RETURNING id, pid, leader",
            )?;
            let rows = st
                .query_map([now], |r| {
                    Ok(StaleSession {
                        id: r.get(0)?,
                        pid: r.get(1)?,
                        leader: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        for StaleSession { id, .. } in &rows {
            append_event(
                &tx,
                now,
                Some(id),
                "session.terminated",
                &json!({"reason": "daemon_stopped", "found_at_startup": true}),
            )?;
        }
        tx.commit()?;
        Ok(rows)
    }

    /// All sessions, newest first, optionally in one state.
    pub fn list(&self, state: Option<&str>) -> Result<Vec<SessionRow>, JournalError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE (?1 IS NULL OR state = ?1) ORDER BY created_at DESC, id"
        ))?;
        let rows = st
            .query_map([state], session_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One session.
    pub fn get(&self, id: &str) -> Result<Option<SessionRow>, JournalError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                session_row,
            )
            .optional()?)
    }

    /// Records the drains' state (replacing what an earlier run recorded
    /// under the same names). `updated_at` is set here.
    /// The watchdog's proof that the journal takes writes: one row, rewritten.
    pub fn record_health(&self, pid: u32) -> Result<(), JournalError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO daemon_health (id, pid, checked_at) VALUES (1, ?1, ?2)",
            )?
            .execute(params![pid, now_ms()])?;
        Ok(())
    }

    pub fn save_drains(&self, rows: &[DrainRow]) -> Result<(), JournalError> {
        let now = now_ms();
        let mut st = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO drains (name, url, connected, delivered, queued, queued_bytes, dropped,
                 dropped_bytes, failures, last_error, event_seq, daemon_pid, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for r in rows {
            st.execute(params![
                r.name,
                r.url,
                r.connected,
                r.delivered as i64,
                r.queued as i64,
                r.queued_bytes as i64,
                r.dropped as i64,
                r.dropped_bytes as i64,
                r.failures as i64,
                r.last_error,
                r.event_seq,
                r.daemon_pid,
                now
            ])?;
        }
        Ok(())
    }

    /// Every drain recorded, by name.
    pub fn drains(&self) -> Result<Vec<DrainRow>, JournalError> {
        let mut st = self.conn.prepare_cached(
            "SELECT name, url, connected, delivered, queued, queued_bytes, dropped, dropped_bytes,
                    failures, last_error, event_seq, daemon_pid, updated_at FROM drains ORDER BY name",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(DrainRow {
                    name: r.get(0)?,
                    url: r.get(1)?,
                    connected: r.get(2)?,
                    delivered: r.get::<_, i64>(3)? as u64,
                    queued: r.get::<_, i64>(4)? as u64,
                    queued_bytes: r.get::<_, i64>(5)? as u64,
                    dropped: r.get::<_, i64>(6)? as u64,
                    dropped_bytes: r.get::<_, i64>(7)? as u64,
                    failures: r.get::<_, i64>(8)? as u64,
                    last_error: r.get(9)?,
                    event_seq: r.get(10)?,
                    daemon_pid: r.get(11)?,
                    updated_at: fmt_time(r.get(12)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The sequence number of the newest event (0 when there is none).
    pub fn last_event_seq(&self) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Events after `after_seq`, oldest first, optionally for one session.
    pub fn events(
        &self,
        session: Option<&str>,
        after_seq: i64,
        limit: Option<i64>,
    ) -> Result<Vec<Event>, JournalError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, at, session_id, kind, detail FROM events
             WHERE seq > ?1 AND (?2 IS NULL OR session_id = ?2) ORDER BY seq LIMIT ?3",
        )?;
        let rows = st
            .query_map(params![after_seq, session, limit.unwrap_or(-1)], event_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn insert_session(tx: &Connection, s: &NewSession) -> Result<SessionRow, JournalError> {
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
        "session.issued",
        &json!({"profile": (!s.profile.is_empty()).then_some(s.profile), "target": s.target,
                "connection_limit": s.connection_limit, "login_user": s.login_user, "command": s.command,
                "reason": s.reason, "ttl_s": s.ttl.as_secs(), "max_duration_s": s.max_duration.as_secs()}),
    )?;
    let row = tx.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
        [s.id],
        session_row,
    )?;
    Ok(row)
}

pub(crate) fn append_event(
    conn: &Connection,
    at: i64,
    session: Option<&str>,
    kind: &str,
    detail: &Value,
) -> rusqlite::Result<()> {
    let mut text = detail.to_string();
    // No event is ever much bigger than its caps allow, whoever wrote it.
    if text.len() > crate::text::VALUE_MAX {
        let mut capped = detail.clone();
        crate::text::clip_json(&mut capped);
        text = capped.to_string();
    }
    conn.prepare_cached(
        "INSERT INTO events (at, session_id, kind, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![at, session, kind, text])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_journal() -> (tempdir::Dir, Journal) {
        let d = tempdir::Dir::new();
        let j = Journal::open(&d.path.join("j.db")).unwrap();
        (d, j)
    }

    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Dir {
                let path = std::env::temp_dir().join(crate::token::random_id("tg-unit-").unwrap());
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    fn issue(j: &mut Journal, id: &str, hash: &str, ttl: Duration) {
        j.issue(&NewSession {
            id,
            token_sha256: hash,
            profile: "p",
            login_user: "u",
            command: None,
            reason: None,
            ttl,
            max_duration: Duration::from_secs(60),
            target: None,
            connection_limit: None,
        })
        .unwrap();
    }

    #[test]
    fn redeem_once_then_never_again() {
        let (_d, mut j) = temp_journal();
        issue(&mut j, "s1", "h1", Duration::from_secs(60));
        assert!(j.redeem("h1", "wrong-user", "a").unwrap().is_none());
        assert!(j.redeem("h1", "u", "a").unwrap().is_some());
        assert!(j.redeem("h1", "u", "a").unwrap().is_none());
        assert_eq!(j.get("s1").unwrap().unwrap().state, "active");
    }

    #[test]
    fn expired_and_canceled_tokens_do_not_redeem() {
        let (_d, mut j) = temp_journal();
        issue(&mut j, "s1", "h1", Duration::ZERO);
        assert!(j.redeem("h1", "u", "a").unwrap().is_none());
        assert_eq!(j.expire_due().unwrap(), vec!["s1".to_string()]);
        issue(&mut j, "s2", "h2", Duration::from_secs(60));
        assert_eq!(j.cancel("s2").unwrap(), Some(CancelOutcome::Voided));
        assert_eq!(j.cancel("s2").unwrap(), Some(CancelOutcome::AlreadyOver));
        assert!(j.redeem("h2", "u", "a").unwrap().is_none());
        assert_eq!(j.cancel("nope").unwrap(), None);
    }

    #[test]
    fn events_cannot_be_rewritten() {
        let (_d, mut j) = temp_journal();
        issue(&mut j, "s1", "h1", Duration::from_secs(60));
        assert!(j.conn.execute("DELETE FROM events", []).is_err());
        assert!(j.conn.execute("UPDATE events SET kind = 'x'", []).is_err());
        assert_eq!(j.events(Some("s1"), 0, None).unwrap().len(), 1);
    }

    #[test]
    fn stale_sessions_are_closed_on_recovery() {
        let (_d, mut j) = temp_journal();
        issue(&mut j, "s1", "h1", Duration::from_secs(60));
        j.redeem("h1", "u", "a").unwrap().unwrap();
        let stale = j.recover_stale().unwrap();
        assert_eq!(stale.len(), 1);
        let row = j.get("s1").unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.end_reason.as_deref()),
            ("terminated", Some("daemon_stopped"))
        );
    }
}

//! The journal's schema: migrations numbered by `PRAGMA user_version`, applied
//! in one transaction when the journal is opened.
use super::sql::params;
use super::{Journal, JournalError};

/// Schema migrations; `PRAGMA user_version` is the index of the last applied.
pub(super) const MIGRATIONS: &[&str] = &[
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
    r#"
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    listen       TEXT NOT NULL,
    version      TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at   INTEGER,
    lost_at      INTEGER
);
ALTER TABLE sessions ADD COLUMN node TEXT;
CREATE INDEX sessions_node ON sessions(node, state);
"#,
    r#"
ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN claimed_until INTEGER;
"#,
    r#"
CREATE TABLE drain_leases (
    name      TEXT PRIMARY KEY,
    node      TEXT NOT NULL,
    until     INTEGER NOT NULL,
    event_seq INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE node_drains (
    node                TEXT NOT NULL,
    name                TEXT NOT NULL,
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
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (node, name)
);
INSERT INTO node_drains (node, name, url, connected, delivered, queued, queued_bytes, dropped, dropped_bytes, failures, last_error, event_seq, daemon_pid, updated_at)
    SELECT '', name, url, connected, delivered, queued, queued_bytes, dropped, dropped_bytes, failures, last_error, event_seq, daemon_pid, updated_at FROM drains;
"#,
    r#"
-- Expiry looks only at pending tokens, due first: without this, every
-- sweep read every pending row (thousands issued ahead are common).
CREATE INDEX sessions_pending_expiry ON sessions(expires_at) WHERE state = 'pending';
"#,
    r#"
-- HTTP API tokens: only the SHA-256 of each; scopes a JSON array.
CREATE TABLE api_tokens (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    secret_sha256   TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER
);
"#,
    r#"
-- The daemon process that serves each live session (`PID:BOOT:TICKS`):
-- start-up recovery ends only sessions whose owner is gone, so a process
-- draining after a hand-over keeps its own.
ALTER TABLE sessions ADD COLUMN owner TEXT;
"#,
    r#"
-- Two declarations that cost every session work and mean nothing more than
-- what replaces them, changed in place (no row is rewritten):
-- * sessions.state's CHECK: `state IN (five values)` built a temporary
--   b-tree of the five on every UPDATE of the state (redeem, finish); the
--   same five as comparisons build nothing.
-- * events.seq's AUTOINCREMENT: it updated sqlite_sequence on every event.
--   Events are never deleted (the triggers refuse it), so the next seq is
--   the largest plus one either way: the same numbers, never reused.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql,
       'CHECK (state IN (''pending'',''active'',''canceling'',''terminated'',''expired''))',
       'CHECK (state = ''pending'' OR state = ''active'' OR state = ''canceling'' OR state = ''terminated'' OR state = ''expired'')')
 WHERE type = 'table' AND name = 'sessions';
UPDATE sqlite_schema
   SET sql = replace(sql, 'seq        INTEGER PRIMARY KEY AUTOINCREMENT,', 'seq        INTEGER PRIMARY KEY,')
 WHERE type = 'table' AND name = 'events';
PRAGMA writable_schema = RESET;
-- The state and node indexes hold live sessions only (active, canceling):
-- every query through them asks for those, and a session's issue, redeem
-- and end each changed both indexes twice (out of one state's entries,
-- into the next's) where now each changes them once at most.
DROP INDEX sessions_state;
CREATE INDEX sessions_state ON sessions(state) WHERE state = 'active' OR state = 'canceling';
DROP INDEX sessions_node;
CREATE INDEX sessions_node ON sessions(node, state) WHERE state = 'active' OR state = 'canceling';
"#,
];

/// The same migrations for PostgreSQL, step for step: what SQLite stores
/// as INTEGER is BIGINT here, flags are BOOLEAN, and tables the journal
/// orders by insertion carry a `rowid` identity column (SQLite has one
/// built in). Applied under an advisory lock, so daemons starting at once
/// take turns; `schema_version` holds the number applied.
pub(super) const PG_MIGRATIONS: &[&str] = &[
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
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    max_duration_ms BIGINT NOT NULL,
    started_at      BIGINT,
    ended_at        BIGINT,
    end_reason      TEXT,
    exit_status     BIGINT,
    exit_signal     TEXT,
    client_addr     TEXT,
    pid             BIGINT,
    bytes_in        BIGINT NOT NULL DEFAULT 0,
    bytes_out       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    session_id TEXT,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_session ON events(session_id, seq);
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'events are append-only'; END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
"#,
    r#"
CREATE TABLE drains (
    name                TEXT PRIMARY KEY,
    url                 TEXT NOT NULL,
    connected           BOOLEAN NOT NULL,
    delivered           BIGINT NOT NULL,
    queued              BIGINT NOT NULL,
    queued_bytes        BIGINT NOT NULL,
    dropped             BIGINT NOT NULL,
    dropped_bytes       BIGINT NOT NULL,
    failures            BIGINT NOT NULL,
    last_error          TEXT,
    event_seq           BIGINT NOT NULL,
    daemon_pid          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE collect_sessions (
    rowid                 BIGINT GENERATED ALWAYS AS IDENTITY,
    id                    TEXT PRIMARY KEY,
    connection_identifier TEXT NOT NULL UNIQUE,
    status                TEXT NOT NULL CHECK (status IN ('pending','completed')),
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    expired_at            BIGINT,
    deleted_at            BIGINT,
    external_id           TEXT,
    multi_connection      BOOLEAN NOT NULL,
    multi_key             BOOLEAN NOT NULL,
    must_confirm          BOOLEAN NOT NULL,
    ssh_banner            TEXT,
    ssh_message           TEXT
);
CREATE TABLE collect_connections (
    rowid          BIGINT GENERATED ALWAYS AS IDENTITY,
    id             TEXT PRIMARY KEY,
    collect_id     TEXT NOT NULL REFERENCES collect_sessions(id),
    client_version TEXT,
    ip_address     TEXT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX collect_connections_by_session ON collect_connections(collect_id, created_at);
CREATE TABLE collect_keys (
    rowid                BIGINT GENERATED ALWAYS AS IDENTITY,
    id                   TEXT PRIMARY KEY,
    collect_id           TEXT NOT NULL REFERENCES collect_sessions(id),
    connection_id        TEXT NOT NULL REFERENCES collect_connections(id),
    created_at           BIGINT NOT NULL,
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
    rowid              BIGINT GENERATED ALWAYS AS IDENTITY,
    id                 TEXT PRIMARY KEY,
    collect_id         TEXT NOT NULL REFERENCES collect_sessions(id),
    url                TEXT NOT NULL,
    method             TEXT NOT NULL CHECK (method IN ('post','put','patch')),
    headers            TEXT NOT NULL,
    events             TEXT NOT NULL,
    retries            BIGINT NOT NULL,
    initial_backoff    BIGINT NOT NULL,
    backoff_multiplier DOUBLE PRECISION NOT NULL,
    secret             TEXT,
    created_at         BIGINT NOT NULL,
    removed_at         BIGINT
);
CREATE INDEX collect_webhooks_by_session ON collect_webhooks(collect_id);
CREATE TABLE webhook_deliveries (
    rowid           BIGINT GENERATED ALWAYS AS IDENTITY,
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES collect_webhooks(id),
    collect_id      TEXT NOT NULL REFERENCES collect_sessions(id),
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending','delivered','failed','canceled')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_session ON webhook_deliveries(collect_id, created_at);
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id),
    n           BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    PRIMARY KEY (delivery_id, n)
);
"#,
    r#"
ALTER TABLE sessions ADD COLUMN target TEXT;
ALTER TABLE sessions ADD COLUMN connection_limit BIGINT;
ALTER TABLE sessions ADD COLUMN forwards BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE daemon_health (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    pid BIGINT NOT NULL,
    checked_at BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE sessions ADD COLUMN leader TEXT;
"#,
    r#"
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    listen       TEXT NOT NULL,
    version      TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT,
    lost_at      BIGINT
);
ALTER TABLE sessions ADD COLUMN node TEXT;
CREATE INDEX sessions_node ON sessions(node, state);
"#,
    r#"
ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN claimed_until BIGINT;
"#,
    r#"
CREATE TABLE drain_leases (
    name      TEXT PRIMARY KEY,
    node      TEXT NOT NULL,
    until     BIGINT NOT NULL,
    event_seq BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE node_drains (
    node                TEXT NOT NULL,
    name                TEXT NOT NULL,
    url                 TEXT NOT NULL,
    connected           BOOLEAN NOT NULL,
    delivered           BIGINT NOT NULL,
    queued              BIGINT NOT NULL,
    queued_bytes        BIGINT NOT NULL,
    dropped             BIGINT NOT NULL,
    dropped_bytes       BIGINT NOT NULL,
    failures            BIGINT NOT NULL,
    last_error          TEXT,
    event_seq           BIGINT NOT NULL,
    daemon_pid          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (node, name)
);
INSERT INTO node_drains (node, name, url, connected, delivered, queued, queued_bytes, dropped, dropped_bytes, failures, last_error, event_seq, daemon_pid, updated_at)
    SELECT '', name, url, connected, delivered, queued, queued_bytes, dropped, dropped_bytes, failures, last_error, event_seq, daemon_pid, updated_at FROM drains;
"#,
    r#"
-- Expiry looks only at pending tokens, due first: without this, every
-- sweep read every pending row (thousands issued ahead are common).
CREATE INDEX sessions_pending_expiry ON sessions(expires_at) WHERE state = 'pending';
"#,
    r#"
-- HTTP API tokens: only the SHA-256 of each; scopes a JSON array.
CREATE TABLE api_tokens (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    secret_sha256   TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT
);
"#,
    r#"
-- The daemon process that serves each live session (`PID:BOOT:TICKS`):
-- start-up recovery ends only sessions whose owner is gone, so a process
-- draining after a hand-over keeps its own.
ALTER TABLE sessions ADD COLUMN owner TEXT;
"#,
    r#"
-- SQLite's step. PostgreSQL checks `IN` lists without a temporary table
-- and numbers events by an identity column already; the state and node
-- indexes hold live sessions only, as there.
DROP INDEX sessions_state;
CREATE INDEX sessions_state ON sessions(state) WHERE state = 'active' OR state = 'canceling';
DROP INDEX sessions_node;
CREATE INDEX sessions_node ON sessions(node, state) WHERE state = 'active' OR state = 'canceling';
"#,
];

/// The advisory lock key under which PostgreSQL migrations run.
const PG_MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465; // "tollgate"

impl Journal {
    pub(super) fn migrate(&mut self) -> Result<(), JournalError> {
        if self.conn.is_postgres() {
            return self.migrate_postgres();
        }
        let db = self.conn.sqlite_db().expect("SQLite");
        // Read first: a journal that is up to date is not written to (an
        // admin can still read it when the disk is full).
        let current: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current == MIGRATIONS.len() as i64 {
            return Ok(());
        }
        let tx = self.conn.immediate()?;
        let db = tx.sqlite_db().expect("SQLite");
        let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(JournalError::TooNew {
                found: version,
                known,
            });
        }
        for sql in &MIGRATIONS[version as usize..] {
            tx.batch(sql)?;
        }
        // A step that rewrote a declaration in place changed no schema
        // cookie by itself: other connections reload their schema on this.
        let cookie: i64 = db.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        db.pragma_update(None, "schema_version", cookie + 1)?;
        db.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(())
    }

    /// PostgreSQL: the same steps, in one transaction under an advisory
    /// lock (a second daemon starting at once waits, then finds them done).
    fn migrate_postgres(&mut self) -> Result<(), JournalError> {
        assert_eq!(
            PG_MIGRATIONS.len(),
            MIGRATIONS.len(),
            "one list per backend"
        );
        let known = PG_MIGRATIONS.len() as i64;
        let tx = self.conn.immediate()?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(?1)",
            params![PG_MIGRATION_LOCK],
        )?;
        tx.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
        let version: i64 = tx
            .query_opt("SELECT version FROM schema_version", params![], |r| {
                r.get(0)
            })?
            .unwrap_or(0);
        if version > known {
            return Err(JournalError::TooNew {
                found: version,
                known,
            });
        }
        if version == known {
            return tx.commit();
        }
        for sql in &PG_MIGRATIONS[version as usize..] {
            tx.batch(sql)?;
        }
        tx.execute("DELETE FROM schema_version", params![])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![known],
        )?;
        tx.commit()
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;

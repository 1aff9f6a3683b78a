//! The journal: one SQLite file holding sessions and an append-only event
//! log. It is also the interface between the admin CLI and the daemon: the
//! CLI writes here, the daemon notices through `PRAGMA data_version`.
//!
//! Every operation is written once against [`sql::Conn`], the one seam to
//! the database (statements with `?N` placeholders, the journal's own
//! parameter and row types, savepoints); only `open`, the migrations and
//! `data_version` reach past it to SQLite.
//!
//! Tokens never reach this module in plaintext; only their SHA-256.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use serde_json::Value;
use sql::{params, Conn};

mod api_tokens;
pub mod collect;
mod collect_steps;
mod copy;
mod drains;
mod events;
mod kinds;
mod nodes;
pub mod pg;
mod schema;
mod sessions;
mod sql;
pub mod webhooks;
mod writer;

pub use api_tokens::{ApiCaller, ApiTokenRow};
pub use collect_steps::OpenConnection;
pub use drains::{drain_status, DrainRow, DrainStatus};
pub use events::Event;
pub use kinds::{EndReason, EventKind, SessionKind, SessionState};
pub use nodes::{NewNode, NodeRow};
pub use pg::PgTarget;
pub use sessions::{CancelOutcome, Ending, Grant, NewSession, Redeemed, SessionRow, StaleSession};
pub use writer::Db;

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
    /// `journal copy` into a journal that already holds records.
    #[error("the target journal is not empty ({0}); copy only into a new database")]
    NotEmpty(String),
    /// A PostgreSQL journal (named without its password) and what failed.
    #[error("journal {name}: {reason}")]
    Postgres { name: String, reason: String },
    /// A column that does not hold what the journal wrote there.
    #[error("journal: {0}")]
    Column(String),
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

/// Where to open the journal, with what reaching it takes (a PostgreSQL
/// password read, its TLS settings loaded): built by `checked` from
/// `server.journal`.
#[derive(Clone, Debug)]
pub enum JournalTarget {
    Sqlite(std::path::PathBuf),
    Postgres(PgTarget),
}

/// An open journal.
pub struct Journal {
    conn: Conn,
    /// The node this handle writes for, once registered: its redemptions
    /// name it, and its start-up recovery touches only its own sessions.
    node: Option<String>,
    /// The daemon process this handle writes for (`PID:BOOT:TICKS`), once
    /// registered: each session it redeems names it.
    owner: Option<String>,
    /// The version of the binary that process runs.
    version: Option<String>,
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
        // 16 MiB of pages (SQLite's default is 2 MiB): a busy journal's
        // indexes outgrow the default, and each batch the daemon commits
        // read a dozen pages back from the file.
        conn.pragma_update(None, "cache_size", -16384)?;
        let mut j = Journal {
            conn: Conn::sqlite(conn),
            node: None,
            owner: None,
            version: None,
        };
        j.migrate()?;
        Ok(j)
    }

    /// Opens the journal `t` names.
    pub fn open_target(t: &JournalTarget) -> Result<Journal, JournalError> {
        match t {
            JournalTarget::Sqlite(p) => Self::open(p),
            JournalTarget::Postgres(pg) => Self::open_postgres(pg),
        }
    }

    /// Connects to a PostgreSQL journal and migrates it.
    pub fn open_postgres(t: &PgTarget) -> Result<Journal, JournalError> {
        let mut j = Journal {
            conn: Conn::postgres(pg::Pg::connect(t)?),
            node: None,
            owner: None,
            version: None,
        };
        j.migrate()?;
        Ok(j)
    }

    /// Opens a write transaction that several calls then share (group
    /// commit): each call runs in a savepoint of its own inside it.
    pub(super) fn begin_batch(&mut self) -> Result<(), JournalError> {
        self.conn.begin()
    }

    /// Marks where one call of a batch begins.
    pub(super) fn begin_call(&mut self) -> Result<(), JournalError> {
        self.conn.begin_call()
    }

    /// Ends one call of a batch: keeps its writes, or undoes them alone.
    pub(super) fn end_call(&mut self, keep: bool) -> Result<(), JournalError> {
        self.conn.end_call(keep)
    }

    /// Calls of the batch (numbered from 0 in the order they began) whose
    /// writes failed after they returned, each undone alone; taken once,
    /// after the commit.
    pub(super) fn late_failures(&mut self) -> Vec<(usize, JournalError)> {
        self.conn.late_failures()
    }

    /// Commits the batch (one fsync for all of it); rolls back on failure.
    pub(super) fn commit_batch(&mut self) -> Result<(), JournalError> {
        if let Err(e) = self.conn.end(true) {
            let _ = self.conn.end(false);
            return Err(e);
        }
        Ok(())
    }

    /// Listens for what other processes announce (a cancel) on a
    /// PostgreSQL journal: see [`Journal::wait_notified`].
    pub fn listen(&mut self) -> Result<(), JournalError> {
        self.conn.listen()
    }

    /// Waits up to `timeout` for an announcement after [`Journal::listen`]
    /// (`true`); an error when the connection is lost. SQLite: sleeps.
    pub fn wait_notified(&mut self, timeout: Duration) -> Result<bool, JournalError> {
        self.conn.wait_notified(timeout)
    }

    /// Changes whenever another connection commits (cheap to poll). On
    /// PostgreSQL: the newest event, which every change the daemon must
    /// notice (a cancel, a collect session) appends.
    pub fn data_version(&self) -> Result<i64, JournalError> {
        match self.conn.sqlite_db() {
            Some(db) => Ok(db.query_row("PRAGMA data_version", [], |r| r.get(0))?),
            None => self.last_event_seq(),
        }
    }

    /// Appends one event that happened at `at` (ms since the epoch).
    pub fn event_at(
        &self,
        at: i64,
        session: Option<&str>,
        kind: EventKind,
        detail: Value,
    ) -> Result<(), JournalError> {
        append_event(&self.conn, at, session, kind, &detail)
    }

    /// Appends one event outside any other write.
    pub fn event(
        &self,
        session: Option<&str>,
        kind: EventKind,
        detail: Value,
    ) -> Result<(), JournalError> {
        append_event(&self.conn, now_ms(), session, kind, &detail)?;
        Ok(())
    }
}

pub(crate) fn append_event(
    conn: &Conn,
    at: i64,
    session: Option<&str>,
    kind: EventKind,
    detail: &Value,
) -> Result<(), JournalError> {
    // Straight into a buffer (`to_string` goes through `fmt`, and costs
    // the journal thread a tenth of a session's work).
    let json = |v: &Value| serde_json::to_string(v).unwrap_or_else(|_| v.to_string());
    let mut text = json(detail);
    // No event is ever much bigger than its caps allow, whoever wrote it.
    if text.len() > crate::text::VALUE_MAX {
        let mut capped = detail.clone();
        crate::text::clip_json(&mut capped);
        text = json(&capped);
    }
    conn.write(
        "INSERT INTO events (at, session_id, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![at, session, kind.as_str(), text],
    )
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
        assert_eq!(j.get("s1").unwrap().unwrap().state.as_str(), "active");
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
        assert!(j.conn.execute("DELETE FROM events", params![]).is_err());
        assert!(j
            .conn
            .execute("UPDATE events SET kind = 'x'", params![])
            .is_err());
        assert_eq!(j.events(Some("s1"), 0, None).unwrap().len(), 1);
    }

    #[test]
    fn stale_sessions_are_closed_on_recovery_unless_their_owner_lives() {
        let (d, mut j) = temp_journal();
        let node = |owner| NewNode {
            id: "n",
            hostname: "h",
            listen: &[],
            version: "0",
            pid: 1,
            owner,
        };
        j.node_register(&node("1:boot:10")).unwrap();
        issue(&mut j, "s1", "h1", Duration::from_secs(60));
        issue(&mut j, "s2", "h2", Duration::from_secs(60));
        j.redeem("h1", "u", "a").unwrap().unwrap();
        // The process that redeemed it sees nothing stale.
        assert!(j.recover_stale(&|_| false).unwrap().is_empty());
        // A successor on the same node: the first process still lives.
        let mut next = Journal::open(&d.path.join("j.db")).unwrap();
        next.node_register(&node("2:boot:20")).unwrap();
        next.redeem("h2", "u", "a").unwrap().unwrap();
        assert!(next
            .recover_stale(&|o| o == "1:boot:10")
            .unwrap()
            .is_empty());
        assert_eq!(j.get("s1").unwrap().unwrap().state.as_str(), "active");
        // Now it is gone: only its session ends, not the successor's own.
        let stale = next.recover_stale(&|_| false).unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].id, "s1");
        let row = j.get("s1").unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.end_reason.map(EndReason::as_str)),
            ("terminated", Some("daemon_stopped"))
        );
        assert_eq!(j.get("s2").unwrap().unwrap().state.as_str(), "active");
        let owners = next.live_owners().unwrap();
        assert_eq!(
            owners,
            vec![("s2".to_string(), Some("2:boot:20".to_string()))]
        );
    }
}

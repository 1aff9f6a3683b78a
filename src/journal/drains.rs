//! What the daemon records about itself for the admin commands: each
//! drain's state (`tollgate drain status`) and the watchdog's health row.
use super::sql::params;
use serde::Serialize;

use super::{fmt_time, now_ms, Journal, JournalError};

/// One drain as the daemon last recorded it (`tollgate drain status`).
/// Counters are since the daemon started; `event_seq` is the newest
/// journal event the drain delivered, where delivery resumes after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
    /// The node that recorded it, on a shared journal (each node records
    /// its own drains; with SQLite there is one, and no such field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Journal {
    /// The watchdog's proof that the journal takes writes: one row, rewritten.
    pub fn record_health(&self, pid: u32) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO daemon_health (id, pid, checked_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, checked_at = excluded.checked_at",
            params![pid, now_ms()],
        )?;
        Ok(())
    }

    /// Records the drains' state (replacing what an earlier run recorded
    /// under the same names). `updated_at` is set here.
    pub fn save_drains(&self, rows: &[DrainRow]) -> Result<(), JournalError> {
        let now = now_ms();
        for r in rows {
            self.conn.execute(
                "INSERT INTO node_drains (name, url, connected, delivered, queued, queued_bytes, dropped,
                     dropped_bytes, failures, last_error, event_seq, daemon_pid, updated_at, node)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (node, name) DO UPDATE SET url = excluded.url, connected = excluded.connected,
                     delivered = excluded.delivered, queued = excluded.queued,
                     queued_bytes = excluded.queued_bytes, dropped = excluded.dropped,
                     dropped_bytes = excluded.dropped_bytes, failures = excluded.failures,
                     last_error = excluded.last_error, event_seq = excluded.event_seq,
                     daemon_pid = excluded.daemon_pid, updated_at = excluded.updated_at",
                params![
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
                    now,
                    self.node.as_deref().unwrap_or("")
                ],
            )?;
        }
        Ok(())
    }

    /// Every drain recorded, by name: on a shared journal one row per node
    /// (naming it), else the newest record of each name.
    pub fn drains(&self) -> Result<Vec<DrainRow>, JournalError> {
        let shared = self.conn.is_postgres();
        let mut rows = self.conn.query(
            "SELECT name, url, connected, delivered, queued, queued_bytes, dropped, dropped_bytes,
                    failures, last_error, event_seq, daemon_pid, updated_at, node
             FROM node_drains ORDER BY name, updated_at DESC, node",
            params![],
            |r| {
                Ok(DrainRow {
                    name: r.get(0)?,
                    url: r.get(1)?,
                    connected: r.get(2)?,
                    delivered: r.get::<i64>(3)? as u64,
                    queued: r.get::<i64>(4)? as u64,
                    queued_bytes: r.get::<i64>(5)? as u64,
                    dropped: r.get::<i64>(6)? as u64,
                    dropped_bytes: r.get::<i64>(7)? as u64,
                    failures: r.get::<i64>(8)? as u64,
                    last_error: r.get(9)?,
                    event_seq: r.get(10)?,
                    daemon_pid: r.get(11)?,
                    updated_at: fmt_time(r.get(12)?),
                    node: shared.then(|| r.get(13)).transpose()?,
                })
            },
        )?;
        if !shared {
            rows.dedup_by(|later, newer| later.name == newer.name);
        }
        Ok(rows)
    }

    /// A shared journal: takes or keeps, for `lease_ms`, the right to send
    /// the journal's events to drain `name` (one node at a time, so they
    /// reach it once, not once per node), and records that this node's
    /// copy of the drain delivered events up to `delivered`. Returns the
    /// event after which sending resumes when this node holds it (what the
    /// last holder recorded as delivered, or `start` for a new drain), or
    /// `None` while another node does.
    pub fn drain_lease(
        &mut self,
        name: &str,
        lease_ms: i64,
        delivered: i64,
        start: i64,
    ) -> Result<Option<i64>, JournalError> {
        let me = self.node.clone().unwrap_or_default();
        let now = self.conn.now_ms()?;
        self.conn.query_opt(
            "INSERT INTO drain_leases (name, node, until, event_seq) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET node = excluded.node, until = excluded.until,
                 event_seq = CASE WHEN drain_leases.node = excluded.node AND drain_leases.event_seq < ?5
                                  THEN ?5 ELSE drain_leases.event_seq END
             WHERE drain_leases.node = excluded.node OR drain_leases.until < ?6
             RETURNING event_seq",
            params![name, me, now + lease_ms, start, delivered, now],
            |r| r.get(0),
        )
    }
}

/// A record older than this means the daemon is not updating it.
const FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// A drain as `drain status` and the API show it: configured or not, and
/// what the daemon last recorded of it (once per node on a shared journal).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DrainStatus {
    pub name: String,
    pub url: String,
    /// In the current config file.
    pub configured: bool,
    /// Recorded by a running daemon within the last few seconds.
    pub current: bool,
    #[serde(flatten)]
    pub recorded: Option<DrainRow>,
}

/// Each configured drain (name, url) with its records, then the records of
/// drains an earlier config had.
pub fn drain_status(configured: &[(String, String)], mut rows: Vec<DrainRow>) -> Vec<DrainStatus> {
    let fresh = |r: &DrainRow| {
        humantime::parse_rfc3339(&r.updated_at)
            .ok()
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age <= FRESH)
    };
    let mut out = Vec::new();
    for (name, url) in configured {
        let (mine, rest): (Vec<DrainRow>, Vec<DrainRow>) =
            rows.into_iter().partition(|r| &r.name == name);
        rows = rest;
        if mine.is_empty() {
            out.push(DrainStatus {
                name: name.clone(),
                url: url.clone(),
                configured: true,
                current: false,
                recorded: None,
            });
        }
        for r in mine {
            out.push(DrainStatus {
                name: name.clone(),
                url: url.clone(),
                configured: true,
                current: fresh(&r),
                recorded: Some(r),
            });
        }
    }
    for r in rows {
        out.push(DrainStatus {
            name: r.name.clone(),
            url: r.url.clone(),
            configured: false,
            current: fresh(&r),
            recorded: Some(r),
        });
    }
    out
}

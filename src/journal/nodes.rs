//! The daemons that share a journal: each registers itself (a node), beats
//! its heart, and says when it stops. A node whose heartbeat is older than
//! the timeout is declared lost by whichever other node sees it first: its
//! live sessions end `terminated (node_lost)`, recorded once. The node
//! itself, restarted, kills what is left of those sessions' processes.
use serde::Serialize;
use serde_json::json;

use super::sql::params;
use super::{append_event, fmt_time, EventKind, Journal, JournalError, StaleSession};

/// A node as it registers.
pub struct NewNode<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    /// Its listen addresses, as configured.
    pub listen: &'a [String],
    pub version: &'a str,
    pub pid: u32,
    /// This process as a session's owner (`PID:BOOT:TICKS`).
    pub owner: &'a str,
}

/// One node (`tollgate node list`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct NodeRow {
    pub id: String,
    pub hostname: String,
    pub listen: Vec<String>,
    pub version: String,
    pub pid: i64,
    pub started_at: String,
    pub heartbeat_at: String,
    /// `running`, `stopped` (said so), or `lost` (declared by another).
    pub state: String,
    pub stopped_at: Option<String>,
    pub live_sessions: i64,
}

impl Journal {
    /// Registers (or registers again, after a restart) the node this
    /// journal handle writes for; its redemptions then name it.
    pub fn node_register(&mut self, n: &NewNode) -> Result<(), JournalError> {
        let now = self.conn.now_ms()?;
        self.conn.execute(
            "INSERT INTO nodes (id, hostname, listen, version, pid, started_at, heartbeat_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, listen = excluded.listen,
                 version = excluded.version, pid = excluded.pid, started_at = excluded.started_at,
                 heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, lost_at = NULL",
            params![
                n.id,
                n.hostname,
                json!(n.listen).to_string(),
                n.version,
                n.pid,
                now
            ],
        )?;
        self.node = Some(n.id.to_string());
        self.owner = Some(n.owner.to_string());
        self.version = Some(n.version.to_string());
        Ok(())
    }

    /// This node is alive (by the database's clock).
    pub fn node_heartbeat(&self) -> Result<(), JournalError> {
        let Some(id) = &self.node else { return Ok(()) };
        let now = self.conn.now_ms()?;
        self.conn.execute(
            "UPDATE nodes SET heartbeat_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// This node stops (cleanly): nobody need declare it lost.
    pub fn node_stopped(&self) -> Result<(), JournalError> {
        let Some(id) = &self.node else { return Ok(()) };
        let now = self.conn.now_ms()?;
        self.conn.execute(
            "UPDATE nodes SET stopped_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// Declares lost every other node whose heartbeat is older than
    /// `timeout_ms` and that did not say it stopped, and ends its live
    /// sessions `terminated (node_lost)`. A node is declared lost once,
    /// whichever node sees it first. Returns the sessions ended.
    pub fn nodes_lost(&mut self, timeout_ms: i64) -> Result<Vec<String>, JournalError> {
        let me = self.node.clone().unwrap_or_default();
        let now = self.conn.now_ms()?;
        let tx = self.conn.savepoint()?;
        let lost: Vec<String> = tx.query(
            "UPDATE nodes SET lost_at = ?1
             WHERE id <> ?2 AND stopped_at IS NULL AND lost_at IS NULL AND heartbeat_at < ?3
             RETURNING id",
            params![now, me, now - timeout_ms],
            |r| r.get(0),
        )?;
        let mut ended = Vec::new();
        for node in &lost {
            let ids: Vec<String> = tx.query(
                "UPDATE sessions SET state = 'terminated', ended_at = ?2, end_reason = 'node_lost'
                 WHERE node = ?1 AND (state = 'active' OR state = 'canceling') RETURNING id",
                params![node, now],
                |r| r.get(0),
            )?;
            append_event(
                &tx,
                now,
                None,
                EventKind::NodeLost,
                &json!({"node": node, "declared_by": me, "sessions": ids}),
            )?;
            for id in &ids {
                append_event(
                    &tx,
                    now,
                    Some(id),
                    EventKind::SessionTerminated,
                    &json!({"reason": "node_lost", "node": node}),
                )?;
            }
            ended.extend(ids);
        }
        tx.commit()?;
        Ok(ended)
    }

    /// At start: this node's sessions that another declared lost while it
    /// was down, whose processes may still run; each is returned once (its
    /// leader identity is then cleared).
    pub fn node_leftovers(&mut self) -> Result<Vec<StaleSession>, JournalError> {
        let Some(me) = self.node.clone() else {
            return Ok(Vec::new());
        };
        // Read, then write: the write lock first, or another process's
        // commit in between makes SQLite refuse the upgrade at once
        // ("database is locked"; a process draining after a hand-over
        // writes while this one starts).
        let tx = self.conn.immediate()?;
        let rows = tx.query(
            "SELECT id, pid, leader FROM sessions
             WHERE node = ?1 AND end_reason = 'node_lost' AND leader IS NOT NULL",
            params![me],
            super::sessions::stale_row,
        )?;
        tx.execute(
            "UPDATE sessions SET leader = NULL
             WHERE node = ?1 AND end_reason = 'node_lost' AND leader IS NOT NULL",
            params![me],
        )?;
        tx.commit()?;
        Ok(rows)
    }

    /// Every node, newest first, with its live sessions.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, JournalError> {
        self.conn.query(
            "SELECT n.id, n.hostname, n.listen, n.version, n.pid, n.started_at, n.heartbeat_at,
                    n.stopped_at, n.lost_at,
                    (SELECT count(*) FROM sessions s WHERE s.node = n.id AND (s.state = 'active' OR s.state = 'canceling'))
             FROM nodes n ORDER BY n.started_at DESC, n.id",
            params![],
            |r| {
                let listen: String = r.get(2)?;
                let stopped: Option<i64> = r.get(7)?;
                let lost: Option<i64> = r.get(8)?;
                Ok(NodeRow {
                    id: r.get(0)?,
                    hostname: r.get(1)?,
                    listen: serde_json::from_str(&listen).unwrap_or_default(),
                    version: r.get(3)?,
                    pid: r.get(4)?,
                    started_at: fmt_time(r.get(5)?),
                    heartbeat_at: fmt_time(r.get(6)?),
                    state: match (stopped, lost) {
                        (_, Some(_)) => "lost",
                        (Some(_), None) => "stopped",
                        (None, None) => "running",
                    }
                    .into(),
                    stopped_at: stopped.map(fmt_time),
                    live_sessions: r.get(9)?,
                })
            },
        )
    }
}

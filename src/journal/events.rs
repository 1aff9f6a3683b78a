//! The append-only event log: what every step of every session left behind.
use super::sql::{params, Row};
use serde::Serialize;
use serde_json::Value;

use super::{fmt_time, Journal, JournalError};

/// One journal event.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Event {
    pub seq: i64,
    pub at: String,
    pub session_id: Option<String>,
    pub kind: String,
    pub detail: Value,
}

fn event_row(r: &Row) -> Result<Event, JournalError> {
    let detail: String = r.get(4)?;
    Ok(Event {
        seq: r.get(0)?,
        at: fmt_time(r.get(1)?),
        session_id: r.get(2)?,
        kind: r.get(3)?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
    })
}

impl Journal {
    /// The sequence number of the newest event (0 when there is none).
    pub fn last_event_seq(&self) -> Result<i64, JournalError> {
        self.conn
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM events", params![], |r| {
                r.get(0)
            })
    }

    /// Events after `after_seq`, oldest first, optionally for one session.
    pub fn events(
        &self,
        session: Option<&str>,
        after_seq: i64,
        limit: Option<i64>,
    ) -> Result<Vec<Event>, JournalError> {
        let limit = limit.unwrap_or(i64::MAX);
        // Two statements, not one with `?2 IS NULL OR …`: that OR keeps
        // the planner off `events_session`, and a session's history
        // would read the whole log.
        match session {
            Some(id) => self.conn.query(
                "SELECT seq, at, session_id, kind, detail FROM events
                 WHERE session_id = ?2 AND seq > ?1 ORDER BY seq LIMIT ?3",
                params![after_seq, id, limit],
                event_row,
            ),
            None => self.conn.query(
                "SELECT seq, at, session_id, kind, detail FROM events
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                params![after_seq, limit],
                event_row,
            ),
        }
    }
}

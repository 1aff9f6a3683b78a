//! Webhook deliveries in the journal: which are due, what each attempt
//! came to, and what `tollgate collect deliveries` shows. A delivery is
//! `pending` until an attempt succeeds (`delivered`), its retries are spent
//! (`failed`) or its webhook is removed (`canceled`).

use super::sql::params;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

use super::{append_event, fmt_time, now_ms, EventKind, Journal, JournalError};

/// One delivery with every attempt, for the CLI.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub status: String,
    pub attempts: Vec<AttemptRow>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AttemptRow {
    pub n: u32,
    pub started_at: String,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

impl Journal {
    /// Claims up to `limit` pending deliveries due at `now`, oldest first,
    /// for `lease_ms` (a shared journal: no other node sends them
    /// meanwhile; if this one dies, another takes them once the lease has
    /// run out), and says when the next one not yet due (or claimed by
    /// another) falls due.
    pub fn webhooks_due(
        &mut self,
        now: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<(Vec<Due>, Option<i64>), JournalError> {
        let claim = format!(
            "{}/{}",
            self.node.as_deref().unwrap_or("local"),
            super::collect::new_id("clm_")?
        );
        // PostgreSQL: nodes claiming at once skip each other's rows.
        let lock = if self.conn.is_postgres() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let tx = self.conn.savepoint()?;
        tx.execute(
            &format!(
                "UPDATE webhook_deliveries SET claimed_by = ?3, claimed_until = ?4
                 WHERE id IN (SELECT id FROM webhook_deliveries
                     WHERE status = 'pending' AND next_attempt_at <= ?1
                       AND (claimed_until IS NULL OR claimed_until < ?1)
                     ORDER BY next_attempt_at, rowid LIMIT ?2{lock})"
            ),
            params![now, limit as i64, claim, now + lease_ms],
        )?;
        let due = tx.query(
            "SELECT d.id, d.webhook_id, d.event, d.body, d.attempts, w.url, w.method, w.headers, w.secret
             FROM webhook_deliveries d JOIN collect_webhooks w ON w.id = d.webhook_id
             WHERE d.claimed_by = ?1 AND d.status = 'pending'
             ORDER BY d.next_attempt_at, d.rowid",
            params![claim],
            |r| {
                let headers: String = r.get(7)?;
                Ok(Due {
                    delivery_id: r.get(0)?,
                    webhook_id: r.get(1)?,
                    event: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                    url: r.get(5)?,
                    method: r.get(6)?,
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    secret: r.get(8)?,
                })
            },
        )?;
        let next: Option<i64> = tx.query_one(
            "SELECT MIN(CASE WHEN claimed_until > next_attempt_at THEN claimed_until ELSE next_attempt_at END)
             FROM webhook_deliveries
             WHERE status = 'pending' AND (next_attempt_at > ?1 OR claimed_until >= ?1)",
            params![now],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok((due, next))
    }

    /// Gives claimed deliveries back (this node will not send them now).
    pub fn webhooks_release(&self, ids: &[String]) -> Result<(), JournalError> {
        for id in ids {
            self.conn.execute(
                "UPDATE webhook_deliveries SET claimed_by = NULL, claimed_until = NULL WHERE id = ?1",
                params![id],
            )?;
        }
        Ok(())
    }

    /// Records an attempt and moves the delivery on: `delivered`, `failed`
    /// once its retries are spent, or `pending` until the next backoff.
    /// Returns that status (`gone` when the delivery no longer waits).
    pub fn webhook_attempted(
        &mut self,
        delivery_id: &str,
        a: &Attempt,
    ) -> Result<&'static str, JournalError> {
        let tx = self.conn.savepoint()?;
        let row: Option<(String, String, u32, u32, u32, f64, String)> = tx.query_opt(
            "SELECT d.webhook_id, d.collect_id, d.attempts, w.retries, w.initial_backoff, w.backoff_multiplier, d.event
             FROM webhook_deliveries d JOIN collect_webhooks w ON w.id = d.webhook_id
             WHERE d.id = ?1 AND d.status = 'pending'",
            params![delivery_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )?;
        let Some((webhook_id, collect_id, before, retries, initial, multiplier, event)) = row
        else {
            return Ok("gone");
        };
        let n = before + 1;
        let now = now_ms();
        tx.execute(
            "INSERT INTO webhook_attempts (delivery_id, n, started_at, duration_ms, status_code, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![delivery_id, n, a.started_at, a.duration_ms, a.status_code, a.error],
        )?;
        let detail = json!({"collect": collect_id, "webhook": webhook_id, "delivery": delivery_id,
                            "event": event, "attempts": n, "status_code": a.status_code, "error": a.error});
        let (status, next) = if a.succeeded() {
            append_event(&tx, now, None, EventKind::CollectWebhookDelivered, &detail)?;
            ("delivered", None)
        } else if n > retries {
            append_event(&tx, now, None, EventKind::CollectWebhookFailed, &detail)?;
            ("failed", None)
        } else {
            let wait = backoff(initial, multiplier, n);
            ("pending", Some(now + wait.as_millis() as i64))
        };
        tx.execute(
            "UPDATE webhook_deliveries SET attempts = ?2, status = ?3, next_attempt_at = ?4, updated_at = ?5,
                 claimed_by = NULL, claimed_until = NULL WHERE id = ?1",
            params![delivery_id, n, status, next, now],
        )?;
        tx.commit()?;
        Ok(status)
    }

    /// Every delivery of a collect session with its attempts, oldest first.
    pub fn webhook_deliveries(&self, collect_id: &str) -> Result<Vec<Delivery>, JournalError> {
        let mut out = self.conn.query(
            "SELECT id, webhook_id, event, status, next_attempt_at, created_at, updated_at
             FROM webhook_deliveries WHERE collect_id = ?1 ORDER BY created_at, rowid",
            params![collect_id],
            |r| {
                let next: Option<i64> = r.get(4)?;
                Ok(Delivery {
                    id: r.get(0)?,
                    webhook_id: r.get(1)?,
                    event: r.get(2)?,
                    status: r.get(3)?,
                    attempts: Vec::new(),
                    next_attempt_at: next.map(fmt_time),
                    created_at: fmt_time(r.get(5)?),
                    updated_at: fmt_time(r.get(6)?),
                })
            },
        )?;
        for d in &mut out {
            d.attempts = self.conn.query(
                "SELECT n, started_at, duration_ms, status_code, error FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY n",
                params![d.id],
                |r| {
                    Ok(AttemptRow {
                        n: r.get(0)?,
                        started_at: fmt_time(r.get(1)?),
                        duration_ms: r.get(2)?,
                        status_code: r.get(3)?,
                        error: r.get(4)?,
                    })
                },
            )?;
        }
        Ok(out)
    }
}

/// The events a webhook may ask for; none listed means all of them.
pub const EVENTS: [&str; 3] = ["key_collected", "new_connection", "status_changed"];
/// Defaults for what `collect create --webhook` does not say.
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_INITIAL_BACKOFF: u32 = 10;
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
/// Limits on what may be stored.
pub const MAX_RETRIES: u32 = 50;
/// No wait between attempts is longer than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// How a webhook is called: everything about it but its secret, as stored
/// and as shown.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct WebhookSpec {
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, Vec<String>>,
    /// Empty: every event.
    pub events: Vec<String>,
    pub retries: u32,
    pub initial_backoff: u32,
    pub backoff_multiplier: f64,
}

/// A webhook as `collect create`/`update` asks for it, already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhook {
    pub spec: WebhookSpec,
    pub secret: Option<String>,
}

/// How long to wait after the `failed`-th failed attempt (1-based):
/// `initial × multiplier^(failed-1)`, at most [`MAX_BACKOFF`].
pub fn backoff(initial_secs: u32, multiplier: f64, failed: u32) -> Duration {
    let secs = f64::from(initial_secs) * multiplier.powi(failed.saturating_sub(1) as i32);
    if !secs.is_finite() || secs >= MAX_BACKOFF.as_secs_f64() {
        MAX_BACKOFF
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// One delivery as the worker sends it.
#[derive(Debug, Clone)]
pub struct Due {
    pub delivery_id: String,
    pub webhook_id: String,
    pub event: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub secret: Option<String>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub started_at: i64,
    pub duration_ms: i64,
    /// The HTTP status, when a response came.
    pub status_code: Option<u16>,
    /// Why it failed, when it did (a non-2xx status is a failure too).
    pub error: Option<String>,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

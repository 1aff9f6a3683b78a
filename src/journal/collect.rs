//! Collect sessions in the journal: the object the CLI prints (and webhooks
//! will carry), its connections and the keys kept from each.

use super::sql::{params, Conn, Row};
use serde::Serialize;
use serde_json::json;

use super::webhooks::{NewWebhook, WebhookSpec};
use super::{append_event, fmt_time, now_ms, EventKind, Journal, JournalError};
use crate::collect::random_identifier;

/// What `collect create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewCollect {
    /// The SSH user name; random when not given.
    pub connection_identifier: Option<String>,
    pub external_id: Option<String>,
    pub multi_connection: bool,
    pub multi_key: bool,
    pub must_confirm: bool,
    pub ssh_banner: Option<String>,
    pub ssh_message: Option<String>,
    /// Milliseconds since the epoch; `None`: never expires.
    pub expires_at: Option<i64>,
    pub webhooks: Vec<NewWebhook>,
}

/// The fields `collect update` may change; `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct CollectPatch {
    pub external_id: Option<Option<String>>,
    pub multi_connection: Option<bool>,
    pub multi_key: Option<bool>,
    pub must_confirm: Option<bool>,
    pub ssh_banner: Option<Option<String>>,
    pub ssh_message: Option<Option<String>>,
    pub expires_at: Option<Option<i64>>,
    pub add_webhooks: Vec<NewWebhook>,
    /// Webhook ids to remove (their pending deliveries are canceled).
    pub remove_webhooks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CollectSession {
    pub id: String,
    pub connection_identifier: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub expired_at: Option<String>,
    pub external_id: Option<String>,
    pub multi_connection: bool,
    pub multi_key: bool,
    pub must_confirm: bool,
    pub ssh_banner: Option<String>,
    pub ssh_message: Option<String>,
    pub connections: Vec<CollectConnection>,
    pub webhooks: Vec<Webhook>,
    #[serde(skip)]
    pub expires_at_ms: Option<i64>,
}

/// A webhook as shown: the secret itself is never printed or sent, only
/// whether there is one.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Webhook {
    pub id: String,
    #[serde(flatten)]
    pub spec: WebhookSpec,
    pub has_secret: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CollectConnection {
    pub id: String,
    pub client_version: Option<String>,
    pub ip_address: Option<String>,
    pub created_at: String,
    pub keys: Vec<CollectedKey>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CollectedKey {
    pub id: String,
    pub created_at: String,
    pub public_key_algorithm: String,
    pub public_key_md5: String,
    pub public_key_sha256: String,
    pub public_key_pem: String,
    pub public_key_ssh: String,
    pub public_key_openssh: String,
}

const COLUMNS: &str = "id, connection_identifier, status, created_at, updated_at, expired_at, external_id, multi_connection, multi_key, must_confirm, ssh_banner, ssh_message";

fn session_row(r: &Row) -> Result<CollectSession, JournalError> {
    let expires: Option<i64> = r.get(5)?;
    Ok(CollectSession {
        id: r.get(0)?,
        connection_identifier: r.get(1)?,
        status: r.get(2)?,
        created_at: fmt_time(r.get(3)?),
        updated_at: fmt_time(r.get(4)?),
        expired_at: expires.map(fmt_time),
        external_id: r.get(6)?,
        multi_connection: r.get(7)?,
        multi_key: r.get(8)?,
        must_confirm: r.get(9)?,
        ssh_banner: r.get(10)?,
        ssh_message: r.get(11)?,
        connections: Vec::new(),
        webhooks: Vec::new(),
        expires_at_ms: expires,
    })
}

/// What went wrong with a collect request, for the CLI's precise errors.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("--identifier: \"{0}\" is already used by another collect session")]
    IdentifierTaken(String),
    #[error("--remove-webhook: \"{0}\" is not a webhook of this collect session")]
    NoSuchWebhook(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Journal {
    /// Creates a pending collect session.
    pub fn collect_create(&mut self, n: &NewCollect) -> Result<CollectSession, CollectError> {
        let id = new_id("col_")?;
        let ident = match &n.connection_identifier {
            Some(i) => i.clone(),
            None => random_identifier().map_err(io)?,
        };
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        let taken: bool = tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM collect_sessions WHERE connection_identifier = ?1)",
            params![ident],
            |r| r.get(0),
        )?;
        if taken {
            return Err(CollectError::IdentifierTaken(ident));
        }
        tx.execute(
            "INSERT INTO collect_sessions (id, connection_identifier, status, created_at, updated_at, expired_at,
                 external_id, multi_connection, multi_key, must_confirm, ssh_banner, ssh_message)
             VALUES (?1, ?2, 'pending', ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![id, ident, now, n.expires_at, n.external_id, n.multi_connection, n.multi_key,
                    n.must_confirm, n.ssh_banner, n.ssh_message],
        )?;
        for w in &n.webhooks {
            add_webhook(&tx, &id, w, now)?;
        }
        append_event(
            &tx,
            now,
            None,
            EventKind::CollectCreated,
            &json!({"collect": id, "connection_identifier": ident, "webhooks": n.webhooks.len()}),
        )?;
        tx.commit()?;
        Ok(self.collect_get(&id)?.expect("just created"))
    }

    /// One collect session (not deleted) by id or identifier, whole.
    pub fn collect_get(&self, id: &str) -> Result<Option<CollectSession>, JournalError> {
        load(&self.conn, id)
    }
}

/// One collect session (not deleted) by id or identifier, whole, on any
/// connection (or savepoint).
pub(super) fn load(conn: &Conn, id: &str) -> Result<Option<CollectSession>, JournalError> {
    let s = conn.query_opt(
        &format!("SELECT {COLUMNS} FROM collect_sessions WHERE (id = ?1 OR connection_identifier = ?1) AND deleted_at IS NULL"),
        params![id],
        session_row,
    )?;
    let Some(mut s) = s else { return Ok(None) };
    s.connections = connections(conn, &s.id)?;
    s.webhooks = webhooks(conn, &s.id)?;
    Ok(Some(s))
}

fn webhooks(conn: &Conn, collect_id: &str) -> Result<Vec<Webhook>, JournalError> {
    conn.query(
        "SELECT id, url, method, headers, events, retries, initial_backoff, backoff_multiplier, secret IS NOT NULL, created_at
         FROM collect_webhooks WHERE collect_id = ?1 AND removed_at IS NULL ORDER BY created_at, rowid",
        params![collect_id],
        |r| {
            let headers: String = r.get(3)?;
            let events: String = r.get(4)?;
            Ok(Webhook {
                id: r.get(0)?,
                spec: WebhookSpec {
                    url: r.get(1)?,
                    method: r.get(2)?,
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    events: serde_json::from_str(&events).unwrap_or_default(),
                    retries: r.get(5)?,
                    initial_backoff: r.get(6)?,
                    backoff_multiplier: r.get(7)?,
                },
                has_secret: r.get(8)?,
                created_at: fmt_time(r.get(9)?),
            })
        },
    )
}

fn add_webhook(
    conn: &Conn,
    collect_id: &str,
    w: &NewWebhook,
    now: i64,
) -> Result<String, JournalError> {
    let id = new_id("whk_")?;
    conn.execute(
        "INSERT INTO collect_webhooks (id, collect_id, url, method, headers, events, retries, initial_backoff,
             backoff_multiplier, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![id, collect_id, w.spec.url, w.spec.method, json!(w.spec.headers).to_string(),
                json!(w.spec.events).to_string(), w.spec.retries, w.spec.initial_backoff,
                w.spec.backoff_multiplier, w.secret, now],
    )?;
    Ok(id)
}

fn connections(conn: &Conn, collect_id: &str) -> Result<Vec<CollectConnection>, JournalError> {
    let mut conns = conn.query(
        "SELECT id, client_version, ip_address, created_at FROM collect_connections WHERE collect_id = ?1 ORDER BY created_at, rowid",
        params![collect_id],
        |r| {
            Ok(CollectConnection {
                id: r.get(0)?,
                client_version: r.get(1)?,
                ip_address: r.get(2)?,
                created_at: fmt_time(r.get(3)?),
                keys: Vec::new(),
            })
        },
    )?;
    for c in &mut conns {
        c.keys = conn.query(
            "SELECT id, created_at, public_key_algorithm, public_key_md5, public_key_sha256, public_key_pem,
                    public_key_ssh, public_key_openssh FROM collect_keys WHERE connection_id = ?1 ORDER BY created_at, rowid",
            params![c.id],
            |r| {
                Ok(CollectedKey {
                    id: r.get(0)?,
                    created_at: fmt_time(r.get(1)?),
                    public_key_algorithm: r.get(2)?,
                    public_key_md5: r.get(3)?,
                    public_key_sha256: r.get(4)?,
                    public_key_pem: r.get(5)?,
                    public_key_ssh: r.get(6)?,
                    public_key_openssh: r.get(7)?,
                })
            },
        )?;
    }
    Ok(conns)
}

impl Journal {
    /// Every collect session not deleted, newest first, whole.
    pub fn collect_list(&self) -> Result<Vec<CollectSession>, JournalError> {
        let ids: Vec<String> = self.conn.query(
            "SELECT id FROM collect_sessions WHERE deleted_at IS NULL ORDER BY created_at DESC, rowid DESC",
            params![],
            |r| r.get(0),
        )?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(s) = self.collect_get(&id)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Changes the given fields; `None` when there is no such session.
    pub fn collect_update(
        &mut self,
        id: &str,
        p: &CollectPatch,
    ) -> Result<Option<CollectSession>, CollectError> {
        let Some(cur) = self.collect_get(id)? else {
            return Ok(None);
        };
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        tx.execute(
            "UPDATE collect_sessions SET external_id = ?2, multi_connection = ?3, multi_key = ?4, must_confirm = ?5,
                 ssh_banner = ?6, ssh_message = ?7, expired_at = ?8, updated_at = ?9 WHERE id = ?1",
            params![
                cur.id,
                p.external_id.clone().unwrap_or(cur.external_id),
                p.multi_connection.unwrap_or(cur.multi_connection),
                p.multi_key.unwrap_or(cur.multi_key),
                p.must_confirm.unwrap_or(cur.must_confirm),
                p.ssh_banner.clone().unwrap_or(cur.ssh_banner),
                p.ssh_message.clone().unwrap_or(cur.ssh_message),
                p.expires_at.unwrap_or(cur.expires_at_ms),
                now
            ],
        )?;
        for w in &p.remove_webhooks {
            let n = tx.execute(
                "UPDATE collect_webhooks SET removed_at = ?3 WHERE id = ?1 AND collect_id = ?2 AND removed_at IS NULL",
                params![w, cur.id, now],
            )?;
            if n == 0 {
                return Err(CollectError::NoSuchWebhook(w.clone()));
            }
            tx.execute(
                "UPDATE webhook_deliveries SET status = 'canceled', next_attempt_at = NULL, updated_at = ?2
                 WHERE webhook_id = ?1 AND status = 'pending'",
                params![w, now],
            )?;
        }
        for w in &p.add_webhooks {
            add_webhook(&tx, &cur.id, w, now)?;
        }
        append_event(
            &tx,
            now,
            None,
            EventKind::CollectUpdated,
            &json!({"collect": cur.id, "webhooks_added": p.add_webhooks.len(), "webhooks_removed": p.remove_webhooks}),
        )?;
        tx.commit()?;
        Ok(self.collect_get(&cur.id)?)
    }

    /// Deletes (its identifier is refused from then on, and never reused).
    pub fn collect_delete(&mut self, id: &str) -> Result<bool, JournalError> {
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        let found: Option<String> = tx.query_opt(
            "UPDATE collect_sessions SET deleted_at = ?2, updated_at = ?2
             WHERE (id = ?1 OR connection_identifier = ?1) AND deleted_at IS NULL RETURNING id",
            params![id, now],
            |r| r.get(0),
        )?;
        if let Some(cid) = &found {
            append_event(
                &tx,
                now,
                None,
                EventKind::CollectDeleted,
                &json!({"collect": cid}),
            )?;
        }
        tx.commit()?;
        Ok(found.is_some())
    }

    /// The collect session an SSH user name stands for, when it may still
    /// collect: not deleted, not completed, not expired.
    pub fn collect_live(&self, identifier: &str) -> Result<Option<CollectSession>, JournalError> {
        self.conn.query_opt(
            &format!(
                "SELECT {COLUMNS} FROM collect_sessions WHERE connection_identifier = ?1 AND deleted_at IS NULL
                 AND status = 'pending' AND (expired_at IS NULL OR expired_at > ?2)"
            ),
            params![identifier, now_ms()],
            session_row,
        )
    }
}

fn io(e: std::io::Error) -> CollectError {
    CollectError::Journal(io_error(e))
}

fn io_error(e: std::io::Error) -> JournalError {
    JournalError::Io {
        path: "journal".into(),
        source: e,
    }
}

/// A fresh row id with `prefix`.
pub(super) fn new_id(prefix: &str) -> Result<String, JournalError> {
    crate::token::random_id(prefix).map_err(io_error)
}

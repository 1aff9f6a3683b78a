//! The steps of a collect connection in the journal: opened, each key it
//! proves, closed (completing a single-connection session), or kept whole
//! at once; each step creates the webhook deliveries it makes due.

use super::sql::{params, Conn};
use serde_json::json;

use super::collect::{load, new_id, CollectConnection, CollectSession};
use super::{append_event, fmt_time, now_ms, EventKind, Journal, JournalError};
use crate::collect::keys::KeyForms;

impl Journal {
    /// Records a connection that kept `keys` (verified, and confirmed when
    /// the session asks for it) in one transaction, and completes the
    /// session unless it takes several connections. `None` when the session
    /// stopped being live meanwhile (then nothing is recorded).
    pub fn collect_keep(
        &mut self,
        identifier: &str,
        client_version: &str,
        ip_address: &str,
        keys: &[KeyForms],
    ) -> Result<Option<CollectConnection>, JournalError> {
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        let Some(c) = open_connection(&tx, identifier, client_version, ip_address, now)? else {
            return Ok(None);
        };
        let mut due = vec![Due::NewConnection];
        for k in keys {
            due.push(Due::Key(add_key(&tx, &c, k, now)?));
        }
        if close_connection(&tx, &c, now)? {
            due.push(Due::Completed);
        }
        let connection = enqueue_all(&tx, &c, &due, now)?;
        tx.commit()?;
        Ok(connection)
    }

    /// Opens the record of a connection to a live collect session, before
    /// it has proved any key: from then on each key it proves is recorded
    /// as it is verified ([`Journal::collect_key_add`]), and
    /// [`Journal::collect_connection_close`] ends it. `None` when the
    /// session may not collect (any more), or when it takes one connection
    /// and another one already recorded a key.
    pub fn collect_connection_open(
        &mut self,
        identifier: &str,
        client_version: &str,
        ip_address: &str,
    ) -> Result<Option<OpenConnection>, JournalError> {
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        let Some(c) = open_connection(&tx, identifier, client_version, ip_address, now)? else {
            return Ok(None);
        };
        enqueue_all(&tx, &c, &[Due::NewConnection], now)?;
        tx.commit()?;
        Ok(Some(c))
    }

    /// Records one verified key of an open connection. `false` when its
    /// session was deleted meanwhile (nothing is recorded then).
    pub fn collect_key_add(
        &mut self,
        c: &OpenConnection,
        key: &KeyForms,
    ) -> Result<bool, JournalError> {
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        let deleted: bool = tx.query_one(
            "SELECT deleted_at IS NOT NULL FROM collect_sessions WHERE id = ?1",
            params![c.collect_id],
            |r| r.get(0),
        )?;
        if deleted {
            return Ok(false);
        }
        let key_id = add_key(&tx, c, key, now)?;
        tx.execute(
            "UPDATE collect_sessions SET updated_at = ?2 WHERE id = ?1",
            params![c.collect_id, now],
        )?;
        enqueue_all(&tx, c, &[Due::Key(key_id)], now)?;
        tx.commit()?;
        Ok(true)
    }

    /// The connection is over: completes its session when that takes one
    /// connection and this one recorded a key. Returns the connection as
    /// recorded (`None` if its session was deleted meanwhile).
    pub fn collect_connection_close(
        &mut self,
        c: &OpenConnection,
    ) -> Result<Option<CollectConnection>, JournalError> {
        let now = now_ms();
        let tx = self.conn.savepoint()?;
        let completed = close_connection(&tx, c, now)?;
        let connection = if completed {
            enqueue_all(&tx, c, &[Due::Completed], now)?
        } else {
            load(&tx, &c.collect_id)?.and_then(|s| s.connections.into_iter().find(|x| x.id == c.id))
        };
        tx.commit()?;
        Ok(connection)
    }

    /// Records why a connection that proved keys kept none of them (the
    /// session must be confirmed, and the client never answered), so an
    /// administrator reading the journal learns why nothing was collected.
    pub fn collect_not_kept(
        &mut self,
        c: &CollectConnection,
        collect_id: &str,
        keys_proved: usize,
        reason: &str,
    ) -> Result<(), JournalError> {
        let now = now_ms();
        append_event(
            &self.conn,
            now,
            None,
            EventKind::CollectKeysNotKept,
            &json!({"collect": collect_id, "connection": c.id, "keys_proved": keys_proved, "reason": reason}),
        )?;
        Ok(())
    }
}

/// A collect connection whose record is open: keys may still be added.
#[derive(Debug, Clone)]
pub struct OpenConnection {
    /// The connection's id (`con_…`).
    pub id: String,
    /// Its collect session's id (`col_…`).
    pub collect_id: String,
    multi_connection: bool,
}

/// A webhook event a step of a connection makes due.
enum Due {
    NewConnection,
    Key(String),
    Completed,
}

fn open_connection(
    tx: &Conn,
    identifier: &str,
    client_version: &str,
    ip_address: &str,
    now: i64,
) -> Result<Option<OpenConnection>, JournalError> {
    if tx.is_postgres() {
        // Nodes opening connections of one session at once take turns
        // (the row lock), and the check below, a statement of its own,
        // then sees what the other committed: one connection keeps keys
        // of a single-connection session, across nodes.
        tx.query(
            "SELECT id FROM collect_sessions WHERE connection_identifier = ?1 FOR UPDATE",
            params![identifier],
            |_| Ok(()),
        )?;
    }
    let s = tx.query_opt(
        "SELECT id, multi_connection FROM collect_sessions s WHERE connection_identifier = ?1 AND deleted_at IS NULL
         AND status = 'pending' AND (expired_at IS NULL OR expired_at > ?2)
         AND (multi_connection OR NOT EXISTS (SELECT 1 FROM collect_keys k WHERE k.collect_id = s.id))",
        params![identifier, now],
        |r| Ok((r.get::<String>(0)?, r.get::<bool>(1)?)),
    )?;
    let Some((collect_id, multi_connection)) = s else {
        return Ok(None);
    };
    let id = new_id("con_")?;
    tx.execute(
        "INSERT INTO collect_connections (id, collect_id, client_version, ip_address, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, collect_id, client_version, ip_address, now],
    )?;
    append_event(
        tx,
        now,
        None,
        EventKind::CollectNewConnection,
        &json!({"collect": collect_id, "connection": id, "ip_address": ip_address, "client_version": client_version}),
    )?;
    tx.execute(
        "UPDATE collect_sessions SET updated_at = ?2 WHERE id = ?1",
        params![collect_id, now],
    )?;
    Ok(Some(OpenConnection {
        id,
        collect_id,
        multi_connection,
    }))
}

fn add_key(tx: &Conn, c: &OpenConnection, k: &KeyForms, now: i64) -> Result<String, JournalError> {
    let key_id = new_id("key_")?;
    tx.execute(
        "INSERT INTO collect_keys (id, collect_id, connection_id, created_at, public_key_algorithm, public_key_md5,
             public_key_sha256, public_key_pem, public_key_ssh, public_key_openssh)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![key_id, c.collect_id, c.id, now, k.public_key_algorithm, k.public_key_md5, k.public_key_sha256,
                k.public_key_pem, k.public_key_ssh, k.public_key_openssh],
    )?;
    append_event(
        tx,
        now,
        None,
        EventKind::CollectKeyCollected,
        &json!({"collect": c.collect_id, "connection": c.id, "key": key_id,
                "public_key_algorithm": k.public_key_algorithm, "public_key_sha256": k.public_key_sha256}),
    )?;
    Ok(key_id)
}

/// Completes the session when it takes one connection and this one
/// recorded a key; returns whether it did.
fn close_connection(tx: &Conn, c: &OpenConnection, now: i64) -> Result<bool, JournalError> {
    if c.multi_connection {
        return Ok(false);
    }
    let completed = tx.execute(
        "UPDATE collect_sessions SET status = 'completed', updated_at = ?2
         WHERE id = ?1 AND status = 'pending' AND deleted_at IS NULL
           AND EXISTS (SELECT 1 FROM collect_keys WHERE connection_id = ?3)",
        params![c.collect_id, now, c.id],
    )? == 1;
    if completed {
        append_event(
            tx,
            now,
            None,
            EventKind::CollectStatusChanged,
            &json!({"collect": c.collect_id, "from": "pending", "to": "completed"}),
        )?;
    }
    Ok(completed)
}

/// Creates the webhook deliveries `due` makes, each carrying the whole
/// collect session as it stands now; returns the connection as recorded.
fn enqueue_all(
    tx: &Conn,
    c: &OpenConnection,
    due: &[Due],
    now: i64,
) -> Result<Option<CollectConnection>, JournalError> {
    let Some(whole) = load(tx, &c.collect_id)? else {
        return Ok(None);
    };
    let Some(connection) = whole.connections.iter().find(|x| x.id == c.id).cloned() else {
        return Ok(None);
    };
    for d in due {
        match d {
            Due::NewConnection => enqueue(
                tx,
                &whole,
                "new_connection",
                json!({"connection": connection}),
                now,
            )?,
            Due::Key(key_id) => {
                if let Some(k) = connection.keys.iter().find(|k| &k.id == key_id) {
                    enqueue(
                        tx,
                        &whole,
                        "key_collected",
                        json!({"connection": connection, "key": k}),
                        now,
                    )?;
                }
            }
            Due::Completed => enqueue(
                tx,
                &whole,
                "status_changed",
                json!({"previous_status": "pending"}),
                now,
            )?,
        }
    }
    Ok(Some(connection))
}

/// Creates a delivery of `event` for every webhook of `s` that wants it.
/// The body is fixed now: retries send the same bytes and delivery id.
fn enqueue(
    conn: &Conn,
    s: &CollectSession,
    event: &str,
    extra: serde_json::Value,
    now: i64,
) -> Result<(), JournalError> {
    for w in &s.webhooks {
        let events = &w.spec.events;
        if !events.is_empty() && !events.iter().any(|e| e == event) {
            continue;
        }
        let id = new_id("dlv_")?;
        let mut body = json!({
            "id": id,
            "event": event,
            "created_at": fmt_time(now),
            "collect_session": s,
        });
        if let (Some(b), serde_json::Value::Object(more)) = (body.as_object_mut(), extra.clone()) {
            b.extend(more);
        }
        conn.execute(
            "INSERT INTO webhook_deliveries (id, webhook_id, collect_id, event, body, status, attempts, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)",
            params![id, w.id, s.id, event, body.to_string(), now],
        )?;
    }
    Ok(())
}

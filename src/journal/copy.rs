//! `tollgate journal copy`: a journal's records into an empty PostgreSQL
//! journal (moving from one bastion's SQLite file to a shared database),
//! table by table in the order they were written, in one transaction.
//! What a daemon records about itself (drain state, health, nodes) is not
//! copied: the daemons on the new journal record their own.

use super::sql::{params, ToParam, Value};
use super::{Journal, JournalError};

/// Each table copied, in an order its references allow: name, columns,
/// and the order rows were written in.
const TABLES: &[(&str, &str, &str)] = &[
    (
        "sessions",
        "id, kind, state, token_sha256, profile, login_user, command, reason, created_at, expires_at, \
         max_duration_ms, started_at, ended_at, end_reason, exit_status, exit_signal, client_addr, pid, \
         bytes_in, bytes_out, target, connection_limit, forwards, leader, node",
        "created_at, id",
    ),
    ("events", "seq, at, session_id, kind, detail", "seq"),
    (
        "collect_sessions",
        "id, connection_identifier, status, created_at, updated_at, expired_at, deleted_at, external_id, \
         multi_connection, multi_key, must_confirm, ssh_banner, ssh_message",
        "rowid",
    ),
    (
        "collect_connections",
        "id, collect_id, client_version, ip_address, created_at",
        "rowid",
    ),
    (
        "collect_keys",
        "id, collect_id, connection_id, created_at, public_key_algorithm, public_key_md5, \
         public_key_sha256, public_key_pem, public_key_ssh, public_key_openssh",
        "rowid",
    ),
    (
        "collect_webhooks",
        "id, collect_id, url, method, headers, events, retries, initial_backoff, backoff_multiplier, \
         secret, created_at, removed_at",
        "rowid",
    ),
    (
        "webhook_deliveries",
        "id, webhook_id, collect_id, event, body, status, attempts, next_attempt_at, created_at, updated_at",
        "rowid",
    ),
    (
        "webhook_attempts",
        "delivery_id, n, started_at, duration_ms, status_code, error",
        "delivery_id, n",
    ),
    (
        "api_tokens",
        "id, name, secret_sha256, scopes, created_at, expires_at, revoked_at",
        "created_at, id",
    ),
];

impl ToParam for Value {
    fn to_param(&self) -> super::sql::Param<'_> {
        use super::sql::Param;
        match self {
            Value::Null => Param::Null,
            Value::Int(n) => Param::Int(*n),
            Value::Real(f) => Param::Real(*f),
            Value::Text(s) => Param::Text(s),
        }
    }
}

impl Journal {
    /// Copies every record into `to`, a PostgreSQL journal that must hold
    /// none yet; returns how many rows of each table were copied.
    pub fn copy_into(&self, to: &mut Journal) -> Result<Vec<(&'static str, usize)>, JournalError> {
        if !to.conn.is_postgres() {
            return Err(JournalError::Column(
                "journal copy writes only into a PostgreSQL journal".into(),
            ));
        }
        let (sessions, events, collect): (i64, i64, i64) = to.conn.query_one(
            "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM events),
                    (SELECT count(*) FROM collect_sessions)",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if sessions + events + collect > 0 {
            return Err(JournalError::NotEmpty(format!(
                "{sessions} sessions, {events} events, {collect} collect sessions"
            )));
        }
        let tx = to.conn.immediate()?;
        let mut counts = Vec::new();
        for (table, columns, order) in TABLES {
            let rows = self.conn.query(
                &format!("SELECT {columns} FROM {table} ORDER BY {order}"),
                params![],
                |r| Ok(r.values().to_vec()),
            )?;
            let n = columns.split(',').count();
            let marks: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
            // The events keep their sequence numbers: drains and `events
            // --follow` go by them.
            let overriding = if *table == "events" {
                " OVERRIDING SYSTEM VALUE"
            } else {
                ""
            };
            let insert = format!(
                "INSERT INTO {table} ({columns}){overriding} VALUES ({})",
                marks.join(", ")
            );
            for row in &rows {
                let p: Vec<&dyn ToParam> = row.iter().map(|v| v as &dyn ToParam).collect();
                tx.execute(&insert, &p)?;
            }
            counts.push((*table, rows.len()));
        }
        tx.batch(
            "SELECT setval(pg_get_serial_sequence('events', 'seq'), (SELECT COALESCE(MAX(seq), 0) + 1 FROM events), false)",
        )?;
        tx.commit()?;
        Ok(counts)
    }
}

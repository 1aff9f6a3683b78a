//! API tokens: who may call the HTTP API, and with which scopes. Only a
//! token's SHA-256 is stored; the token names its row (`tga_ID_SECRET`), so
//! a lookup reads one row by id and compares hashes in constant time.
use serde::Serialize;
use serde_json::json;

use super::sql::{params, Row};
use super::{append_event, fmt_time, EventKind, Journal, JournalError};

/// An API token as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ApiTokenRow {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A token that authenticated a request.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
}

const COLUMNS: &str = "id, name, scopes, created_at, expires_at, revoked_at";

fn token_row(r: &Row) -> Result<ApiTokenRow, JournalError> {
    let scopes: String = r.get(2)?;
    Ok(ApiTokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_at: fmt_time(r.get(3)?),
        expires_at: r.get::<Option<i64>>(4)?.map(fmt_time),
        revoked_at: r.get::<Option<i64>>(5)?.map(fmt_time),
    })
}

/// Equal bytes, in a time that depends only on their length.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y))) == 0
}

impl Journal {
    /// Stores a new token (its hash) and records `api_token.created`.
    pub fn api_token_create(
        &mut self,
        id: &str,
        name: &str,
        secret_sha256: &str,
        scopes: &[String],
        expires_at: Option<i64>,
    ) -> Result<ApiTokenRow, JournalError> {
        let now = super::now_ms();
        let tx = self.conn.savepoint()?;
        tx.execute(
            "INSERT INTO api_tokens (id, name, secret_sha256, scopes, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                name,
                secret_sha256,
                json!(scopes).to_string(),
                now,
                expires_at
            ],
        )?;
        append_event(
            &tx,
            now,
            None,
            EventKind::ApiTokenCreated,
            &json!({"api_token": id, "name": name, "scopes": scopes}),
        )?;
        tx.commit()?;
        Ok(self.api_token_get(id)?.expect("just created"))
    }

    pub fn api_token_get(&self, id: &str) -> Result<Option<ApiTokenRow>, JournalError> {
        self.conn.query_opt(
            &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1"),
            params![id],
            token_row,
        )
    }

    /// Every token, newest first.
    pub fn api_token_list(&self) -> Result<Vec<ApiTokenRow>, JournalError> {
        self.conn.query(
            &format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at DESC, id"),
            params![],
            token_row,
        )
    }

    /// Revokes a token; `None` when there is no such token, `Some(false)`
    /// when it was revoked already (idempotent).
    pub fn api_token_revoke(&mut self, id: &str) -> Result<Option<bool>, JournalError> {
        let now = super::now_ms();
        let tx = self.conn.savepoint()?;
        let n = tx.execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now],
        )?;
        if n == 0 {
            let exists: bool = tx.query_one(
                "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE id = ?1)",
                params![id],
                |r| r.get(0),
            )?;
            return Ok(exists.then_some(false));
        }
        append_event(
            &tx,
            now,
            None,
            EventKind::ApiTokenRevoked,
            &json!({"api_token": id}),
        )?;
        tx.commit()?;
        Ok(Some(true))
    }

    /// The live (not revoked, not expired) token `id` whose stored hash is
    /// `presented_sha256`, compared in constant time.
    pub fn api_token_check(
        &self,
        id: &str,
        presented_sha256: &str,
    ) -> Result<Option<ApiCaller>, JournalError> {
        let now = super::now_ms();
        let row = self.conn.query_opt(
            "SELECT secret_sha256, name, scopes FROM api_tokens
             WHERE id = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
            params![id, now],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                ))
            },
        )?;
        Ok(row.and_then(|(hash, name, scopes)| {
            same(hash.as_bytes(), presented_sha256.as_bytes()).then(|| ApiCaller {
                id: id.to_string(),
                name,
                scopes: serde_json::from_str(&scopes).unwrap_or_default(),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(same(b"", b""));
    }
}

//! The PostgreSQL backend behind [`super::sql::Conn`]: one blocking client
//! (the `postgres` crate, a thin wrapper over `tokio-postgres` with a
//! runtime of its own) per journal handle, TLS by rustls with the server's
//! name and chain verified, statements prepared once per connection.
//!
//! The journal writes its SQL once with `?N` placeholders; here they become
//! `$N`. Parameters are bound to whatever type the server inferred for them
//! (an integer to `bigint`, `integer` or `boolean`), and columns are read by
//! their type into the journal's own values.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use postgres::types::{IsNull, ToSql, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

use super::sql::{Param, Row, ToParam, Value};
use super::JournalError;

/// Where a PostgreSQL journal is and how to reach it.
#[derive(Clone)]
pub struct PgTarget {
    /// The URL as configured, without a password (for messages).
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    /// TLS with the server's certificate verified against these CAs
    /// (`sslmode=verify-full`); `None`: plain TCP (`sslmode=disable`).
    pub tls: Option<Arc<ClientConfig>>,
    /// The password, read from its file or variable by the caller.
    pub password: Option<String>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PgTarget")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

pub(super) struct Pg {
    /// `None` after the connection was lost and not yet made again (and
    /// while dropping).
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    /// `postgres://host:port/db`, for errors.
    name: String,
    /// How to connect again after losing the connection.
    target: PgTarget,
    /// A transaction is open on the connection: if it is lost meanwhile,
    /// every statement fails until the transaction is ended (never run
    /// outside it on a new connection), and its COMMIT fails.
    in_tx: bool,
    /// When the last attempt to connect again failed: the next waits a
    /// second, so an outage is not hammered.
    failed_at: Option<std::time::Instant>,
}

impl Pg {
    pub(super) fn connect(t: &PgTarget) -> Result<Pg, JournalError> {
        let name = format!("postgres://{}:{}/{}", t.host, t.port, t.dbname);
        let client = Self::client_for(t, &name)?;
        Ok(Pg {
            client: Some(client),
            statements: HashMap::new(),
            name,
            target: t.clone(),
            in_tx: false,
            failed_at: None,
        })
    }

    fn client_for(t: &PgTarget, name: &str) -> Result<postgres::Client, JournalError> {
        let mut c = postgres::Config::new();
        c.host(&t.host)
            .port(t.port)
            .user(&t.user)
            .dbname(&t.dbname)
            .application_name("tollgate")
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(p) = &t.password {
            c.password(p);
        }
        let fail = |e: postgres::Error| JournalError::Postgres {
            name: name.to_string(),
            reason: reason(&e),
        };
        match &t.tls {
            Some(tls) => {
                c.ssl_mode(postgres::config::SslMode::Require);
                c.connect(Rustls(tls.clone())).map_err(fail)
            }
            None => {
                c.ssl_mode(postgres::config::SslMode::Disable);
                c.connect(postgres::NoTls).map_err(fail)
            }
        }
    }

    fn lost(&self) -> JournalError {
        JournalError::Postgres {
            name: self.name.clone(),
            reason: "the connection was lost".into(),
        }
    }

    fn closed(&self) -> bool {
        self.client.as_ref().is_none_or(|c| c.is_closed())
    }

    /// The connection, made again when it was lost (outside a transaction).
    fn client(&mut self) -> Result<&mut postgres::Client, JournalError> {
        if self.closed() {
            if self.in_tx
                || self
                    .failed_at
                    .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
            {
                return Err(self.lost());
            }
            self.statements.clear();
            if let Some(old) = self.client.take() {
                close(old);
            }
            match Self::client_for(&self.target, &self.name) {
                Ok(c) => {
                    self.failed_at = None;
                    tracing::info!(journal = %self.name, "connected to the journal again");
                    self.client = Some(c);
                }
                Err(e) => {
                    self.failed_at = Some(std::time::Instant::now());
                    return Err(e);
                }
            }
        }
        Ok(self.client.as_mut().expect("just made"))
    }

    fn err(&self, e: postgres::Error) -> JournalError {
        JournalError::Postgres {
            name: self.name.clone(),
            reason: reason(&e),
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, JournalError> {
        if !self.closed() {
            if let Some(s) = self.statements.get(sql) {
                return Ok(s.clone());
            }
        }
        let prepared = self.client()?.prepare(&dollars(sql));
        let s = prepared.map_err(|e| self.err(e))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub(super) fn execute(
        &mut self,
        sql: &str,
        params: &[&dyn ToParam],
    ) -> Result<usize, JournalError> {
        let st = self.statement(sql)?;
        let bound: Vec<PgParam> = params.iter().map(|p| PgParam(p.to_param())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let n = self.client()?.execute(&st, &refs);
        Ok(n.map_err(|e| self.err(e))? as usize)
    }

    pub(super) fn query(
        &mut self,
        sql: &str,
        params: &[&dyn ToParam],
    ) -> Result<Vec<Row>, JournalError> {
        let st = self.statement(sql)?;
        let bound: Vec<PgParam> = params.iter().map(|p| PgParam(p.to_param())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self.client()?.query(&st, &refs);
        rows.map_err(|e| self.err(e))?.iter().map(read).collect()
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<(), JournalError> {
        match sql {
            // The transaction died with the connection: its work is gone,
            // which a COMMIT must not report as kept.
            "COMMIT" if self.closed() && self.in_tx => {
                self.in_tx = false;
                return Err(self.lost());
            }
            "ROLLBACK" if self.closed() => {
                self.in_tx = false;
                return Ok(());
            }
            _ => {}
        }
        let r = self.client()?.batch_execute(sql);
        r.map_err(|e| self.err(e))?;
        match sql {
            "BEGIN" => self.in_tx = true,
            "COMMIT" | "ROLLBACK" => self.in_tx = false,
            _ => {}
        }
        Ok(())
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            close(client);
        }
    }
}

/// Closing a client blocks on its own runtime, which must not happen on a
/// thread that drives the daemon's: there it closes on a thread of its own.
fn close(client: postgres::Client) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name("tollgate-pg-close".into())
            .spawn(move || drop(client));
    } else {
        drop(client);
    }
}

/// What went wrong, without the URL's parts the caller names already:
/// the server's message, or the reason the connection failed.
fn reason(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s = inner.to_string();
        src = inner.source();
    }
    // "Connection refused (os error 111)" reads better without the code.
    match s.find(" (os error") {
        Some(i) => s[..i].to_ascii_lowercase(),
        None => s,
    }
}

/// `?N` placeholders as PostgreSQL's `$N`, outside quoted text.
pub(super) fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

/// A parameter bound to the type the server inferred for its placeholder.
#[derive(Debug)]
struct PgParam<'a>(Param<'a>);

impl ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::BOOL => (n != 0).to_sql(ty, out),
                Type::FLOAT8 => (n as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => n.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to {ty}").into()),
            },
            Param::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(format!("a number cannot be bound to {ty}").into()),
            },
            Param::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn read(r: &postgres::Row) -> Result<Row, JournalError> {
    let bad = |i: usize, e: postgres::Error| JournalError::Column(format!("column {i}: {e}"));
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int)),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|n| Value::Int(n.into()))),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|n| Value::Int(n.into()))),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)
                .map(|v| v.map(|b| Value::Int(b.into()))),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i).map(|v| v.map(Value::Real)),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)
                .map(|v| v.map(|f| Value::Real(f.into()))),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => r
                .try_get::<_, Option<String>>(i)
                .map(|v| v.map(Value::Text)),
            ref other => {
                return Err(JournalError::Column(format!(
                    "column {i} has type {other}, which the journal does not use"
                )))
            }
        }
        .map_err(|e| bad(i, e))?;
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row::new(values))
}

/// TLS for the PostgreSQL client by tokio-rustls (already what drains and
/// webhooks use): the server's certificate must chain to the configured
/// CAs and name the host (`sslmode=verify-full`).
#[derive(Clone)]
struct Rustls(Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("\"{domain}\" is not a host name or address"),
            )
        })?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(s))
        })
    }
}

struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding: the server is authenticated by
        // its verified certificate.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollars("SELECT a FROM t WHERE b = ?1 AND c = '?' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d = $12"
        );
    }
}

//! One connection to PostgreSQL: a `tokio-postgres` client, the connection
//! it talks through (driven only while the journal's thread waits for an
//! answer, as the blocking `postgres` crate does), a runtime of its own for
//! the socket, and TLS by rustls with the server's name and chain verified.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::AsyncMessage;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

use super::super::JournalError;

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

/// One connection: the client, the connection it talks through (driven
/// only while this thread waits for an answer, as the `postgres` crate
/// does), and a runtime of its own for the socket.
pub(super) struct Link {
    rt: tokio::runtime::Runtime,
    /// Taken only when the link is dropped.
    pub(super) client: Option<Arc<tokio_postgres::Client>>,
    conn: Driver,
    /// The connection has ended (closed, or failed).
    pub(super) ended: bool,
    /// A notification (LISTEN) arrived since this was last cleared.
    pub(super) notified: bool,
}

type Driver = Box<
    dyn FnMut(&mut Context<'_>) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>> + Send,
>;

impl Link {
    /// Connects (TLS when the target asks for it).
    pub(super) fn connect(t: &PgTarget, name: &str) -> Result<Link, JournalError> {
        let mut c = tokio_postgres::Config::new();
        c.host(&t.host)
            .port(t.port)
            .user(&t.user)
            .dbname(&t.dbname)
            .application_name("tollgate")
            .connect_timeout(std::time::Duration::from_secs(5))
            // A database gone without a word (a partition, a dead host)
            // is noticed in half a minute, not at TCP's two hours.
            .keepalives_idle(std::time::Duration::from_secs(15))
            .tcp_user_timeout(std::time::Duration::from_secs(30));
        if let Some(p) = &t.password {
            c.password(p);
        }
        let fail = |e: tokio_postgres::Error| JournalError::Postgres {
            name: name.to_string(),
            reason: reason(&e),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| JournalError::Postgres {
                name: name.to_string(),
                reason: format!("cannot start its runtime: {e}"),
            })?;
        let (client, conn): (_, Driver) = match &t.tls {
            Some(tls) => {
                c.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, mut conn) =
                    rt.block_on(c.connect(Rustls(tls.clone()))).map_err(fail)?;
                (client, Box::new(move |cx| conn.poll_message(cx)))
            }
            None => {
                c.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, mut conn) = rt
                    .block_on(c.connect(tokio_postgres::NoTls))
                    .map_err(fail)?;
                (client, Box::new(move |cx| conn.poll_message(cx)))
            }
        };
        Ok(Link {
            rt,
            client: Some(Arc::new(client)),
            conn,
            ended: false,
            notified: false,
        })
    }

    /// Drives the connection until `f` is ready; `f` also sees whether a
    /// notification (LISTEN) arrived and whether the connection ended.
    pub(super) fn wait<T>(
        &mut self,
        mut f: impl FnMut(&mut Context<'_>, bool, bool) -> Poll<T>,
    ) -> T {
        let Link {
            rt,
            conn,
            ended,
            notified,
            ..
        } = self;
        rt.block_on(std::future::poll_fn(|cx| {
            while !*ended {
                match conn(cx) {
                    Poll::Ready(Some(Ok(AsyncMessage::Notification(_)))) => *notified = true,
                    // A notice is for the server's log.
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(_)) | None) => {
                        // Dropping the connection fails every statement
                        // still waiting for an answer (else they would
                        // wait forever).
                        *ended = true;
                        *conn = Box::new(|_| Poll::Ready(None));
                    }
                    Poll::Pending => break,
                }
            }
            f(cx, *notified, *ended)
        }))
    }

    /// Drives the connection until `done` says so or `timeout` passes.
    fn wait_at_most(&mut self, timeout: std::time::Duration, done: fn(bool, bool) -> bool) {
        let mut timer = {
            let _in = self.rt.enter();
            Box::pin(tokio::time::sleep(timeout))
        };
        self.wait(|cx, notified, ended| {
            if done(notified, ended) || timer.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Drives the connection until a notification arrives (`true`), or
    /// `timeout` passes, or the connection ends (`false`).
    pub(super) fn wait_notified(&mut self, timeout: std::time::Duration) -> bool {
        self.wait_at_most(timeout, |notified, ended| notified || ended);
        std::mem::take(&mut self.notified)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Without its client the connection says goodbye (Terminate) and
        // ends: waited for a second at most.
        self.client = None;
        if !self.ended {
            self.wait_at_most(std::time::Duration::from_secs(1), |_, ended| ended);
        }
    }
}

/// Closing a connection blocks on its own runtime, which must not happen
/// on a thread that drives the daemon's: there it closes on a thread of
/// its own.
pub(super) fn close(link: Link) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name("tollgate-pg-close".into())
            .spawn(move || drop(link));
    } else {
        drop(link);
    }
}

/// What went wrong, without the URL's parts the caller names already:
/// the server's message, or the reason the connection failed.
pub(super) fn reason(e: &tokio_postgres::Error) -> String {
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

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
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

//! The HTTP API (`[api]`): sessions, collect sessions, events, drains and
//! nodes over HTTP/1.1 (HTTPS with `api.tls_cert`), for CI systems, chat
//! bots and portals, and for bastions administered from elsewhere. Bearer
//! API tokens with scopes; every error `application/problem+json`; the
//! OpenAPI document made from the route table. It refuses plain HTTP on a
//! non-loopback address (the config check does) and never shows a token
//! it did not just issue.

mod collect;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_rustls::rustls::ServerConfig;

use crate::admin::AdminError;
use crate::journal::JournalError;
use crate::state::Current;

pub use guard::TOKEN_PREFIX;
pub use routes::SCOPES;

/// What every handler reaches.
#[derive(Clone)]
pub struct App {
    pub current: Arc<Current>,
    /// Served over TLS (for the URLs objects carry).
    pub tls: bool,
}

/// `v` as `application/json`.
pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => problem::Problem::new(problem::Kind::Internal, e.to_string()).into_response(),
    }
}

/// `201 Created` with `v` and a `Location` header naming it.
pub fn created<T: serde::Serialize + ?Sized>(location: &str, v: &T) -> Response {
    let mut r = json(StatusCode::CREATED, v);
    if let Ok(l) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

/// An admin call's result inside a journal call: its journal errors fail
/// the call (so the journal undoes it), its refusals are the caller's.
pub fn admin<R>(r: Result<R, AdminError>) -> Result<Result<R, AdminError>, JournalError> {
    match r {
        Err(AdminError::Journal(e)) => Err(e),
        other => Ok(other),
    }
}

/// The router: every route of the table (also under a trailing `/`), each
/// behind its guard, all behind the outer layer.
pub fn router(app: App) -> Router {
    let mut r: Router<App> = Router::new();
    for route in routes::routes() {
        let handler = match route.scope {
            Some(scope) => route.handler.layer(axum::middleware::from_fn_with_state(
                (app.clone(), scope),
                guard::guard,
            )),
            None => route.handler,
        };
        r = r.route(route.path, handler.clone());
        r = r.route(&format!("{}/", route.path), handler);
    }
    r.fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::outer,
        ))
        .with_state(app)
}

/// Binds `[api] listen` and serves the API on each address; returns the
/// tasks (they end with the daemon) and the addresses bound. A reload
/// does not move them: a changed `[api]` applies at the next start.
pub async fn start(
    config: &crate::config::Api,
    tls: Option<Arc<ServerConfig>>,
    current: &Arc<Current>,
) -> Result<Listening, String> {
    let router = router(App {
        current: current.clone(),
        tls: tls.is_some(),
    });
    listen("api", &config.listen, tls, router).await
}

/// The tasks serving HTTP (they end with the daemon), the addresses they
/// listen on, and each listener as a hand-over passes it on (`api` or
/// `metrics`, the configured address, the descriptor).
pub type Listening = (
    Vec<tokio::task::JoinHandle<()>>,
    Vec<std::net::SocketAddr>,
    Vec<(&'static str, std::net::SocketAddr, std::os::fd::RawFd)>,
);

/// Binds each of `addrs` (`table.listen` in messages) and serves `router`
/// there.
async fn listen(
    table: &'static str,
    addrs: &[std::net::SocketAddr],
    tls: Option<Arc<ServerConfig>>,
    router: Router,
) -> Result<Listening, String> {
    let (mut tasks, mut bound, mut fds) = (Vec::new(), Vec::new(), Vec::new());
    for addr in addrs {
        // Passed on by the process this one took over from, or bound here.
        let l = match crate::exec::handover::take_listener(table, addr) {
            Some(l) => tokio::net::TcpListener::from_std(l),
            None => tokio::net::TcpListener::bind(addr).await,
        }
        .map_err(|e| format!("{table}.listen: cannot listen on {addr}: {e}"))?;
        let at = l.local_addr().unwrap_or(*addr);
        fds.push((table, *addr, std::os::fd::AsRawFd::as_raw_fd(&l)));
        tracing::info!(address = %at, tls = tls.is_some(), "HTTP listening for [{table}]");
        tasks.push(tokio::spawn(serve(l, tls.clone(), router.clone())));
        bound.push(at);
    }
    Ok((tasks, bound, fds))
}

/// Longest a client may take to send a request's head, or a TLS handshake.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` (HTTPS with `tls`) until the task is
/// dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(router);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT);
            let served = match acceptor {
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await
                }
                Some(a) => match tokio::time::timeout(HEAD_TIMEOUT, a.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "API: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "API: connection ended with an error");
            }
        });
    }
}

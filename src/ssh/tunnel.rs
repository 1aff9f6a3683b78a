//! Tunnel sessions: a `direct-tcpip` channel naming the session's target
//! (by its name or its configured host, and its port) is connected to that
//! target, which the bastion alone resolves and dials; anything else is
//! refused and recorded. Each forwarded connection is counted both ways
//! and recorded when it closes; the session's end closes them all.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Destination, Target};
use crate::journal::EventKind;
use crate::state::Shared;

/// How long dialing the target may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's `direct-tcpip` request, handed to the session task.
pub struct ForwardRequest {
    pub channel: Channel<Msg>,
    pub host: String,
    pub port: u32,
    pub origin: String,
    pub reply: ChannelOpenHandle,
}

impl std::fmt::Debug for ForwardRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "direct-tcpip to {}:{}", self.host, self.port)
    }
}

/// Why a request is refused, as the journal records it.
pub fn refusal(
    target_name: &str,
    t: &Target,
    host: &str,
    port: u32,
    open: usize,
    limit: Option<u32>,
) -> Option<(ChannelOpenFailure, String)> {
    let named = host.eq_ignore_ascii_case(target_name) || host.eq_ignore_ascii_case(&t.host);
    if !named || port != u32::from(t.port) {
        return Some((
            ChannelOpenFailure::AdministrativelyProhibited,
            format!(
                "only {target_name} ({}:{}) may be reached with this token",
                t.host, t.port
            ),
        ));
    }
    match limit {
        Some(l) if open >= l as usize => Some((
            ChannelOpenFailure::ResourceShortage,
            format!("connection_limit {l} reached: {open} forwarded connections are open"),
        )),
        _ => None,
    }
}

/// The forwarded connections of one tunnel session.
pub struct Tunnel {
    pub name: String,
    pub target: Target,
    pub limit: Option<u32>,
    open: Arc<AtomicUsize>,
    started: u64,
    /// Forwards refused so far (only the first few are recorded).
    refused: u64,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// Counts bytes moved for the session: (from the client, to the client).
pub type OnBytes = Arc<dyn Fn(u64, u64) + Send + Sync>;

impl Tunnel {
    pub fn new(name: String, target: Target, limit: Option<u32>) -> Tunnel {
        Tunnel {
            name,
            target,
            limit,
            open: Arc::new(AtomicUsize::new(0)),
            started: 0,
            refused: 0,
            tasks: Vec::new(),
            stop: watch::channel(false).0,
        }
    }

    /// Connections forwarded so far.
    pub fn count(&self) -> u64 {
        self.started
    }

    /// Forwards refused so far.
    pub fn refusals(&self) -> u64 {
        self.refused
    }

    /// Refuses `f` (recording why) or starts forwarding it.
    pub async fn request(
        &mut self,
        shared: &Arc<Shared>,
        session: &str,
        f: ForwardRequest,
        on_bytes: OnBytes,
    ) {
        let dest = format!("{}:{}", f.host, f.port);
        let open = self.open.load(Ordering::Acquire);
        if let Some((code, reason)) =
            refusal(&self.name, &self.target, &f.host, f.port, open, self.limit)
        {
            f.reply.reject(code).await;
            self.refused += 1;
            if self.refused <= super::session::EVENTS_PER_KIND {
                tracing::info!(session, destination = %dest, %reason, "forward refused");
                record(
                    shared,
                    session,
                    EventKind::TunnelRefused,
                    json!({"destination": dest, "reason": reason}),
                )
                .await;
            }
            return;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        self.started += 1;
        let n = self.started;
        let (shared, session) = (shared.clone(), session.to_string());
        let (open, target) = (self.open.clone(), self.target.clone());
        let mut stop = self.stop.subscribe();
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let dial = tokio::time::timeout(
                DIAL_TIMEOUT,
                tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
            )
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("timed out")));
            let tcp = match dial {
                Ok(t) => t,
                Err(e) => {
                    f.reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    record(&shared, &session, EventKind::TunnelConnectFailed,
                        json!({"connection": n, "destination": format!("{}:{}", target.host, target.port), "error": e.to_string()})).await;
                    open.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            f.reply.accept().await;
            record(&shared, &session, EventKind::TunnelOpened,
                json!({"connection": n, "destination": format!("{}:{}", target.host, target.port), "origin": f.origin})).await;
            let (from_client, to_client) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let (cr, cw) = tokio::io::split(f.channel.into_stream());
            let (tr, tw) = tcp.into_split();
            let both = async {
                let up = on_bytes.clone();
                tokio::join!(
                    pipe(cr, tw, &from_client, move |n| up(n, 0)),
                    pipe(tr, cw, &to_client, move |n| on_bytes(0, n))
                )
            };
            let ended = tokio::select! {
                _ = both => "closed",
                _ = stop.wait_for(|s| *s) => "session_ended",
            };
            record(&shared, &session, EventKind::TunnelClosed, json!({
                "connection": n,
                "bytes_from_client": from_client.load(Ordering::Relaxed),
                "bytes_to_client": to_client.load(Ordering::Relaxed),
                "duration_ms": began.elapsed().as_millis() as u64,
                "reason": ended,
            })).await;
            open.fetch_sub(1, Ordering::AcqRel);
        }));
    }

    /// Closes every forwarded connection at once and waits (briefly) for
    /// each to be recorded.
    pub async fn close_all(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

/// Copies one direction until EOF or an error, then passes the EOF on.
async fn pipe<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    count: &AtomicU64,
    total: impl Fn(u64),
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        total(n as u64);
    }
    let _ = w.shutdown().await;
}

async fn record(shared: &Shared, session: &str, kind: EventKind, detail: serde_json::Value) {
    let id = session.to_string();
    if let Err(e) = shared
        .db
        .call(move |j| j.event(Some(&id), kind, detail))
        .await
    {
        tracing::error!(session, kind = kind.as_str(), error = %e, "could not record event in the journal");
    }
}

/// What a session channel on a tunnel token shows before it closes.
pub fn explanation(name: &str, t: &Target, user: &str, dest: &Destination) -> String {
    let (l, jump) = dest.tunnel_lines(user, name, t);
    let local = Destination::local_port(t);
    let mut s = format!(
        "This token opens a tunnel to {name} ({}:{}) and nothing else: no shell, no commands.\n\
         Keep this running and connect to localhost:{local}:\n\n    {l}\n",
        t.host, t.port
    );
    if let Some(j) = jump {
        s.push_str(&format!(
            "\nor log in to it through the bastion:\n\n    {j}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_tunnel_lines_carry_the_public_known_hosts_file() {
        use crate::config::{Config, Target};
        use std::path::Path;
        let c = Config::parse(
            Path::new("t.toml"),
            "[server]\nlisten = [\"127.0.0.1:2222\"]\npublic_known_hosts = \"/tmp/dev x/known_hosts\"\n",
        )
        .unwrap();
        let d = c.destination();
        let t = Target {
            host: "10.0.0.5".into(),
            port: 22,
            max_duration: None,
            connection_limit: None,
            ssh: true,
        };
        let (l, j) = d.tunnel_lines("ops", "inner", &t);
        assert_eq!(l, "ssh -o UserKnownHostsFile='/tmp/dev x/known_hosts' -N -L 10022:inner:22 -p 2222 ops@127.0.0.1");
        assert_eq!(
            j.unwrap(),
            "ssh -o ProxyCommand=\"ssh -o UserKnownHostsFile='/tmp/dev x/known_hosts' -p 2222 -W %h:%p ops@127.0.0.1\" USER@inner"
        );
        let plain = Config::parse(
            Path::new("t.toml"),
            "[server]\nlisten = [\"127.0.0.1:22\"]\n",
        )
        .unwrap();
        let (_, j) = plain.destination().tunnel_lines("ops", "inner", &t);
        assert_eq!(j.unwrap(), "ssh -J ops@127.0.0.1 USER@inner");
    }

    fn db() -> Target {
        Target {
            host: "10.0.0.5".into(),
            port: 5432,
            max_duration: None,
            connection_limit: None,
            ssh: false,
        }
    }

    #[test]
    fn only_the_target_by_name_or_host_and_its_port() {
        let t = db();
        assert!(refusal("db", &t, "db", 5432, 0, None).is_none());
        assert!(refusal("db", &t, "DB", 5432, 0, None).is_none());
        assert!(refusal("db", &t, "10.0.0.5", 5432, 0, None).is_none());
        let (code, why) = refusal("db", &t, "db", 22, 0, None).unwrap();
        assert_eq!(code, ChannelOpenFailure::AdministrativelyProhibited);
        assert!(why.contains("only db (10.0.0.5:5432)"), "{why}");
        assert!(refusal("db", &t, "10.0.0.6", 5432, 0, None).is_some());
        assert!(refusal("db", &t, "localhost", 5432, 0, None).is_some());
    }

    #[test]
    fn the_connection_limit_counts_open_ones() {
        let t = db();
        assert!(refusal("db", &t, "db", 5432, 1, Some(2)).is_none());
        let (code, why) = refusal("db", &t, "db", 5432, 2, Some(2)).unwrap();
        assert_eq!(code, ChannelOpenFailure::ResourceShortage);
        assert!(why.contains("connection_limit 2 reached"), "{why}");
    }
}

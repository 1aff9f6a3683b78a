//! SSH front end: russh configuration, host keys, and the accept loop with
//! admission control (`crate::admission`: max_startups, per-source limits
//! and penalties), a login grace time that holds in every phase, and the
//! authentication attempt limit.

pub mod auth;
pub mod collecting;
pub mod ctl;
pub mod handler;
mod pumps;
pub mod session;
pub mod tunnel;
pub mod wire;

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, PrivateKey};
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admission::{Ending, NewPenalty, Refusal, Ticket};
use crate::config::Config;
use crate::journal::EventKind;
use crate::state::{Current, Shared};

/// The version string we announce: no library name or version to fingerprint.
pub const SERVER_ID: &str = "SSH-2.0-tollgate";

/// Loads each configured host key, generating an Ed25519 key (mode 0600)
/// where the file does not exist yet.
pub fn load_host_keys(paths: &[std::path::PathBuf]) -> io::Result<Vec<PrivateKey>> {
    paths.iter().map(|p| load_or_generate(p)).collect()
}

fn load_or_generate(path: &Path) -> io::Result<PrivateKey> {
    let ctx =
        |e: &dyn std::fmt::Display| io::Error::other(format!("host key {}: {e}", path.display()));
    if path.exists() {
        return russh::keys::load_secret_key(path, None).map_err(|e| ctx(&e));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ctx(&e))?;
    }
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| ctx(&e))?;
    key.write_openssh_file(path, russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| ctx(&e))?;
    tracing::info!(path = %path.display(), "generated a new Ed25519 host key");
    Ok(key)
}

/// russh settings derived from ours.
pub fn russh_config(config: &Config, keys: Vec<PrivateKey>) -> russh::server::Config {
    russh::server::Config {
        server_id: SshId::Standard(Cow::Borrowed(SERVER_ID)),
        methods: MethodSet::from(&[MethodKind::KeyboardInteractive, MethodKind::Password][..]),
        // Every failure takes the same time, whatever failed.
        auth_rejection_time: Duration::from_secs(1),
        // OpenSSH's first `none` probe is not a failure worth delaying.
        auth_rejection_time_initial: Some(Duration::ZERO),
        // russh counts every rejection, the client's opening `none` probe
        // included; OpenSSH's MaxAuthTries does not count that probe.
        max_auth_attempts: config.server.max_auth_tries as usize + 1,
        keys,
        // Ours: idle_timeout and max_duration decide, not russh's default 10 min.
        inactivity_timeout: None,
        // A client that vanished without closing (a dead network, a
        // suspended laptop) is found by asking it, as sshd's
        // ClientAliveInterval does: its session ends after
        // interval × count_max of silence.
        keepalive_interval: Some(config.server.client_alive_interval).filter(|d| !d.is_zero()),
        keepalive_max: config.server.client_alive_count_max as usize,
        nodelay: true,
        preferred: russh::Preferred {
            cipher: Cow::Owned(
                config
                    .server
                    .ciphers
                    .iter()
                    .filter_map(|c| cipher_name(c))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// russh's name for a cipher that config validation accepted.
fn cipher_name(name: &str) -> Option<russh::cipher::Name> {
    use russh::cipher::*;
    [
        AES_128_GCM,
        AES_256_GCM,
        CHACHA20_POLY1305,
        AES_128_CTR,
        AES_192_CTR,
        AES_256_CTR,
    ]
    .into_iter()
    .find(|n| n.as_ref() == name)
}

/// Accepts on one listener until `stop` flips. Each connection is first
/// put to admission control (before any cryptography: a refused one is
/// told so in one line and closed at once), then runs under the
/// configuration current when it was accepted.
pub async fn accept_loop(
    listener: TcpListener,
    current: Arc<Current>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let shared = current.get();
                    let roll = rand::random_range(0..100u32);
                    match shared.admission.admit(peer.ip(), Instant::now(), roll) {
                        Ok(ticket) => {
                            crate::metrics::get().connections_accepted.inc();
                            let _ = stream.set_nodelay(true);
                            let open = OpenConnection::count();
                            tokio::spawn(async move {
                                connection(stream, peer, shared, ticket).await;
                                drop(open);
                            });
                        }
                        Err(refusal) => refuse(stream, peer, &refusal),
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

/// Connections accepted and not yet closed, whatever their stage (a
/// process that handed over exits only once none is left).
static OPEN_CONNECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many connections this process has open.
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// One open connection, counted until dropped.
struct OpenConnection;

impl OpenConnection {
    fn count() -> OpenConnection {
        OPEN_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection admission control refused: one line to the client (never
/// waiting for it), one log line for fail2ban, and it is closed.
fn refuse(stream: tokio::net::TcpStream, peer: std::net::SocketAddr, r: &Refusal) {
    let _ = stream.try_write(r.line());
    crate::metrics::get()
        .connections_refused
        .get_or_create(&crate::metrics::ReasonLabel { reason: r.kind() })
        .inc();
    let why = match r {
        Refusal::Penalty(source, left) => {
            format!(
                "penalty ({source} refused for {} s more)",
                left.as_secs().max(1)
            )
        }
        Refusal::PerSource(source, n) => {
            format!("per_source_max_startups ({n} unauthenticated from {source})")
        }
        Refusal::MaxStartups(n) => format!("max_startups ({n} unauthenticated)"),
    };
    tracing::info!(
        "Connection from {} port {} refused: {why}",
        peer.ip(),
        peer.port()
    );
}

/// What the handler tells the connection about its authentication: seen
/// by the grace timer and, when the connection ends, by its penalty.
pub struct Progress {
    wire: Arc<wire::Wire>,
    authenticated: AtomicBool,
    /// Token attempts (password or keyboard-interactive answers).
    attempts: AtomicU32,
    /// A collect connection: its refused keys are not failures.
    collecting: AtomicBool,
    ticket: Mutex<Option<Ticket>>,
}

impl Progress {
    /// The connection authenticated: it is no longer pending, and the
    /// grace time no longer applies.
    pub fn authenticated(&self) {
        self.wire.disarm();
        self.authenticated.store(true, Ordering::SeqCst);
        if let Some(t) = self
            .ticket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            t.authenticated();
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::SeqCst)
    }

    /// A token was presented.
    pub fn attempted(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// The user name is a live collect session's identifier.
    pub fn collecting(&self) {
        self.collecting.store(true, Ordering::Relaxed);
    }

    /// The client's identification line, once read.
    pub fn client_id(&self) -> Option<&str> {
        self.wire.client_id()
    }

    /// How the connection ended, for its source's penalty.
    fn ending(&self, grace_exceeded: bool) -> Ending {
        if grace_exceeded {
            Ending::GraceExceeded
        } else if self.is_authenticated() || self.collecting.load(Ordering::Relaxed) {
            Ending::Authenticated
        } else if self.attempts.load(Ordering::Relaxed) > 0 {
            Ending::AuthFailed
        } else {
            Ending::NoAuth
        }
    }
}

/// How much of a connection is read ahead of russh: a handshake packet
/// fits, a bulk data packet goes past it straight to russh's buffer.
const READ_AHEAD: usize = 2048;

async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    ticket: Ticket,
) {
    let russh_config = shared.russh.clone();
    let deadline = tokio::time::Instant::now() + shared.config.server.login_grace_time;
    // russh reads each packet's length, then the rest: a buffer makes most
    // packets one system call instead of two (the bytes it takes ahead are
    // the next packet's, so nothing is read that would not be).
    let stream = tokio::io::BufReader::with_capacity(READ_AHEAD, stream);
    let (stream, wire) = wire::Watched::new(stream);
    let progress = Arc::new(Progress {
        wire: wire.clone(),
        authenticated: AtomicBool::new(false),
        attempts: AtomicU32::new(0),
        collecting: AtomicBool::new(false),
        ticket: Mutex::new(Some(ticket)),
    });
    let handler = handler::Handler::new(shared.clone(), peer, progress.clone());
    // Version exchange, key exchange, authentication and (for an
    // authenticated connection) the session: one future.
    let session = async move {
        russh::server::run_stream(russh_config, stream, handler)
            .await?
            .await
    };
    tokio::pin!(session);
    // The grace time bounds the whole pre-authentication life, whatever
    // the client sends: the cut fails russh's reads and writes even in the
    // middle of a key exchange it would not interrupt.
    let mut grace_exceeded = false;
    let result = tokio::select! {
        r = &mut session => r,
        _ = tokio::time::sleep_until(deadline) => {
            if wire.cut() {
                grace_exceeded = true;
                tracing::info!(
                    "Timeout before authentication for {} port {}: login grace time exceeded",
                    peer.ip(),
                    peer.port()
                );
                // Cut, russh's task ends at its next read or write.
                tokio::time::timeout(Duration::from_secs(2), &mut session)
                    .await
                    .unwrap_or(Ok(()))
            } else {
                session.await
            }
        }
    };
    if let Err(e) = result {
        if !grace_exceeded {
            log_failure(peer, &wire, &e);
        }
    }
    let ticket = progress
        .ticket
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let ending = progress.ending(grace_exceeded);
    crate::metrics::get()
        .connections_closed
        .get_or_create(&crate::metrics::EndingLabel {
            ending: ending.as_str(),
        })
        .inc();
    if let Some(new) = ticket.and_then(|t| t.end(ending)) {
        record_penalty(&shared, new).await;
    }
}

/// A source that became refused: logged, and recorded once in the journal
/// (not for each connection it is refused).
async fn record_penalty(shared: &Shared, p: NewPenalty) {
    tracing::info!(
        source = %p.source,
        seconds = p.seconds,
        "source penalized: {}",
        p.reason
    );
    let detail = serde_json::json!({
        "source": p.source.to_string(), "seconds": p.seconds, "reason": p.reason,
    });
    if let Err(e) = shared
        .db
        .call(move |j| j.event(None, EventKind::SourcePenalized, detail))
        .await
    {
        tracing::error!(error = %e, "could not record source.penalized in the journal");
    }
}

/// Logs why a connection ended with an error. A key exchange that found
/// nothing in common is the operator's business (a client too old, or a
/// cipher list too short) and is logged at info with what the client is
/// and offered; ordinary hang-ups are not logged at all.
fn log_failure(peer: std::net::SocketAddr, wire: &wire::Wire, e: &russh::Error) {
    let version = wire.client_id().unwrap_or("(none sent)");
    match e {
        russh::Error::IO(io) if io.kind() == io::ErrorKind::UnexpectedEof => {}
        russh::Error::Disconnect | russh::Error::HUP => {}
        russh::Error::NoCommonAlgo { kind, ours, theirs } => tracing::info!(
            %peer,
            client = version,
            ours = %ours.join(","),
            theirs = %crate::text::printable(&theirs.join(","), 1024),
            "key exchange failed: no {} in common with the client",
            algorithm_kind(kind)
        ),
        e => tracing::debug!(%peer, client = version, error = %e, "connection ended with an error"),
    }
}

/// What russh's algorithm kind is called in sshd_config's words.
fn algorithm_kind(kind: &russh::AlgorithmKind) -> &'static str {
    use russh::AlgorithmKind as K;
    match kind {
        K::Kex => "key exchange algorithm",
        K::Key => "host key algorithm",
        K::Cipher => "cipher",
        K::Compression => "compression",
        K::Mac => "MAC",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_configurable_cipher_is_known_to_russh() {
        for c in crate::config::CIPHERS {
            assert!(super::cipher_name(c).is_some(), "{c}");
        }
    }
}

//! SSH front end: russh configuration, host keys, and the accept loop with
//! admission control (login grace time, authentication attempt limit).

pub mod auth;
pub mod collecting;
pub mod handler;
pub mod hello;
pub mod session;
pub mod tunnel;

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, PrivateKey};
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::daemon::{Current, Shared};

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
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
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

/// Accepts on one listener until `stop` flips. Each connection runs under
/// the configuration current when it was accepted.
pub async fn accept_loop(
    listener: TcpListener,
    current: Arc<Current>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, peer, current.get()));
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

async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
) {
    let russh_config = shared.russh.clone();
    let grace = shared.config.server.login_grace_time;
    let began = Instant::now();
    let authenticated = Arc::new(AtomicBool::new(false));
    let (stream, client) = hello::Watched::new(stream);
    let handler =
        handler::Handler::new(shared.clone(), peer, authenticated.clone(), client.clone());
    // run_stream waits for the client's version line: that is under the grace time too.
    let running = match tokio::time::timeout(
        grace,
        russh::server::run_stream(russh_config, stream, handler),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            log_failure(peer, &client, &e);
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "login grace time exceeded before the handshake");
            return;
        }
    };
    let handle = running.handle();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(grace.saturating_sub(began.elapsed())).await;
        if !authenticated.load(Ordering::SeqCst) {
            tracing::info!(%peer, "login grace time exceeded");
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "login grace time exceeded".into(),
                    String::new(),
                )
                .await;
        }
    });
    if let Err(e) = running.await {
        log_failure(peer, &client, &e);
    }
    timer.abort();
}

/// Logs why a connection ended with an error. A key exchange that found
/// nothing in common is the operator's business (a client too old, or a
/// cipher list too short) and is logged at info with what the client is
/// and offered; ordinary hang-ups are not logged at all.
fn log_failure(peer: std::net::SocketAddr, client: &hello::ClientId, e: &russh::Error) {
    let version = client.get().unwrap_or("(none sent)");
    match e {
        russh::Error::IO(io) if io.kind() == io::ErrorKind::UnexpectedEof => {}
        russh::Error::Disconnect | russh::Error::HUP => {}
        russh::Error::NoCommonAlgo { kind, ours, theirs } => tracing::info!(
            %peer,
            client = version,
            ours = %ours.join(","),
            theirs = %hello::printable(&theirs.join(","), 1024),
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

//! Entry points for fuzzing every parser of untrusted input that is ours:
//! each takes arbitrary bytes, must never panic or hang, and checks what
//! must hold whatever the input. `fuzz/` runs them under libFuzzer
//! (`cargo +nightly fuzz run NAME`); `tests/fuzz_corpora.rs` replays the
//! committed corpora through the same functions on stable, in the test
//! command. Not part of tollgate's interface.
#![doc(hidden)]

use std::time::{Duration, UNIX_EPOCH};

/// One fuzz target: arbitrary bytes in, a panic when something is wrong.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/NAME.rs` and
/// `fuzz/corpus/NAME/` call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("token", token),
    ("syslog", syslog),
    ("keys", keys),
    ("webhook_response", webhook_response),
    ("preauth", preauth),
];

/// A config file: parsed, never a panic; a problem always has a position
/// inside the text (or none for the whole file).
pub fn config(data: &[u8]) {
    let path = std::path::Path::new("f.toml");
    if let Err(e) = crate::config::Config::from_bytes(path, data.to_vec()) {
        let lines = data.split(|&b| b == b'\n').count() + 1;
        assert!(!e.problems.is_empty(), "an error without a problem");
        for p in &e.problems {
            assert!(p.line <= lines, "{p:?} past the end ({lines} lines)");
            assert!(!p.message.is_empty(), "{p:?} says nothing");
        }
    }
}

/// What a client presents as a token: hashed the same way whatever it is.
pub fn token(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let h = crate::token::hash(&s);
    assert_eq!(h.len(), 64);
    if crate::token::looks_like_token(&s) {
        assert!(s.trim().starts_with(crate::token::PREFIX));
    }
}

/// Session output through the line cutter and into RFC 5424 messages with
/// the output in structured data too: no control character survives, every
/// message stays within its budget, and the framing counts right.
pub fn syslog(data: &[u8]) {
    use crate::drain::lines::{Ansi, LineCutter};
    use crate::drain::syslog::{octet_counted, rfc5424, Origin, Severity, StructuredData};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let budget = 16 + (mode as usize % 64) * 8;
    let ansi = if mode & 1 == 0 {
        Ansi::Strip
    } else {
        Ansi::Keep
    };
    let mut cut = LineCutter::new(budget, ansi);
    let mut lines = Vec::new();
    for chunk in rest.chunks(1 + (mode as usize % 7)) {
        cut.push(chunk, &mut lines);
    }
    cut.flush(&mut lines);
    let origin = Origin {
        hostname: "h".into(),
        app_name: "tollgate".into(),
        procid: "1".into(),
    };
    // Arbitrary bytes as a structured-data value too (a user name's worth:
    // the whole input in every message would make this target crawl).
    let raw = String::from_utf8_lossy(&rest[..rest.len().min(300)]);
    for l in &lines {
        assert!(
            l.text.len() <= budget,
            "{} > {budget}: {:?}",
            l.text.len(),
            l.text
        );
        let params = [("user", raw.as_ref()), ("line", l.text.as_str())];
        let sd = [StructuredData {
            id: "tollgate@32473",
            params: &params,
        }];
        let m = rfc5424(
            &origin,
            10,
            Severity::Info,
            UNIX_EPOCH,
            "output",
            &sd,
            &l.text,
        );
        assert!(!m.chars().any(|c| c.is_control()), "{m:?}");
        let framed = octet_counted(&m);
        let (len, body) = framed.split_at(framed.iter().position(|&b| b == b' ').unwrap());
        let len: usize = std::str::from_utf8(len).unwrap().parse().unwrap();
        assert_eq!(len, body.len() - 1);
    }
}

/// A public key in SSH wire format, as a client offers it: formatted
/// every way `collect` stores keys, or refused cleanly.
pub fn keys(data: &[u8]) {
    use russh::keys::ssh_key::PublicKey;
    if let Ok(key) = PublicKey::from_bytes(data) {
        if let Ok(f) = crate::collect::keys::KeyForms::of(&key) {
            assert!(f.public_key_sha256.starts_with("SHA256:"));
            assert!(f.public_key_md5.starts_with("MD5:"));
            assert!(f
                .public_key_ssh
                .starts_with("---- BEGIN SSH2 PUBLIC KEY ----"));
        }
    }
}

/// What a webhook receiver answers: a status or an error, never a panic.
pub fn webhook_response(data: &[u8]) {
    match crate::webhook::response_status(data) {
        Ok(code) => assert!((200..300).contains(&code)),
        // The error reaches the log and the journal: printable only.
        Err((_, why)) => assert!(!why.chars().any(char::is_control), "{why:?}"),
    }
}

/// The bytes a client sends before authenticating, into a real russh
/// server (our wire wrapper included) over an in-memory pipe: the server
/// ends the connection or waits; it never panics, and it is done within a
/// second of the client going quiet.
pub fn preauth(data: &[u8]) {
    preauth_run(data);
}

/// [`preauth`], returning how many bytes the server sent. The client half
/// stays open (its output read and thrown away) until the server is done:
/// a server whose peer is gone fails on its first write and never reads.
fn preauth_run(data: &[u8]) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = runtime();
    rt.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut total = 0;
            while let Ok(n) = from_server.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        let (server, wire) = crate::ssh::wire::Watched::new(server);
        let running = tokio::spawn(async move {
            if let Ok(r) = russh::server::run_stream(preauth_config(), server, Refuse).await {
                let _ = r.await;
            }
        });
        let _ = to_server.write_all(data).await;
        let _ = to_server.shutdown().await;
        match tokio::time::timeout(Duration::from_secs(1), running).await {
            Ok(r) => {
                if let Err(e) = r {
                    assert!(!e.is_panic(), "the server panicked: {e}");
                }
            }
            Err(_) => {
                // Still waiting after the client went quiet: cut it, as the
                // grace timer would, and it must end.
                wire.cut();
            }
        }
        if let Some(id) = wire.client_id() {
            assert!(id.len() <= 255 && id.chars().all(|c| (' '..='~').contains(&c) || c == '…'));
        }
        drop(to_server);
        tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn preauth_config() -> std::sync::Arc<russh::server::Config> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<russh::server::Config>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let key =
                russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                    .expect("a key");
            let config = crate::config::Config::parse(std::path::Path::new("f.toml"), "")
                .expect("the defaults");
            let mut c = crate::ssh::russh_config(&config, vec![key]);
            c.auth_rejection_time = Duration::ZERO;
            c.auth_rejection_time_initial = Some(Duration::ZERO);
            std::sync::Arc::new(c)
        })
        .clone()
}

/// Refuses every authentication (the pre-authentication parsing is what
/// is fuzzed, not our handler's journal work).
struct Refuse;

impl russh::server::Handler for Refuse {
    type Error = russh::Error;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_preauth_target_reaches_key_exchange() {
        // A version line and a KEXINIT: the server answers with its own
        // version line and KEXINIT (well past the 18-byte version line).
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/preauth/seed-kexinit"
        ))
        .unwrap();
        let sent = super::preauth_run(&data);
        assert!(sent > 500, "the server sent only {sent} bytes");
    }
}

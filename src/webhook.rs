//! Webhooks of collect sessions: what a webhook may say (checked before it
//! is stored), how a delivery is signed and sent (HTTP/1.1 over TCP or
//! TLS, one request per connection), and the daemon's worker that sends
//! due deliveries and records every attempt in the journal. Deliveries are
//! created in the same transaction as the collect step they report
//! (`journal::collect`), so none is lost and a restart resumes them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

use crate::config::Webhooks;
use crate::journal::now_ms;
pub use crate::journal::webhooks::{
    backoff, Attempt, Due, NewWebhook, WebhookSpec, DEFAULT_BACKOFF_MULTIPLIER,
    DEFAULT_INITIAL_BACKOFF, DEFAULT_RETRIES, EVENTS, MAX_BACKOFF, MAX_RETRIES,
};

/// Deliveries in flight at once (never two for the same webhook).
const IN_FLIGHT: usize = 16;

/// The header carrying `sha256=HEX`, the HMAC-SHA256 of the body under the
/// webhook's secret.
pub const SIGNATURE_HEADER: &str = "X-Tollgate-Signature";

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Endpoint {
    /// `http://HOST[:PORT][/PATH]` or `https://…`; no user info, no fragment.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("\"{url}\" {why}");
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("is not an http:// or https:// URL"));
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains spaces or control characters"));
        }
        if url.contains('#') {
            return Err(bad("has a #fragment, which is never sent"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("carries user info; put credentials in a header"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed [IPv6 address"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad("has a port that is not 1-65535"))?,
        };
        Ok(Endpoint {
            tls,
            host,
            port,
            path,
        })
    }

    /// `host:port` to dial (IPv6 in brackets).
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The Host header: the port only when it is not the scheme's default.
    fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

/// Headers tollgate sets itself and a webhook may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
];

/// `Name: value` from `--webhook-header`, checked: an HTTP token as name,
/// not one tollgate sets, and a value without line breaks.
pub fn parse_header(line: &str) -> Result<(String, String), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("\"{line}\" is not NAME: VALUE"))?;
    let name = name.trim();
    let value = value.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("\"{name}\" is not a valid header name"));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-tollgate-") {
        return Err(format!("\"{name}\" is set by tollgate itself"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "the value of \"{name}\" contains control characters"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `sha256=HEX`: HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", crate::token::hex(&mac.finalize().into_bytes()))
}

/// Sends one delivery; never panics, never takes longer than the
/// configured `webhooks.timeout`.
/// One attempt at `d`; `tls` is the client https:// uses when
/// `webhooks.ca_file` is set (else the system bundle's).
pub async fn send(d: &Due, cfg: &Webhooks, tls: Option<&Arc<ClientConfig>>) -> Attempt {
    let started_at = now_ms();
    let clock = Instant::now();
    let result = match tokio::time::timeout(cfg.timeout, request(d, tls)).await {
        Ok(r) => r,
        Err(_) => Err((
            None,
            format!(
                "no response within {}",
                humantime::format_duration(cfg.timeout)
            ),
        )),
    };
    let duration_ms = clock.elapsed().as_millis() as i64;
    match result {
        Ok(code) => Attempt {
            started_at,
            duration_ms,
            status_code: Some(code),
            error: None,
        },
        Err((code, error)) => Attempt {
            started_at,
            duration_ms,
            status_code: code,
            error: Some(error),
        },
    }
}

/// The request and its status line: `Ok(status)` for 2xx, else the status
/// (when one came) and the reason.
async fn request(d: &Due, tls: Option<&Arc<ClientConfig>>) -> Result<u16, (Option<u16>, String)> {
    let ep = Endpoint::parse(&d.url).map_err(|e| (None, e))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tollgate/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nX-Tollgate-Event: {}\r\nX-Tollgate-Delivery: {}\r\nX-Tollgate-Attempt: {}\r\n",
        d.method.to_ascii_uppercase(),
        ep.path,
        ep.host_header(),
        crate::version::current(),
        d.body.len(),
        d.event,
        d.delivery_id,
        d.attempts + 1,
    );
    if let Some(secret) = &d.secret {
        head.push_str(&format!(
            "{SIGNATURE_HEADER}: {}\r\n",
            signature(secret.as_bytes(), d.body.as_bytes())
        ));
    }
    for (name, values) in &d.headers {
        for v in values {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let tcp = tokio::net::TcpStream::connect(ep.addr())
        .await
        .map_err(|e| (None, format!("connect {}: {e}", ep.addr())))?;
    let _ = tcp.set_nodelay(true);
    if ep.tls {
        let tls = match tls {
            Some(c) => c.clone(),
            None => system_tls().map_err(|e| (None, e))?,
        };
        let name = ServerName::try_from(ep.host.clone())
            .map_err(|_| (None, format!("\"{}\" is not a host name", ep.host)))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| (None, format!("TLS handshake: {e}")))?;
        exchange(stream, &head, &d.body).await
    } else {
        exchange(tcp, &head, &d.body).await
    }
}

/// A client trusting the system CA bundle, loaded once.
fn system_tls() -> Result<Arc<tokio_rustls::rustls::ClientConfig>, String> {
    static SYSTEM: std::sync::OnceLock<Result<Arc<tokio_rustls::rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let ca = std::path::Path::new(crate::drain::tls::SYSTEM_CA_FILE);
            crate::drain::tls::client_config(ca, None).map_err(|e| {
                format!("the system CA bundle is unusable ({e:?}); set webhooks.ca_file")
            })
        })
        .clone()
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &str,
    body: &str,
) -> Result<u16, (Option<u16>, String)> {
    let io = |e: std::io::Error| (None, format!("sending: {e}"));
    s.write_all(head.as_bytes()).await.map_err(io)?;
    s.write_all(body.as_bytes()).await.map_err(io)?;
    s.flush().await.map_err(io)?;
    // The status line is all that matters; read up to its end.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    while !buf.contains(&b'\n') {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| (None, format!("reading the response: {e}")))?;
        if n == 0 {
            return Err((None, "connection closed before a response".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            break;
        }
    }
    response_status(&buf)
}

/// What a receiver's first bytes (up to its status line) come to: its 2xx
/// status, or the status and error otherwise. Any bytes at all.
pub fn response_status(buf: &[u8]) -> Result<u16, (Option<u16>, String)> {
    let line = String::from_utf8_lossy(buf);
    let line = line.lines().next().unwrap_or("");
    let code = status_code(line).ok_or_else(|| {
        (
            None,
            format!(
                "not an HTTP response: {:?}",
                crate::text::escape_controls(&line.chars().take(80).collect::<String>())
            ),
        )
    })?;
    if (200..300).contains(&code) {
        Ok(code)
    } else {
        Err((Some(code), format!("HTTP status {code}")))
    }
}

/// `HTTP/1.1 204 No Content` → 204.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts
        .next()?
        .parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))
}

/// The daemon's delivery worker: sends what is due (at once when told a
/// collect step created deliveries, otherwise when the next retry falls
/// due), one delivery per webhook at a time, and records each attempt.
pub async fn worker(current: Arc<crate::state::Current>) {
    let busy = Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    loop {
        // A reload's new [webhooks] settings apply from the next attempt.
        let shared = current.get();
        let now = now_ms();
        // Claimed for twice an attempt's longest, and a margin.
        let lease =
            (shared.config.webhooks.timeout * 2 + Duration::from_secs(5)).as_millis() as i64;
        let due = shared
            .db
            .call(move |j| j.webhooks_due(now, 256, lease))
            .await;
        let (due, next) = match due {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "webhooks: cannot read due deliveries");
                (Vec::new(), Some(now + 5_000))
            }
        };
        let mut skipped = Vec::new();
        for d in due {
            {
                let mut b = busy.lock().unwrap_or_else(|e| e.into_inner());
                if b.len() >= IN_FLIGHT || !b.insert(d.webhook_id.clone()) {
                    skipped.push(d.delivery_id.clone());
                    continue;
                }
            }
            let sh = shared.clone();
            let busy = busy.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let attempt = send(&d, &sh.config.webhooks, sh.webhook_tls.as_ref()).await;
                let id = d.delivery_id.clone();
                let a = attempt.clone();
                let recorded = sh.db.call(move |j| j.webhook_attempted(&id, &a)).await;
                let result = match &recorded {
                    // Another attempt follows.
                    Ok("pending") => "retrying",
                    Ok(outcome) => outcome,
                    Err(_) => "unrecorded",
                };
                crate::metrics::get()
                    .webhook_deliveries
                    .get_or_create(&crate::metrics::ResultLabel { result })
                    .inc();
                match recorded {
                    Ok(outcome) => {
                        tracing::info!(delivery = %d.delivery_id, webhook = %d.webhook_id,
                        event = %d.event, attempt = d.attempts + 1, status = ?attempt.status_code,
                        error = attempt.error.as_deref().unwrap_or(""), outcome, "webhook attempt")
                    }
                    Err(e) => tracing::error!(delivery = %d.delivery_id, error = %e,
                        "webhooks: cannot record an attempt (it is made again)"),
                }
                busy.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&d.webhook_id);
                let _ = done.send(());
            });
        }
        if !skipped.is_empty() {
            // Not sent now: free for the next round (or another node).
            if let Err(e) = shared.db.call(move |j| j.webhooks_release(&skipped)).await {
                tracing::warn!(error = %e, "webhooks: cannot give back claimed deliveries");
            }
        }
        // On a shared journal other nodes create deliveries too, and one
        // dead with deliveries claimed leaves them to whoever looks next.
        let longest = if shared.config.server.journal.file().is_some() {
            3_600_000
        } else {
            2_000
        };
        let wait = next.map_or(Duration::from_millis(longest as u64), |at| {
            Duration::from_millis((at - now_ms()).clamp(0, longest) as u64)
        });
        tokio::select! {
            _ = shared.webhooks.notified() => {}
            _ = done_rx.recv() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(20))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_defaults_and_bad_ones_say_why() {
        let e = Endpoint::parse("http://127.0.0.1:8080/hook?a=1").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.path.as_str()),
            (false, "127.0.0.1", 8080, "/hook?a=1")
        );
        assert_eq!(e.host_header(), "127.0.0.1:8080");
        let e = Endpoint::parse("https://hooks.example.com").unwrap();
        assert_eq!((e.port, e.path.as_str()), (443, "/"));
        assert_eq!(e.host_header(), "hooks.example.com");
        let e = Endpoint::parse("http://[::1]:9/x").unwrap();
        assert_eq!((e.host.as_str(), e.addr()), ("::1", "[::1]:9".to_string()));
        let e = Endpoint::parse("http://h?q").unwrap();
        assert_eq!(e.path, "/?q");
        for (bad, why) in [
            ("ftp://x/", "not an http"),
            ("http://", "no host"),
            ("http://u:p@h/", "user info"),
            ("http://h:0/", "port"),
            ("http://h:99999/", "port"),
            ("http://h/a b", "spaces"),
            ("http://h/#x", "fragment"),
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(
            parse_header("Authorization: Bearer x").unwrap(),
            ("Authorization".into(), "Bearer x".into())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("Bad Name: v").is_err());
        assert!(parse_header("Content-Length: 3")
            .unwrap_err()
            .contains("tollgate"));
        assert!(parse_header("X-Tollgate-Event: x").is_err());
        assert!(parse_header("X-Ok: a\rb").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(10, 2.0, 1), Duration::from_secs(10));
        assert_eq!(backoff(10, 2.0, 2), Duration::from_secs(20));
        assert_eq!(backoff(10, 2.0, 4), Duration::from_secs(80));
        assert_eq!(backoff(3, 1.0, 9), Duration::from_secs(3));
        assert_eq!(backoff(10, 2.0, 40), MAX_BACKOFF);
    }

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(status_code("HTTP/1.0 500"), Some(500));
        assert_eq!(status_code("SSH-2.0-x"), None);
    }
}

//! Webhooks of collect sessions, delivered by the real daemon to a small
//! HTTP receiver in the test: the chosen events only, method and headers as
//! configured, signed with HMAC-SHA256, retried with backoff, every attempt
//! in the journal, and pending deliveries resumed after a daemon crash.
mod common;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    /// Lower-case names.
    headers: HashMap<String, Vec<String>>,
    body: String,
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// Answers each request with `status(path, earlier requests of the same
/// delivery)` and keeps every request.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(status: fn(&str, usize) -> u16) -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), status)
    }

    fn on(l: TcpListener, status: fn(&str, usize) -> u16) -> Receiver {
        Self::serve(l, None, status)
    }

    /// HTTPS with the certificate and key given.
    fn tls(cert: &Path, key: &Path, status: fn(&str, usize) -> u16) -> Receiver {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(tollgate::drain::tls::provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self::serve(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Some(Arc::new(config)),
            status,
        )
    }

    fn serve(
        l: TcpListener,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
        status: fn(&str, usize) -> u16,
    ) -> Receiver {
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::<Request>::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(tcp) = conn else { continue };
                match &tls {
                    None => answer(tcp, &g, status),
                    Some(cfg) => {
                        let Ok(sc) = tokio_rustls::rustls::ServerConnection::new(cfg.clone())
                        else {
                            continue;
                        };
                        answer(tokio_rustls::rustls::StreamOwned::new(sc, tcp), &g, status);
                    }
                }
            }
        });
        Receiver { port, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self, path: &str) -> Vec<Request> {
        let all = self.got.lock().unwrap();
        all.iter().filter(|r| r.path == path).cloned().collect()
    }

    fn wait(&self, path: &str, n: usize, limit: Duration) -> Vec<Request> {
        let ok = eventually(limit, || self.requests(path).len() >= n);
        let got = self.requests(path);
        assert!(ok.is_some(), "{path}: {} of {n} requests", got.len());
        got
    }
}

/// Reads one request (a failed TLS handshake reads nothing), keeps it, and
/// answers with the status the test chose.
fn answer<S: Read + Write>(mut c: S, g: &Mutex<Vec<Request>>, status: fn(&str, usize) -> u16) {
    let Some(req) = read_request(&mut c) else {
        return;
    };
    let earlier = {
        let mut all = g.lock().unwrap();
        let id = req.header("x-tollgate-delivery").map(str::to_string);
        let n = all
            .iter()
            .filter(|o| o.header("x-tollgate-delivery").map(str::to_string) == id)
            .count();
        all.push(req.clone());
        n
    };
    let code = status(&req.path, earlier);
    let _ = write!(
        c,
        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    let _ = c.flush();
}

fn read_request<S: Read>(c: &mut S) -> Option<Request> {
    let mut r = std::io::BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers
            .entry(n.trim().to_ascii_lowercase())
            .or_default()
            .push(v.trim().to_string());
    }
    let len: usize = headers["content-length"][0].parse().unwrap();
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8(body).unwrap(),
        at: Instant::now(),
    })
}

fn hmac_hex(secret: &str, body: &str) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn deliveries_are_filtered_signed_retried_and_journaled() {
    let r = Receiver::start(|path, earlier| match path {
        // Two failures (one 500, one 503) before each delivery succeeds.
        "/flaky" if earlier == 0 => 500,
        "/flaky" if earlier == 1 => 503,
        _ => 204,
    });
    let s = Server::start("webhooks");
    let d = TempDir::new("webhook-keys");
    let ed = keygen(d.path(), "ed", &["-t", "ed25519"]);
    let ec = keygen(d.path(), "ec", &["-t", "ecdsa"]);
    let secret_file = d.path().join("secret");
    std::fs::write(&secret_file, "s3cret-for-hmac\n").unwrap();
    let all_url = r.url("/all?team=ops");
    let created = s.cli_json(&[
        "collect",
        "create",
        "--multi-key",
        "--identifier",
        "hooked",
        "--webhook",
        &all_url,
        "--webhook-header",
        "Authorization: Bearer abc",
        "--webhook-header",
        "X-Team: ops",
        "--webhook-header",
        "X-Team: infra",
        "--webhook-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    let id = created["id"].as_str().unwrap().to_string();
    let hooks = created["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{created:#}");
    assert_eq!(hooks[0]["method"], "post");
    assert_eq!(hooks[0]["has_secret"], true);
    assert_eq!(hooks[0]["retries"], 3);
    assert_eq!(hooks[0]["initial_backoff"], 10);
    assert_eq!(hooks[0]["backoff_multiplier"], 2.0);
    assert_eq!(
        hooks[0]["headers"]["X-Team"],
        serde_json::json!(["ops", "infra"])
    );
    assert!(!created.to_string().contains("s3cret"), "secret shown");
    let updated = s.cli_json(&[
        "collect",
        "update",
        &id,
        "--add-webhook",
        &r.url("/flaky"),
        "--webhook-method",
        "put",
        "--webhook-event",
        "key_collected",
        "--webhook-retries",
        "3",
        "--webhook-initial-backoff",
        "1",
        "--webhook-backoff-multiplier",
        "2",
    ]);
    assert_eq!(updated["webhooks"].as_array().unwrap().len(), 2);
    let flaky_id = updated["webhooks"][1]["id"].as_str().unwrap().to_string();

    let out = collect_connect(&s, "hooked", &[&ed, &ec]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Every event, in order, to the first webhook.
    let all = r.wait("/all?team=ops", 4, Duration::from_secs(10));
    let kinds: Vec<&str> = all
        .iter()
        .map(|q| q.header("x-tollgate-event").unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "new_connection",
            "key_collected",
            "key_collected",
            "status_changed"
        ]
    );
    let mut ids = std::collections::HashSet::new();
    for q in &all {
        let b = q.json();
        assert_eq!(q.method, "POST");
        assert_eq!(q.header("content-type"), Some("application/json"));
        assert_eq!(q.header("authorization"), Some("Bearer abc"));
        assert_eq!(q.headers["x-team"], ["ops", "infra"]);
        assert_eq!(
            q.header("x-tollgate-signature").unwrap(),
            format!("sha256={}", hmac_hex("s3cret-for-hmac", &q.body)),
            "signature over the exact body"
        );
        assert_eq!(b["event"], q.header("x-tollgate-event").unwrap());
        assert_eq!(b["id"], q.header("x-tollgate-delivery").unwrap());
        assert!(
            ids.insert(b["id"].as_str().unwrap().to_string()),
            "ids unique"
        );
        assert_eq!(b["collect_session"]["id"], id.as_str());
        assert!(!q.body.contains("s3cret"), "secret in a body");
    }
    let conn_id = all[0].json()["connection"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(conn_id.starts_with("con_"));
    let fps: Vec<String> = all[1..3]
        .iter()
        .map(|q| {
            let b = q.json();
            assert_eq!(b["connection"]["id"], conn_id.as_str());
            b["key"]["public_key_sha256"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        fps,
        [
            fingerprint(&ed.with_extension("pub"), "sha256"),
            fingerprint(&ec.with_extension("pub"), "sha256")
        ]
    );
    let last = all[3].json();
    assert_eq!(last["collect_session"]["status"], "completed");
    assert_eq!(last["previous_status"], "pending");

    // Only key_collected to the second, PUT, unsigned, each delivered on its
    // third attempt after waiting 1 s and then 2 s, with the same id and body.
    let flaky = r.wait("/flaky", 6, Duration::from_secs(20));
    let mut by_id: HashMap<String, Vec<&Request>> = HashMap::new();
    for q in &flaky {
        assert_eq!(q.method, "PUT");
        assert_eq!(q.header("x-tollgate-event"), Some("key_collected"));
        assert!(q.header("x-tollgate-signature").is_none());
        by_id
            .entry(q.header("x-tollgate-delivery").unwrap().to_string())
            .or_default()
            .push(q);
    }
    assert_eq!(by_id.len(), 2, "{flaky:#?}");
    for tries in by_id.values() {
        assert_eq!(tries.len(), 3);
        assert!(tries.iter().all(|t| t.body == tries[0].body));
        let attempts: Vec<&str> = tries
            .iter()
            .map(|t| t.header("x-tollgate-attempt").unwrap())
            .collect();
        assert_eq!(attempts, ["1", "2", "3"]);
        let gap1 = tries[1].at - tries[0].at;
        let gap2 = tries[2].at - tries[1].at;
        assert!(gap1 >= Duration::from_millis(900), "{gap1:?}");
        assert!(gap2 >= Duration::from_millis(1900), "{gap2:?}");
    }

    // The journal has every delivery and attempt.
    let ok = eventually(Duration::from_secs(5), || {
        let ds = s.cli_json(&["collect", "deliveries", &id]);
        ds.as_array().unwrap().len() == 6
            && ds
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["status"] == "delivered")
    });
    let ds = s.cli_json(&["collect", "deliveries", &id]);
    assert!(ok.is_some(), "{ds:#}");
    for d in ds.as_array().unwrap() {
        let codes: Vec<u64> = d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status_code"].as_u64().unwrap())
            .collect();
        if d["webhook_id"] == flaky_id.as_str() {
            assert_eq!(codes, [500, 503, 204], "{d:#}");
            assert_eq!(d["attempts"][0]["error"], "HTTP status 500");
        } else {
            assert_eq!(codes, [204], "{d:#}");
        }
    }
    assert_eq!(s.events_of(None, "collect.webhook_delivered").len(), 6);
    let text_out = text(&s.cli(&["collect", "deliveries", &id]).stdout);
    assert!(text_out.contains("HTTP status 503"), "{text_out}");
}

#[test]
fn pending_deliveries_survive_a_crash_and_spent_retries_fail_loudly() {
    // Nothing listens on `late` until after the crash.
    let late = TcpListener::bind("127.0.0.1:0").unwrap();
    let late_port = late.local_addr().unwrap().port();
    drop(late);
    let broken = Receiver::start(|_, _| 500);
    let mut s = Server::start("webhooks-restart");
    let d = TempDir::new("webhook-restart-keys");
    let k = keygen(d.path(), "ed", &["-t", "ed25519"]);
    let created = s.cli_json(&[
        "collect",
        "create",
        "--webhook",
        &format!("http://127.0.0.1:{late_port}/late"),
        "--webhook-event",
        "status_changed",
        "--webhook-retries",
        "10",
        "--webhook-initial-backoff",
        "1",
        "--webhook-backoff-multiplier",
        "1",
    ]);
    let id = created["id"].as_str().unwrap().to_string();
    let ident = created["connection_identifier"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s.cli(&[
        "collect",
        "update",
        &id,
        "--add-webhook",
        &broken.url("/broken"),
        "--webhook-event",
        "new_connection",
        "--webhook-retries",
        "1",
        "--webhook-initial-backoff",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = collect_connect(&s, &ident, &[&k]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The late one fails to connect and keeps trying.
    let late_delivery = |s: &Server| -> Value {
        let ds = s.cli_json(&["collect", "deliveries", &id]);
        ds.as_array()
            .unwrap()
            .iter()
            .find(|d| d["event"] == "status_changed")
            .cloned()
            .unwrap()
    };
    let ok = eventually(Duration::from_secs(10), || {
        late_delivery(&s)["attempts"].as_array().unwrap().len() >= 2
    });
    let before = late_delivery(&s);
    assert!(ok.is_some(), "{before:#}");
    assert_eq!(before["status"], "pending");
    assert!(
        before["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{before:#}"
    );

    // The broken one gives up after 1 + 1 attempts, loudly.
    let ok = eventually(Duration::from_secs(10), || {
        !s.events_of(None, "collect.webhook_failed").is_empty()
    });
    assert!(ok.is_some());
    let failed = &s.events_of(None, "collect.webhook_failed")[0];
    assert_eq!(failed["detail"]["attempts"], 2, "{failed:#}");
    assert_eq!(failed["detail"]["status_code"], 500);
    assert_eq!(broken.requests("/broken").len(), 2);

    // Crash, then the receiver appears, then the daemon comes back.
    s.child.as_mut().unwrap().kill().unwrap();
    s.child.take().unwrap().wait().unwrap();
    let r = Receiver::on(
        TcpListener::bind(("127.0.0.1", late_port)).unwrap(),
        |_, _| 200,
    );
    s.spawn();
    let got = r.wait("/late", 1, Duration::from_secs(10));
    assert_eq!(got[0].json()["id"], before["id"]);
    assert_eq!(got[0].json()["collect_session"]["status"], "completed");
    let ok = eventually(Duration::from_secs(5), || {
        late_delivery(&s)["status"] == "delivered"
    });
    let after = late_delivery(&s);
    assert!(ok.is_some(), "{after:#}");
    let attempts = after["attempts"].as_array().unwrap();
    assert!(attempts.len() > 2, "{after:#}");
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
    assert_eq!(
        got[0].header("x-tollgate-attempt").unwrap(),
        attempts.len().to_string()
    );
    // Nothing is sent twice after it succeeded, nor after it gave up.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(r.requests("/late").len(), 1);
    assert_eq!(broken.requests("/broken").len(), 2);
}

#[test]
fn webhook_options_are_checked_with_precise_errors() {
    let s = Server::start("webhooks-usage");
    for (args, says) in [
        (
            vec!["--webhook", "ftp://x/"],
            "--webhook: \"ftp://x/\" is not an http",
        ),
        (
            vec!["--webhook", "http://h/", "--webhook-method", "get"],
            "--webhook-method: \"get\" is not post, put or patch",
        ),
        (
            vec!["--webhook", "http://h/", "--webhook-event", "keys"],
            "--webhook-event: \"keys\" is not one of",
        ),
        (
            vec!["--webhook", "http://h/", "--webhook-initial-backoff", "0"],
            "--webhook-initial-backoff: must be at least 1",
        ),
        (
            vec![
                "--webhook",
                "http://h/",
                "--webhook-backoff-multiplier",
                "0.5",
            ],
            "--webhook-backoff-multiplier: 0.5 is not between 1 and 100",
        ),
        (
            vec!["--webhook", "http://h/", "--webhook-header", "Host: evil"],
            "--webhook-header: \"Host\" is set by tollgate itself",
        ),
        (
            vec![
                "--webhook",
                "http://h/",
                "--webhook-secret-env",
                "TG_NO_SUCH_VAR",
            ],
            "--webhook-secret-env: $TG_NO_SUCH_VAR is not set",
        ),
        (vec!["--webhook-retries", "2"], "need a webhook"),
    ] {
        let mut a = vec!["collect", "create"];
        a.extend_from_slice(&args);
        let out = s.cli(&a);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = s.cli(&["collect", "create", "--identifier", "plain"]);
    assert!(out.status.success());
    let out = s.cli(&["collect", "update", "plain", "--remove-webhook", "whk_nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--remove-webhook: \"whk_nope\" is not a webhook"),
        "{}",
        text(&out.stderr)
    );
    assert!(s.cli_json(&["collect", "list"]).as_array().unwrap().len() == 1);
}

#[test]
fn https_receivers_are_verified_against_webhooks_ca_file() {
    let d = TempDir::new("webhook-tls");
    let pki = Pki::make(d.path());
    let r = Receiver::tls(&pki.server_cert, &pki.server_key, |_, _| 200);
    let s = Server::start_with(
        "webhooks-tls",
        Opts {
            tail: format!(
                "[webhooks]\nca_file = \"{}\"\ntimeout = \"5s\"\n",
                pki.ca.display()
            ),
            ..Opts::default()
        },
    );
    let k = keygen(d.path(), "ed", &["-t", "ed25519"]);
    let created = s.cli_json(&[
        "collect",
        "create",
        "--webhook",
        &format!("https://127.0.0.1:{}/tls", r.port),
        "--webhook",
        // The certificate names 127.0.0.1 only: this one must not verify.
        &format!("https://localhost:{}/wrong-name", r.port),
        "--webhook-event",
        "new_connection",
        "--webhook-retries",
        "0",
    ]);
    let id = created["id"].as_str().unwrap().to_string();
    let ident = created["connection_identifier"]
        .as_str()
        .unwrap()
        .to_string();
    let out = collect_connect(&s, &ident, &[&k]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = r.wait("/tls", 1, Duration::from_secs(10));
    assert_eq!(got[0].json()["event"], "new_connection");
    let ok = eventually(Duration::from_secs(10), || {
        let ds = s.cli_json(&["collect", "deliveries", &id]);
        ds.as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] != "pending")
    });
    let ds = s.cli_json(&["collect", "deliveries", &id]);
    assert!(ok.is_some(), "{ds:#}");
    let wrong = ds
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["status"] == "failed")
        .unwrap_or_else(|| panic!("{ds:#}"));
    let err = wrong["attempts"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("TLS handshake") && err.contains("not valid for name"),
        "{err}"
    );
    assert!(r.requests("/wrong-name").is_empty());
    // A CA file that is not one is refused with its position.
    std::fs::write(d.path().join("bad.toml"), format!(
        "[server]\nlisten = [\"127.0.0.1:1\"]\nhost_keys = [\"{0}/hk\"]\njournal = \"{0}/j.db\"\n[webhooks]\nca_file = \"{0}/bad.toml\"\n",
        d.path().display()
    )).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "--config",
            d.path().join("bad.toml").to_str().unwrap(),
            "config",
            "check",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.toml:6:11: webhooks.ca_file: "),
        "{}",
        text(&out.stderr)
    );
}

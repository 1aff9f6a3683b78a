//! `/metrics` against a running daemon: the exposition passes Prometheus's
//! own `promtool check metrics`, and its counters move exactly as a
//! scripted run says they should: logins that fail and one that works
//! (the real OpenSSH client), a connection refused at accept, a command
//! whose output fills a dead drain's queue, a live drain whose collector
//! counts what it got, a collect connection whose webhook is delivered,
//! and HTTP API calls by route and status. No label carries a user name,
//! token, session id or client address.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The person's login name: must never show in the metrics.
const PERSON: &str = "metricsperson";

/// One scrape: every sample by its series as printed.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }
}

fn scrape(port: u16) -> Scrape {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "-D", "/dev/stderr"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let headers = text(&out.stderr).to_ascii_lowercase();
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let body = text(&out.stdout);
    let mut samples = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        samples.insert(series.to_string(), value.parse::<f64>().unwrap());
    }
    Scrape {
        text: body,
        samples,
    }
}

/// `promtool check metrics` (Debian's prometheus package) on a scrape:
/// no error and no lint finding.
fn promtool(s: &Scrape) {
    assert!(s.samples.len() > 50, "too little to check:\n{}", s.text);
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    p.stdin
        .take()
        .unwrap()
        .write_all(s.text.as_bytes())
        .unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        s.text
    );
}

/// An HTTP receiver for webhooks: answers 204 to each request, counts them.
fn receiver() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The head, then the body its Content-Length announces.
            while let Ok(k @ 1..) = c.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..k]);
                let t = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = t.find("\r\n\r\n") {
                    let len = t[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = c.write_all(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, n)
}

/// curl METHOD on the API with the header file (if any): the status.
fn api(port: u16, path: &str, header: Option<&std::path::Path>) -> u16 {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    if let Some(h) = header {
        c.arg("-H").arg(format!("@{}", h.display()));
    }
    let out = c
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    text(&out.stdout).parse().unwrap()
}

#[test]
fn counters_move_as_logins_refusals_sessions_drains_webhooks_and_api_calls_say() {
    let (mport, aport) = (free_port(), free_port());
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Nothing listens there: the drain stays down and its queue fills.
    let dead = free_port();
    let (hook_port, hooks) = receiver();
    let mut s = Server::configure(
        "metrics",
        Opts {
            // One unauthenticated connection per source: the second idle
            // one from 127.0.0.2 is refused at accept.
            server_extra: "per_source_max_startups = 1\n".into(),
            tail: format!(
                r#"[api]
listen = ["127.0.0.1:{aport}"]

[metrics]
listen = ["127.0.0.1:{mport}"]

[[drains]]
name = "live"
url = "udp://{live}"
send = ["events"]

[[drains]]
name = "dead"
url = "tcp://127.0.0.1:{dead}"
send = ["output"]
max_message_bytes = 1024
queue_bytes = 2048
"#,
                live = collector.local_addr().unwrap()
            ),
            ..Opts::default()
        },
    );
    s.spawn();
    // The daemon's own start (`daemon.started`) reaches the live drain
    // first: counted before the baseline, and not among what follows.
    let started = eventually(Duration::from_secs(10), || {
        scrape(mport).get("tollgate_drain_delivered_total{drain=\"live\"}") >= 1.0
    });
    assert!(
        started.is_some(),
        "daemon.started never reached the live drain"
    );
    let mut buf = [0u8; 65536];
    while collector.recv(&mut buf).is_ok() {}
    let before = scrape(mport);
    promtool(&before);

    // Two wrong tokens, each on a connection of its own (one prompt).
    for _ in 0..2 {
        let out = s.ssh_run(PERSON, "tg_not-a-token", &[], "true");
        assert!(!out.status.success());
    }
    // One that works, whose command prints 64 KiB without a newline.
    let (id, token) = s.issue(PERSON, &[]);
    let out = s.ssh_run(
        PERSON,
        &token,
        &[],
        "head -c 65536 /dev/zero | tr '\\0' x; echo",
    );
    assert_eq!(out.stdout.len(), 65537, "{}", text(&out.stderr));
    s.wait_state(&id, "terminated", Duration::from_secs(10));
    // Two idle connections from 127.0.0.2: one held, one refused.
    let fates = hostile(&["idle", "127.0.0.2", &s.port.to_string(), "2", "1"]);
    let refused = fates
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["refused"].as_bool().unwrap())
        .count();
    assert_eq!(refused, 1, "{fates}");
    // A collect connection proving one key; its webhooks are delivered.
    let keys = TempDir::new("metrics-keys");
    let key = keygen(keys.path(), "id_ed25519", &["-t", "ed25519"]);
    let created = s.cli_json(&[
        "collect",
        "create",
        "--identifier",
        "metrics-ci",
        "--webhook",
        &format!("http://127.0.0.1:{hook_port}/hook"),
    ]);
    let collect_id = created["id"].as_str().unwrap().to_string();
    let out = collect_connect(&s, "metrics-ci", &[&key]);
    assert!(
        text(&out.stdout).contains("1 public key recorded"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // API calls: one listed, one without a token, one to no route.
    let header = s.dir.path().join("api-header");
    let v = s.cli_json(&[
        "api-token",
        "create",
        "--name",
        "metrics",
        "--scope",
        "sessions:read",
    ]);
    std::fs::write(
        &header,
        format!("Authorization: Bearer {}\n", v["token"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(api(aport, "/api/v1/sessions", Some(&header)), 200);
    assert_eq!(
        api(aport, &format!("/api/v1/sessions/{id}"), Some(&header)),
        200
    );
    assert_eq!(api(aport, "/api/v1/sessions", None), 401);
    assert_eq!(api(aport, "/api/v1/no/such/thing", Some(&header)), 404);

    // Everything settles: webhook deliveries done, the live drain's
    // collector has all it will get, the connections closed.
    let settled = eventually(Duration::from_secs(20), || {
        let ds = s.cli_json(&["collect", "deliveries", &collect_id]);
        let deliveries = ds.as_array().cloned().unwrap_or_default();
        let m = scrape(mport);
        !deliveries.is_empty()
            && deliveries.iter().all(|d| d["status"] == "delivered")
            && m.get("tollgate_ssh_connections_unauthenticated") == 0.0
            && m.get("tollgate_drain_queued{drain=\"live\"}") == 0.0
    });
    assert!(settled.is_some(), "did not settle");
    let mut datagrams = 0;
    while collector.recv(&mut buf).is_ok() {
        datagrams += 1;
    }
    let after = scrape(mport);
    promtool(&after);
    let d = |series: &str| after.get(series) - before.get(series);
    let show = |what: &str| format!("{what}\n{}", after.text);

    // Connections: 2 failed logins, 1 login, 1 idle, 1 collect admitted;
    // 1 refused; each closed as far as it got.
    assert_eq!(
        d("tollgate_ssh_connections_accepted_total"),
        5.0,
        "{}",
        show("accepted")
    );
    assert_eq!(
        d("tollgate_ssh_connections_refused_total{reason=\"per_source_max_startups\"}"),
        1.0
    );
    for (ending, n) in [
        ("auth_failed", 2.0),
        ("authenticated", 2.0),
        ("no_auth", 1.0),
    ] {
        assert_eq!(
            d(&format!(
                "tollgate_ssh_connections_closed_total{{ending=\"{ending}\"}}"
            )),
            n,
            "{}",
            show(ending)
        );
    }
    // Authentication: OpenSSH's `none` probe on each connection, then its
    // answer at the keyboard-interactive prompt and, that refused, one
    // password (NumberOfPasswordPrompts=1 for each method).
    let auth = |m: &str, r: &str| {
        d(&format!(
            "tollgate_ssh_auth_total{{method=\"{m}\",result=\"{r}\"}}"
        ))
    };
    assert_eq!(auth("none", "failure"), 4.0, "{}", show("none"));
    assert_eq!(
        auth("keyboard-interactive", "failure"),
        2.0,
        "{}",
        show("kbd")
    );
    assert_eq!(auth("password", "failure"), 2.0, "{}", show("password"));
    assert_eq!(
        auth("keyboard-interactive", "success"),
        2.0,
        "{}",
        show("kbd")
    );
    assert_eq!(auth("publickey", "collected"), 1.0, "{}", show("publickey"));
    for (result, n) in [("refused", 4.0), ("granted", 1.0)] {
        assert_eq!(
            d(&format!(
                "tollgate_token_redemption_seconds_count{{result=\"{result}\"}}"
            )),
            n
        );
    }
    // Sessions.
    let command = "kind=\"command\",profile=\"console\"";
    assert_eq!(
        d(&format!("tollgate_sessions_started_total{{{command}}}")),
        1.0
    );
    assert_eq!(
        d(&format!(
            "tollgate_sessions_ended_total{{{command},reason=\"exited\"}}"
        )),
        1.0,
        "{}",
        show("ended")
    );
    assert_eq!(
        after.get(&format!("tollgate_sessions_active{{{command}}}")),
        0.0
    );
    assert_eq!(d("tollgate_session_start_seconds_count"), 1.0);
    let collect = "kind=\"collect\",profile=\"\"";
    assert_eq!(
        d(&format!("tollgate_sessions_started_total{{{collect}}}")),
        1.0
    );
    assert_eq!(d("tollgate_collect_keys_total"), 1.0);
    let out_bytes = d("tollgate_session_bytes_total{kind=\"command\",direction=\"out\"}");
    assert!(
        (65537.0..70000.0).contains(&out_bytes),
        "{out_bytes}: {}",
        show("bytes")
    );
    // Drains: the live one delivered exactly what its collector got; the
    // dead one never connected and dropped most of 64 KiB in 1 KiB pieces.
    assert_eq!(
        d("tollgate_drain_delivered_total{drain=\"live\"}"),
        datagrams as f64,
        "{}",
        show("live")
    );
    assert!(datagrams >= 6, "{datagrams} events");
    assert_eq!(after.get("tollgate_drain_connected{drain=\"dead\"}"), 0.0);
    assert_eq!(
        after.get("tollgate_drain_delivered_total{drain=\"dead\"}"),
        0.0
    );
    assert!(after.get("tollgate_drain_failures_total{drain=\"dead\"}") >= 1.0);
    let dropped = after.get("tollgate_drain_dropped_total{drain=\"dead\"}");
    let queued = after.get("tollgate_drain_queued{drain=\"dead\"}");
    assert!(dropped >= 55.0 && queued <= 2.0, "{}", show("dead"));
    assert!(after.get("tollgate_drain_dropped_bytes_total{drain=\"dead\"}") >= 55.0 * 1000.0);
    // Webhooks: each request the receiver answered counted as delivered.
    let got = hooks.load(Ordering::SeqCst) as f64;
    assert!(got >= 1.0);
    assert_eq!(
        d("tollgate_webhook_deliveries_total{result=\"delivered\"}"),
        got,
        "{}",
        show("webhooks")
    );
    // The API, by route template and status.
    let api_n = |m: &str, route: &str, status: u16| {
        d(&format!(
            "tollgate_api_requests_total{{method=\"{m}\",route=\"{route}\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(
        api_n("GET", "/api/v1/sessions", 200),
        1.0,
        "{}",
        show("api")
    );
    assert_eq!(
        api_n("GET", "/api/v1/sessions/{id}", 200),
        1.0,
        "{}",
        show("api")
    );
    assert_eq!(api_n("GET", "/api/v1/sessions", 401), 1.0);
    assert_eq!(api_n("GET", "unmatched", 404), 1.0);
    assert!(d("tollgate_journal_commit_seconds_count") >= 5.0);
    assert_eq!(after.get("tollgate_journal_reachable"), 1.0);

    // Nothing that names a person, a token, a session or a client.
    for secret in [PERSON, &token, &id, "metrics-ci", "127.0.0."] {
        assert!(
            !after.text.contains(secret),
            "{secret} in the metrics:\n{}",
            after.text
        );
    }
    s.stop();
}

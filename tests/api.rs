//! The HTTP API against a running daemon, driven by curl: the collect flow
//! with a real OpenSSH client proving keys, a session issued over HTTP,
//! redeemed by ssh and canceled over HTTP while its events stream, scopes
//! and revocation, and problem+json for every error.
mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server with the API on a free loopback port, a UDP drain the test
/// reads, and a curl that talks to it.
struct Api {
    s: Server,
    base: String,
    drain: std::net::UdpSocket,
}

/// One answer: status, headers (lower-case names) and the body as JSON.
struct Reply {
    status: u16,
    headers: String,
    body: Value,
    raw: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// A problem+json with this status, naming this request.
    fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}", self.raw);
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{}",
            self.raw
        );
        let b = &self.body;
        assert!(
            b["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:tollgate:problem:"),
            "{b}"
        );
        assert_eq!(b["status"], status, "{b}");
        assert!(!b["title"].as_str().unwrap().is_empty(), "{b}");
        assert!(!b["detail"].as_str().unwrap().is_empty(), "{b}");
        assert_eq!(
            b["request_id"].as_str(),
            self.header("x-request-id").as_deref(),
            "{b}"
        );
        b
    }
}

impl Api {
    fn start(tag: &str) -> Api {
        let drain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        drain
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let api_port = free_port();
        let o = Opts {
            command: "/bin/sleep 30".into(),
            tail: format!(
                "[api]\nlisten = [\"127.0.0.1:{api_port}\"]\n\n[[drains]]\nname = \"siem\"\nurl = \"udp://{}\"\n",
                drain.local_addr().unwrap()
            ),
            ..Opts::default()
        };
        let mut s = Server::configure(tag, o);
        s.spawn();
        let base = format!("http://127.0.0.1:{api_port}");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
            assert!(
                Instant::now() < until,
                "the API did not listen: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Api { s, base, drain }
    }

    /// `api-token create` with these scopes: the token.
    fn token(&self, name: &str, scopes: &[&str]) -> String {
        let mut a = vec!["api-token", "create", "--name", name];
        for s in scopes {
            a.extend(["--scope", s]);
        }
        let v = self.s.cli_json(&a);
        v["token"].as_str().unwrap().to_string()
    }

    /// curl METHOD PATH, with the token from a header file (never in argv).
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        self.raw(
            method,
            path,
            token,
            body.map(|b| ("application/json", b.to_string())),
        )
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> Reply {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = self.s.dir.path();
        let (hfile, bfile, dfile) = (
            dir.join(format!("h{n}")),
            dir.join(format!("b{n}")),
            dir.join(format!("d{n}")),
        );
        let mut c = Command::new("curl");
        c.args(["-s", "-S", "-X", method, "-o"])
            .arg(&bfile)
            .arg("-D")
            .arg(&hfile)
            .args(["-w", "%{http_code}"]);
        if let Some(t) = token {
            let auth = dir.join(format!("a{n}"));
            std::fs::write(&auth, format!("Authorization: Bearer {t}\n")).unwrap();
            c.arg("-H").arg(format!("@{}", auth.display()));
        }
        if let Some((ct, b)) = body {
            std::fs::write(&dfile, b).unwrap();
            c.args(["-H", &format!("Content-Type: {ct}")])
                .arg("--data-binary")
                .arg(format!("@{}", dfile.display()));
        }
        let out = c.arg(format!("{}{path}", self.base)).output().unwrap();
        assert!(out.status.success(), "curl: {}", text(&out.stderr));
        let raw = std::fs::read_to_string(&bfile).unwrap_or_default();
        Reply {
            status: text(&out.stdout).trim().parse().unwrap(),
            headers: std::fs::read_to_string(&hfile).unwrap(),
            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
        }
    }

    /// Everything the drain received so far.
    fn drained(&self) -> String {
        let mut all = String::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = self.drain.recv(&mut buf) {
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            all.push('\n');
        }
        all
    }
}

#[test]
fn the_collect_flow_runs_over_http_with_keys_proven_by_openssh() {
    let api = Api::start("api-collect");
    let t = api.token("portal", &["collect:write"]);
    let d = TempDir::new("api-collect-keys");
    let keys = [
        keygen(d.path(), "ed", &["-t", "ed25519"]),
        keygen(d.path(), "p256", &["-t", "ecdsa", "-b", "256"]),
    ];
    let c = api.call(
        "POST",
        "/api/v1/ssh/collect/sessions/",
        Some(&t),
        Some(&json!({
            "connection_identifier": "inc-4711",
            "multi_key": true,
            "external_id": "INC-4711",
            "ssh_message": "Collecting keys for INC-4711",
            "timeout": "1h",
            "webhooks": [{"url": "http://127.0.0.1:9/hook", "events": ["key_collected"], "retries": 0}],
        })),
    );
    assert_eq!(c.status, 201, "{}", c.raw);
    let id = c.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.header("location").as_deref(),
        Some(format!("/api/v1/ssh/collect/sessions/{id}").as_str())
    );
    assert!(c.body["$schema"]
        .as_str()
        .unwrap()
        .ends_with("/api/v1/schemas/CollectSession"));
    assert!(c.body["ssh"]
        .as_str()
        .unwrap()
        .ends_with("inc-4711@127.0.0.1"));
    assert_eq!(c.body["webhooks"][0]["has_secret"], false);
    // The schema it names is served, and the object is what it says.
    let path = c.body["$schema"]
        .as_str()
        .unwrap()
        .split_once("127.0.0.1")
        .unwrap()
        .1;
    let path = &path[path.find('/').unwrap()..];
    let schema = api.call("GET", path, None, None);
    assert_eq!(schema.status, 200, "{}", schema.raw);
    for f in schema.body["required"].as_array().unwrap() {
        assert!(c.body.get(f.as_str().unwrap()).is_some(), "{f} missing");
    }

    // A real client proves both keys.
    let refs: Vec<&Path> = keys.iter().map(|k| k.as_path()).collect();
    let out = collect_connect(&api.s, "inc-4711", &refs);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = api.call(
        "GET",
        &format!("/api/v1/ssh/collect/sessions/{id}/keys"),
        Some(&t),
        None,
    );
    assert_eq!(got.status, 200, "{}", got.raw);
    let got = got.body.as_array().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    for (k, path) in got.iter().zip(&keys) {
        let p = path.with_extension("pub");
        assert_eq!(k["public_key_sha256"], fingerprint(&p, "sha256"));
        assert_eq!(k["public_key_md5"], fingerprint(&p, "md5"));
    }
    // The same object as the CLI's, but for `$schema`.
    let one = api.call(
        "GET",
        &format!("/api/v1/ssh/collect/sessions/{id}/"),
        Some(&t),
        None,
    );
    let mut cli = api.s.cli_json(&["collect", "show", &id]);
    cli["$schema"] = one.body["$schema"].clone();
    assert_eq!(one.body, cli);
    // By identifier too, and in the list with its filter.
    let by_ident = api.call(
        "GET",
        "/api/v1/ssh/collect/sessions/inc-4711",
        Some(&t),
        None,
    );
    assert_eq!(by_ident.body["id"], id.as_str());
    let listed = api.call(
        "GET",
        "/api/v1/ssh/collect/sessions?external_id=INC-4711&limit=5",
        Some(&t),
        None,
    );
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        listed.raw
    );
    assert_eq!(listed.body["next_cursor"], Value::Null);

    // PATCH changes the fields given and nothing else; null clears.
    let before = one.body.clone();
    let p = api.call(
        "PATCH",
        &format!("/api/v1/ssh/collect/sessions/{id}"),
        Some(&t),
        Some(&json!({"external_id": "INC-4712"})),
    );
    assert_eq!(p.status, 200, "{}", p.raw);
    for (k, v) in before.as_object().unwrap() {
        if k != "external_id" && k != "updated_at" {
            assert_eq!(&p.body[k], v, "PATCH changed {k}");
        }
    }
    assert_eq!(p.body["external_id"], "INC-4712");
    let p = api.call(
        "PATCH",
        &format!("/api/v1/ssh/collect/sessions/{id}"),
        Some(&t),
        Some(&json!({"ssh_message": null, "expired_at": null})),
    );
    assert_eq!(p.body["ssh_message"], Value::Null, "{}", p.raw);
    assert_eq!(p.body["expired_at"], Value::Null, "{}", p.raw);
    assert_eq!(p.body["external_id"], "INC-4712");
    let bad = api.call(
        "PATCH",
        &format!("/api/v1/ssh/collect/sessions/{id}"),
        Some(&t),
        Some(&json!({"multi_key": false, "colour": "red"})),
    );
    assert_eq!(bad.problem(400)["field"], "colour");
    let bad = api.call(
        "POST",
        "/api/v1/ssh/collect/sessions",
        Some(&t),
        Some(&json!({"timeout": 60, "expired_at": "2030-01-01T00:00:00Z"})),
    );
    assert_eq!(bad.problem(422)["field"], "timeout");
    let bad = api.call(
        "POST",
        "/api/v1/ssh/collect/sessions",
        Some(&t),
        Some(&json!({"webhooks": [{"url": "http://x/", "method": "get"}]})),
    );
    assert_eq!(bad.problem(422)["field"], "webhooks[0].method");
    let taken = api.call(
        "POST",
        "/api/v1/ssh/collect/sessions",
        Some(&t),
        Some(&json!({"connection_identifier": "inc-4711"})),
    );
    assert_eq!(taken.problem(409)["field"], "connection_identifier");

    let del = api.call(
        "DELETE",
        &format!("/api/v1/ssh/collect/sessions/{id}"),
        Some(&t),
        None,
    );
    assert_eq!(del.status, 200, "{}", del.raw);
    assert_eq!(del.body, json!({"id": id, "deleted": true}));
    let gone = api.call(
        "GET",
        &format!("/api/v1/ssh/collect/sessions/{id}"),
        Some(&t),
        None,
    );
    gone.problem(404);
    // Every change is an event naming the token, never its secret.
    let calls = api.s.events_of(None, "api.request");
    let token_id = &t[4..24];
    assert!(calls.len() >= 4, "{calls:?}");
    assert!(calls.iter().all(|e| e["detail"]["api_token"] == token_id));
    assert!(calls
        .iter()
        .any(|e| e["detail"]["method"] == "DELETE" && e["detail"]["status"] == 200));
}

/// Reads an SSE stream from curl until `until` says it has enough.
fn stream_until(
    lines: &mut impl std::io::BufRead,
    mut until: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut line = String::new();
    while !until(&events) {
        line.clear();
        if lines.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            events.push(serde_json::from_str(data.trim()).unwrap());
        }
    }
    events
}

#[test]
fn a_session_issued_over_http_is_redeemed_by_ssh_and_canceled_over_http_within_a_second() {
    let api = Api::start("api-session");
    let t = api.token("ci", &["sessions:write", "events:read"]);
    // Events stream while it happens, from the newest event before the
    // test's first (the stream may connect after the issue call).
    let now = api.call("GET", "/api/v1/events?limit=1000", Some(&t), None);
    let from = now.body["next_after"].as_i64().unwrap();
    let hdr = api.s.dir.path().join("stream-auth");
    std::fs::write(&hdr, format!("Authorization: Bearer {t}\n")).unwrap();
    let mut stream = Command::new("curl")
        .args(["-s", "-N", "-H"])
        .arg(format!("@{}", hdr.display()))
        .arg(format!("{}/api/v1/events/stream?after={from}", api.base))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = buffered(stream.stdout.take().unwrap());
    let issued = api.call(
        "POST",
        "/api/v1/sessions",
        Some(&t),
        Some(
            &json!({"profile": "console", "login_user": "ops", "ttl": 600, "reason": "deploy 42"}),
        ),
    );
    assert_eq!(issued.status, 201, "{}", issued.raw);
    let id = issued.body["id"].as_str().unwrap().to_string();
    let token = issued.body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("tg_"));
    assert_eq!(
        issued.body["ssh"],
        format!("ssh -p {} ops@127.0.0.1", api.s.port)
    );
    let mut client = api
        .s
        .ssh_opts("ops", &token, &[])
        .arg("sleep 30")
        .spawn()
        .unwrap();
    api.s.wait_state(&id, "active", Duration::from_secs(15));
    let started = eventually(Duration::from_secs(10), || {
        !api.s.events_of(Some(&id), "session.started").is_empty()
    });
    assert!(started.is_some(), "the command did not start");
    let got = api.call("GET", &format!("/api/v1/sessions/{id}"), Some(&t), None);
    assert_eq!(got.body["state"], "active", "{}", got.raw);
    assert_eq!(got.body["reason"], "deploy 42");
    let kinds: Vec<&str> = got.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"session.redeemed"), "{kinds:?}");
    // The same object as `session show`.
    assert_eq!(got.body, api.s.cli_json(&["session", "show", &id]));

    let asked = Instant::now();
    let c = api.call(
        "POST",
        &format!("/api/v1/sessions/{id}/cancel"),
        Some(&t),
        None,
    );
    assert_eq!(c.status, 200, "{}", c.raw);
    assert_eq!(c.body["result"], "requested");
    let ended = eventually(Duration::from_secs(5), || {
        client.try_wait().unwrap().is_some()
    });
    let took = asked.elapsed();
    assert!(ended.is_some(), "the client still runs");
    println!("canceled over HTTP: client gone after {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    let again = api.call(
        "POST",
        &format!("/api/v1/sessions/{id}/cancel"),
        Some(&t),
        None,
    );
    assert_eq!(again.body["result"], "already_over", "{}", again.raw);
    assert_eq!(again.body["end_reason"], "canceled");

    let events = stream_until(&mut lines, |ev| {
        ev.iter()
            .any(|e| e["session_id"] == id.as_str() && e["kind"] == "session.terminated")
    });
    let _ = stream.kill();
    let _ = stream.wait();
    let mine: Vec<&str> = events
        .iter()
        .filter(|e| e["session_id"] == id.as_str())
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "session.issued",
        "session.redeemed",
        "session.started",
        "session.cancel_requested",
        "session.terminated",
    ] {
        assert!(mine.contains(&k), "{k} not streamed: {mine:?}");
    }
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Paged reads agree with the stream.
    let page = api.call(
        "GET",
        &format!("/api/v1/events?session={id}&limit=2"),
        Some(&t),
        None,
    );
    assert_eq!(
        page.body["items"].as_array().unwrap().len(),
        2,
        "{}",
        page.raw
    );
    let next = page.body["next_after"].as_i64().unwrap();
    let rest = api.call(
        "GET",
        &format!("/api/v1/events?session={id}&after={next}"),
        Some(&t),
        None,
    );
    assert_eq!(
        2 + rest.body["items"].as_array().unwrap().len(),
        mine.len(),
        "{}",
        rest.raw
    );
    let _ = client.wait();
}

#[test]
fn scopes_refuse_revoked_tokens_fail_and_no_secret_is_ever_written() {
    let api = Api::start("api-scopes");
    let reader = api.token("dashboard", &["sessions:read", "drains:read"]);
    let writer = api.token("bot", &["sessions:write"]);
    let issue = json!({"profile": "console", "login_user": "ops"});
    let r = api.call("POST", "/api/v1/sessions", Some(&reader), Some(&issue));
    let p = r.problem(403);
    assert_eq!(p["type"], "urn:tollgate:problem:forbidden");
    assert!(
        p["detail"].as_str().unwrap().contains("sessions:write"),
        "{p}"
    );
    let listed = api.call("GET", "/api/v1/sessions?state=pending", Some(&reader), None);
    assert_eq!(listed.status, 200, "{}", listed.raw);
    let issued = api.call("POST", "/api/v1/sessions", Some(&writer), Some(&issue));
    assert_eq!(issued.status, 201, "{}", issued.raw);
    let session_token = issued.body["token"].as_str().unwrap().to_string();
    // write grants read of the same resource, not of another.
    let mine = api.call("GET", "/api/v1/sessions", Some(&writer), None);
    assert_eq!(mine.status, 200);
    api.call("GET", "/api/v1/drains", Some(&writer), None)
        .problem(403);
    let drains = api.call("GET", "/api/v1/drains", Some(&reader), None);
    assert_eq!(drains.body[0]["name"], "siem", "{}", drains.raw);

    // Revoked: 401, like an unknown or malformed token.
    let id = &reader[4..24];
    let out = api.s.cli(&["api-token", "revoke", id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p = api.call("GET", "/api/v1/sessions", Some(&reader), None);
    assert_eq!(p.problem(401)["type"], "urn:tollgate:problem:unauthorized");
    assert!(p.header("www-authenticate").unwrap().starts_with("Bearer"));
    let forged = format!("{}x", &writer[..writer.len() - 1]);
    api.call("GET", "/api/v1/sessions", Some(&forged), None)
        .problem(401);
    api.call("GET", "/api/v1/sessions", Some("tg_nonsense"), None)
        .problem(401);
    api.call("GET", "/api/v1/sessions", None, None).problem(401);
    let listed = api.s.cli_json(&["api-token", "list"]);
    assert!(
        listed[1]["revoked_at"].is_string() || listed[0]["revoked_at"].is_string(),
        "{listed}"
    );

    // Neither API token nor the session token is in the journal, the
    // log or what the drain received.
    std::thread::sleep(Duration::from_millis(1500));
    let drained = api.drained();
    assert!(
        drained.contains("api.request"),
        "the drain got no API events: {drained}"
    );
    let journal = std::fs::read(api.s.dir.path().join("journal.db")).unwrap();
    let journal = String::from_utf8_lossy(&journal);
    let log = api.s.log_text();
    for secret in [&reader[25..], &writer[25..], &session_token[3..]] {
        for (what, text) in [("journal", &*journal), ("log", &*log), ("drain", &*drained)] {
            assert!(!text.contains(secret), "a secret is in the {what}");
        }
    }
}

#[test]
fn every_error_is_problem_json_with_a_stable_type() {
    let api = Api::start("api-problems");
    let t = api.token("ops", &["sessions:write", "collect:write"]);
    let json_body = |b: &str| Some(("application/json", b.to_string()));
    let cases: Vec<(Reply, u16, &str)> = vec![
        (
            api.call("GET", "/api/v1/nothing-here", Some(&t), None),
            404,
            "not-found",
        ),
        (
            api.call(
                "GET",
                "/api/v1/sessions/ses_0000000000000000",
                Some(&t),
                None,
            ),
            404,
            "not-found",
        ),
        (
            api.call("PUT", "/api/v1/sessions", Some(&t), None),
            405,
            "method-not-allowed",
        ),
        (
            api.raw(
                "POST",
                "/api/v1/sessions",
                Some(&t),
                Some(("text/plain", "hi".into())),
            ),
            415,
            "unsupported-media-type",
        ),
        (
            api.raw("POST", "/api/v1/sessions", Some(&t), json_body("{not json")),
            400,
            "bad-request",
        ),
        (
            api.raw(
                "POST",
                "/api/v1/sessions",
                Some(&t),
                json_body(&"x".repeat(70_000)),
            ),
            413,
            "body-too-large",
        ),
        (
            api.call(
                "POST",
                "/api/v1/sessions",
                Some(&t),
                Some(&json!({"profile": "nope", "login_user": "ops"})),
            ),
            422,
            "invalid-field",
        ),
        (
            api.call(
                "POST",
                "/api/v1/sessions",
                Some(&t),
                Some(&json!({"profile": "console", "login_user": "a@b"})),
            ),
            422,
            "invalid-field",
        ),
        (
            api.call("GET", "/api/v1/sessions?state=sleeping", Some(&t), None),
            422,
            "invalid-field",
        ),
        (
            api.call("GET", "/api/v1/sessions?limit=many", Some(&t), None),
            400,
            "bad-request",
        ),
        (
            api.call("GET", "/api/v1/sessions?colour=red", Some(&t), None),
            400,
            "unknown-field",
        ),
    ];
    for (r, status, kind) in &cases {
        let p = r.problem(*status);
        assert_eq!(p["type"], format!("urn:tollgate:problem:{kind}"), "{p}");
        assert!(
            p["instance"].as_str().unwrap().starts_with("/api/v1/"),
            "{p}"
        );
    }
    assert_eq!(cases[6].0.body["field"], "profile");
    assert_eq!(cases[7].0.body["field"], "login_user");
    assert!(cases[2].0.header("allow").is_some());
}

#[test]
fn the_openapi_document_lists_every_route_with_its_schemas() {
    let api = Api::start("api-openapi");
    let doc = api.call("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    let d = &doc.body;
    assert_eq!(d["openapi"], "3.1.0");
    let paths = d["paths"].as_object().unwrap();
    for p in [
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/sessions/{id}/cancel",
        "/api/v1/ssh/collect/sessions",
        "/api/v1/ssh/collect/sessions/{session}",
        "/api/v1/events",
        "/api/v1/events/stream",
        "/api/v1/drains",
        "/api/v1/nodes",
    ] {
        assert!(paths.contains_key(p), "{p} not in the document");
    }
    // Every $ref resolves.
    let text = doc.raw.clone();
    let schemas = d["components"]["schemas"].as_object().unwrap();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(
            schemas.contains_key(name),
            "{name} is referenced, not defined"
        );
    }
    // And a route the table serves answers as documented.
    let t = api.token("ro", &["nodes:read"]);
    let n = api.call("GET", "/api/v1/nodes", Some(&t), None);
    assert_eq!(n.status, 200, "{}", n.raw);
    assert_eq!(n.body[0]["state"], "running", "{}", n.raw);
}

/// A tool from the API checkers' virtualenv (scripts/test.sh makes it).
fn checker(name: &str) -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/api-venv/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh, which installs it",
        p.display()
    );
    p
}

#[test]
fn the_document_validates_as_openapi_3_1_and_schemathesis_finds_nothing_wrong() {
    let api = Api::start("api-schemathesis");
    let doc = api.call("GET", "/api/v1/openapi.json", None, None);
    let file = api.s.dir.path().join("openapi.json");
    std::fs::write(&file, &doc.raw).unwrap();
    let v = Command::new(checker("openapi-spec-validator"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
    // The validator refuses a broken document (the check can fail).
    let mut broken = doc.body.clone();
    broken["paths"]["/api/v1/nodes"]["get"]["responses"] = json!(5);
    std::fs::write(&file, broken.to_string()).unwrap();
    let v = Command::new(checker("openapi-spec-validator"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(!v.status.success(), "a broken document passed");

    let t = api.token(
        "fuzz",
        &[
            "sessions:write",
            "collect:write",
            "events:read",
            "drains:read",
            "nodes:read",
        ],
    );
    let hdr = format!("Authorization: Bearer {t}");
    // Every check but "a request the schema allows is accepted": the
    // config decides which profiles and targets exist, not the schema.
    let out = Command::new(checker("schemathesis"))
        .args(["run", &format!("{}/api/v1/openapi.json", api.base)])
        .args(["-H", &hdr, "--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--exclude-path", "/api/v1/events/stream"])
        .args(["-n", "200", "--seed", "1729", "--no-color"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .env("SCHEMATHESIS_HOOKS", "")
        // Its reports and cache go to the server's directory, not ours.
        .current_dir(api.s.dir.path())
        .output()
        .unwrap();
    let report = text(&out.stdout);
    println!("{report}");
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    let generated: u64 = report
        .lines()
        .find_map(|l| l.trim().split(" generated").next()?.trim().parse().ok())
        .unwrap_or(0);
    // A few hundred requests per operation at least.
    assert!(
        generated >= 15 * 200,
        "only {generated} requests:\n{report}"
    );
    assert!(
        report.contains(&format!("{generated} generated, {generated} passed")),
        "{report}"
    );
}

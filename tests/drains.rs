//! Drains against a real rsyslog on loopback (TCP, UDP, TLS with and
//! without a client certificate, a unix datagram socket): what the person
//! saw, line by line, and the session's events, checked with a strict
//! RFC 5424 parser; a collector that goes away and comes back; one that
//! never reads; `drain status` in each situation.
mod common;
use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use syslog_rfc5424::SyslogMessage;

/// A throwaway CA, a collector certificate for 127.0.0.1 signed by it, a
/// client certificate signed by it, and an unrelated second CA.
/// rsyslogd in the foreground, storing every raw message it receives.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    received: PathBuf,
    tcp: u16,
    udp: u16,
    tls: u16,
    mtls: u16,
    unix: PathBuf,
    pki: Pki,
}

impl Rsyslog {
    fn start(dir: &Path) -> Rsyslog {
        let pki = Pki::make(dir);
        let (tcp, udp, tls, mtls) = (free_port(), free_port(), free_port(), free_port());
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let received = dir.join("received.log");
        let unix = dir.join("log.sock");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="64k" net.enableDNS="off"
       parser.escapeControlCharactersOnReceive="off"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="0")
module(load="imudp")
module(load="imuxsock" SysSock.Use="off")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="drain") {{
  action(type="omfile" file="{received}" template="raw")
}}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="drain")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="drain")
input(type="imuxsock" Socket="{unix}" ruleset="drain" UseSpecialParser="off")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="drain"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls}" ruleset="drain"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"#,
                work = work.display(),
                received = received.display(),
                unix = unix.display(),
                ca = pki.ca.display(),
                cert = pki.server_cert.display(),
                key = pki.server_key.display(),
            ),
        )
        .unwrap();
        let mut r = Rsyslog {
            child: None,
            dir: dir.to_path_buf(),
            conf,
            received,
            tcp,
            udp,
            tls,
            mtls,
            unix,
            pki,
        };
        r.run();
        r
    }

    /// Starts (or restarts) rsyslogd with the same ports and files.
    fn run(&mut self) {
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.err")).unwrap())
            .spawn()
            .expect("rsyslogd (scripts/test.sh installs rsyslog)");
        self.child = Some(child);
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.tcp)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.tls)).is_ok()
                && self.unix.exists()
        });
        assert!(
            up.is_some(),
            "rsyslogd did not start: {}",
            std::fs::read_to_string(self.dir.join("rsyslogd.err")).unwrap_or_default()
        );
    }

    /// Stops rsyslogd (SIGTERM) and waits until it is gone.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.received)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Every stored message carrying structured data `sd_id`, parsed
    /// strictly; a message that does not parse fails the test.
    fn messages(&self, sd_id: &str) -> Vec<SyslogMessage> {
        self.lines()
            .iter()
            .filter(|l| l.contains(&format!("[{sd_id} ")))
            .map(|l| {
                syslog_rfc5424::parse_message(l)
                    .unwrap_or_else(|e| panic!("not valid RFC 5424 ({e}): {l}"))
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sd<'a>(m: &'a SyslogMessage, sd_id: &str, key: &str) -> Option<&'a str> {
    m.sd.find_tuple(sd_id, key).map(|s| s.as_str())
}

/// `output` messages of `session` under `sd_id`, in arrival order.
fn outputs<'a>(msgs: &'a [SyslogMessage], session: &str, sd_id: &str) -> Vec<&'a SyslogMessage> {
    msgs.iter()
        .filter(|m| {
            m.msgid.as_deref() == Some("output") && sd(m, sd_id, "session") == Some(session)
        })
        .collect()
}

fn drain_toml(name: &str, url: &str, extra: &str) -> String {
    format!("[[drains]]\nname = \"{name}\"\nurl = \"{url}\"\nsd_id = \"{name}@32473\"\n{extra}\n")
}

/// `drain status --output json`, by drain name.
fn drain_status(s: &Server) -> std::collections::HashMap<String, serde_json::Value> {
    s.cli_json(&["drain", "status"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

/// An OpenSSH client on a PTY session whose output the test reads as it
/// comes and whose input it types when it chooses.
struct Typist {
    child: Child,
    stdin: ChildStdin,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Typist {
    fn start(s: &Server, token: &str, remote: &str) -> Typist {
        let mut c = s.ssh(s_user(), token);
        c.args(["-tt", remote])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Typist { child, stdin, seen }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str) {
        let ok = eventually(Duration::from_secs(10), || self.seen().contains(needle));
        assert!(ok.is_some(), "never saw {needle:?}; saw {:?}", self.seen());
    }

    fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
    }

    fn finish(self) -> (Option<i32>, String) {
        let Typist {
            mut child,
            stdin,
            seen,
        } = self;
        drop(stdin);
        let st = child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(st.code().is_some(), "ssh died: {st} {err}");
        let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        (st.code(), seen)
    }
}

fn s_user() -> &'static str {
    "ops"
}

/// Acceptance 1, 2, 3 and 7 (connected): one scripted PTY session, teed to
/// TCP, UDP, TLS, mTLS and a unix socket; a drain whose collector does not
/// verify gets nothing, says why, and records an event.
#[test]
fn a_pty_session_reaches_every_transport_line_by_line_and_parses_strictly() {
    let d = TempDir::new("drains");
    let r = Rsyslog::start(d.path());
    let p = &r.pki;
    let tail = [
        drain_toml("tgtcp", &format!("tcp://127.0.0.1:{}", r.tcp), ""),
        drain_toml("tgudp", &format!("udp://127.0.0.1:{}", r.udp), ""),
        drain_toml(
            "tgtls",
            &format!("tls://127.0.0.1:{}", r.tls),
            &format!("ca_file = \"{}\"", p.ca.display()),
        ),
        drain_toml(
            "tgmtls",
            &format!("tls://127.0.0.1:{}", r.mtls),
            &format!(
                "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nsend = [\"output\"]",
                p.ca.display(),
                p.client_cert.display(),
                p.client_key.display()
            ),
        ),
        drain_toml("tgunix", &format!("unix://{}", r.unix.display()), ""),
        drain_toml(
            "tgbad",
            &format!("tls://127.0.0.1:{}", r.tls),
            &format!("ca_file = \"{}\"", p.other_ca.display()),
        ),
    ]
    .concat();
    let s = Server::start_with(
        "drains",
        Opts {
            tail,
            ..Opts::default()
        },
    );
    let (id, tok) = s.issue(s_user(), &[]);
    let script = "printf 'ready> '; read -r a; echo \"got:$a\"; \
                  exec bash -c 'printf \"secret> \"; read -rs pw; echo; echo \"len:${#pw}\"; \
                  printf \"col\\033[31mored\\033[0m\\tx\\n\"; printf no-newline; sleep 0.5; exit 3'";
    let mut t = Typist::start(&s, &tok, script);
    t.wait_for("ready> ");
    t.type_line("visible-input");
    t.wait_for("secret> ");
    // `read -s` turns echo off right around its prompt; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    t.type_line("hunter2-SECRET");
    let (code, seen) = t.finish();
    assert_eq!(code, Some(3), "{seen}");
    assert!(
        !seen.contains("hunter2"),
        "the client saw no echo: {seen:?}"
    );
    s.wait_state(&id, "terminated", Duration::from_secs(5));

    let expected = [
        "ready> visible-input",
        "got:visible-input",
        "secret> ", // a partial line, sent after 200 ms of quiet …
        "",         // … so the newline after the secret ends an empty one
        "len:14",
        "colored\\x09x",
        "no-newline",
    ];
    for sd_id in ["tgtcp", "tgudp", "tgtls", "tgmtls", "tgunix"] {
        let mut got = Vec::new();
        let arrived = eventually(Duration::from_secs(10), || {
            got = outputs(
                &r.messages(&format!("{sd_id}@32473")),
                &id,
                &format!("{sd_id}@32473"),
            )
            .iter()
            .map(|m| m.msg.clone())
            .collect();
            got == expected
        });
        assert!(
            arrived.is_some(),
            "{sd_id}: received {got:?}\nall:\n{}",
            r.lines().join("\n")
        );
    }
    let all = r.lines().join("\n");
    assert!(
        !all.contains("hunter2"),
        "no-echo input never reaches a drain"
    );

    // SD fields and header, as a strict parser reads them (TCP drain).
    let msgs = r.messages("tgtcp@32473");
    let outs = outputs(&msgs, &id, "tgtcp@32473");
    for (i, m) in outs.iter().enumerate() {
        let sid = "tgtcp@32473";
        assert_eq!(sd(m, sid, "seq"), Some((i + 1).to_string().as_str()));
        assert_eq!(sd(m, sid, "user"), Some("ops"));
        assert_eq!(sd(m, sid, "profile"), Some("console"));
        assert!(sd(m, sid, "client").unwrap().starts_with("127.0.0.1:"));
        assert_eq!(sd(m, sid, "part"), None);
        assert_eq!(m.appname.as_deref(), Some("tollgate"));
        assert_eq!(
            m.procid.as_ref().map(|p| format!("{p:?}")),
            Some(format!("PID({})", s.pid()))
        );
        assert_eq!(
            (m.facility as i32, m.severity as i32),
            (10, 6),
            "authpriv.info"
        );
        assert!(m.hostname.is_some() && m.timestamp.is_some());
    }

    // Events for the whole life of the session (acceptance 3), with the
    // kind as MSGID, notice for normal steps; the mTLS drain takes none.
    let want = [
        "session.issued",
        "session.redeemed",
        "session.started",
        "session.exited",
        "session.terminated",
    ];
    for sd_id in ["tgtcp", "tgudp", "tgtls", "tgunix"] {
        let full = format!("{sd_id}@32473");
        let ok = eventually(Duration::from_secs(10), || {
            let msgs = r.messages(&full);
            want.iter().all(|k| {
                msgs.iter().any(|m| {
                    m.msgid.as_deref() == Some(*k) && sd(m, &full, "session") == Some(id.as_str())
                })
            })
        });
        assert!(
            ok.is_some(),
            "{sd_id}: events missing:\n{}",
            r.lines().join("\n")
        );
    }
    let msgs = r.messages("tgtcp@32473");
    let exited = msgs
        .iter()
        .find(|m| m.msgid.as_deref() == Some("session.exited"))
        .unwrap();
    assert_eq!(exited.severity as i32, 5, "notice");
    assert!(exited.msg.contains("\"exit_status\":3"), "{}", exited.msg);
    assert!(
        r.messages("tgmtls@32473")
            .iter()
            .all(|m| m.msgid.as_deref() == Some("output")),
        "the mTLS drain sends output only"
    );

    // A collector that does not verify: nothing sent, a clear error, an
    // event, and `drain status` says so (acceptance 2 and 7).
    assert!(
        !all.contains("tgbad@32473"),
        "never plaintext or unverified delivery"
    );
    // The daemon records the drains' state every second.
    let mut st = drain_status(&s);
    eventually(Duration::from_secs(5), || {
        st = drain_status(&s);
        st.values().all(|d| {
            d["current"] == true && d["delivered"].as_u64() >= Some(6) || d["name"] == "tgbad"
        })
    });
    for name in ["tgtcp", "tgudp", "tgtls", "tgmtls", "tgunix"] {
        assert_eq!(st[name]["connected"], true, "{name}: {:#}", st[name]);
        assert_eq!(st[name]["current"], true, "{name}: {:#}", st[name]);
        assert!(
            st[name]["delivered"].as_u64().unwrap() >= 6,
            "{:#}",
            st[name]
        );
        assert_eq!(st[name]["dropped"], 0);
    }
    let bad = &st["tgbad"];
    assert_eq!(bad["connected"], false, "{bad:#}");
    assert_eq!(bad["delivered"], 0, "{bad:#}");
    let err = bad["last_error"].as_str().unwrap();
    assert!(
        err.contains("certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let mut events = serde_json::Value::Null;
    let bad_event = eventually(Duration::from_secs(5), || {
        events = s.cli_json(&["events"]);
        events.as_array().unwrap().iter().any(|e| {
            e["kind"] == "drain.error"
                && e["detail"]["drain"] == "tgbad"
                && e["detail"]["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("UnknownIssuer")
        })
    });
    assert!(bad_event.is_some(), "no drain.error for tgbad: {events:#}");
    let text_status = text(&s.cli(&["drain", "status"]).stdout);
    assert!(
        text_status.contains("tgbad tls://127.0.0.1:") && text_status.contains("last error: "),
        "{text_status}"
    );
}

/// Acceptance 4 and 7: the collector stops for 10 s mid-session; what the
/// session printed meanwhile waits in the queue and arrives, once each and
/// in order, when it is back; `drain status` and the events say what
/// happened.
#[test]
fn lines_printed_while_the_collector_is_down_arrive_when_it_is_back() {
    let d = TempDir::new("drains-away");
    let mut r = Rsyslog::start(d.path());
    let s = Server::start_with(
        "drains-away",
        Opts {
            tail: drain_toml("tgaway", &format!("tcp://127.0.0.1:{}", r.tcp), ""),
            ..Opts::default()
        },
    );
    let sid = "tgaway@32473";
    let (id, tok) = s.issue(s_user(), &[]);
    let mut t = Typist::start(
        &s,
        &tok,
        "while read -r l && [ \"$l\" != quit ]; do echo \"out:$l\"; done",
    );
    t.type_line("before");
    t.wait_for("out:before");
    let arrived = |r: &Rsyslog, text: &str| {
        outputs(&r.messages(sid), &id, sid)
            .iter()
            .filter(|m| m.msg == text)
            .count()
    };
    assert!(eventually(Duration::from_secs(10), || arrived(&r, "out:before") == 1).is_some());

    r.stop();
    let down = std::time::Instant::now();
    for i in 1..=20 {
        t.type_line(&format!("during-{i}"));
    }
    t.wait_for("out:during-20");
    // The drain notices the closed connection and says so.
    let mut st = serde_json::Value::Null;
    let noticed = eventually(Duration::from_secs(8), || {
        st = drain_status(&s)["tgaway"].clone();
        st["connected"] == false && st["queued"].as_u64() >= Some(40)
    });
    assert!(noticed.is_some(), "{st:#}");
    assert!(
        st["last_error"].as_str().unwrap().contains("127.0.0.1"),
        "{st:#}"
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down.elapsed()));
    r.run();
    t.type_line("after");
    t.wait_for("out:after");
    let all_there = eventually(Duration::from_secs(30), || arrived(&r, "out:after") == 1);
    assert!(all_there.is_some(), "{}", r.lines().join("\n"));
    t.type_line("quit");
    let (code, _) = t.finish();
    assert_eq!(code, Some(0));

    let outs: Vec<String> = outputs(&r.messages(sid), &id, sid)
        .iter()
        .map(|m| m.msg.clone())
        .filter(|m| m.starts_with("out:"))
        .collect();
    let mut want = vec!["out:before".to_string()];
    want.extend((1..=20).map(|i| format!("out:during-{i}")));
    want.push("out:after".into());
    assert_eq!(outs, want, "every line once, in order");

    let mut kinds: Vec<String> = Vec::new();
    let told = eventually(Duration::from_secs(5), || {
        kinds = s
            .cli_json(&["events"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["drain"] == "tgaway")
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        kinds.first().map(String::as_str) == Some("drain.error")
            && kinds.iter().any(|k| k == "drain.connected")
    });
    assert!(told.is_some(), "{kinds:?}");
    let st = drain_status(&s)["tgaway"].clone();
    assert_eq!(
        (st["dropped"].as_u64(), st["connected"].as_bool()),
        (Some(0), Some(true)),
        "{st:#}"
    );
}

/// Events the drain had not delivered when the daemon stopped, and those
/// the admin CLI wrote while it was stopped, are delivered after the next
/// start; none twice.
#[test]
fn event_delivery_resumes_after_a_daemon_restart() {
    let d = TempDir::new("drains-resume");
    let mut r = Rsyslog::start(d.path());
    let mut s = Server::start_with(
        "drains-resume",
        Opts {
            tail: drain_toml(
                "tgres",
                &format!("tcp://127.0.0.1:{}", r.tcp),
                "send = [\"events\"]",
            ),
            ..Opts::default()
        },
    );
    let sid = "tgres@32473";
    let issued = |r: &Rsyslog, id: &str| {
        r.messages(sid)
            .iter()
            .filter(|m| {
                m.msgid.as_deref() == Some("session.issued") && sd(m, sid, "session") == Some(id)
            })
            .count()
    };
    let (first, _) = s.issue(s_user(), &[]);
    assert!(eventually(Duration::from_secs(10), || issued(&r, &first) == 1).is_some());
    r.stop();
    let (while_down, _) = s.issue(s_user(), &[]);
    assert!(s.stop().is_some());
    let log = s.log_text();
    assert!(
        log.contains("drain could not deliver everything before shutdown"),
        "{log}"
    );
    let (while_stopped, _) = s.issue(s_user(), &[]);
    r.run();
    s.spawn();
    for id in [&first, &while_down, &while_stopped] {
        let ok = eventually(Duration::from_secs(10), || issued(&r, id) >= 1);
        assert!(ok.is_some(), "{id} never arrived: {}", r.lines().join("\n"));
    }
    // The loss at shutdown was recorded, and that record delivered too.
    let shutdown_loss = eventually(Duration::from_secs(5), || {
        r.messages(sid).iter().any(|m| {
            m.msgid.as_deref() == Some("drain.dropped") && sd(m, sid, "stage") == Some("shutdown")
        })
    });
    assert!(shutdown_loss.is_some(), "{}", r.lines().join("\n"));
    std::thread::sleep(Duration::from_secs(2));
    for id in [&first, &while_down, &while_stopped] {
        assert_eq!(issued(&r, id), 1, "{id} delivered once");
    }
}

/// Acceptance 5 and 7: a collector that accepts and never reads. The
/// session's output reaches the client whole; what overflowed the queue is
/// counted, reported as drain.dropped, and shown by `drain status`.
#[test]
fn a_collector_that_never_reads_costs_the_session_nothing_and_drops_are_counted() {
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stuck.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in stuck.incoming().flatten() {
            h.lock().unwrap().push(c); // accepted, never read
        }
    });
    let s = Server::start_with(
        "drains-stuck",
        Opts {
            tail: drain_toml(
                "tgstuck",
                &format!("tcp://127.0.0.1:{port}"),
                "queue_bytes = \"64KiB\"\nsend = [\"output\"]",
            ),
            ..Opts::default()
        },
    );
    let (_, tok) = s.issue(s_user(), &[]);
    // 200,000 lines, 1,288,895 bytes.
    let out = s.ssh_run(s_user(), &tok, &[], "seq 1 200000");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 1_288_895, "every byte reached the client");

    let mut st = serde_json::Value::Null;
    let mut reported = 0;
    // Every line is accounted for (delivered, still queued or dropped) once
    // the tee has worked through what it held, and the drain.dropped
    // events add up to the drops counted.
    let total = |st: &serde_json::Value| {
        ["delivered", "queued", "dropped"]
            .iter()
            .map(|k| st[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let settled = eventually(Duration::from_secs(30), || {
        st = drain_status(&s)["tgstuck"].clone();
        reported = s
            .cli_json(&["events"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "drain.dropped" && e["detail"]["drain"] == "tgstuck")
            .map(|e| e["detail"]["messages"].as_u64().unwrap())
            .sum::<u64>();
        st["current"] == true
            && total(&st) == 200_000
            && st["dropped"].as_u64() == Some(reported)
            && reported > 0
    });
    assert!(
        settled.is_some(),
        "status {st:#}, drain.dropped total {reported}"
    );
    assert_eq!(st["connected"], true, "connected, just not read");
    let dropped = st["dropped"].as_u64().unwrap();
    assert!(dropped > 100_000, "{st:#}");
    assert!(st["queued_bytes"].as_u64().unwrap() <= 64 << 10, "{st:#}");
    let text_status = text(&s.cli(&["drain", "status"]).stdout);
    assert!(
        text_status.contains(&format!("dropped {dropped} (")),
        "{text_status}"
    );
}

/// Acceptance 6: long lines split under the cap on character boundaries,
/// invalid UTF-8 replaced, colours stripped, tabs and other controls
/// escaped, and `"]\` in the text and in an SD value, all parser-valid.
#[test]
fn awkward_output_is_stored_as_documented_and_parses() {
    let d = TempDir::new("drains-odd");
    let r = Rsyslog::start(d.path());
    let s = Server::start_with(
        "drains-odd",
        Opts {
            tail: drain_toml(
                "tgodd",
                &format!("tcp://127.0.0.1:{}", r.tcp),
                "max_message_bytes = 480",
            ),
            ..Opts::default()
        },
    );
    let sid = "tgodd@32473";
    // OpenSSH refuses `"` and `\` in user names; `]` it takes. The
    // reason (an event's SD param) takes all three.
    let user = "od]d";
    let reason = r#"say "hi" ]\ now"#;
    let (id, tok) = s.issue(user, &["--reason", reason]);
    let script = "printf 'é%.0s' $(seq 1 1000); echo; \
                  printf 'bad\\377\\376utf8\\n'; \
                  printf '\\033[1;32mgreen\\033[0m\\tand\\ttabs\\a\\n'; \
                  printf 'quote\" bracket] backslash\\\\ end\\n'";
    let out = s.ssh_run(user, &tok, &["-tt"], script);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    s.wait_state(&id, "terminated", Duration::from_secs(5));
    let mut outs = Vec::new();
    eventually(Duration::from_secs(10), || {
        outs = r
            .messages(sid)
            .into_iter()
            .filter(|m| sd(m, sid, "session") == Some(id.as_str()))
            .collect();
        outs.iter().any(|m| m.msg.contains("backslash"))
            && outs
                .iter()
                .any(|m| m.msgid.as_deref() == Some("session.terminated"))
    });
    let issued = outs
        .iter()
        .find(|m| m.msgid.as_deref() == Some("session.issued"));
    assert_eq!(
        issued.and_then(|m| sd(m, sid, "reason")),
        Some(reason),
        "SD value escaped on the wire, unescaped by the parser"
    );
    let outs: Vec<SyslogMessage> = outs
        .into_iter()
        .filter(|m| m.msgid.as_deref() == Some("output"))
        .collect();
    for m in &outs {
        assert_eq!(sd(m, sid, "user"), Some(user));
    }
    let raw = r.lines().join("\n");
    assert!(
        raw.contains(r#"reason="say \"hi\" \]\\ now""#),
        "escaped on the wire: {raw}"
    );
    assert!(
        raw.contains(r#"user="od\]d""#),
        "escaped on the wire: {raw}"
    );
    // The long line: parts 1.., each under the cap, joined back exact.
    let parts: Vec<&SyslogMessage> = outs
        .iter()
        .filter(|m| sd(m, sid, "seq") == Some("1"))
        .collect();
    assert!(parts.len() >= 5, "{} parts", parts.len());
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(sd(p, sid, "part"), Some((i + 1).to_string().as_str()));
    }
    let joined: String = parts.iter().map(|p| p.msg.as_str()).collect();
    assert_eq!(joined, "é".repeat(1000));
    for l in raw.lines().filter(|l| l.contains(sid)) {
        assert!(l.len() <= 480, "{} bytes: {l}", l.len());
    }
    let texts: Vec<&str> = outs.iter().map(|m| m.msg.as_str()).collect();
    assert!(texts.contains(&"bad\u{fffd}\u{fffd}utf8"), "{texts:?}");
    assert!(texts.contains(&"green\\x09and\\x09tabs\\x07"), "{texts:?}");
    assert!(
        texts.contains(&r#"quote" bracket] backslash\\ end"#),
        "{texts:?}"
    );
}

//! The test plays systemd: `tollgate serve` gets `NOTIFY_SOCKET` (a unix
//! datagram socket of the test's own) and `WATCHDOG_USEC`, and every message
//! is checked for order and content: READY only once the port accepts,
//! STATUS with live counts, WATCHDOG only while the health check passes,
//! RELOADING/READY around SIGHUP, STOPPING on SIGTERM.
mod common;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The service manager's end.
struct Manager {
    sock: UnixDatagram,
}

impl Manager {
    fn bind(path: &std::path::Path) -> Manager {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Manager { sock }
    }

    /// The next message, if one comes within `limit`.
    fn next(&self, limit: Duration) -> Option<String> {
        let until = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.sock.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Messages until one contains `line` (returned last); panics after `limit`.
    fn until(&self, line: &str, limit: Duration) -> Vec<String> {
        let until = Instant::now() + limit;
        let mut seen = Vec::new();
        while Instant::now() < until {
            if let Some(m) = self.next(Duration::from_millis(100)) {
                let done = m.lines().any(|l| l == line);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {line} within {limit:?}; got {seen:#?}");
    }

    /// Every message for `d`.
    fn during(&self, d: Duration) -> Vec<String> {
        let until = Instant::now() + d;
        let mut seen = Vec::new();
        while Instant::now() < until {
            if let Some(m) = self.next(Duration::from_millis(50)) {
                seen.push(m);
            }
        }
        seen
    }
}

fn count(msgs: &[String], line: &str) -> usize {
    msgs.iter().filter(|m| m.lines().any(|l| l == line)).count()
}

fn field<'a>(m: &'a str, key: &str) -> Option<&'a str> {
    m.lines().find_map(|l| l.strip_prefix(key))
}

#[test]
fn readiness_status_watchdog_reload_and_stop_reach_the_service_manager() {
    let mut s = Server::configure("notify", Opts::default());
    let path = s.dir.path().join("notify.sock");
    let m = Manager::bind(&path);
    let child = s
        .serve_command()
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    s.child = Some(child);

    // READY=1 comes first, and the port accepts the moment it does.
    let first = m.next(Duration::from_secs(20)).expect("no message at all");
    let accepts = TcpStream::connect(("127.0.0.1", s.port)).is_ok();
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    assert!(accepts, "READY=1 before the port accepted");
    assert_eq!(
        field(&first, "STATUS="),
        Some(
            format!(
                "0 active sessions; 0 of 0 drains connected; listening on 127.0.0.1:{}",
                s.port
            )
            .as_str()
        ),
        "{first}"
    );

    // WATCHDOG=1 every WATCHDOG_USEC/2 while healthy.
    let msgs = m.during(Duration::from_millis(1100));
    assert!(count(&msgs, "WATCHDOG=1") >= 3, "{msgs:#?}");

    // STATUS follows the live count.
    let (id, token) = s.issue("ops", &[]);
    let mut ssh = s.ssh("ops", &token).arg("sleep 3").spawn().unwrap();
    s.wait_state(&id, "active", Duration::from_secs(10));
    let msgs = m.until(
        &format!(
            "STATUS=1 active session; 0 of 0 drains connected; listening on 127.0.0.1:{}",
            s.port
        ),
        Duration::from_secs(3),
    );
    assert!(!msgs.is_empty());
    ssh.wait().unwrap();

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1.
    kill(pid, Signal::SIGHUP).unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_us = now.tv_sec() as i64 * 1_000_000 + now.tv_nsec() as i64 / 1_000;
    let msgs = m.until("RELOADING=1", Duration::from_secs(3));
    let reloading = msgs.last().unwrap();
    let usec: i64 = field(reloading, "MONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading}"))
        .parse()
        .unwrap();
    assert!((usec - now_us).abs() < 2_000_000, "{usec} vs {now_us}");
    let msgs = m.until("READY=1", Duration::from_secs(5));
    assert_eq!(count(&msgs, "RELOADING=1"), 0, "{msgs:#?}");
    assert!(!s.events_of(None, "daemon.reloaded").is_empty());

    // A journal that is no longer the file the CLI opens fails the health
    // check: pings stop, and resume once it is back.
    let journal = s.dir.path().join("journal.db");
    let away = s.dir.path().join("journal.db.away");
    std::fs::rename(&journal, &away).unwrap();
    let _ = m.during(Duration::from_millis(500)); // a ping already on its way
    let msgs = m.during(Duration::from_millis(1200));
    assert_eq!(count(&msgs, "WATCHDOG=1"), 0, "{msgs:#?}");
    assert!(
        s.log_text().contains("health check failed"),
        "{}",
        s.log_text()
    );
    std::fs::rename(&away, &journal).unwrap();
    let msgs = m.during(Duration::from_millis(1200));
    assert!(count(&msgs, "WATCHDOG=1") >= 1, "{msgs:#?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    kill(pid, Signal::SIGTERM).unwrap();
    let msgs = m.until("STOPPING=1", Duration::from_secs(5));
    assert_eq!(count(&msgs, "READY=1"), 0);
    let st = s.child.take().unwrap().wait().unwrap();
    assert!(st.success(), "{st}");
}

#[test]
fn without_notify_socket_nothing_changes_and_sighup_does_not_kill() {
    let mut s = Server::start("notify-none");
    kill(Pid::from_raw(s.pid()), Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.child.as_mut().unwrap().try_wait().unwrap().is_none());
    let (_, token) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &token, &[], "echo alive");
    assert_eq!(text(&out.stdout), "alive\n", "{}", text(&out.stderr));
}

#[test]
fn under_the_systemd_journal_lines_carry_priorities_and_config_sets_the_level() {
    let mut s = Server::configure(
        "notify-journal",
        Opts {
            server_extra: "log_level = \"info\"\n".into(),
            ..Opts::default()
        },
    );
    // stderr is the log file: JOURNAL_STREAM names it, as systemd would.
    let log = s.dir.path().join("serve.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    use std::os::unix::fs::MetadataExt;
    let child = s
        .serve_command()
        .env_remove("TOLLGATE_LOG")
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    s.child = Some(child);
    s.wait_listening();
    // A broken config on reload: errors, one problem per line.
    let good = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{good}\n[sessions]\nbogus = 1\n")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let ok = eventually(Duration::from_secs(5), || {
        s.log_text().contains("configuration in force stays")
    });
    assert!(ok.is_some(), "{}", s.log_text());
    let text = s.log_text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("listening")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<3>")
            && l.contains("reload failed:")
            && l.contains("tollgate.toml:")),
        "{text}"
    );
    // Every line has a priority and no timestamp; info level: no debug.
    for l in &lines {
        assert!(
            l.len() > 3 && l.starts_with('<') && !l[3..].trim_start().starts_with("20"),
            "{l}"
        );
        assert!(!l.starts_with("<7>"), "{l}");
    }
}

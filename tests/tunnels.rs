//! Tunnel tokens with the real OpenSSH client: `-L` and `-W` reach the one
//! configured target (a real echo server on loopback) and nothing else;
//! the connection limit, cancel and max_duration close forwards; the bytes
//! each way are in the journal.
mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Echoes every connection; counts bytes and open connections.
struct Echo {
    port: u16,
    received: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
}

impl Echo {
    fn start() -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let received = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (r, o) = (received.clone(), open.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let (r, o) = (r.clone(), o.clone());
                o.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                r.fetch_add(n as u64, Ordering::SeqCst);
                                if c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Echo {
            port,
            received,
            open,
        }
    }
}

fn server(echo: &Echo, extra: &str) -> Server {
    Server::start_with(
        "tunnels",
        Opts {
            tail: format!(
                "[targets.echo]\nhost = \"127.0.0.1\"\nport = {}\n{extra}",
                echo.port
            ),
            ..Opts::default()
        },
    )
}

fn issue_tunnel(s: &Server, extra: &[&str]) -> (String, String, Value) {
    let mut a = vec![
        "session",
        "issue",
        "--target",
        "echo",
        "--login-user",
        "ops",
    ];
    a.extend_from_slice(extra);
    let v = s.cli_json(&a);
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
        v,
    )
}

/// `ssh -N` with `forwards` (e.g. `-L`, `P:echo:E`), until killed.
fn ssh_n(s: &Server, token: &str, forwards: &[&str]) -> Child {
    let mut first = vec!["-N", "-o", "ExitOnForwardFailure=no"];
    first.extend_from_slice(forwards);
    s.ssh_opts("ops", token, &first)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A local forward connection once ssh listens on `port`.
fn dial(port: u16) -> TcpStream {
    let mut got = None;
    eventually(Duration::from_secs(15), || {
        got = TcpStream::connect(("127.0.0.1", port)).ok();
        got.is_some()
    });
    let c = got.expect("ssh never listened on its -L port");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// Sends `n` patterned bytes and reads them back.
fn roundtrip(c: &mut TcpStream, n: usize, seed: u8) {
    let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
    let mut w = c.try_clone().unwrap();
    let d = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&d).unwrap());
    let mut back = vec![0u8; n];
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "echo differs");
}

/// Whether the peer closed `c` (EOF or reset) within `limit`.
fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    c.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    matches!(c.read(&mut b), Ok(0) | Err(_))
        && {
            // A timeout is an error too: tell them apart.
            c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            !matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        }
}

#[test]
fn local_forward_reaches_the_target_only_within_its_limit_and_counts_bytes() {
    let echo = Echo::start();
    let s = server(&echo, "connection_limit = 2\n");
    let (id, token, issued) = issue_tunnel(&s, &[]);
    assert_eq!(issued["kind"], "tunnel");
    assert_eq!(issued["connection_limit"], 2);
    let line = issued["ssh"].as_str().unwrap();
    assert!(
        line.starts_with(&format!("ssh -N -L {}:echo:{}", echo.port, echo.port)),
        "{line}"
    );
    let (lp, bad) = (free_port(), free_port());
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let fwd = format!("{lp}:echo:{}", echo.port);
    let wrong = format!("{bad}:127.0.0.1:{other_port}");
    let remote = format!("0:127.0.0.1:{}", echo.port);
    let mut child = ssh_n(&s, &token, &["-L", &fwd, "-L", &wrong, "-R", &remote]);

    let mut a = dial(lp);
    roundtrip(&mut a, 300_000, 1);
    let mut b = dial(lp);
    roundtrip(&mut b, 12_345, 2);
    // The third at once is refused: ssh drops the local connection.
    let mut c = dial(lp);
    assert!(
        closed_within(&mut c, Duration::from_secs(5)),
        "third not refused"
    );
    // After one closes, a new one works.
    drop(a);
    let ok = eventually(Duration::from_secs(5), || {
        echo.open.load(Ordering::SeqCst) == 1
    });
    assert!(ok.is_some());
    let mut d = dial(lp);
    roundtrip(&mut d, 1000, 3);
    // Another destination is refused; the target was never asked for it.
    let mut w = dial(bad);
    assert!(closed_within(&mut w, Duration::from_secs(5)));
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_err(), "the bastion dialed another host");
    // The tunnel is unaffected.
    roundtrip(&mut b, 777, 4);
    drop((b, c, d, w));
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();

    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    let sent = 300_000 + 12_345 + 1000 + 777;
    assert_eq!(v["bytes_in"], sent, "{v:#}");
    assert_eq!(v["bytes_out"], sent, "{v:#}");
    assert_eq!(v["forwards"], 3, "{v:#}");
    assert_eq!(echo.received.load(Ordering::SeqCst), sent as u64);
    let closed = s.events_of(Some(&id), "tunnel.closed");
    let mut per: Vec<u64> = closed
        .iter()
        .map(|e| e["detail"]["bytes_from_client"].as_u64().unwrap())
        .collect();
    per.sort();
    assert_eq!(per, [1000, 12_345 + 777, 300_000], "{closed:#?}");
    for e in &closed {
        assert_eq!(
            e["detail"]["bytes_from_client"],
            e["detail"]["bytes_to_client"]
        );
    }
    let refused = s.events_of(Some(&id), "tunnel.refused");
    let reasons: Vec<&str> = refused
        .iter()
        .map(|e| e["detail"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("connection_limit 2 reached")),
        "{refused:#?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("only echo (127.0.0.1:")),
        "{refused:#?}"
    );
    let other_refused = s.events_of(Some(&id), "session.request_refused");
    assert!(
        other_refused.iter().any(|e| e["detail"]["request"]
            .as_str()
            .unwrap()
            .starts_with("remote forwarding")),
        "{other_refused:#?}"
    );
}

#[test]
fn stdio_forward_and_a_shell_request_on_a_tunnel_token() {
    let echo = Echo::start();
    let s = server(&echo, "");
    // -W: stdin to the target, the target to stdout.
    let (_, token, _) = issue_tunnel(&s, &[]);
    let mut c = s.ssh_opts("ops", &token, &["-W", &format!("echo:{}", echo.port)]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through the bastion\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "through the bastion\n");

    // A shell request gets the explanation and closes.
    let (id, token, _) = issue_tunnel(&s, &[]);
    let out = s.ssh_run("ops", &token, &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("opens a tunnel to echo") && said.contains("ssh -N -L"),
        "{said}"
    );
    assert!(!s.events_of(Some(&id), "session.request_refused").is_empty());
}

#[test]
fn cancel_and_max_duration_close_every_forward_within_a_second() {
    let echo = Echo::start();
    let s = server(&echo, "");
    for how in ["cancel", "max_duration"] {
        let extra: &[&str] = if how == "cancel" {
            &[]
        } else {
            &["--max-duration", "3s"]
        };
        let (id, token, _) = issue_tunnel(&s, extra);
        let lp = free_port();
        let fwd = format!("{lp}:echo:{}", echo.port);
        let mut child = ssh_n(&s, &token, &["-L", &fwd]);
        let mut a = dial(lp);
        let mut b = dial(lp);
        roundtrip(&mut a, 100, 1);
        roundtrip(&mut b, 100, 2);
        assert_eq!(echo.open.load(Ordering::SeqCst), 2);
        if how == "cancel" {
            assert!(s.cli(&["session", "cancel", &id]).status.success());
        }
        let limit = if how == "cancel" { 2 } else { 5 };
        assert!(closed_within(&mut a, Duration::from_secs(limit)), "{how}");
        assert!(closed_within(&mut b, Duration::from_secs(1)), "{how}");
        let ok = eventually(Duration::from_secs(1), || {
            echo.open.load(Ordering::SeqCst) == 0
        });
        assert!(ok.is_some(), "{how}: target connections left open");
        let v = s.wait_state(&id, "terminated", Duration::from_secs(5));
        assert_eq!(
            v["end_reason"],
            if how == "cancel" {
                "canceled"
            } else {
                "max_duration"
            }
        );
        let _ = child.kill();
        child.wait().unwrap();
    }
}

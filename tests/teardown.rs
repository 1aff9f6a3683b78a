//! Acceptance 5, 6, 7 and 8: a session and everything it started end on
//! disconnect, on cancel, at max_duration, when idle, and after a crash.
mod common;
use common::*;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Starts `ssh … CMD` in the background and waits until the session runs.
fn start_live(s: &Server, extra: &[&str], cmd: &str) -> (String, String, std::process::Child) {
    let (id, tok) = s.issue("ops", extra);
    let mut c = s.ssh("ops", &tok);
    c.args(["-tt"])
        .arg(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    s.wait_state(&id, "active", Duration::from_secs(10));
    (id, tok, child)
}

#[test]
fn disconnect_kills_the_command_and_its_background_job() {
    let s = Server::start("disconnect");
    // A distinctive duration names the processes for this test only.
    let (id, _, mut ssh) = start_live(&s, &[], "sleep 7101 & echo started; sleep 7102");
    let mut out = buffered(ssh.stdout.take().unwrap());
    read_until(&mut out, "started");
    assert!(
        eventually(Duration::from_secs(5), || pids_matching("sleep 7101").len()
            == 1
            && pids_matching("sleep 7102").len() == 1)
        .is_some()
    );
    ssh.kill().unwrap(); // the client vanishes mid-command
    ssh.wait().unwrap();
    let gone = eventually(Duration::from_secs(3), || {
        pids_matching("sleep 7101").is_empty() && pids_matching("sleep 7102").is_empty()
    });
    // kill_grace is 2 s in tests: everything must be gone within kill_grace + 1 s.
    assert!(gone.is_some(), "processes survived the disconnect");
    let v = s.wait_state(&id, "terminated", Duration::from_secs(5));
    assert_eq!(v["end_reason"], "disconnected");
}

#[test]
fn a_background_job_in_its_own_process_group_is_killed_too() {
    let s = Server::start_with(
        "jobctl",
        Opts {
            command: "/bin/bash -i".into(),
            ..Opts::default()
        },
    );
    // set -m: job control, so the background job gets a process group of its own.
    let (id, _, mut ssh) = start_live(&s, &[], "set -m; sleep 7201 & echo started; sleep 7202");
    let mut out = buffered(ssh.stdout.take().unwrap());
    read_until(&mut out, "started");
    ssh.kill().unwrap();
    ssh.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(3), || pids_matching("sleep 720")
            .is_empty())
        .is_some(),
        "a job in its own process group survived"
    );
    s.wait_state(&id, "terminated", Duration::from_secs(5));
}

#[test]
fn cancel_disconnects_the_client_within_a_second() {
    let s = Server::start("cancel");
    let (id, _, mut ssh) = start_live(&s, &[], "echo started; sleep 7301");
    let mut out = buffered(ssh.stdout.take().unwrap());
    read_until(&mut out, "started");
    let v = s.cli_json(&["session", "cancel", &id]);
    assert_eq!(v["result"], "requested");
    let t = Instant::now();
    let exited = eventually(Duration::from_secs(5), || ssh.try_wait().unwrap().is_some());
    let took = t.elapsed();
    assert!(exited.is_some(), "client still connected after cancel");
    assert!(
        took <= Duration::from_secs(1),
        "client disconnected after {took:?}"
    );
    let mut rest = String::new();
    for line in out.lines() {
        rest.push_str(&line.unwrap());
    }
    assert!(rest.contains("canceled by an administrator"), "{rest:?}");
    let v = s.wait_state(&id, "terminated", Duration::from_secs(5));
    assert_eq!(v["end_reason"], "canceled");
    assert!(pids_matching("sleep 7301").is_empty());
    // Idempotent.
    assert_eq!(
        s.cli_json(&["session", "cancel", &id])["result"],
        "already_over"
    );
    let out = s.cli(&["session", "cancel", "ses_nosuchsession"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn max_duration_ends_a_session() {
    let s = Server::start("maxdur");
    let (id, _, mut ssh) = start_live(&s, &["--max-duration", "2s"], "sleep 7401");
    let status = ssh.wait().unwrap();
    assert!(!status.success());
    let v = s.wait_state(&id, "terminated", Duration::from_secs(5));
    assert_eq!(v["end_reason"], "max_duration");
    assert!(pids_matching("sleep 7401").is_empty());
}

#[test]
fn a_client_that_stops_answering_is_dropped_after_the_client_alive_asks() {
    let s = Server::start_with(
        "alive",
        Opts {
            server_extra: "client_alive_interval = \"1s\"\nclient_alive_count_max = 2\n".into(),
            ..Opts::default()
        },
    );
    let (id, _, mut ssh) = start_live(&s, &[], "sleep 7611");
    // A client that answers is asked every second and stays.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(s.show(&id)["state"], "active");
    // One that stops answering (suspended: its kernel still acknowledges
    // the bytes, as a peer behind a dead NAT would not even do) is
    // dropped after two unanswered asks.
    let pid = nix::unistd::Pid::from_raw(ssh.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    println!("dropped {:?} after the client stopped", stopped.elapsed());
    assert_eq!(v["end_reason"], "disconnected", "{v}");
    assert!(
        eventually(Duration::from_secs(4), || pids_matching("sleep 7611")
            .is_empty())
        .is_some(),
        "the dropped client's command still runs"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let _ = ssh.kill();
    let _ = ssh.wait();
}

#[test]
fn idle_timeout_ends_an_idle_session_but_not_a_busy_one() {
    let s = Server::start_with(
        "idle",
        Opts {
            sessions: "kill_grace = \"2s\"\nidle_timeout = \"2s\"\n".into(),
            ..Opts::default()
        },
    );
    // Output every 0.5 s for 4 s keeps it alive past the idle timeout.
    let (busy, tok) = s.issue("ops", &[]);
    let out = s.ssh_run(
        "ops",
        &tok,
        &[],
        "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.5; done",
    );
    assert_eq!(out.status.code(), Some(0));
    // The client is told first; the journal records the end just after.
    let v = s.wait_state(&busy, "terminated", Duration::from_secs(5));
    assert_eq!(v["end_reason"], "exited", "{v}");

    let (id, _, mut ssh) = start_live(&s, &[], "sleep 7501");
    ssh.wait().unwrap();
    let v = s.wait_state(&id, "terminated", Duration::from_secs(5));
    assert_eq!(v["end_reason"], "idle_timeout");
}

#[test]
fn after_kill_9_and_restart_the_session_is_terminated_and_its_token_dead() {
    let mut s = Server::start("crash");
    // A background job with a scrubbed environment that ignores the
    // terminal's hangup: found all the same, by its session id and start
    // time, not by TOLLGATE_SESSION_ID. "started" only once it ignores the
    // hangup (on a loaded machine the daemon's death could otherwise hang
    // it up before nohup ran, leaving nothing to find).
    let ready = format!("/tmp/tollgate-test-crash-ready-{}", std::process::id());
    let _ = std::fs::remove_file(&ready);
    let (id, tok, mut ssh) = start_live(
        &s,
        &[],
        &format!(
            "env -i nohup sh -c 'touch {ready}; exec sleep 7602' >/dev/null 2>&1 & \
             while [ ! -e {ready} ]; do sleep 0.05; done; echo started; sleep 7601"
        ),
    );
    let mut out = buffered(ssh.stdout.take().unwrap());
    read_until(&mut out, "started");
    s.child.as_mut().unwrap().kill().unwrap(); // SIGKILL
    s.child.take().unwrap().wait().unwrap();
    let _ = ssh.wait();
    s.spawn();
    let v = s.show(&id);
    assert_eq!(v["state"], "terminated");
    assert_eq!(v["end_reason"], "daemon_stopped");
    assert!(
        eventually(Duration::from_secs(3), || pids_matching("sleep 7601")
            .is_empty())
        .is_some(),
        "the crashed session's process was left running"
    );
    assert!(
        eventually(Duration::from_secs(3), || pids_matching("sleep 7602")
            .is_empty())
        .is_some(),
        "the crashed session's env -i job was left running"
    );
    let log = s.log_text();
    assert!(
        log.contains("orphans_killed=") && !log.contains("orphans_killed=0"),
        "{log}"
    );
    let out = s.ssh_run("ops", &tok, &[], "echo GOT-IN");
    assert!(!text(&out.stdout).contains("GOT-IN"));
    let conn = rusqlite::Connection::open(s.dir.path().join("journal.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let _ = std::fs::remove_file(&ready);
}

#[test]
fn sigterm_ends_live_sessions_as_daemon_stopped_and_exits_zero() {
    let mut s = Server::start("sigterm");
    let (id, _, mut ssh) = start_live(&s, &[], "echo started; sleep 7701");
    let mut out = buffered(ssh.stdout.take().unwrap());
    read_until(&mut out, "started");
    let status = s.stop().unwrap();
    assert_eq!(status.code(), Some(0));
    ssh.wait().unwrap();
    let v = s.show(&id);
    assert_eq!(
        (v["state"].as_str(), v["end_reason"].as_str()),
        (Some("terminated"), Some("daemon_stopped"))
    );
    assert!(pids_matching("sleep 7701").is_empty());
}

#[test]
fn unauthenticated_connections_are_cut_after_login_grace_time() {
    let s = Server::start_with(
        "grace",
        Opts {
            server_extra: "login_grace_time = \"1s\"\n".into(),
            ..Opts::default()
        },
    );
    use std::io::Read;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf); // never sends a version line
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "not cut: {:?}",
        t.elapsed()
    );
    let banner = text(&buf);
    assert!(banner.starts_with("SSH-2.0-tollgate\r\n"), "{banner:?}");
}

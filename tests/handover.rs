//! SIGUSR2 hands the daemon over to the binary on disk without dropping a
//! live session: a shell at a terminal and a `-L` tunnel carrying data
//! outlive the process that accepted them, which exits once they end; new
//! logins go to the new build; the test plays systemd (MAINPID=, READY=1
//! from the new process, watchdog pings without a gap); the deadline ends
//! what is left `daemon_upgraded`; a crash of the new process while the old
//! one drains costs only the new one's sessions; and hand-overs under a
//! stream of logins lose none.
mod common;
use common::clients::*;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Processes the hand-overs started (not the test's children): killed at
/// the end whatever happened, each only if it is still that process (its
/// pid may be another's by then).
struct Pids(Mutex<Vec<(i32, Option<u64>)>>);

impl Pids {
    fn add(&self, pid: i32) {
        self.0.lock().unwrap().push((pid, start_ticks(pid)));
    }
}

impl Drop for Pids {
    fn drop(&mut self) {
        for &(p, started) in self.0.lock().unwrap().iter() {
            if started.is_some() && start_ticks(p) == started {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }
}

/// When `pid` started (field 22 of /proc/PID/stat).
fn start_ticks(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// `tollgate serve` from the binary at `bin`, logging to `serve.log` (as
/// the harness's own daemons do).
fn serve(s: &Server, bin: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.path().join("serve.log"))
        .unwrap();
    let mut c = Command::new(bin);
    c.arg("--config")
        .arg(&s.config)
        .arg("serve")
        .env("TOLLGATE_LOG", "info,tollgate=debug")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    not_busy(|| c.spawn())
}

/// Runs `f` again while it fails with ETXTBSY: a binary this test just
/// wrote can still be open for writing in a child another test thread is
/// forking at that moment (until that child's exec closes it).
fn not_busy<T>(mut f: impl FnMut() -> std::io::Result<T>) -> T {
    for _ in 0..100 {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r.unwrap(),
        }
    }
    f().unwrap()
}

fn log(s: &Server) -> String {
    s.log_text()
}

/// The version the binary at `bin` reports.
fn version_of(bin: &Path) -> String {
    let out = not_busy(|| Command::new(bin).arg("--version").output());
    text(&out.stdout)
        .trim()
        .trim_start_matches("tollgate ")
        .to_string()
}

/// A copy of the test build with `stamp` in its build field: another
/// binary, reporting another version (`X.Y.Z+stamp`).
fn stamped_copy(to: &Path, stamp: &str) -> PathBuf {
    let mut bytes = std::fs::read(BIN).unwrap();
    let mark = b"TOLLGATE-BUILD-STAMP:";
    let at = bytes
        .windows(mark.len() + 32)
        .position(|w| w.starts_with(mark) && w[mark.len()..].iter().all(|&b| b == 0))
        .expect("no empty build stamp in the binary")
        + mark.len();
    bytes[at..at + stamp.len()].copy_from_slice(stamp.as_bytes());
    std::fs::write(to, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to.to_path_buf()
}

/// The redeemed event of session `id`.
fn redeemed(s: &Server, id: &str) -> Value {
    s.events_of(Some(id), "session.redeemed")[0]["detail"].clone()
}

/// The service manager's end: every datagram with its sender's pid
/// (SCM_CREDENTIALS) and when it came.
struct Manager {
    got: Arc<Mutex<Vec<(Instant, i32, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let sock = UnixDatagram::bind(path).unwrap();
        let on: libc::c_int = 1;
        // SAFETY: sets one int option on a socket this test owns.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some((pid, m)) = recv_with_pid(&sock) {
                    g.lock().unwrap().push((Instant::now(), pid, m));
                }
            }
        });
        Manager { got, stop }
    }

    fn all(&self) -> Vec<(Instant, i32, String)> {
        self.got.lock().unwrap().clone()
    }

    /// The first message with `line` from `pid`, waiting up to `limit`.
    fn wait(&self, pid: i32, line: &str, limit: Duration) -> (Instant, String) {
        let mut found = None;
        eventually(limit, || {
            found = self
                .all()
                .into_iter()
                .find(|(_, p, m)| *p == pid && m.lines().any(|l| l == line))
                .map(|(t, _, m)| (t, m));
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no {line} from {pid}: {:#?}", self.all()))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn recv_with_pid(sock: &UnixDatagram) -> Option<(i32, String)> {
    let mut buf = [0u8; 4096];
    let mut control = [0u8; 128];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: msg describes buffers of this frame.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    let mut pid = 0;
    // SAFETY: walks the control buffer the kernel filled, as cmsg(3) says.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                let cred: libc::ucred =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::ucred);
                pid = cred.pid;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((
        pid,
        String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
    ))
}

/// Sends a little through `c` and reads it back, every 20 ms until `stop`;
/// returns how many round trips went through (panics on any failure).
fn keep_talking(mut c: std::net::TcpStream, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    let mut worst = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let msg = format!("ping {n}\n");
        let t = Instant::now();
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
        worst = worst.max(t.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("tunnel: {n} round trips, slowest {worst:?}");
    n
}

#[test]
fn a_hand_over_keeps_a_shell_and_a_tunnel_and_new_logins_reach_the_new_build() {
    let echo = Echo::start();
    let s = Server::configure(
        "handover",
        Opts {
            tail: format!(
                "[targets.echo]\nhost = \"127.0.0.1\"\nport = {}\n",
                echo.port
            ),
            ..Opts::default()
        },
    );
    let pids = Pids(Mutex::new(Vec::new()));
    // The installed binary, as a package upgrade finds it.
    let bin_dir = s.dir.path().join("sbin");
    std::fs::create_dir(&bin_dir).unwrap();
    let installed = bin_dir.join("tollgate");
    std::fs::copy(BIN, &installed).unwrap();
    let old_version = version_of(&installed);
    let manager = Manager::bind(&s.dir.path().join("notify.sock"));
    let notify = s.dir.path().join("notify.sock");
    // systemd's RuntimeDirectory=: where the daemon says it takes SIGUSR2
    // (debian/postinst reads it before it hands over instead of restarting).
    let run = s.dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let marker = run.join("handover");
    let mut old = serve(
        &s,
        &installed,
        &[
            ("NOTIFY_SOCKET", notify.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
            ("RUNTIME_DIRECTORY", run.to_str().unwrap()),
        ],
    );
    let old_pid = old.id() as i32;
    manager.wait(old_pid, "READY=1", Duration::from_secs(20));
    let says = || std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(says(), format!("{old_pid}\n"));

    // A person at a terminal, and a tunnel carrying data.
    let (shell_id, tok) = s.issue("ops", &[]);
    let t = Tmux::start(
        &s.dir.path().join("shell.sh"),
        &reporting_exit(&s.ssh_opts("ops", &tok, &["-tt"])),
        80,
        24,
    );
    t.keys(&["echo before-$((6*7))", "Enter"]);
    t.wait_for("before-42");
    let (tunnel_id, tok) = issue_echo_tunnel(&s);
    let lp = free_port();
    let fwd = format!("127.0.0.1:{lp}:echo:{}", echo.port);
    let mut tunnel = s
        .ssh_opts("ops", &tok, &["-N", "-L", &fwd])
        .spawn()
        .unwrap();
    let stop_talk = Arc::new(AtomicBool::new(false));
    let talker = {
        let (c, st) = (dial(lp), stop_talk.clone());
        std::thread::spawn(move || keep_talking(c, st))
    };
    std::thread::sleep(Duration::from_millis(500));

    // The package manager replaces the file; SIGUSR2.
    let new_build = stamped_copy(&bin_dir.join("tollgate.new"), "handover-b");
    std::fs::rename(&new_build, &installed).unwrap();
    let new_version = version_of(&installed);
    assert_ne!(new_version, old_version);
    assert!(new_version.ends_with("+handover-b"), "{new_version}");
    let signalled = Instant::now();
    let new_pid = s.hand_over(old_pid);
    pids.add(new_pid);
    assert_ne!(new_pid, old_pid);

    // Systemd's view: MAINPID= from the old process names the new one,
    // READY=1 then comes from the new one.
    let (mainpid_at, m) = manager.wait(
        old_pid,
        &format!("MAINPID={new_pid}"),
        Duration::from_secs(10),
    );
    let (ready_at, _) = manager.wait(new_pid, "READY=1", Duration::from_secs(10));
    assert!(ready_at >= mainpid_at, "READY=1 before MAINPID=: {m}");
    assert!(
        eventually(Duration::from_secs(5), || says() == format!("{new_pid}\n")).is_some(),
        "{:?}",
        says()
    );
    eprintln!(
        "hand-over: MAINPID= {:?} and READY=1 {:?} after SIGUSR2",
        mainpid_at - signalled,
        ready_at - signalled
    );
    // A login now reaches the new build.
    let (id, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "echo new-$((2+3))");
    assert!(text(&out.stdout).contains("new-5"), "{out:?}\n{}", log(&s));
    let r = redeemed(&s, &id);
    assert_eq!(r["daemon_pid"], new_pid, "{r}");
    assert_eq!(r["version"], new_version.as_str(), "{r}");
    assert_eq!(redeemed(&s, &shell_id)["version"], old_version.as_str());
    let started: Vec<Value> = s.events_of(None, "daemon.started");
    assert!(
        started.iter().any(
            |e| e["detail"]["pid"] == new_pid && e["detail"]["version"] == new_version.as_str()
        ),
        "{started:#?}"
    );

    // Watchdog pings: from whichever process is the main one, never a gap
    // longer than WATCHDOG_USEC across the hand-over.
    std::thread::sleep(Duration::from_secs(3));
    let mut main = old_pid;
    let mut last_ping: Option<Instant> = None;
    let mut worst = Duration::ZERO;
    for (at, pid, m) in manager.all() {
        if pid == main && m.lines().any(|l| l == format!("MAINPID={new_pid}")) {
            main = new_pid;
        }
        if pid == main && m.lines().any(|l| l == "WATCHDOG=1") {
            if let Some(p) = last_ping {
                worst = worst.max(at - p);
            }
            last_ping = Some(at);
        }
    }
    assert_eq!(main, new_pid);
    assert!(
        last_ping.unwrap() > ready_at,
        "no ping from the new process"
    );
    assert!(
        worst <= Duration::from_secs(2),
        "a watchdog gap of {worst:?} (WATCHDOG_USEC is 2 s)"
    );
    eprintln!("longest watchdog gap across the hand-over: {worst:?}");

    // The old shell answers, the tunnel never stopped; both end, and the
    // old process exits by itself.
    t.keys(&["echo after-$((7*8))", "Enter"]);
    t.wait_for("after-56");
    assert!(running(old_pid), "the old process left with live sessions");
    stop_talk.store(true, Ordering::Relaxed);
    let trips = talker.join().expect("the tunnel broke");
    assert!(trips > 100, "{trips} round trips");
    t.keys(&["exit 7", "Enter"]);
    t.wait_for("EXIT=7");
    let v = s.wait_state(&shell_id, "terminated", Duration::from_secs(10));
    assert_eq!(v["exit_status"], 7, "{v:#}");
    tunnel.kill().unwrap();
    tunnel.wait().unwrap();
    let v = s.wait_state(&tunnel_id, "terminated", Duration::from_secs(10));
    assert_eq!(v["end_reason"], "disconnected", "{v:#}");
    let exited = eventually(Duration::from_secs(10), || {
        old.try_wait().unwrap().is_some()
    });
    assert!(
        exited.is_some(),
        "the old process did not exit:\n{}",
        log(&s)
    );
    assert!(old.wait().unwrap().success());
    assert!(running(new_pid));
    // The old process's exit left the new one's word standing.
    assert_eq!(says(), format!("{new_pid}\n"));
    kill(Pid::from_raw(new_pid), Signal::SIGTERM).unwrap();
    eventually(Duration::from_secs(10), || !running(new_pid));
    assert!(log(&s).contains("stopped (handed over)"), "{}", log(&s));
    assert!(!marker.exists(), "the marker outlived the daemon");
}

#[test]
fn past_the_deadline_what_is_left_ends_daemon_upgraded_and_the_person_is_told() {
    let mut s = Server::configure(
        "handover-deadline",
        Opts {
            server_extra: "handover_deadline = \"3s\"\n".into(),
            ..Opts::default()
        },
    );
    let pids = Pids(Mutex::new(Vec::new()));
    s.child = Some(serve(&s, Path::new(BIN), &[]));
    s.wait_listening();
    let (id, tok) = s.issue("ops", &[]);
    let client = s
        .ssh_opts("ops", &tok, &[])
        .arg("echo started; sleep 60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_state(&id, "active", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let new_pid = s.hand_over(s.pid());
    pids.add(new_pid);
    let out = client.wait_with_output().unwrap();
    let took = t0.elapsed();
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    assert_eq!(v["end_reason"], "daemon_upgraded", "{v:#}");
    let said = text(&out.stderr);
    assert!(said.contains("the bastion was upgraded"), "{said:?}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
    let old = s.child.as_mut().unwrap();
    assert!(eventually(Duration::from_secs(10), || old
        .try_wait()
        .unwrap()
        .is_some())
    .is_some());
    // The new process serves on.
    let (_, tok) = s.issue("ops", &[]);
    assert!(text(&s.ssh_run("ops", &tok, &[], "echo fine").stdout).contains("fine"));
    kill(Pid::from_raw(new_pid), Signal::SIGTERM).unwrap();
    eventually(Duration::from_secs(10), || !running(new_pid));
}

#[test]
fn a_crash_of_the_new_process_costs_only_its_own_sessions() {
    let mut s = Server::configure("handover-crash", Opts::default());
    let pids = Pids(Mutex::new(Vec::new()));
    s.child = Some(serve(&s, Path::new(BIN), &[]));
    s.wait_listening();
    let old_pid = s.pid();
    // A session on the old process that answers what it is sent.
    let (old_id, tok) = s.issue("ops", &[]);
    let mut old_client = s
        .ssh_opts("ops", &tok, &[])
        .arg("while read l; do echo got-$l; done")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut old_in = old_client.stdin.take().unwrap();
    let mut old_out = buffered(old_client.stdout.take().unwrap());
    old_in.write_all(b"one\n").unwrap();
    read_until(&mut old_out, "got-one");
    let new_pid = s.hand_over(old_pid);
    pids.add(new_pid);
    // One on the new process.
    let (new_id, tok) = s.issue("ops", &[]);
    let mut new_client = s
        .ssh_opts("ops", &tok, &[])
        .arg("sleep 60")
        .spawn()
        .unwrap();
    s.wait_state(&new_id, "active", Duration::from_secs(10));
    let mut leader = 0;
    eventually(Duration::from_secs(10), || {
        leader = s
            .events_of(Some(&new_id), "session.started")
            .first()
            .and_then(|e| e["detail"]["pid"].as_i64())
            .unwrap_or(0) as i32;
        leader > 0
    });
    assert!(leader > 0, "no pid recorded for {new_id}");
    assert_eq!(redeemed(&s, &new_id)["daemon_pid"], new_pid);
    kill(Pid::from_raw(new_pid), Signal::SIGKILL).unwrap();
    eventually(Duration::from_secs(5), || !running(new_pid));
    // A restart (what Restart=on-failure does): only the dead process's
    // session is ended, and what was left of it killed.
    let restarted = serve(&s, Path::new(BIN), &[]);
    let restarted_pid = restarted.id() as i32;
    pids.add(restarted_pid);
    let v = s.wait_state(&new_id, "terminated", Duration::from_secs(20));
    assert_eq!(v["end_reason"], "daemon_stopped", "{v:#}");
    assert!(
        eventually(Duration::from_secs(10), || !running(leader)).is_some(),
        "the dead process's session command is still running"
    );
    let _ = new_client.kill();
    let _ = new_client.wait();
    assert_eq!(s.show(&old_id)["state"], "active");
    old_in.write_all(b"two\n").unwrap();
    read_until(&mut old_out, "got-two");
    assert!(running(old_pid));
    // Stopping the service ends every session, the draining process's too.
    kill(Pid::from_raw(restarted_pid), Signal::SIGTERM).unwrap();
    let v = s.wait_state(&old_id, "terminated", Duration::from_secs(20));
    assert_eq!(v["end_reason"], "daemon_stopped", "{v:#}");
    let old = s.child.as_mut().unwrap();
    assert!(eventually(Duration::from_secs(15), || old
        .try_wait()
        .unwrap()
        .is_some())
    .is_some());
    let _ = old_client.wait();
    assert!(eventually(Duration::from_secs(10), || !running(restarted_pid)).is_some());
    let mut r = restarted;
    let _ = r.wait();
}

#[test]
fn three_hand_overs_under_a_stream_of_logins_lose_none() {
    let mut s = Server::configure("handover-stream", Opts::default());
    let pids = Pids(Mutex::new(Vec::new()));
    s.child = Some(serve(&s, Path::new(BIN), &[]));
    s.wait_listening();
    let s = Arc::new(s);
    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicUsize::new(0));
    let issued: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (s, stop, logins, issued) =
                (s.clone(), stop.clone(), logins.clone(), issued.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (id, tok) = s.issue("ops", &[]);
                    issued.lock().unwrap().push(id.clone());
                    let out = s.ssh_run("ops", &tok, &[], "echo ok-$((40+2))");
                    assert!(
                        text(&out.stdout).contains("ok-42"),
                        "login {id} failed: {out:?}\n{}",
                        log(&s)
                    );
                    logins.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut pid = s.pid();
    let mut served_by = vec![pid];
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        pid = s.hand_over(pid);
        pids.add(pid);
        served_by.push(pid);
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.join().expect("a login failed");
    }
    let ids = issued.lock().unwrap().clone();
    assert_eq!(ids.len(), logins.load(Ordering::Relaxed));
    eprintln!("{} logins across 3 hand-overs", ids.len());
    let mut by_process = std::collections::BTreeMap::new();
    for id in &ids {
        let v = s.wait_state(id, "terminated", Duration::from_secs(10));
        assert_eq!(v["end_reason"], "exited", "{v:#}");
        assert_eq!(v["exit_status"], 0, "{v:#}");
        *by_process
            .entry(redeemed(&s, id)["daemon_pid"].as_i64().unwrap())
            .or_insert(0) += 1;
    }
    eprintln!("logins per process: {by_process:?}");
    // Every process served some; none is left active.
    for p in &served_by {
        assert!(
            by_process.contains_key(&(*p as i64)),
            "{p} served none: {by_process:?}"
        );
    }
    let active = s.cli_json(&["session", "list", "--state", "active"]);
    assert_eq!(active.as_array().map_or(0, |a| a.len()), 0, "{active:#}");
    // The earlier processes exit by themselves.
    for p in &served_by[..3] {
        assert!(
            eventually(Duration::from_secs(10), || !running(*p)).is_some(),
            "{p} still runs"
        );
    }
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    eventually(Duration::from_secs(10), || !running(pid));
}

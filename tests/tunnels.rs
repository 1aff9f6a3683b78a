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
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    issue_tunnel_to(s, "echo", extra)
}

/// `session issue --target TARGET --login-user ops`: (id, token, the JSON).
fn issue_tunnel_to(s: &Server, target: &str, extra: &[&str]) -> (String, String, Value) {
    let mut a = vec![
        "session",
        "issue",
        "--target",
        target,
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
    if !closed_within(&mut w, Duration::from_secs(5)) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "a forward to another destination was not refused; ssh said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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

    // A shell request, with -A and a real agent, gets the explanation and
    // closes; the agent request is refused and recorded.
    let dir = TempDir::new("tunnels-agent");
    let sock = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || sock.exists()).is_some());
    let (id, token, _) = issue_tunnel(&s, &[]);
    let out = s
        .ssh("ops", &token)
        .arg("-A")
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("opens a tunnel to echo") && said.contains("ssh -N -L"),
        "{said}"
    );
    let refused: Vec<Value> = s
        .events_of(Some(&id), "session.request_refused")
        .into_iter()
        .map(|e| e["detail"]["request"].clone())
        .collect();
    assert!(
        refused.contains(&Value::from("agent forwarding")),
        "{refused:?}"
    );
    assert!(refused.len() >= 2, "the shell request too: {refused:?}");
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
        // The session (and its 3 s) starts after this.
        let spawned = std::time::Instant::now();
        let mut child = ssh_n(&s, &token, &["-L", &fwd]);
        let mut a = dial(lp);
        let mut b = dial(lp);
        roundtrip(&mut a, 100, 1);
        roundtrip(&mut b, 100, 2);
        assert_eq!(echo.open.load(Ordering::SeqCst), 2);
        if how == "cancel" {
            assert!(s.cli(&["session", "cancel", &id]).status.success());
        }
        // Within a second of the cancel, or of the 3 s running out.
        let limit = if how == "cancel" {
            Duration::from_secs(1)
        } else {
            (spawned + Duration::from_secs(4)).saturating_duration_since(std::time::Instant::now())
        };
        assert!(closed_within(&mut a, limit), "{how}");
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

/// A real OpenSSH server on loopback, as the SSH target behind the bastion:
/// its own host key, one client key authorized, no password logins. As
/// root it logs in root (by key); otherwise only the invoking user.
struct Sshd {
    port: u16,
    child: Child,
    key: std::path::PathBuf,
    login: String,
}

impl Sshd {
    fn start(dir: &std::path::Path) -> Sshd {
        let host = keygen(dir, "sshd_host", &["-t", "ed25519"]);
        let key = keygen(dir, "client", &["-t", "ed25519"]);
        let auth = dir.join("authorized_keys");
        std::fs::copy(dir.join("client.pub"), &auth).unwrap();
        let port = free_port();
        let cfg = dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nUsePAM no\nPidFile none\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
                host.display(),
                auth.display()
            ),
        )
        .unwrap();
        let root = nix::unistd::Uid::effective().is_root();
        if root {
            // Its privilege separation directory, as the package's unit makes it.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (openssh-server; scripts/test.sh installs it)");
        let up = eventually(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up.is_some(),
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        let login = invoking_user();
        Sshd {
            port,
            child,
            key,
            login,
        }
    }

    /// An ssh_config for a client reaching the target `inner` through the
    /// bastion at 127.0.0.1: given with -F, OpenSSH hands it to the -J child.
    fn client_config(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("ssh_config");
        std::fs::write(
            &path,
            format!(
                "Host inner\n  Port {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  BatchMode yes\n\
                 Host 127.0.0.1\n  PubkeyAuthentication no\n  NumberOfPasswordPrompts 1\n\
                 Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                self.port,
                self.key.display()
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(pid, command line)` of every process whose argv contains `needle`.
fn cmdlines_containing(needle: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push((name, cmd));
            }
        }
    }
    out
}

#[test]
fn jump_and_stdio_forward_log_in_to_a_real_ssh_target() {
    let sshd_dir = TempDir::new("tunnels-sshd");
    let sshd = Sshd::start(sshd_dir.path());
    let s = Server::start_with(
        "tunnels-jump",
        Opts {
            tail: format!(
                "[targets.inner]\nhost = \"127.0.0.1\"\nport = {}\nssh = true\n",
                sshd.port
            ),
            ..Opts::default()
        },
    );
    let cfg = sshd.client_config(sshd_dir.path());
    let cfg = cfg.to_str().unwrap();
    let (id, token, v) = issue_tunnel_to(&s, "inner", &[]);
    let jump = v["ssh_jump"].as_str().unwrap();
    assert!(jump.contains("-J ops@"), "{jump}");

    // -J: OpenSSH's own ProxyJump child asks the bastion for the token.
    let target = format!("{}@inner", sshd.login);
    let askpass = askpass_script(&sshd_dir.path().join("askpass"), &token);
    let out = std::process::Command::new("ssh")
        .args(["-F", cfg, "-J", &format!("ops@127.0.0.1:{}", s.port)])
        .arg(&target)
        .arg("echo logged-in-as-$(id -un)")
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("logged-in-as-{}\n", sshd.login),
        "{}\n{}",
        text(&out.stderr),
        s.log_text()
    );
    let opened = s.events_of(Some(&id), "tunnel.opened");
    assert_eq!(opened.len(), 1, "{opened:#?}");
    let closed = s.events_of(Some(&id), "tunnel.closed");
    assert!(
        closed.len() == 1 && closed[0]["detail"]["bytes_to_client"].as_u64() > Some(1000),
        "{closed:#?}"
    );

    // -W, from `tollgate connect` as the ProxyCommand, the token in a variable.
    let (_, token2, _) = issue_tunnel_to(&s, "inner", &[]);
    let proxy = format!(
        "{BIN} connect --server 127.0.0.1:{} --login-user ops --token-env TG_TEST_TOKEN -- -F {cfg} -W %h:%p",
        s.port
    );
    let out = std::process::Command::new("ssh")
        .args(["-F", cfg, "-o", &format!("ProxyCommand={proxy}")])
        .arg(&target)
        .arg("echo via-connect")
        .env("TG_TEST_TOKEN", &token2)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_ASKPASS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "via-connect\n",
        "{}\n{}",
        text(&out.stderr),
        s.log_text()
    );
}

#[test]
fn connect_feeds_the_token_from_a_file_or_a_variable_never_argv() {
    let echo = Echo::start();
    let s = server(&echo, "");
    let tmp = TempDir::new("tunnels-connect");
    let client_opts = [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ];
    let connect = |source: &[&str], extra: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.args(["connect", "--server", &format!("127.0.0.1:{}", s.port)])
            .args(["--login-user", "ops"])
            .args(source)
            .arg("--")
            .args(client_opts)
            .args(extra)
            .env_remove("SSH_ASKPASS")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        c
    };

    // From a file: a -L tunnel, alive while /proc is searched.
    let (id, token, _) = issue_tunnel(&s, &[]);
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let lp = free_port();
    let fwd = format!("{lp}:echo:{}", echo.port);
    let mut child = connect(
        &["--token-file", file.to_str().unwrap()],
        &["-N", "-L", &fwd],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut c = dial(lp);
    roundtrip(&mut c, 5000, 9);
    s.wait_state(&id, "active", Duration::from_secs(5));
    assert_eq!(cmdlines_containing(&token), Vec::<(String, String)>::new());
    // connect became ssh (same pid), given the file's path, not the token.
    let pid = child.id();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(argv.starts_with(b"ssh\0-l\0ops\0"), "{}", text(&argv));
    let environ = text(&std::fs::read(format!("/proc/{pid}/environ")).unwrap());
    assert!(environ.contains(file.to_str().unwrap()) && !environ.contains(&token));
    drop(c);
    child.kill().unwrap();
    child.wait().unwrap();
    s.wait_state(&id, "terminated", Duration::from_secs(10));

    // From a variable: a command session; ssh's exit status is connect's.
    let (id, token) = s.issue("ops", &[]);
    let child = connect(&["--token-env", "TG_TOKEN"], &["-T", "sleep 1; exit 3"])
        .env("TG_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_state(&id, "active", Duration::from_secs(10));
    assert_eq!(cmdlines_containing(&token), Vec::<(String, String)>::new());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // A used token fails like any other bad login: ssh's 255, no hanging prompt.
    let out = connect(&["--token-env", "TG_TOKEN"], &["-T", "true"])
        .env("TG_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );

    // Usage errors: 2, with the reason.
    let usage = |c: &mut std::process::Command, says: &str| {
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    };
    usage(
        connect(&["--token-env", "TG_TOKEN"], &[]).env("PATH", "/nonexistent"),
        "local ssh client not found",
    );
    usage(
        connect(&["--token-env", "TG_UNSET_VARIABLE"], &[]).env_remove("TG_UNSET_VARIABLE"),
        "TG_UNSET_VARIABLE is not set",
    );
    usage(
        &mut connect(&["--token-file", "/nonexistent/token"], &[]),
        "cannot read token file /nonexistent/token",
    );
    usage(
        std::process::Command::new(BIN).args([
            "connect",
            "--server",
            "bastion:0",
            "--login-user",
            "ops",
        ]),
        "--server \"bastion:0\"",
    );
}

#[test]
fn connect_leaves_other_questions_to_the_person_at_the_terminal() {
    // ssh asks everything through askpass when it is forced: a new host
    // key is asked at the terminal; the token prompt is answered silently.
    let s = Server::start("tunnels-connect-tty");
    let (id, token) = s.issue("ops", &[]);
    let tmp = TempDir::new("tunnels-connect-tty");
    let kh = tmp.path().join("known_hosts");
    let mut c = std::process::Command::new(BIN);
    c.args(["connect", "--server", &format!("127.0.0.1:{}", s.port)])
        .args(["--login-user", "ops", "--token-env", "TG_TOKEN", "--"])
        .args(["-F", "/dev/null", "-o"])
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .env("TG_TOKEN", &token)
        .env_remove("SSH_AUTH_SOCK");
    let t = Tmux::start(&tmp.path().join("connect.sh"), &c, 120, 30);
    t.wait_for("Are you sure you want to continue connecting");
    t.keys(&["yes", "Enter"]);
    s.wait_state(&id, "active", Duration::from_secs(10));
    t.keys(&["echo tg-$((6*7))", "Enter"]);
    let screen = t.wait_for("tg-42");
    assert!(!screen.contains(&token), "{screen}");
    assert!(text(&std::fs::read(&kh).unwrap()).contains("ssh-ed25519"));
}

//! What every client family's test checks, whatever the client: each
//! `tests/clients_*.rs` drives its real client the way its documentation
//! says to, against a server with the default config (plus one tunnel
//! target, a real echo server), and hands the results to these checks.
//! A client's files (known_hosts, keys) live in a HOME of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::*;

/// What every exec test runs: stdout, stderr and a status to tell apart.
pub const EXEC: &str = "echo out; echo err >&2; exit 3";

/// A server with the default config (the harness's profile, nothing about
/// ciphers or methods) and `[targets.echo]` pointing at a real echo server.
pub fn server_with_echo(tag: &str) -> (Server, Echo) {
    let echo = Echo::start();
    let s = Server::start_with(
        tag,
        Opts {
            tail: format!(
                "[targets.echo]\nhost = \"127.0.0.1\"\nport = {}\n",
                echo.port
            ),
            ..Opts::default()
        },
    );
    (s, echo)
}

/// A HOME for a client: `.ssh/known_hosts` lists the server's host key.
pub struct ClientHome(pub TempDir);

impl ClientHome {
    pub fn new(s: &Server, tag: &str) -> ClientHome {
        let h = ClientHome(TempDir::new(tag));
        std::fs::create_dir_all(h.ssh_dir()).unwrap();
        std::fs::write(
            h.ssh_dir().join("known_hosts"),
            format!("[127.0.0.1]:{} {}\n", s.port, host_public_key(s)),
        )
        .unwrap();
        h
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    pub fn ssh_dir(&self) -> PathBuf {
        self.0.path().join(".ssh")
    }
}

/// The server's host key as an OpenSSH public key line (type and base64).
pub fn host_public_key(s: &Server) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(s.dir.path().join("host_key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    let mut f = line.split_whitespace();
    format!("{} {}", f.next().unwrap(), f.next().unwrap())
}

/// The server's host key's SHA-256 fingerprint, as `ssh-keygen -l` prints it.
pub fn host_key_sha256(s: &Server) -> String {
    fingerprint(&s.dir.path().join("host_key"), "sha256")
}

/// Checks an exec of [`EXEC`]: status 3, stdout and stderr apart (a client
/// may say things of its own on stderr before the command's).
pub fn check_exec(client: &str, out: &Output) {
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{client}: {o} / {e}");
    assert_eq!(o, "out\n", "{client}: stdout");
    assert!(
        e.ends_with("err\n") && !e.contains("out"),
        "{client}: stderr {e:?}"
    );
}

/// Runs `exec` with a token for `ops`, checks it, and checks that the
/// journal has the session ending with that status.
pub fn exec_scenario(client: &str, s: &Server, exec: impl Fn(&str) -> Output) {
    let (id, tok) = s.issue("ops", &[]);
    let out = exec(&tok);
    check_exec(client, &out);
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    assert_eq!(v["exit_status"], 3, "{client}: {v:#}");
    assert_eq!(v["end_reason"], "exited", "{client}: {v:#}");
}

/// What a login runs to show it got in.
pub const GOT_IN: &str = "echo IN-$((6*7))";

/// A used token and a wrong one fail alike: neither gets in, same status,
/// and the same words once each token is blanked out. `login` presents a
/// token and runs [`GOT_IN`].
pub fn refusal_scenario(client: &str, s: &Server, login: impl Fn(&str) -> Output) {
    let got_in = |o: &Output| text(&o.stdout).contains("IN-42");
    let (_, tok) = s.issue("ops", &[]);
    let first = login(&tok);
    assert!(
        got_in(&first),
        "{client}: first use failed: {}",
        text(&first.stderr)
    );
    let used = login(&tok);
    let wrong_tok = "tg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let wrong = login(wrong_tok);
    assert!(!got_in(&used), "{client}: a used token got in");
    assert!(!got_in(&wrong), "{client}: a wrong token got in");
    assert_eq!(used.status.code(), wrong.status.code(), "{client}");
    let blank =
        |o: &Output, t: &str| (text(&o.stdout) + "|" + &text(&o.stderr)).replace(t, "TOKEN");
    assert_eq!(
        blank(&used, &tok),
        blank(&wrong, wrong_tok),
        "{client}: a used token must fail exactly like a wrong one"
    );
}

/// `cmd` in a shell that prints `EXIT=<status>` when it ends, for a tmux
/// terminal (same program, arguments and environment).
pub fn reporting_exit(cmd: &Command) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg("\"$0\" \"$@\"; echo EXIT=$?")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// A person at a real terminal (tmux, 80×24) once the shell runs: the
/// size the client reported, a resize, Ctrl-C, and `exit 7`, whose status
/// the client must return. `id` is the session's.
pub fn terminal_scenario(client: &str, s: &Server, id: &str, t: &Tmux) {
    t.keys(&["echo S$(stty size | tr ' ' x)", "Enter"]);
    t.wait_for("S24x80");
    t.run(&["resize-window", "-t", "tg", "-x", "100", "-y", "30"]);
    t.keys(&["clear; echo S$(stty size | tr ' ' x)", "Enter"]);
    t.wait_for("S30x100");
    t.keys(&["sleep 30; echo A$((1+1))", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    t.keys(&["C-c"]);
    t.keys(&["echo C$?", "Enter"]);
    let screen = t.wait_for("C130");
    assert!(
        !screen.contains("A2"),
        "{client}: sleep not interrupted:\n{screen}"
    );
    t.keys(&["exit 7", "Enter"]);
    t.wait_for("EXIT=7");
    let v = s.wait_state(id, "terminated", Duration::from_secs(10));
    assert_eq!(v["exit_status"], 7, "{client}: {v:#}");
    let history = v["history"].as_array().unwrap();
    assert!(
        history.iter().any(|e| e["kind"] == "session.resized"
            && e["detail"]["cols"] == 100
            && e["detail"]["rows"] == 30),
        "{client}: no resize event: {history:#?}"
    );
    let started = &s.events_of(Some(id), "session.started")[0];
    assert_eq!(started["detail"]["pty"], true, "{client}");
}

/// Waits for a line of the screen to end with `Token:` (the prompt), then
/// types `token`.
pub fn type_token(t: &Tmux, token: &str) {
    let ok = eventually(Duration::from_secs(15), || {
        t.screen().lines().any(|l| l.trim_end().ends_with("Token:"))
    });
    assert!(ok.is_some(), "no Token: prompt:\n{}", t.screen());
    t.keys(&["-l", token]);
    t.keys(&["Enter"]);
}

/// Issues a tunnel token to `echo`: (id, token).
pub fn issue_echo_tunnel(s: &Server) -> (String, String) {
    let v = s.cli_json(&[
        "session",
        "issue",
        "--target",
        "echo",
        "--login-user",
        "ops",
    ]);
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

/// Bytes through a local forward on `port` to the echo target come back
/// whole, and the journal counts them on the session.
pub fn check_forward(client: &str, s: &Server, id: &str, port: u16, n: usize) {
    let mut c = dial(port);
    roundtrip(&mut c, n, 7);
    drop(c);
    check_forwarded(client, s, id, n);
}

/// The journal has a forward of the session `id` that carried `n` bytes
/// each way.
pub fn check_forwarded(client: &str, s: &Server, id: &str, n: usize) {
    let closed = eventually(Duration::from_secs(10), || {
        s.events_of(Some(id), "tunnel.closed")
            .iter()
            .any(|e| e["detail"]["bytes_from_client"] == n && e["detail"]["bytes_to_client"] == n)
    });
    assert!(
        closed.is_some(),
        "{client}: no tunnel.closed with {n} bytes: {:#?}",
        s.events_of(Some(id), "tunnel.closed")
    );
}

/// What a library-driven shell (tests/clients/*.py `shell`) printed and
/// returned: the sizes, Ctrl-C's status 130, exit 7; and the journal's
/// resize and status.
pub fn check_scripted_shell(client: &str, s: &Server, id: &str, out: &Output) {
    let o = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{client}: {o}\n{}",
        text(&out.stderr)
    );
    for want in ["S24x80", "S30x100", "C130"] {
        assert!(o.contains(want), "{client}: {want} not in {o}");
    }
    assert!(!o.contains("A2"), "{client}: sleep not interrupted: {o}");
    let v = s.wait_state(id, "terminated", Duration::from_secs(10));
    assert_eq!(v["exit_status"], 7, "{client}: {v:#}");
    assert!(
        v["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "session.resized"
                && e["detail"]["cols"] == 100
                && e["detail"]["rows"] == 30),
        "{client}: {v:#}"
    );
}

/// What a library-driven forward (tests/clients/*.py `forward`) reported:
/// its bytes came back whole, and the journal counts them.
pub fn check_scripted_forward(client: &str, s: &Server, id: &str, out: &Output, n: usize) {
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{client}: {e}: {}", text(&out.stderr)));
    assert_eq!(r["same"], true, "{client}: {r}");
    assert_eq!(r["sent"], n, "{client}: {r}");
    check_forwarded(client, s, id, n);
}

/// A collect session (no confirmation, one key) with identifier `ident`.
pub fn create_collect(s: &Server, ident: &str) -> Value {
    s.cli_json(&["collect", "create", "--identifier", ident])
}

/// The collect session recorded exactly the key at `key` (its `.pub`
/// beside it), with ssh-keygen's SHA-256 fingerprint, and completed.
pub fn check_collected(client: &str, s: &Server, ident: &str, key: &Path) {
    let want = fingerprint(&key.with_extension("pub"), "sha256");
    let mut shown = Value::Null;
    let done = eventually(Duration::from_secs(10), || {
        shown = s.cli_json(&["collect", "show", ident]);
        shown["status"] == "completed"
    });
    assert!(done.is_some(), "{client}: not completed: {shown:#}");
    let keys: Vec<&Value> = shown["connections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["keys"].as_array().unwrap())
        .collect();
    assert_eq!(keys.len(), 1, "{client}: {shown:#}");
    assert_eq!(keys[0]["public_key_sha256"], want.as_str(), "{client}");
}

//! Test harness: starts the real `tollgate` binary on a loopback port with
//! its own config, journal and host key in a temporary directory, and drives
//! it with the real OpenSSH client. Tokens reach `ssh` through SSH_ASKPASS,
//! as `tollgate connect` will, never through argv.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

mod pg;
#[allow(unused_imports)]
pub use pg::*;

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tollgate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The account sessions run as: `nobody` when the tests run as root.
pub fn session_user() -> String {
    if nix::unistd::Uid::effective().is_root() {
        "nobody".into()
    } else {
        invoking_user()
    }
}

/// The name of the account running the tests.
pub fn invoking_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap()
        .name
}

/// An SSH_ASKPASS program at `path` that answers every prompt with `token`.
pub fn askpass_script(path: &Path, token: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\necho {}\n", shell_quote(token))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path.to_path_buf()
}

/// A free loopback port (TCP and UDP) for a listener the test starts next.
///
/// Taken below the kernel's ephemeral range, each port once per test
/// process: a port the OS picked for `bind(0)` is free again the moment it
/// is returned, and the next `connect()` anywhere on the machine may take
/// it as its source port (or, on loopback, connect to itself), so a test
/// that dials it would reach a stranger. Ports below the range are never
/// handed out by the kernel, and the counter never hands one out twice.
pub fn free_port() -> u16 {
    use std::net::UdpSocket;
    use std::sync::OnceLock;
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FLOOR: u32 = 10_000;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if low < FLOOR + 2_000 {
        // No room below the range: let the OS pick.
        return TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let span = low - FLOOR;
    // Test binaries run one after another; a start of their own still
    // keeps two that overlap (a rerun, a second checkout) apart.
    let start = *START.get_or_init(|| std::process::id().wrapping_mul(7_919) % span);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (FLOOR + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port in {FLOOR}..{low}");
}

/// Knobs for a test server.
#[derive(Clone)]
pub struct Opts {
    pub sessions: String,
    pub server_extra: String,
    pub profile_extra: String,
    pub command: String,
    /// Appended at the end of the file (e.g. `[[drains]]` tables).
    pub tail: String,
    /// After `[server]`'s keys: by default 127.0.0.1, where every test's
    /// own logins come from (many failing on purpose), is exempt from
    /// per-source penalties. tests/admission.rs attacks from 127.0.0.2
    /// and up, and empties this to test the defaults.
    pub admission: String,
    /// `[server]` lines naming the journal instead of the SQLite file in
    /// the server's directory (e.g. [`Postgres::journal_lines`]).
    pub journal: Option<String>,
}

/// The harness's admission settings (see [`Opts::admission`]).
pub const EXEMPT_LOOPBACK: &str = "[server.per_source_penalties]\nexempt = [\"127.0.0.1\"]\n";

impl Default for Opts {
    fn default() -> Self {
        Opts {
            sessions: "kill_grace = \"2s\"\n".into(),
            server_extra: String::new(),
            profile_extra: "allow_exec = true\n".into(),
            command: "/bin/sh -i".into(),
            tail: String::new(),
            admission: EXEMPT_LOOPBACK.into(),
            journal: None,
        }
    }
}

pub struct Server {
    pub dir: TempDir,
    pub port: u16,
    pub config: PathBuf,
    pub child: Option<Child>,
    log: PathBuf,
    /// With `TOLLGATE_TEST_JOURNAL=postgres` (scripts/test.sh runs the
    /// journal-heavy tests a second time so): the throwaway PostgreSQL
    /// cluster that is this server's journal, stopped after the daemon.
    pg: Option<Postgres>,
}

/// Whether tests whose servers name no journal of their own run them on a
/// throwaway PostgreSQL cluster each (`TOLLGATE_TEST_JOURNAL=postgres`).
pub fn journal_on_postgres() -> bool {
    std::env::var("TOLLGATE_TEST_JOURNAL").is_ok_and(|v| v == "postgres")
}

impl Server {
    pub fn start(tag: &str) -> Server {
        Self::start_with(tag, Opts::default())
    }

    pub fn start_with(tag: &str, o: Opts) -> Server {
        let mut s = Self::configure(tag, o);
        s.spawn();
        s
    }

    /// Writes the config (and picks the port) without starting the daemon.
    pub fn configure(tag: &str, o: Opts) -> Server {
        let dir = TempDir::new(tag);
        let port = free_port();
        let d = dir.path().display().to_string();
        let config = dir.path().join("tollgate.toml");
        let pg = (o.journal.is_none() && journal_on_postgres()).then(Postgres::start);
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = ["127.0.0.1:{port}"]
host_keys = ["{d}/host_key"]
{journal}
{server_extra}
{admission}
[sessions]
{sessions}
[profiles.console]
user = "{user}"
command = "{command}"
shell = "/bin/sh"
env = {{ TG_PROFILE_VAR = "from-profile" }}
{profile_extra}
{tail}
{recordings}
"#,
                journal = o.journal.clone().unwrap_or_else(|| match &pg {
                    Some(pg) => pg.journal_lines(),
                    None => format!("journal = \"{d}/journal.db\""),
                }),
                server_extra = o.server_extra,
                admission = o.admission,
                sessions = o.sessions,
                user = session_user(),
                command = o.command,
                profile_extra = o.profile_extra,
                recordings = if o.tail.contains("[recordings]") {
                    String::new()
                } else {
                    // Beside the test's journal whatever it is (the default
                    // for a PostgreSQL one is /var/lib/tollgate).
                    format!("[recordings]\ndir = \"{d}/recordings\"\n")
                },
                tail = o.tail,
            ),
        )
        .unwrap();
        let log = dir.path().join("serve.log");
        Server {
            dir,
            port,
            config,
            child: None,
            log,
            pg,
        }
    }

    /// `tollgate serve` for this config, logging to `serve.log`.
    pub fn serve_command(&self) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("TOLLGATE_LOG", "info,tollgate=debug")
            .stdout(Stdio::null())
            .stderr(log);
        c
    }

    /// Starts the daemon with a soft open-file limit of `soft` (the hard
    /// limit stays), as the unit's LimitNOFILE=1024:262144 does.
    pub fn spawn_with_nofile(&mut self, soft: u64) {
        let mut c = self.serve_command();
        lower_nofile(&mut c, soft);
        self.child = Some(c.spawn().unwrap());
        self.wait_listening();
    }

    /// Starts (or restarts) the daemon and waits until it accepts.
    pub fn spawn(&mut self) {
        let child = self.serve_command().spawn().unwrap();
        self.child = Some(child);
        self.wait_listening();
    }

    /// Waits until the daemon accepts on its port (panics if it exits).
    pub fn wait_listening(&mut self) {
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tollgate serve exited with {st}: {}", self.log_text());
            }
            assert!(Instant::now() < until, "tollgate did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Runs the admin CLI against this server's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.cli(&a);
        assert!(
            out.status.success(),
            "tollgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Issues a token for the `console` profile; returns (id, token).
    pub fn issue(&self, login_user: &str, extra: &[&str]) -> (String, String) {
        self.issue_profile("console", login_user, extra)
    }

    /// Issues a token for `profile`; returns (id, token).
    pub fn issue_profile(
        &self,
        profile: &str,
        login_user: &str,
        extra: &[&str],
    ) -> (String, String) {
        let mut a = vec![
            "session",
            "issue",
            "--profile",
            profile,
            "--login-user",
            login_user,
        ];
        a.extend_from_slice(extra);
        let v = self.cli_json(&a);
        (
            v["id"].as_str().unwrap().to_string(),
            v["token"].as_str().unwrap().to_string(),
        )
    }

    /// Journal events of one `kind` (of one session when given), oldest first.
    pub fn events_of(&self, session: Option<&str>, kind: &str) -> Vec<Value> {
        let mut a = vec!["events"];
        if let Some(id) = session {
            a.extend(["--session", id]);
        }
        self.cli_json(&a)
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect()
    }

    pub fn show(&self, id: &str) -> Value {
        self.cli_json(&["session", "show", id])
    }

    /// Waits until the session reaches `state`; returns the final JSON.
    pub fn wait_state(&self, id: &str, state: &str, limit: Duration) -> Value {
        let until = Instant::now() + limit;
        loop {
            let v = self.show(id);
            if v["state"] == state {
                return v;
            }
            assert!(
                Instant::now() < until,
                "session {id} never reached {state}: {v:#}\nlog:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An `ssh` command for `user@` this server, presenting `token`.
    pub fn ssh(&self, user: &str, token: &str) -> Command {
        self.ssh_opts(user, token, &[])
    }

    /// Like [`Server::ssh`] with options placed first: ssh keeps the first
    /// value given for an option, so these win over the harness defaults.
    pub fn ssh_opts(&self, user: &str, token: &str, first: &[&str]) -> Command {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let askpass = askpass_script(&self.dir.path().join(format!("askpass-{n}")), token);
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null"])
            .args(first)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-o", "NumberOfPasswordPrompts=1"])
            .args(["-o", "PubkeyAuthentication=no", "-o", "ConnectTimeout=20"])
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        c
    }

    /// Runs `ssh user@server CMD` with the token and collects its output.
    pub fn ssh_run(&self, user: &str, token: &str, extra: &[&str], remote: &str) -> Output {
        let mut c = self.ssh(user, token);
        c.args(extra);
        if !remote.is_empty() {
            c.arg(remote);
        }
        c.output().unwrap()
    }

    /// Sends SIGUSR2 to the daemon process `from` and returns the pid of
    /// the process it handed over to (from its `daemon.handed_over` event).
    pub fn hand_over(&self, from: i32) -> i32 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(from),
            nix::sys::signal::Signal::SIGUSR2,
        )
        .unwrap();
        let mut new = None;
        let ok = eventually(Duration::from_secs(60), || {
            new = self
                .events_of(None, "daemon.handed_over")
                .iter()
                .find(|e| e["detail"]["pid"] == from)
                .and_then(|e| e["detail"]["new_pid"].as_i64());
            new.is_some()
        });
        assert!(
            ok.is_some(),
            "no hand-over from {from}:\n{}",
            self.log_text()
        );
        new.unwrap() as i32
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        Some(child.wait().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Whether `pid` runs (a zombie does not).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s[s.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            state != "Z" && state != "X"
        })
        .unwrap_or(false)
}

/// Pids of live processes whose command line starts with `needle`.
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true);
        if cmd.starts_with(needle) && !zombie {
            out.push(pid);
        }
    }
    out
}

/// Waits until `f` holds or `limit` passes; returns whether it held and when.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Reads lines from a child's stdout until one contains `needle`.
pub fn read_until(r: &mut impl BufRead, needle: &str) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("EOF before {needle:?}; got:\n{all}");
        }
        all.push_str(&line);
        if line.contains(needle) {
            return all;
        }
    }
}

pub fn buffered<R: std::io::Read>(r: R) -> BufReader<R> {
    BufReader::new(r)
}

/// A real terminal (a tmux server of its own) running one command.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Writes `cmd` (its environment and arguments) as a script at
    /// `script` and runs it in a new `cols`×`rows` tmux window named `tg`.
    pub fn start(script: &Path, cmd: &Command, cols: u16, rows: u16) -> Tmux {
        let text = format!("#!/bin/sh\nexec {}\n", command_line(cmd));
        std::fs::write(script, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o700)).unwrap();
        static N: AtomicU32 = AtomicU32::new(0);
        let t = Tmux {
            socket: format!(
                "tg-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
        };
        let (c, r) = (cols.to_string(), rows.to_string());
        // The window stays after the command ends, so its last words can
        // still be read.
        t.run(&[
            "start-server",
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
            "new-session",
            "-d",
            "-s",
            "tg",
            "-x",
            &c,
            "-y",
            &r,
            script.to_str().unwrap(),
        ]);
        t
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        text(&out.stdout)
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tg"])
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "tg"];
        a.extend_from_slice(keys);
        self.run(&a);
    }

    pub fn wait_for(&self, needle: &str) -> String {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(10), || {
            last = self.screen();
            last.contains(needle)
        });
        assert!(ok.is_some(), "screen never showed {needle:?}:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// `cmd` as a shell command line: `env`, its environment and arguments
/// quoted.
pub fn command_line(cmd: &Command) -> String {
    let mut text = String::from("env");
    // env's -u options come before its NAME=VALUE arguments.
    for (k, v) in cmd.get_envs() {
        if v.is_none() {
            text.push_str(&format!(" -u {}", k.to_string_lossy()));
        }
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            text.push_str(&format!(
                " {}={}",
                k.to_string_lossy(),
                shell_quote(&v.to_string_lossy())
            ));
        }
    }
    text.push(' ');
    text.push_str(&shell_quote(&cmd.get_program().to_string_lossy()));
    for a in cmd.get_args() {
        text.push(' ');
        text.push_str(&shell_quote(&a.to_string_lossy()));
    }
    text
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A new key pair without passphrase at `dir/name` (and `.pub`).
pub fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut a = vec!["-q", "-N", "", "-C", name, "-f", path.to_str().unwrap()];
    a.extend_from_slice(args);
    let out = Command::new("ssh-keygen").args(&a).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    path
}

/// `ssh-keygen -l -E HASH`: the fingerprint alone.
pub fn fingerprint(pub_path: &Path, hash: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", hash, "-f", pub_path.to_str().unwrap()])
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// `ssh IDENT@server` offering exactly `keys`, no agent.
pub fn collect_ssh(s: &Server, ident: &str, keys: &[&Path]) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"]) // LogLevel INFO: OpenSSH logs keyboard-interactive instructions at INFO
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PasswordAuthentication=no",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=20"])
        .args(["-p", &s.port.to_string()]);
    for k in keys {
        c.arg("-i").arg(k);
    }
    c.arg(format!("{ident}@127.0.0.1"))
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY")
        .env_remove("SSH_ASKPASS");
    c
}

/// [`collect_ssh`] without a terminal: its output.
pub fn collect_connect(s: &Server, ident: &str, keys: &[&Path]) -> Output {
    collect_ssh(s, ident, keys)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A test CA (and an unrelated one), a server certificate for 127.0.0.1
/// and a client certificate, made with openssl.
pub struct Pki {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

impl Pki {
    pub fn make(dir: &Path) -> Pki {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            let (key, out) = (format!("{ca}.key"), format!("{ca}.pem"));
            let subj = format!("/CN=tollgate test {ca}");
            a.extend(["-keyout", &key, "-out", &out, "-days", "2", "-subj", &subj]);
            openssl(dir, &a);
        }
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let mut a = vec!["req"];
            a.extend(ec);
            let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
            let subj = format!("/CN=tollgate test {name}");
            a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(dir, &a);
            let (pem, extf) = (format!("{name}.pem"), format!("{name}.ext"));
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extf,
                ],
            );
        }
        Pki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// Echoes every connection; counts bytes and open connections.
pub struct Echo {
    pub port: u16,
    pub received: Arc<AtomicU64>,
    pub open: Arc<AtomicUsize>,
}

impl Echo {
    pub fn start() -> Echo {
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

/// A local forward connection once ssh listens on `port`.
pub fn dial(port: u16) -> TcpStream {
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
pub fn roundtrip(c: &mut TcpStream, n: usize, seed: u8) {
    let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
    let mut w = c.try_clone().unwrap();
    let d = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&d).unwrap());
    let mut back = vec![0u8; n];
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "echo differs");
}

pub mod clients;

/// Makes `c` start with a soft open-file limit of `soft`, hard unchanged.
pub fn lower_nofile(c: &mut Command, soft: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only getrlimit/setrlimit between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let mut l: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            l.rlim_cur = soft.min(l.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The soft and hard open-file limits in `/proc/PID/limits` text.
pub fn nofile_of(limits: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-file line in {limits:?}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

/// Runs `tests/clients/hostile.py` (a hostile network, see its docstring)
/// and returns the JSON it prints.
pub fn hostile(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/hostile.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "hostile.py {:?}: {}",
        &args[..args.len().min(2)],
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A process's resident memory in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

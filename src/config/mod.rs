//! The TOML configuration as plain data: schema, defaults, and every
//! check that needs nothing but the file's text.
//!
//! The file is walked by hand over toml's spanned document tree rather than
//! deserialised with serde, so that every problem, not only the first, is
//! reported as `FILE:LINE:COL: message`, and unknown keys get a suggestion.
//! What needs this host (accounts, certificate files) is checked one layer
//! up, by `checked`, from the positions kept here ([`At`]); reading a file
//! gives a [`Draft`] that the check finishes.
//!
//! [`walk`] holds the walker's helpers and the top level, [`server`] the
//! `[server]` table with its admission settings and `[targets]`, [`drains`]
//! `[[drains]]`, [`profiles`] `[profiles]` and their command lines.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

pub mod api;
mod destination;
pub mod drains;
mod journal;
pub mod profiles;
pub mod recordings;
mod server;
#[cfg(test)]
mod tests;
mod walk;

pub use api::{Api, Metrics};
pub use destination::Destination;
pub use drains::{facility, Ansi, DrainConfig, DrainUrl, Format, Spec, TlsFiles};
pub use journal::{JournalAt, JournalPlaces, PgUrl, Secret};
pub use profiles::{split_command, Limits};
pub use recordings::Recordings;
use walk::Ctx;

/// Where `serve` and the admin commands look when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/tollgate/tollgate.toml";

/// A configuration whose text is valid; `checked` has also checked it
/// against this host when it reaches the daemon or a command.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub server: Server,
    pub sessions: Sessions,
    pub profiles: BTreeMap<String, Profile>,
    /// `[[drains]]`, in file order.
    pub drains: Vec<DrainConfig>,
    pub webhooks: Webhooks,
    /// `[targets.NAME]`: what tunnel tokens may reach.
    pub targets: BTreeMap<String, Target>,
    /// `[api]`: the HTTP API (off unless it names an address).
    pub api: Api,
    /// `[metrics]`: Prometheus's `/metrics` (off unless it names an address).
    pub metrics: Metrics,
    /// `[recordings]`: asciicast recordings of PTY sessions.
    pub recordings: Recordings,
    /// What is allowed but will not work as it reads (a profile whose
    /// commands its account's login shell refuses): `config check` prints
    /// them, `serve` logs them; neither refuses the file for them.
    pub warnings: Vec<Problem>,
}

/// `[targets.NAME]`: one service a tunnel token reaches, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The only host the bastion resolves and dials for it.
    pub host: String,
    pub port: u16,
    /// Session lifetime for its tokens (default: `sessions.max_duration`).
    pub max_duration: Option<Duration>,
    /// Forwarded connections open at once per session (`None`: unlimited).
    pub connection_limit: Option<u32>,
    /// An SSH server: `session issue` also prints the `-J` form.
    pub ssh: bool,
}

/// `[webhooks]`: how collect sessions' webhooks are called.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// CAs an https:// receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// Where `ca_file` is set, when the file names one (its CAs are then
    /// loaded by the check; otherwise the system bundle is, at the first
    /// https:// delivery).
    pub ca_file_at: Option<At>,
    /// One attempt (connect, TLS, request, status line) at most.
    pub timeout: Duration,
}

/// The CA bundle TLS clients trust when no `ca_file` is set.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            ca_file: PathBuf::from(SYSTEM_CA_FILE),
            ca_file_at: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Where a setting's value starts in the file, for a problem found after
/// the file was read (a check against this host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct At {
    pub line: usize,
    pub col: usize,
}

impl At {
    /// `message`, placed here.
    pub fn problem(self, message: impl Into<String>) -> Problem {
        Problem {
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub host_keys: Vec<PathBuf>,
    /// Where the journal is: a SQLite file, or a PostgreSQL database that
    /// several bastions share.
    pub journal: JournalAt,
    /// PostgreSQL: where its password comes from, and the CAs its
    /// certificate must chain to (else the system bundle).
    pub journal_password: Option<Secret>,
    pub journal_ca_file: Option<PathBuf>,
    /// Where `journal`, `journal_password_*` and `journal_ca_file` are
    /// written (for the check against this host).
    pub journal_at: JournalPlaces,
    /// Sent before authentication; empty means none.
    pub banner: String,
    pub login_grace_time: Duration,
    /// How often an authenticated client that sent nothing is asked
    /// whether it is there (OpenSSH's ClientAliveInterval); zero: never.
    pub client_alive_interval: Duration,
    /// Unanswered asks in a row after which the connection is dropped
    /// (OpenSSH's ClientAliveCountMax).
    pub client_alive_count_max: u32,
    pub max_auth_tries: u32,
    /// Host name printed in the ssh line of `session issue`; defaults to the
    /// first listen address, or this machine's name when that is a wildcard.
    pub public_host: Option<String>,
    /// A known_hosts file that the ssh lines the admin commands print tell
    /// ssh to use (`-o UserKnownHostsFile=FILE`); `tollgate dev` sets it to
    /// the one it writes for its throwaway host key.
    pub public_known_hosts: Option<PathBuf>,
    /// Ciphers offered, in order (names from [`CIPHERS`]).
    pub ciphers: Vec<String>,
    /// What the daemon logs: a level or tracing directives (`info`,
    /// `debug`, `info,tollgate::ssh=debug`); `TOLLGATE_LOG` or `RUST_LOG`
    /// override it.
    pub log_level: String,
    /// Admission control at accept: `max_startups`,
    /// `per_source_max_startups`, `per_source_netblock` and
    /// `[server.per_source_penalties]`.
    pub admission: crate::admission::Policy,
    /// This daemon's name among those sharing the journal; `None`: this
    /// machine's name and the first listen port (`HOST:PORT`).
    pub node_id: Option<String>,
    /// How often the node records that it is alive, and how old its last
    /// record may be before another node declares it lost.
    pub node_heartbeat: Duration,
    pub node_timeout: Duration,
    /// PostgreSQL: a cancel made elsewhere wakes this node at once
    /// (LISTEN/NOTIFY); `false`: it is noticed by the check every second.
    pub journal_listen: bool,
    /// After a hand-over to a new binary (SIGUSR2), how long the old
    /// process keeps serving its live sessions before it ends them
    /// `daemon_upgraded`.
    pub handover_deadline: Duration,
    /// Threads that run connections and sessions; `None`: the CPUs this
    /// process may use less one, at least one (see [`Server::workers`]).
    pub workers: Option<usize>,
}

impl Server {
    /// The runtime's worker threads: `workers`, or the CPUs less one (the
    /// journal's thread, the sessions' commands and the kernel's network
    /// work use a core too, and on two cores one thread measured less CPU
    /// per session than two: bench/README.md).
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .saturating_sub(1)
                .max(1)
        })
    }
}

/// Ciphers tollgate can offer.
pub const CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
];

/// What `server.ciphers` is when not set: all of them, in sshd's default
/// order, so every maintained client finds one (Dropbear and paramiko have
/// no AES-GCM). The client's own order decides which is used.
pub const DEFAULT_CIPHERS: &[&str] = CIPHERS;

/// `[sessions]`
#[derive(Debug, Clone)]
pub struct Sessions {
    pub token_ttl: Duration,
    pub max_duration: Duration,
    /// `None` when off (`0s`).
    pub idle_timeout: Option<Duration>,
    pub kill_grace: Duration,
}

/// `[profiles.NAME]`
#[derive(Debug, Clone)]
pub struct Profile {
    pub user: String,
    pub allow_root: bool,
    /// argv of what a shell request runs (split as a POSIX shell does, no expansion).
    pub command: Vec<String>,
    /// Shell used for `exec` commands (`SHELL -c CMD`); the account's login
    /// shell when not set.
    pub shell: Option<String>,
    pub allow_exec: bool,
    /// `record`: overrides `recordings.enabled` for this profile.
    pub record: Option<bool>,
    /// `None`: the account's home directory, falling back to `/`.
    pub cwd: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    /// Per-session resource limits, in force in a delegated cgroup.
    pub limits: Limits,
    /// Where `user` and `allow_exec` are written (the account and its
    /// login shell are checked against this host later).
    pub user_at: At,
    pub allow_exec_at: At,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec!["127.0.0.1:2222".parse().expect("literal address")],
            host_keys: vec![PathBuf::from("/var/lib/tollgate/ssh_host_ed25519_key")],
            journal: JournalAt::File(PathBuf::from("/var/lib/tollgate/journal.db")),
            journal_password: None,
            journal_ca_file: None,
            journal_at: JournalPlaces::default(),
            banner: String::new(),
            login_grace_time: Duration::from_secs(30),
            client_alive_interval: Duration::from_secs(15),
            client_alive_count_max: 4,
            max_auth_tries: 6,
            public_host: None,
            public_known_hosts: None,
            ciphers: DEFAULT_CIPHERS.iter().map(|c| c.to_string()).collect(),
            log_level: "info".into(),
            node_id: None,
            node_heartbeat: Duration::from_secs(5),
            node_timeout: Duration::from_secs(30),
            journal_listen: true,
            handover_deadline: Duration::from_secs(3600),
            workers: None,
            admission: crate::admission::Policy::default(),
        }
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            token_ttl: Duration::from_secs(15 * 60),
            max_duration: Duration::from_secs(7 * 24 * 3600),
            idle_timeout: None,
            kill_grace: Duration::from_secs(5),
        }
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Everything wrong with a configuration file; `Display` prints one
/// `FILE:LINE:COL: message` per line.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line == 0 {
                write!(f, "{}: {}", self.path.display(), p.message)?;
            } else {
                write!(
                    f,
                    "{}:{}:{}: {}",
                    self.path.display(),
                    p.line,
                    p.col,
                    p.message
                )?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A file walked, with the problems and warnings its text has; the check
/// against this host adds its own and [`Draft::finish`]es it.
#[derive(Debug)]
pub struct Draft {
    /// What the file says, with defaults where a value was wrong.
    pub config: Config,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Draft {
    /// The configuration, with `warnings` added, when neither the text nor
    /// `problems` has anything wrong; else every problem, in file order.
    pub fn finish(
        self,
        problems: Vec<Problem>,
        warnings: Vec<Problem>,
    ) -> Result<Config, ConfigError> {
        let mut all = self.problems;
        all.extend(problems);
        if !all.is_empty() {
            all.sort_by_key(|p| (p.line, p.col));
            return Err(ConfigError {
                path: self.config.path,
                problems: all,
            });
        }
        let mut config = self.config;
        config.warnings = self.warnings;
        config.warnings.extend(warnings);
        config.warnings.sort_by_key(|p| (p.line, p.col));
        Ok(config)
    }
}

impl Config {
    /// Read and walk `path`: a [`Draft`] for `checked` to finish, or the
    /// reasons the file cannot be read as a configuration at all.
    pub fn read(path: &Path) -> Result<Draft, ConfigError> {
        let err = |line: usize, col: usize, message: String| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem { line, col, message }],
        };
        let bytes = std::fs::read(path).map_err(|e| err(0, 0, format!("cannot read: {e}")))?;
        Self::draft_bytes(path, bytes)
    }

    /// Walk the bytes of a file read from `path`: a file that is not
    /// UTF-8, holds a NUL or says nothing is refused at its position.
    pub fn draft_bytes(path: &Path, bytes: Vec<u8>) -> Result<Draft, ConfigError> {
        let err = |line: usize, col: usize, message: String| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem { line, col, message }],
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                // Where the text stops being UTF-8: say so there.
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
                let col = good
                    .rsplit(|&b| b == b'\n')
                    .next()
                    .map_or(0, |l| String::from_utf8_lossy(l).chars().count())
                    + 1;
                return Err(err(
                    line,
                    col,
                    "not UTF-8 text (a binary file?); a config is TOML, see tollgate.toml(5)"
                        .into(),
                ));
            }
        };
        if let Some(at) = text.find('\0') {
            let before = &text[..at];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(err(line, col, "a NUL byte: not a text file".into()));
        }
        let meaningful = text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if !meaningful {
            return Err(err(
                1,
                1,
                "the file is empty; start from the example (etc/tollgate.toml, tollgate.toml(5))"
                    .into(),
            ));
        }
        Self::draft(path, &text)
    }

    /// Walk `text` as if read from `path`. A syntax error ends it there;
    /// otherwise every problem of the text is in the draft, beside a
    /// configuration with defaults where values were wrong.
    pub fn draft(path: &Path, text: &str) -> Result<Draft, ConfigError> {
        let mut ctx = Ctx::new(text);
        let (doc, syntax) = DeTable::parse_recoverable(text);
        for e in syntax {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            let msg = e.message().trim().to_string();
            ctx.push(at, msg);
        }
        if !ctx.problems.is_empty() {
            ctx.problems.sort_by_key(|p| (p.line, p.col));
            return Err(ConfigError {
                path: path.to_path_buf(),
                problems: ctx.problems,
            });
        }
        let config = walk::walk(&mut ctx, path, doc.get_ref());
        Ok(Draft {
            config,
            problems: ctx.problems,
            warnings: ctx.warnings,
        })
    }

    /// The text's own checks only, none against this host: for tests and
    /// fuzzing. The daemon and the commands use `checked::load`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Self::draft(path, text)?.finish(Vec::new(), Vec::new())
    }

    /// [`Config::parse`] of a file's bytes.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Config, ConfigError> {
        Self::draft_bytes(path, bytes)?.finish(Vec::new(), Vec::new())
    }

    /// Each warning as `FILE:LINE:COL: warning: message`.
    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|w| {
                format!(
                    "{}:{}:{}: warning: {}",
                    self.path.display(),
                    w.line,
                    w.col,
                    w.message
                )
            })
            .collect()
    }

    /// This daemon's node id (see [`Server::node_id`]).
    pub fn node_id(&self) -> String {
        self.server.node_id.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{}", self.server.listen[0].port())
        })
    }

    /// The profile called `name`.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Where the ssh lines the admin commands print point people.
    pub fn destination(&self) -> Destination {
        let first = self.server.listen[0];
        let host = match &self.server.public_host {
            Some(h) => h.clone(),
            None if first.ip().is_unspecified() => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            None => match first.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            },
        };
        Destination {
            host,
            port: first.port(),
            known_hosts: self.server.public_known_hosts.clone(),
        }
    }
}

/// `s` as one shell word: as it is when that is safe, else single-quoted.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,=%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Parses `15m`, `7d`, `1h 30m`, `0s`; a bare `0` is accepted as zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration \"{s}\" ({e}); use a number with a unit, e.g. 30s, 15m, 7d")
    })?;
    if d > MAX_DURATION {
        return Err(format!("duration \"{s}\" is too long (at most 10y)"));
    }
    Ok(d)
}

/// Parses `8MiB`, `512KiB`, `1GB`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| {
        format!("invalid size \"{s}\"; use a number with an optional unit, e.g. 8MiB")
    })?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit \"{other}\" in \"{s}\" (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    match n.checked_mul(mult) {
        Some(v) if v <= MAX_SIZE => Ok(v),
        _ => Err(format!("size \"{s}\" is too large (at most 1TiB)")),
    }
}

/// The longest `server.banner`, in bytes.
pub const BANNER_MAX: usize = 16 * 1024;

/// The largest size any setting takes.
pub const MAX_SIZE: usize = 1 << 40;

/// The longest duration any setting or option takes: ten years. Every
/// time computed from one (an expiry, a deadline) stays far inside what
/// clocks and formats hold.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600); // humantime's 10y

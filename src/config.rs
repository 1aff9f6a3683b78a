//! The TOML configuration: schema, defaults and validation.
//!
//! The file is walked by hand over toml's spanned document tree rather than
//! deserialised with serde, so that every problem, not only the first, is
//! reported as `FILE:LINE:COL: message`, and unknown keys get a suggestion.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Where `serve` and the admin commands look when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/tollgate/tollgate.toml";

/// A validated configuration.
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
    /// Built from `ca_file` when the config names one; `None`: the system
    /// bundle, loaded at the first https:// delivery.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    /// One attempt (connect, TLS, request, status line) at most.
    pub timeout: Duration,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            ca_file: PathBuf::from(crate::drain::tls::SYSTEM_CA_FILE),
            tls: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One `[[drains]]` entry: how its messages look, where they go, and how
/// much may wait.
#[derive(Debug, Clone)]
pub struct DrainConfig {
    pub spec: crate::drain::tee::Spec,
    pub target: crate::drain::deliver::Target,
    pub queue_bytes: usize,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub host_keys: Vec<PathBuf>,
    pub journal: PathBuf,
    /// Sent before authentication; empty means none.
    pub banner: String,
    pub login_grace_time: Duration,
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
    /// argv of what a shell request runs (split like a shell would, no expansion).
    pub command: Vec<String>,
    /// Shell used for `exec` commands (`SHELL -c CMD`); the account's login
    /// shell when not set.
    pub shell: Option<String>,
    pub allow_exec: bool,
    /// `None`: the account's home directory, falling back to `/`.
    pub cwd: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    /// Per-session resource limits, in force in a delegated cgroup.
    pub limits: crate::exec::cgroup::Limits,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec!["127.0.0.1:2222".parse().expect("literal address")],
            host_keys: vec![PathBuf::from("/var/lib/tollgate/ssh_host_ed25519_key")],
            journal: PathBuf::from("/var/lib/tollgate/journal.db"),
            banner: String::new(),
            login_grace_time: Duration::from_secs(30),
            max_auth_tries: 6,
            public_host: None,
            public_known_hosts: None,
            ciphers: DEFAULT_CIPHERS.iter().map(|c| c.to_string()).collect(),
            log_level: "info".into(),
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

impl Config {
    /// Read, parse and validate `path`, including that profile accounts exist.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |line: usize, col: usize, message: String| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem { line, col, message }],
        };
        let bytes = std::fs::read(path).map_err(|e| err(0, 0, format!("cannot read: {e}")))?;
        Self::from_bytes(path, bytes)
    }

    /// Parse and validate the bytes of a file read from `path`: a file
    /// that is not UTF-8, holds a NUL or says nothing is refused at its
    /// position.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Config, ConfigError> {
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
        Self::parse(path, &text)
    }

    /// Parse and validate `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut ctx = Ctx {
            src: text,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let (doc, syntax) = DeTable::parse_recoverable(text);
        for e in syntax {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            let msg = e.message().trim().to_string();
            ctx.push(at, msg);
        }
        let config = if ctx.problems.is_empty() {
            Some(walk(&mut ctx, path, doc.get_ref()))
        } else {
            None
        };
        ctx.problems.sort_by_key(|p| (p.line, p.col));
        ctx.warnings.sort_by_key(|p| (p.line, p.col));
        match config {
            Some(mut c) if ctx.problems.is_empty() => {
                c.warnings = ctx.warnings;
                Ok(c)
            }
            _ => Err(ConfigError {
                path: path.to_path_buf(),
                problems: ctx.problems,
            }),
        }
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

/// This server as the ssh lines printed for people name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    /// Passed as `-o UserKnownHostsFile=…` (see `server.public_known_hosts`).
    pub known_hosts: Option<PathBuf>,
}

impl Destination {
    /// `ssh`, with the known_hosts option when there is one.
    pub fn ssh(&self) -> String {
        match &self.known_hosts {
            Some(k) => format!(
                "ssh -o UserKnownHostsFile={}",
                shell_word(&k.display().to_string())
            ),
            None => "ssh".into(),
        }
    }

    /// ` -p PORT` unless it is 22.
    pub fn port_option(&self) -> String {
        if self.port == 22 {
            String::new()
        } else {
            format!(" -p {}", self.port)
        }
    }

    /// The line a person pastes: `ssh -p 2222 user@host`.
    pub fn login_line(&self, login_user: &str) -> String {
        format!(
            "{}{} {login_user}@{}",
            self.ssh(),
            self.port_option(),
            self.host
        )
    }
}

struct Ctx<'a> {
    src: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Ctx<'_> {
    fn position(&self, offset: usize, message: String) -> Problem {
        let before = &self.src[..offset.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Problem { line, col, message }
    }

    fn push(&mut self, offset: usize, message: String) {
        let p = self.position(offset, message);
        self.problems.push(p);
    }

    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(span.start, message.into());
    }

    fn warn_at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let p = self.position(span.start, message.into());
        self.warnings.push(p);
    }
}

type Val<'i> = Spanned<DeValue<'i>>;

/// Reports keys of `table` not in `allowed`, with a did-you-mean.
fn check_keys(ctx: &mut Ctx, table: &DeTable, section: &str, allowed: &[&str]) {
    for (k, _) in table.iter() {
        let key: &str = k.get_ref();
        if !allowed.contains(&key) {
            let hint = suggest(key, allowed)
                .map(|s| format!(" (did you mean \"{s}\"?)"))
                .unwrap_or_default();
            ctx.at(
                k.span(),
                format!("unknown key \"{key}\" in [{section}]{hint}"),
            );
        }
    }
}

fn suggest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(key, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t Val<'i>> {
    table.get(key)
}

fn sub_table<'t, 'i>(ctx: &mut Ctx, table: &'t DeTable<'i>, key: &str) -> Option<&'t DeTable<'i>> {
    let v = get(table, key)?;
    match v.get_ref() {
        DeValue::Table(t) => Some(t),
        other => {
            ctx.at(
                v.span(),
                format!("\"{key}\" must be a table, found {}", other.type_str()),
            );
            None
        }
    }
}

fn string(ctx: &mut Ctx, section: &str, table: &DeTable, key: &str) -> Option<String> {
    let v = get(table, key)?;
    match v.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        other => {
            ctx.at(
                v.span(),
                format!(
                    "{section}.{key} must be a string, found {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

fn boolean(ctx: &mut Ctx, section: &str, table: &DeTable, key: &str) -> Option<bool> {
    let v = get(table, key)?;
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        other => {
            ctx.at(
                v.span(),
                format!(
                    "{section}.{key} must be true or false, found {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

fn integer(ctx: &mut Ctx, section: &str, table: &DeTable, key: &str) -> Option<i64> {
    let v = get(table, key)?;
    let parsed = match v.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok(),
        _ => None,
    };
    if parsed.is_none() {
        ctx.at(v.span(), format!("{section}.{key} must be an integer"));
    }
    parsed
}

/// A duration such as `30s`, `15m`, `7d` (humantime syntax).
fn duration(ctx: &mut Ctx, section: &str, table: &DeTable, key: &str) -> Option<Duration> {
    let v = get(table, key)?;
    let s = string(ctx, section, table, key)?;
    match parse_duration(&s) {
        Ok(d) => Some(d),
        Err(e) => {
            ctx.at(v.span(), format!("{section}.{key}: {e}"));
            None
        }
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

fn abs_path(ctx: &mut Ctx, span: Range<usize>, what: &str, s: &str) -> Option<PathBuf> {
    let p = PathBuf::from(s);
    if p.is_absolute() {
        Some(p)
    } else {
        ctx.at(
            span,
            format!("{what} must be an absolute path, got \"{s}\""),
        );
        None
    }
}

fn string_array(
    ctx: &mut Ctx,
    section: &str,
    table: &DeTable,
    key: &str,
) -> Option<Vec<(String, Range<usize>)>> {
    let v = get(table, key)?;
    let DeValue::Array(items) = v.get_ref() else {
        ctx.at(
            v.span(),
            format!("{section}.{key} must be an array of strings"),
        );
        return None;
    };
    let mut out = Vec::new();
    for item in items.iter() {
        match item.get_ref() {
            DeValue::String(s) => out.push((s.to_string(), item.span())),
            other => ctx.at(
                item.span(),
                format!(
                    "{section}.{key} entries must be strings, found {}",
                    other.type_str()
                ),
            ),
        }
    }
    Some(out)
}

const TOP_KEYS: &[&str] = &[
    "server", "sessions", "profiles", "drains", "webhooks", "targets",
];
const WEBHOOKS_KEYS: &[&str] = &["ca_file", "timeout"];
const TARGET_KEYS: &[&str] = &["host", "port", "max_duration", "connection_limit", "ssh"];
const DRAIN_KEYS: &[&str] = &[
    "name",
    "url",
    "format",
    "send",
    "facility",
    "output_facility",
    "sd_id",
    "max_message_bytes",
    "queue_bytes",
    "ansi",
    "ca_file",
    "client_cert",
    "client_key",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "host_keys",
    "journal",
    "banner",
    "login_grace_time",
    "max_auth_tries",
    "public_host",
    "public_known_hosts",
    "ciphers",
    "log_level",
    "max_startups",
    "per_source_max_startups",
    "per_source_netblock",
    "per_source_penalties",
];
const PENALTY_KEYS: &[&str] = &[
    "enabled",
    "authfail",
    "noauth",
    "grace_exceeded",
    "max",
    "min",
    "max_sources",
    "exempt",
];
const SESSIONS_KEYS: &[&str] = &["token_ttl", "max_duration", "idle_timeout", "kill_grace"];
const PROFILE_KEYS: &[&str] = &[
    "user",
    "allow_root",
    "command",
    "shell",
    "allow_exec",
    "cwd",
    "env",
    "memory_max",
    "pids_max",
    "cpu_weight",
    "cpu_max",
];

fn walk(ctx: &mut Ctx, path: &Path, doc: &DeTable) -> Config {
    check_keys(ctx, doc, "top level", TOP_KEYS);
    let mut server = Server::default();
    if let Some(t) = sub_table(ctx, doc, "server") {
        walk_server(ctx, t, &mut server);
    }
    let mut sessions = Sessions::default();
    if let Some(t) = sub_table(ctx, doc, "sessions") {
        walk_sessions(ctx, t, &mut sessions);
    }
    let profiles = named_tables(ctx, doc, "profiles", walk_profile);
    let mut drains: Vec<DrainConfig> = Vec::new();
    if let Some(v) = get(doc, "drains") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    let DeValue::Table(t) = item.get_ref() else {
                        ctx.at(item.span(), "drains entries must be tables ([[drains]])");
                        continue;
                    };
                    if let Some(d) = walk_drain(ctx, item.span(), t) {
                        if drains.iter().any(|o| o.spec.name == d.spec.name) {
                            let span = get(t, "name").map(|v| v.span()).unwrap_or(item.span());
                            ctx.at(
                                span,
                                format!("drains: the name \"{}\" is used twice", d.spec.name),
                            );
                        }
                        drains.push(d);
                    }
                }
            }
            _ => ctx.at(v.span(), "drains must be written as [[drains]] tables"),
        }
    }
    let targets = named_tables(ctx, doc, "targets", walk_target);
    let webhooks = match sub_table(ctx, doc, "webhooks") {
        Some(t) => walk_webhooks(ctx, t),
        None => Webhooks::default(),
    };
    Config {
        path: path.to_path_buf(),
        server,
        sessions,
        profiles,
        drains,
        webhooks,
        targets,
        warnings: Vec::new(),
    }
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

fn walk_drain(ctx: &mut Ctx, span: Range<usize>, t: &DeTable) -> Option<DrainConfig> {
    use crate::drain::deliver::Target;
    use crate::drain::lines::Ansi;
    use crate::drain::tee::Format;
    const S: &str = "drains";
    check_keys(ctx, t, S, DRAIN_KEYS);
    let at = |t: &DeTable, key: &str| get(t, key).map(|v| v.span()).unwrap_or(span.clone());
    let Some(name) = string(ctx, S, t, "name") else {
        if get(t, "name").is_none() {
            ctx.at(span.clone(), "drains: missing required key \"name\"");
        }
        return None;
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        ctx.at(
            at(t, "name"),
            format!("drains: name \"{name}\" may only use letters, digits, '-', '_' and '.'"),
        );
    }
    let d = format!("drains.{name}");
    let target = match string(ctx, S, t, "url") {
        None => {
            if get(t, "url").is_none() {
                ctx.at(span.clone(), format!("{d}: missing required key \"url\""));
            }
            None
        }
        Some(url) => match url.split_once("://") {
            Some(("tcp", hp))
                if hp
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
            {
                Some(Target::Tcp(hp.to_string()))
            }
            Some(("udp", hp))
                if hp
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
            {
                Some(Target::Udp(hp.to_string()))
            }
            Some(("unix", path)) if path.starts_with('/') => {
                Some(Target::Unix(PathBuf::from(path)))
            }
            Some(("tls", hp))
                if hp
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
            {
                tls_target(ctx, t, &d, hp, at(t, "url"))
            }
            _ => {
                ctx.at(
                    at(t, "url"),
                    format!("{d}.url: \"{url}\" is not tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT or unix:///PATH"),
                );
                None
            }
        },
    };
    if !matches!(target, Some(Target::Tls(_)) | None) {
        for key in ["ca_file", "client_cert", "client_key"] {
            if let Some(v) = get(t, key) {
                ctx.at(v.span(), format!("{d}.{key} applies only to tls:// drains"));
            }
        }
    }
    let format = match string(ctx, S, t, "format").as_deref() {
        None | Some("rfc5424") => Format::Rfc5424,
        Some("rfc3164") => Format::Rfc3164,
        Some(other) => {
            ctx.at(
                at(t, "format"),
                format!("{d}.format: \"{other}\" is not rfc5424 or rfc3164"),
            );
            Format::Rfc5424
        }
    };
    let (mut send_output, mut send_events) = (true, true);
    if let Some(items) = string_array(ctx, S, t, "send") {
        send_output = false;
        send_events = false;
        for (v, sp) in &items {
            match v.as_str() {
                "output" => send_output = true,
                "events" => send_events = true,
                other => ctx.at(
                    sp.clone(),
                    format!("{d}.send: \"{other}\" is not output or events"),
                ),
            }
        }
        if items.is_empty() {
            ctx.at(
                at(t, "send"),
                format!("{d}.send must name output, events or both"),
            );
        }
    }
    let mut fac = |key: &str, default: u8| match string(ctx, S, t, key) {
        None => default,
        Some(f) => crate::drain::syslog::facility(&f).unwrap_or_else(|| {
            ctx.at(
                at(t, key),
                format!("{d}.{key}: unknown facility \"{f}\" (e.g. authpriv, local0 … local7)"),
            );
            default
        }),
    };
    let facility = fac("facility", 10);
    let output_facility = fac("output_facility", facility);
    let sd_id = string(ctx, S, t, "sd_id").unwrap_or_else(|| "tollgate@32473".into());
    if sd_id.is_empty()
        || sd_id.len() > 32
        || !sd_id
            .chars()
            .all(|c| ('!'..='~').contains(&c) && !matches!(c, '=' | ']' | '"'))
    {
        ctx.at(at(t, "sd_id"), format!("{d}.sd_id: \"{sd_id}\" is not a structured-data id (printable ASCII without = ] \" or space, at most 32)"));
    }
    let max_message_bytes = match integer(ctx, S, t, "max_message_bytes") {
        None => 2048,
        Some(n) if (480..=65536).contains(&n) => n as usize,
        Some(_) => {
            ctx.at(
                at(t, "max_message_bytes"),
                format!("{d}.max_message_bytes must be between 480 and 65536"),
            );
            2048
        }
    };
    let queue_bytes = match get(t, "queue_bytes").map(|v| v.get_ref()) {
        None => 8 << 20,
        Some(DeValue::String(sz)) => match parse_size(sz) {
            Ok(n) if n >= max_message_bytes => n,
            Ok(_) => {
                ctx.at(at(t, "queue_bytes"), format!("{d}.queue_bytes must hold at least one message ({max_message_bytes} bytes)"));
                8 << 20
            }
            Err(e) => {
                ctx.at(at(t, "queue_bytes"), format!("{d}.queue_bytes: {e}"));
                8 << 20
            }
        },
        Some(_) => integer(ctx, S, t, "queue_bytes").map_or(8 << 20, |n| n.max(0) as usize),
    };
    let ansi = match string(ctx, S, t, "ansi").as_deref() {
        None | Some("strip") => Ansi::Strip,
        Some("keep") => Ansi::Keep,
        Some(other) => {
            ctx.at(
                at(t, "ansi"),
                format!("{d}.ansi: \"{other}\" is not strip or keep"),
            );
            Ansi::Strip
        }
    };
    Some(DrainConfig {
        spec: crate::drain::tee::Spec {
            name,
            format,
            send_output,
            send_events,
            facility,
            output_facility,
            sd_id,
            max_message_bytes,
            ansi,
        },
        target: target?,
        queue_bytes,
    })
}

/// The TLS settings of drain `d` (`ca_file`, `client_cert`, `client_key`),
/// loaded and checked now so `config check` finds a bad file.
fn tls_target(
    ctx: &mut Ctx,
    t: &DeTable,
    d: &str,
    host_port: &str,
    url_span: Range<usize>,
) -> Option<crate::drain::deliver::Target> {
    use crate::drain::tls::{self, TlsError};
    const S: &str = "drains";
    let span_of = |key: &str| get(t, key).map(|v| v.span()).unwrap_or(url_span.clone());
    let path = |ctx: &mut Ctx, key: &str| {
        let s = string(ctx, S, t, key)?;
        abs_path(ctx, span_of(key), &format!("{d}.{key}"), &s)
    };
    let ca_file = match get(t, "ca_file") {
        Some(_) => path(ctx, "ca_file")?,
        None => PathBuf::from(tls::SYSTEM_CA_FILE),
    };
    let client = match (path(ctx, "client_cert"), path(ctx, "client_key")) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) if get(t, "client_cert").is_none() && get(t, "client_key").is_none() => None,
        (c, _) => {
            let missing = if c.is_some() {
                "client_key"
            } else {
                "client_cert"
            };
            if get(t, missing).is_none() {
                let given = if c.is_some() {
                    "client_cert"
                } else {
                    "client_key"
                };
                ctx.at(
                    span_of(given),
                    format!("{d}: {given} needs {missing} too (a client certificate and its key)"),
                );
            }
            return None;
        }
    };
    let client_ref = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    match tls::target(host_port, &ca_file, client_ref) {
        Ok(target) => Some(crate::drain::deliver::Target::Tls(Box::new(target))),
        Err(e) => {
            let (key, msg) = match e {
                TlsError::Url(m) => ("url", m),
                TlsError::CaFile(m) if get(t, "ca_file").is_none() => (
                    "url",
                    format!("{m} (the system CA bundle; set ca_file to the collector's CA)"),
                ),
                TlsError::CaFile(m) => ("ca_file", m),
                TlsError::ClientCert(m) => ("client_cert", m),
                TlsError::ClientKey(m) => ("client_key", m),
                TlsError::Client(m) => ("url", m),
            };
            let span = if key == "url" {
                url_span.clone()
            } else {
                span_of(key)
            };
            ctx.at(span, format!("{d}.{key}: {msg}"));
            None
        }
    }
}

fn walk_server(ctx: &mut Ctx, t: &DeTable, server: &mut Server) {
    const S: &str = "server";
    check_keys(ctx, t, S, SERVER_KEYS);
    if let Some(items) = string_array(ctx, S, t, "listen") {
        let span = get(t, "listen").map(|v| v.span()).unwrap_or(0..0);
        let mut addrs = Vec::new();
        for (s, sp) in items {
            match s.parse::<SocketAddr>() {
                Ok(a) => addrs.push(a),
                Err(_) => ctx.at(
                    sp,
                    format!(
                        "server.listen: \"{s}\" is not an IP address with a port, e.g. \"0.0.0.0:22\" or \"[::]:2222\""
                    ),
                ),
            }
        }
        if addrs.is_empty() {
            ctx.at(span, "server.listen must name at least one address");
        }
        server.listen = addrs;
    }
    if let Some(items) = string_array(ctx, S, t, "host_keys") {
        let span = get(t, "host_keys").map(|v| v.span()).unwrap_or(0..0);
        server.host_keys = items
            .into_iter()
            .filter_map(|(s, sp)| abs_path(ctx, sp, "server.host_keys entry", &s))
            .collect();
        if server.host_keys.is_empty() {
            ctx.at(span, "server.host_keys must name at least one key file");
        }
    }
    if let Some(s) = string(ctx, S, t, "journal") {
        let span = get(t, "journal").map(|v| v.span()).unwrap_or(0..0);
        if let Some(p) = abs_path(ctx, span, "server.journal", &s) {
            server.journal = p;
        }
    }
    if let Some(s) = string(ctx, S, t, "banner") {
        // It goes out in one packet before authentication; a very long one
        // locks OpenSSH clients out ("Bad packet length").
        if s.len() > BANNER_MAX {
            let span = get(t, "banner").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(
                span,
                format!("server.banner is {} bytes; at most {BANNER_MAX}", s.len()),
            );
        } else {
            server.banner = s;
        }
    }
    if let Some(s) = string(ctx, S, t, "public_host") {
        server.public_host = (!s.is_empty()).then_some(s);
    }
    if let Some(s) = string(ctx, S, t, "public_known_hosts") {
        let span = get(t, "public_known_hosts")
            .map(|v| v.span())
            .unwrap_or(0..0);
        if s.chars().any(|c| c.is_control() || "'\"\\$`".contains(c)) {
            ctx.at(
                span,
                "server.public_known_hosts must be a path without quotes, $, `, \\ or control characters (it is printed in ssh lines to paste)",
            );
        } else {
            server.public_known_hosts = abs_path(ctx, span, "server.public_known_hosts", &s);
        }
    }
    if let Some(items) = string_array(ctx, S, t, "ciphers") {
        let span = get(t, "ciphers").map(|v| v.span()).unwrap_or(0..0);
        let mut ciphers = Vec::new();
        for (c, sp) in items {
            if CIPHERS.contains(&c.as_str()) {
                ciphers.push(c);
            } else {
                ctx.at(
                    sp,
                    format!(
                        "server.ciphers: unknown cipher \"{c}\" (supported: {})",
                        CIPHERS.join(", ")
                    ),
                );
            }
        }
        if ciphers.is_empty() {
            ctx.at(span, "server.ciphers must name at least one cipher");
        }
        server.ciphers = ciphers;
    }
    if let Some(d) = duration(ctx, S, t, "login_grace_time") {
        if d.is_zero() {
            let span = get(t, "login_grace_time").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(span, "server.login_grace_time must be more than 0s");
        }
        server.login_grace_time = d;
    }
    if let Some(level) = string(ctx, S, t, "log_level") {
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
            let span = get(t, "log_level").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(
                span,
                format!("server.log_level: {e} (use error, warn, info, debug or trace)"),
            );
        }
        server.log_level = level;
    }
    walk_admission(ctx, t, &mut server.admission);
    if let Some(n) = integer(ctx, S, t, "max_auth_tries") {
        match u32::try_from(n) {
            Ok(n) if (1..=100).contains(&n) => server.max_auth_tries = n,
            _ => {
                let span = get(t, "max_auth_tries").map(|v| v.span()).unwrap_or(0..0);
                ctx.at(span, "server.max_auth_tries must be between 1 and 100");
            }
        }
    }
}

/// `[SECTION.NAME]` tables, each read by `walk` (name, its span, table).
fn named_tables<T>(
    ctx: &mut Ctx,
    doc: &DeTable,
    section: &str,
    walk: fn(&mut Ctx, &str, Range<usize>, &DeTable) -> Option<T>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    if let Some(t) = sub_table(ctx, doc, section) {
        for (name, v) in t.iter() {
            let DeValue::Table(tt) = v.get_ref() else {
                ctx.at(
                    v.span(),
                    format!("{section}.{} must be a table", name.get_ref()),
                );
                continue;
            };
            if let Some(x) = walk(ctx, name.get_ref(), name.span(), tt) {
                out.insert(name.get_ref().to_string(), x);
            }
        }
    }
    out
}

fn walk_target(ctx: &mut Ctx, name: &str, name_span: Range<usize>, t: &DeTable) -> Option<Target> {
    let section = format!("targets.{name}");
    let s = section.as_str();
    check_keys(ctx, t, s, TARGET_KEYS);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        ctx.at(
            name_span.clone(),
            format!("target name \"{name}\" may only use letters, digits, '-', '_' and '.'"),
        );
    }
    let host = match string(ctx, s, t, "host") {
        Some(h) if !h.is_empty() && !h.contains(|c: char| c.is_whitespace() || c == '/') => Some(h),
        Some(h) => {
            let span = get(t, "host")
                .map(|v| v.span())
                .unwrap_or(name_span.clone());
            ctx.at(
                span,
                format!("{s}.host: \"{h}\" is not a host name or address"),
            );
            None
        }
        None => {
            if get(t, "host").is_none() {
                ctx.at(name_span.clone(), format!("{s}.host is required"));
            }
            None
        }
    };
    let port = match integer(ctx, s, t, "port") {
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(p) => {
            let span = get(t, "port")
                .map(|v| v.span())
                .unwrap_or(name_span.clone());
            ctx.at(span, format!("{s}.port: {p} is not 1-65535"));
            None
        }
        None => {
            if get(t, "port").is_none() {
                ctx.at(name_span.clone(), format!("{s}.port is required"));
            }
            None
        }
    };
    let max_duration = duration(ctx, s, t, "max_duration");
    if max_duration.is_some_and(|d| d.is_zero()) {
        let span = get(t, "max_duration").map(|v| v.span()).unwrap_or(0..0);
        ctx.at(span, format!("{s}.max_duration must be more than 0s"));
    }
    let connection_limit = match integer(ctx, s, t, "connection_limit") {
        None => None,
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
        Some(n) => {
            let span = get(t, "connection_limit").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(
                span,
                format!("{s}.connection_limit: {n} must be at least 1"),
            );
            None
        }
    };
    let (host, port) = (host?, port?);
    let ssh = boolean(ctx, s, t, "ssh").unwrap_or(port == 22);
    Some(Target {
        host,
        port,
        max_duration,
        connection_limit,
        ssh,
    })
}

/// `max_startups`, `per_source_max_startups`, `per_source_netblock` and
/// `[server.per_source_penalties]`.
fn walk_admission(ctx: &mut Ctx, t: &DeTable, a: &mut crate::admission::Policy) {
    use crate::admission::{MaxStartups, Netblock, Network};
    const S: &str = "server";
    let span_of = |key: &str| get(t, key).map(|v| v.span()).unwrap_or(0..0);
    if let Some(s) = string(ctx, S, t, "max_startups") {
        match MaxStartups::parse(&s) {
            Ok(m) => a.max_startups = m,
            Err(e) => ctx.at(span_of("max_startups"), format!("server.max_startups: {e}")),
        }
    }
    if let Some(v) = get(t, "per_source_max_startups") {
        match v.get_ref() {
            DeValue::String(s) if s.as_ref() == "none" => a.per_source_max_startups = None,
            DeValue::Integer(_) => match integer(ctx, S, t, "per_source_max_startups") {
                Some(n) if (1..=1_000_000).contains(&n) => {
                    a.per_source_max_startups = Some(n as u32)
                }
                Some(_) => ctx.at(
                    v.span(),
                    "server.per_source_max_startups must be between 1 and 1000000, or \"none\"",
                ),
                None => {}
            },
            _ => ctx.at(
                v.span(),
                "server.per_source_max_startups must be a number of connections or \"none\"",
            ),
        }
    }
    if let Some(s) = string(ctx, S, t, "per_source_netblock") {
        match Netblock::parse(&s) {
            Ok(n) => a.netblock = n,
            Err(e) => ctx.at(
                span_of("per_source_netblock"),
                format!("server.per_source_netblock: {e}"),
            ),
        }
    }
    let Some(p) = sub_table(ctx, t, "per_source_penalties") else {
        return;
    };
    const P: &str = "server.per_source_penalties";
    check_keys(ctx, p, P, PENALTY_KEYS);
    let pen = &mut a.penalties;
    if let Some(b) = boolean(ctx, P, p, "enabled") {
        pen.enabled = b;
    }
    for (key, slot) in [
        ("authfail", &mut pen.authfail),
        ("noauth", &mut pen.noauth),
        ("grace_exceeded", &mut pen.grace_exceeded),
        ("max", &mut pen.max),
        ("min", &mut pen.min),
    ] {
        if let Some(d) = duration(ctx, P, p, key) {
            if d > Duration::from_secs(7 * 86_400) {
                let span = get(p, key).map(|v| v.span()).unwrap_or(0..0);
                ctx.at(span, format!("{P}.{key} must be at most 7d"));
            } else {
                *slot = d;
            }
        }
    }
    if let Some(n) = integer(ctx, P, p, "max_sources") {
        match usize::try_from(n) {
            Ok(n) if (1..=10_000_000).contains(&n) => pen.max_sources = n,
            _ => {
                let span = get(p, "max_sources").map(|v| v.span()).unwrap_or(0..0);
                ctx.at(
                    span,
                    format!("{P}.max_sources must be between 1 and 10000000"),
                );
            }
        }
    }
    if let Some(items) = string_array(ctx, P, p, "exempt") {
        pen.exempt = items
            .into_iter()
            .filter_map(|(s, sp)| match Network::parse(&s) {
                Ok(n) => Some(n),
                Err(e) => {
                    ctx.at(sp, format!("{P}.exempt: {e}"));
                    None
                }
            })
            .collect();
    }
}

fn walk_webhooks(ctx: &mut Ctx, t: &DeTable) -> Webhooks {
    const S: &str = "webhooks";
    check_keys(ctx, t, S, WEBHOOKS_KEYS);
    let mut w = Webhooks::default();
    if let Some(d) = duration(ctx, S, t, "timeout") {
        if d.is_zero() {
            let span = get(t, "timeout").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(span, "webhooks.timeout must be more than 0s");
        }
        w.timeout = d;
    }
    if let Some(v) = get(t, "ca_file") {
        let span = v.span();
        if let Some(p) = string(ctx, S, t, "ca_file")
            .and_then(|s| abs_path(ctx, span.clone(), "webhooks.ca_file", &s))
        {
            match crate::drain::tls::client_config(&p, None) {
                Ok(c) => w.tls = Some(c),
                Err(e) => ctx.at(span, format!("webhooks.ca_file: {}", tls_message(e))),
            }
            w.ca_file = p;
        }
    }
    w
}

/// The text of a TLS settings error.
fn tls_message(e: crate::drain::tls::TlsError) -> String {
    use crate::drain::tls::TlsError as E;
    match e {
        E::Url(m) | E::CaFile(m) | E::ClientCert(m) | E::ClientKey(m) | E::Client(m) => m,
    }
}

fn walk_sessions(ctx: &mut Ctx, t: &DeTable, sessions: &mut Sessions) {
    const S: &str = "sessions";
    check_keys(ctx, t, S, SESSIONS_KEYS);
    for key in ["token_ttl", "max_duration"] {
        if let Some(d) = duration(ctx, S, t, key) {
            if d.is_zero() {
                let span = get(t, key).map(|v| v.span()).unwrap_or(0..0);
                ctx.at(span, format!("sessions.{key} must be more than 0s"));
            }
            if key == "token_ttl" {
                sessions.token_ttl = d;
            } else {
                sessions.max_duration = d;
            }
        }
    }
    if let Some(d) = duration(ctx, S, t, "idle_timeout") {
        sessions.idle_timeout = (!d.is_zero()).then_some(d);
    }
    if let Some(d) = duration(ctx, S, t, "kill_grace") {
        sessions.kill_grace = d;
    }
}

fn walk_profile(
    ctx: &mut Ctx,
    name: &str,
    name_span: Range<usize>,
    t: &DeTable,
) -> Option<Profile> {
    let section = format!("profiles.{name}");
    let s = section.as_str();
    check_keys(ctx, t, s, PROFILE_KEYS);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        ctx.at(
            name_span.clone(),
            format!("profile name \"{name}\" may only use letters, digits, '-', '_' and '.'"),
        );
    }
    let allow_root = boolean(ctx, s, t, "allow_root").unwrap_or(false);
    let user = match string(ctx, s, t, "user") {
        Some(u) => {
            let span = get(t, "user").map(|v| v.span()).unwrap_or(0..0);
            match nix::unistd::User::from_name(&u) {
                Ok(Some(acct)) => {
                    if acct.uid.is_root() && !allow_root {
                        ctx.at(
                            span,
                            format!("{s}.user: \"{u}\" is root; sessions never run as root unless the profile sets allow_root = true"),
                        );
                    }
                }
                Ok(None) => ctx.at(span, format!("{s}.user: no such account \"{u}\"")),
                Err(e) => ctx.at(span, format!("{s}.user: cannot look up \"{u}\": {e}")),
            }
            u
        }
        None => {
            if get(t, "user").is_none() {
                ctx.at(
                    name_span.clone(),
                    format!("{s}: missing required key \"user\""),
                );
            }
            String::new()
        }
    };
    let command = match string(ctx, s, t, "command") {
        Some(c) => {
            let span = get(t, "command").map(|v| v.span()).unwrap_or(0..0);
            match split_command(&c) {
                Ok(argv) if argv.is_empty() => {
                    ctx.at(span, format!("{s}.command is empty"));
                    argv
                }
                Ok(argv) => {
                    if !Path::new(&argv[0]).is_absolute() {
                        ctx.at(
                            span,
                            format!(
                                "{s}.command: program \"{}\" must be an absolute path",
                                argv[0]
                            ),
                        );
                    }
                    argv
                }
                Err(e) => {
                    ctx.at(span, format!("{s}.command: {e}"));
                    Vec::new()
                }
            }
        }
        None => {
            if get(t, "command").is_none() {
                ctx.at(
                    name_span.clone(),
                    format!("{s}: missing required key \"command\""),
                );
            }
            Vec::new()
        }
    };
    let shell = string(ctx, s, t, "shell").and_then(|sh| {
        let span = get(t, "shell").map(|v| v.span()).unwrap_or(0..0);
        abs_path(ctx, span, &format!("{s}.shell"), &sh).map(|_| sh)
    });
    let cwd = string(ctx, s, t, "cwd").and_then(|c| {
        let span = get(t, "cwd").map(|v| v.span()).unwrap_or(0..0);
        abs_path(ctx, span, &format!("{s}.cwd"), &c)
    });
    let mut env = BTreeMap::new();
    if let Some(v) = get(t, "env") {
        match v.get_ref() {
            DeValue::Table(et) => {
                for (k, val) in et.iter() {
                    let key: &str = k.get_ref();
                    if key.is_empty() || key.contains('=') || key.contains('\0') {
                        ctx.at(
                            k.span(),
                            format!("{s}.env: \"{key}\" is not a valid variable name"),
                        );
                        continue;
                    }
                    match val.get_ref() {
                        DeValue::String(sv) if !sv.contains('\0') => {
                            env.insert(key.to_string(), sv.to_string());
                        }
                        _ => ctx.at(val.span(), format!("{s}.env.{key} must be a string")),
                    }
                }
            }
            _ => ctx.at(v.span(), format!("{s}.env must be a table of strings")),
        }
    }
    let profile = Profile {
        user,
        allow_root,
        command,
        shell,
        allow_exec: boolean(ctx, s, t, "allow_exec").unwrap_or(false),
        cwd,
        env,
        limits: walk_limits(ctx, s, t),
    };
    if profile.allow_exec {
        if let Some(why) = profile.exec_shell_refuses() {
            let span = get(t, "allow_exec").map(|v| v.span()).unwrap_or(0..0);
            ctx.warn_at(
                span,
                format!("{s}.allow_exec: {why}; set {s}.shell (e.g. shell = \"/bin/sh\")"),
            );
        }
    }
    Some(profile)
}

impl Profile {
    /// Why commands (`allow_exec`, or `session issue --command`) cannot
    /// run under this profile, when they cannot: they run as `SHELL -c
    /// COMMAND`, and without `shell` that is the account's login shell,
    /// which may be one that refuses every command (`/usr/sbin/nologin`,
    /// `/bin/false`).
    pub fn exec_shell_refuses(&self) -> Option<String> {
        if self.shell.is_some() {
            return None;
        }
        let acct = nix::unistd::User::from_name(&self.user).ok().flatten()?;
        let sh = acct.shell;
        let name = sh.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let refuses = matches!(name, "nologin" | "false") || !sh.is_file();
        refuses.then(|| {
            format!(
                "commands run through the account's login shell, and {:?}'s is {}, which refuses them",
                self.user,
                sh.display()
            )
        })
    }
}

/// `memory_max`, `pids_max`, `cpu_weight` and `cpu_max` of a profile.
fn walk_limits(ctx: &mut Ctx, s: &str, t: &DeTable) -> crate::exec::cgroup::Limits {
    let memory_max = get(t, "memory_max").and_then(|v| {
        let bytes = match v.get_ref() {
            DeValue::String(text) => parse_size(text).map(|n| n as u64),
            DeValue::Integer(_) => integer(ctx, s, t, "memory_max")
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| "must not be negative".to_string()),
            _ => Err("must be a size such as \"512MiB\"".to_string()),
        };
        match bytes {
            // Below this, a shell cannot start: a typo, not a limit.
            Ok(n) if n < 1 << 20 => {
                ctx.at(v.span(), format!("{s}.memory_max must be at least 1MiB"));
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                ctx.at(v.span(), format!("{s}.memory_max: {e}"));
                None
            }
        }
    });
    let mut ranged = |key: &str, lo: i64, hi: i64, what: &str| {
        let n = integer(ctx, s, t, key)?;
        if (lo..=hi).contains(&n) {
            Some(n as u64)
        } else {
            let span = get(t, key).map(|v| v.span()).unwrap_or(0..0);
            ctx.at(span, format!("{s}.{key} must be {what}"));
            None
        }
    };
    let pids_max = ranged("pids_max", 1, 4_194_304, "between 1 and 4194304");
    let cpu_weight = ranged(
        "cpu_weight",
        1,
        10_000,
        "between 1 and 10000 (100 is the default share)",
    );
    let cpu_max_percent = string(ctx, s, t, "cpu_max").and_then(|text| {
        let n = text
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u64>().ok())
            .filter(|n| (1..=100_000).contains(n));
        if n.is_none() {
            let span = get(t, "cpu_max").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(
                span,
                format!("{s}.cpu_max must be a percentage of one CPU such as \"50%\" or \"200%\""),
            );
        }
        n
    });
    crate::exec::cgroup::Limits {
        memory_max,
        pids_max,
        cpu_weight,
        cpu_max_percent,
    }
}

/// Splits a command line into words the way a POSIX shell would for simple
/// cases: whitespace separates, single and double quotes group, backslash
/// escapes. No variables, globs or other expansion.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(Path::new("t.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.to_string().lines().map(String::from).collect(),
        }
    }

    /// tollgate.toml(5) documents every key the parser accepts, each in its
    /// table's section (as `.B key` or `.BR key ...`): the page stays true.
    #[test]
    fn every_key_is_in_the_manual_page() {
        let page = include_str!("../man/tollgate.toml.5");
        let tables: &[(&str, &str, &[&str])] = &[
            ("server", "[server]", SERVER_KEYS),
            ("server", "[server.per_source_penalties]", PENALTY_KEYS),
            ("sessions", "[sessions]", SESSIONS_KEYS),
            ("profiles", "[profiles.NAME]", PROFILE_KEYS),
            ("targets", "[targets.NAME]", TARGET_KEYS),
            ("drains", "[[drains]]", DRAIN_KEYS),
            ("webhooks", "[webhooks]", WEBHOOKS_KEYS),
        ];
        let mut missing = Vec::new();
        for top in TOP_KEYS {
            if !tables.iter().any(|(t, _, _)| t == top) {
                missing.push(format!("table {top} has no entry in this test"));
            }
        }
        for (_, header, keys) in tables {
            let Some(start) = page.find(&format!("\n.SH {header}\n")) else {
                missing.push(format!("section .SH {header}"));
                continue;
            };
            let body = &page[start + 1..];
            let body = &body[..body[1..].find("\n.SH ").map_or(body.len(), |e| e + 1)];
            // An item's tag: the line after `.TP` (`.B key`, or `.BR a ", " b`).
            let lines: Vec<&str> = body.lines().collect();
            let tags: Vec<&str> = lines
                .windows(2)
                .filter(|w| w[0] == ".TP" && (w[1].starts_with(".B ") || w[1].starts_with(".BR ")))
                .flat_map(|w| w[1].split_whitespace().skip(1))
                .collect();
            for key in *keys {
                let documented = tags.contains(key);
                if !documented {
                    missing.push(format!("{header} {key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "not in man/tollgate.toml.5: {missing:?}"
        );
    }

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let c = Config::parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(c.server.max_auth_tries, 6);
        assert_eq!(c.sessions.token_ttl, Duration::from_secs(900));
        assert!(c.sessions.idle_timeout.is_none());
    }

    #[test]
    fn targets_are_checked_with_positions() {
        let p = problems(
            "[targets.db]\nhost = \"db.internal\"\nport = 70000\nconnection_limit = 0\n\n[targets.x]\nport = 22\nmax_duration = \"0s\"\n",
        );
        let joined = p.join("\n");
        for want in [
            "t.toml:3:8: targets.db.port: 70000 is not 1-65535",
            "t.toml:4:20: targets.db.connection_limit: 0 must be at least 1",
            "t.toml:6:10: targets.x.host is required",
            "t.toml:8:16: targets.x.max_duration must be more than 0s",
        ] {
            assert!(joined.contains(want), "{want} not in:\n{joined}");
        }
    }

    #[test]
    fn unknown_key_names_line_column_and_suggestion() {
        let p = problems("[server]\nlistn = [\"127.0.0.1:22\"]\n");
        assert_eq!(
            p,
            vec!["t.toml:2:1: unknown key \"listn\" in [server] (did you mean \"listen\"?)"]
        );
    }

    #[test]
    fn several_problems_are_all_reported_in_order() {
        let p = problems(
            "[sessions]\ntoken_ttl = \"15 parsecs\"\n[server]\nlisten = []\njournal = \"rel/j.db\"\n",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("t.toml:2:13: sessions.token_ttl: invalid duration"));
        assert!(p[1].starts_with("t.toml:4:10: server.listen must name"));
        assert!(p[2].starts_with("t.toml:5:11: server.journal must be an absolute path"));
    }

    #[test]
    fn session_limits_parse_and_bad_ones_are_placed() {
        let base = "[profiles.a]\nuser = \"nobody\"\ncommand = \"/bin/sh\"\n";
        let c = Config::parse(
            Path::new("t.toml"),
            &format!("{base}memory_max = \"512MiB\"\npids_max = 64\ncpu_weight = 20\ncpu_max = \"150%\"\n"),
        )
        .unwrap();
        assert_eq!(
            c.profiles["a"].limits,
            crate::exec::cgroup::Limits {
                memory_max: Some(512 << 20),
                pids_max: Some(64),
                cpu_weight: Some(20),
                cpu_max_percent: Some(150),
            }
        );
        let c = Config::parse(
            Path::new("t.toml"),
            &format!("{base}memory_max = 2000000\n"),
        )
        .unwrap();
        assert_eq!(c.profiles["a"].limits.memory_max, Some(2_000_000));
        assert_eq!(
            problems(&format!(
                "{base}memory_max = \"12 bananas\"\npids_max = 0\ncpu_weight = 10001\ncpu_max = \"1.5\"\n"
            )),
            vec![
                "t.toml:4:14: profiles.a.memory_max: invalid size unit \"bananas\" in \"12 bananas\" (B, KiB, MiB, GiB, KB, MB, GB)",
                "t.toml:5:12: profiles.a.pids_max must be between 1 and 4194304",
                "t.toml:6:14: profiles.a.cpu_weight must be between 1 and 10000 (100 is the default share)",
                "t.toml:7:11: profiles.a.cpu_max must be a percentage of one CPU such as \"50%\" or \"200%\"",
            ]
        );
        assert_eq!(
            problems(&format!("{base}memory_max = \"64KiB\"\n")),
            vec!["t.toml:4:14: profiles.a.memory_max must be at least 1MiB"]
        );
    }

    #[test]
    fn root_needs_allow_root_and_unknown_users_are_named() {
        let p = problems("[profiles.a]\nuser = \"root\"\ncommand = \"/bin/sh\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("t.toml:2:8: profiles.a.user: \"root\" is root"));
        assert!(problems(
            "[profiles.a]\nuser = \"root\"\nallow_root = true\ncommand = \"/bin/sh\"\n"
        )
        .is_empty());
        let p = problems("[profiles.a]\nuser = \"no-such-user-x\"\ncommand = \"/bin/sh\"\n");
        assert_eq!(
            p,
            vec!["t.toml:2:8: profiles.a.user: no such account \"no-such-user-x\""]
        );
    }

    #[test]
    fn ciphers_are_checked_against_the_supported_list() {
        let p = problems("[server]\nciphers = [\"aes128-gcm@openssh.com\", \"rc4\"]\n");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("t.toml:2:38: server.ciphers: unknown cipher \"rc4\""),
            "{p:?}"
        );
        let c = Config::parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(c.server.ciphers, DEFAULT_CIPHERS);
    }

    #[test]
    fn drains_are_parsed_with_defaults_and_checked() {
        let c = Config::parse(
            Path::new("t.toml"),
            "[[drains]]\nname = \"siem\"\nurl = \"tcp://127.0.0.1:514\"\nqueue_bytes = \"1MiB\"\n\n[[drains]]\nname = \"local\"\nurl = \"unix:///dev/log\"\nsend = [\"events\"]\nformat = \"rfc3164\"\nfacility = \"local3\"\n",
        )
        .unwrap();
        assert_eq!(c.drains.len(), 2);
        let d = &c.drains[0];
        assert_eq!(
            d.target,
            crate::drain::deliver::Target::Tcp("127.0.0.1:514".into())
        );
        assert_eq!(
            (
                d.spec.send_output,
                d.spec.send_events,
                d.spec.facility,
                d.spec.output_facility
            ),
            (true, true, 10, 10)
        );
        assert_eq!(
            (
                d.spec.max_message_bytes,
                d.queue_bytes,
                d.spec.sd_id.as_str()
            ),
            (2048, 1 << 20, "tollgate@32473")
        );
        let l = &c.drains[1];
        assert_eq!(
            (l.spec.send_output, l.spec.send_events, l.spec.facility),
            (false, true, 19)
        );

        let p = problems(
            "[[drains]]\nname = \"a\"\nurl = \"http://x:1\"\nmax_message_bytes = 100\n\n[[drains]]\nname = \"a\"\nurl = \"tls://x:6514\"\nca_file = \"/nonexistent/ca.pem\"\nclient_key = \"/k.pem\"\nsend = [\"output\", \"audio\"]\nqueue_bytes = \"8 parsecs\"\n",
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("t.toml:3:7: drains.a.url: \"http://x:1\" is not tcp://"),
            "{joined}"
        );
        assert!(
            joined
                .contains("t.toml:4:21: drains.a.max_message_bytes must be between 480 and 65536"),
            "{joined}"
        );
        assert!(
            joined.contains("t.toml:10:14: drains.a: client_key needs client_cert too"),
            "{joined}"
        );
        assert!(
            joined.contains("t.toml:11:19: drains.a.send: \"audio\" is not output or events"),
            "{joined}"
        );
        assert!(
            joined.contains("t.toml:12:15: drains.a.queue_bytes: invalid size unit"),
            "{joined}"
        );
    }

    #[test]
    fn tls_drains_load_their_files_and_say_which_one_is_wrong() {
        let p = problems(
            "[[drains]]\nname = \"t\"\nurl = \"tls://127.0.0.1:6514\"\nca_file = \"/nonexistent/ca.pem\"\n\n[[drains]]\nname = \"u\"\nurl = \"udp://127.0.0.1:514\"\nca_file = \"/etc/ssl/x.pem\"\n",
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("t.toml:4:11: drains.t.ca_file: /nonexistent/ca.pem: No such file"),
            "{joined}"
        );
        assert!(
            joined.contains("t.toml:9:11: drains.u.ca_file applies only to tls:// drains"),
            "{joined}"
        );
        // A file that is not a certificate.
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-tls-").unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let p = problems(&format!(
            "[[drains]]\nname = \"t\"\nurl = \"tls://logs.example.com:6514\"\nca_file = \"{}\"\n",
            junk.display()
        ));
        assert!(
            p.join("\n").contains("drains.t.ca_file: ")
                && p.join("\n").contains("no usable CA certificate"),
            "{p:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2000GiB").unwrap_err().contains("at most 1TiB"));
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_duration("10y").is_ok());
        assert!(parse_duration("8000y").unwrap_err().contains("at most 10y"));
        assert!(parse_duration("300000000y").is_err());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let p = problems("[server]\nlisten = [\n");
        assert!(!p.is_empty());
        assert!(p[0].starts_with("t.toml:"), "{p:?}");
    }

    #[test]
    fn split_command_handles_quotes() {
        assert_eq!(
            split_command(r#"/bin/bash -lc 'echo "hi there"' a\ b"#).unwrap(),
            vec!["/bin/bash", "-lc", "echo \"hi there\"", "a b"]
        );
        assert!(split_command("'open").is_err());
    }

    #[test]
    fn a_profile_whose_login_shell_refuses_commands_is_warned_about_with_its_position() {
        // Debian's nobody has /usr/sbin/nologin.
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            return;
        };
        let refuses = nobody.shell.ends_with("nologin") || nobody.shell.ends_with("false");
        let text = "[profiles.p]\nuser = \"nobody\"\ncommand = \"/bin/sh\"\nallow_exec = true\n";
        let c = Config::parse(Path::new("t.toml"), text).unwrap();
        if refuses {
            assert_eq!(c.warning_lines().len(), 1, "{:?}", c.warnings);
            let w = &c.warning_lines()[0];
            assert!(
                w.starts_with("t.toml:4:14: warning: profiles.p.allow_exec: commands run through the account's login shell, and \"nobody\"'s is "),
                "{w}"
            );
            assert!(
                w.ends_with("set profiles.p.shell (e.g. shell = \"/bin/sh\")"),
                "{w}"
            );
        }
        // A shell of its own, or no exec: nothing to say.
        for quiet in [
            format!("{text}shell = \"/bin/sh\"\n"),
            text.replace("allow_exec = true", "allow_exec = false"),
        ] {
            let c = Config::parse(Path::new("t.toml"), &quiet).unwrap();
            assert!(c.warnings.is_empty(), "{quiet}: {:?}", c.warnings);
        }
    }

    #[test]
    fn printed_ssh_lines_carry_the_public_known_hosts_file() {
        let c = Config::parse(
            Path::new("t.toml"),
            "[server]\nlisten = [\"127.0.0.1:2222\"]\npublic_known_hosts = \"/tmp/dev x/known_hosts\"\n",
        )
        .unwrap();
        let d = c.destination();
        assert_eq!(
            d.login_line("ops"),
            "ssh -o UserKnownHostsFile='/tmp/dev x/known_hosts' -p 2222 ops@127.0.0.1"
        );
        let plain = Config::parse(
            Path::new("t.toml"),
            "[server]\nlisten = [\"127.0.0.1:22\"]\n",
        )
        .unwrap();
        assert_eq!(plain.destination().login_line("ops"), "ssh ops@127.0.0.1");
        let p = problems("[server]\npublic_known_hosts = \"/tmp/$(id)\"\n");
        assert!(
            p[0].starts_with(
                "t.toml:2:22: server.public_known_hosts must be a path without quotes"
            ),
            "{p:?}"
        );
    }
}

//! The walker's helpers (typed reads of keys, each placing its problem),
//! the top level, and the small tables: `[sessions]`, `[webhooks]`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::drains::walk_drain;
use super::profiles::walk_profile;
use super::server::{walk_server, walk_target};
use super::{parse_duration, At, Config, DrainConfig, Problem, Server, Sessions, Webhooks};

pub(super) struct Ctx<'a> {
    src: &'a str,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(src: &'a str) -> Ctx<'a> {
        Ctx {
            src,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Where `span` starts, kept for a check made after the walk.
    pub(super) fn place(&self, span: Range<usize>) -> At {
        let p = self.position(span.start, String::new());
        At {
            line: p.line,
            col: p.col,
        }
    }

    fn position(&self, offset: usize, message: String) -> Problem {
        let before = &self.src[..offset.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Problem { line, col, message }
    }

    pub(super) fn push(&mut self, offset: usize, message: String) {
        let p = self.position(offset, message);
        self.problems.push(p);
    }

    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(span.start, message.into());
    }
}

pub(super) type Val<'i> = Spanned<DeValue<'i>>;

/// Reports keys of `table` not in `allowed`, with a did-you-mean.
pub(super) fn check_keys(ctx: &mut Ctx, table: &DeTable, section: &str, allowed: &[&str]) {
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

pub(super) fn suggest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(key, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(super) fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t Val<'i>> {
    table.get(key)
}

pub(super) fn sub_table<'t, 'i>(
    ctx: &mut Ctx,
    table: &'t DeTable<'i>,
    key: &str,
) -> Option<&'t DeTable<'i>> {
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

pub(super) fn string(ctx: &mut Ctx, section: &str, table: &DeTable, key: &str) -> Option<String> {
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

pub(super) fn boolean(ctx: &mut Ctx, section: &str, table: &DeTable, key: &str) -> Option<bool> {
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

pub(super) fn integer(ctx: &mut Ctx, section: &str, table: &DeTable, key: &str) -> Option<i64> {
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
pub(super) fn duration(
    ctx: &mut Ctx,
    section: &str,
    table: &DeTable,
    key: &str,
) -> Option<Duration> {
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

pub(super) fn abs_path(ctx: &mut Ctx, span: Range<usize>, what: &str, s: &str) -> Option<PathBuf> {
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

pub(super) fn string_array(
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

pub(super) const TOP_KEYS: &[&str] = &[
    "server",
    "sessions",
    "profiles",
    "drains",
    "webhooks",
    "targets",
    "api",
    "metrics",
    "recordings",
];
pub(super) const WEBHOOKS_KEYS: &[&str] = &["ca_file", "timeout"];
pub(super) const TARGET_KEYS: &[&str] =
    &["host", "port", "max_duration", "connection_limit", "ssh"];
pub(super) const DRAIN_KEYS: &[&str] = &[
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
pub(super) const SERVER_KEYS: &[&str] = &[
    "listen",
    "host_keys",
    "journal",
    "journal_password_file",
    "journal_password_env",
    "journal_ca_file",
    "journal_listen",
    "node_id",
    "node_heartbeat",
    "node_timeout",
    "banner",
    "login_grace_time",
    "client_alive_interval",
    "client_alive_count_max",
    "handover_deadline",
    "max_auth_tries",
    "public_host",
    "public_known_hosts",
    "ciphers",
    "log_level",
    "max_startups",
    "per_source_max_startups",
    "per_source_netblock",
    "per_source_penalties",
    "workers",
];
pub(super) const PENALTY_KEYS: &[&str] = &[
    "enabled",
    "authfail",
    "noauth",
    "grace_exceeded",
    "max",
    "min",
    "max_sources",
    "exempt",
];
pub(super) const SESSIONS_KEYS: &[&str] =
    &["token_ttl", "max_duration", "idle_timeout", "kill_grace"];
pub(super) const PROFILE_KEYS: &[&str] = &[
    "user",
    "allow_root",
    "command",
    "shell",
    "allow_exec",
    "cwd",
    "env",
    "record",
    "memory_max",
    "pids_max",
    "cpu_weight",
    "cpu_max",
];

pub(super) fn walk(ctx: &mut Ctx, path: &Path, doc: &DeTable) -> Config {
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
    let api = match sub_table(ctx, doc, "api") {
        Some(t) => super::api::walk_api(ctx, t),
        None => super::Api::default(),
    };
    let recordings = match sub_table(ctx, doc, "recordings") {
        Some(t) => super::recordings::walk_recordings(ctx, t),
        None => super::Recordings::default(),
    };
    let metrics = match sub_table(ctx, doc, "metrics") {
        Some(t) => super::api::walk_metrics(ctx, t),
        None => super::Metrics::default(),
    };
    Config {
        path: path.to_path_buf(),
        api,
        metrics,
        recordings,
        server,
        sessions,
        profiles,
        drains,
        webhooks,
        targets,
        warnings: Vec::new(),
    }
}

/// `[SECTION.NAME]` tables, each read by `walk` (name, its span, table).
pub(super) fn named_tables<T>(
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

pub(super) fn walk_sessions(ctx: &mut Ctx, t: &DeTable, sessions: &mut Sessions) {
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

pub(super) fn walk_webhooks(ctx: &mut Ctx, t: &DeTable) -> Webhooks {
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
            w.ca_file_at = Some(ctx.place(span));
            w.ca_file = p;
        }
    }
    w
}

//! `[server]` with its admission settings, and `[targets]`.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::walk::{
    abs_path, boolean, check_keys, duration, get, integer, string, string_array, sub_table, Ctx,
    PENALTY_KEYS, SERVER_KEYS, TARGET_KEYS,
};
use super::{JournalAt, PgUrl, Secret, Server, Target, BANNER_MAX, CIPHERS};

pub(super) fn walk_server(ctx: &mut Ctx, t: &DeTable, server: &mut Server) {
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
    walk_journal(ctx, t, server);
    walk_node(ctx, t, server);
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
    if let Some(d) = duration(ctx, S, t, "handover_deadline") {
        server.handover_deadline = d;
    }
    if let Some(d) = duration(ctx, S, t, "login_grace_time") {
        if d.is_zero() {
            let span = get(t, "login_grace_time").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(span, "server.login_grace_time must be more than 0s");
        }
        server.login_grace_time = d;
    }
    if let Some(d) = duration(ctx, S, t, "client_alive_interval") {
        server.client_alive_interval = d;
    }
    if let Some(n) = integer(ctx, S, t, "client_alive_count_max") {
        match u32::try_from(n) {
            Ok(n) if (1..=100).contains(&n) => server.client_alive_count_max = n,
            _ => {
                let span = get(t, "client_alive_count_max")
                    .map(|v| v.span())
                    .unwrap_or(0..0);
                ctx.at(
                    span,
                    "server.client_alive_count_max must be between 1 and 100",
                );
            }
        }
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
    walk_workers(ctx, t, server);
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

pub(super) fn walk_target(
    ctx: &mut Ctx,
    name: &str,
    name_span: Range<usize>,
    t: &DeTable,
) -> Option<Target> {
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
pub(super) fn walk_admission(ctx: &mut Ctx, t: &DeTable, a: &mut crate::admission::Policy) {
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

/// `journal` (a path, or a postgres:// URL), and for PostgreSQL
/// `journal_password_file` or `journal_password_env`, `journal_ca_file`
/// and `journal_listen`.
fn walk_journal(ctx: &mut Ctx, t: &DeTable, server: &mut Server) {
    const S: &str = "server";
    let span_of = |key: &str| get(t, key).map(|v| v.span()).unwrap_or(0..0);
    server.journal_at.journal = ctx.place(span_of("journal"));
    if let Some(s) = string(ctx, S, t, "journal") {
        let span = span_of("journal");
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            match PgUrl::parse(&s) {
                Ok(u) => server.journal = JournalAt::Postgres(u),
                // The URL is not repeated: it may hold what should not be.
                Err(e) => ctx.at(span, format!("server.journal: the URL {e}")),
            }
        } else if let Some(p) = abs_path(ctx, span, "server.journal", &s) {
            server.journal = JournalAt::File(p);
        }
    }
    let file = string(ctx, S, t, "journal_password_file").and_then(|s| {
        abs_path(
            ctx,
            span_of("journal_password_file"),
            "server.journal_password_file",
            &s,
        )
    });
    let env = string(ctx, S, t, "journal_password_env");
    server.journal_password = match (file, env) {
        (Some(_), Some(_)) => {
            ctx.at(
                span_of("journal_password_env"),
                "server.journal_password_env: set journal_password_file or journal_password_env, not both",
            );
            None
        }
        (Some(f), None) => {
            server.journal_at.password = ctx.place(span_of("journal_password_file"));
            Some(Secret::File(f))
        }
        (None, Some(v)) => {
            server.journal_at.password = ctx.place(span_of("journal_password_env"));
            if v.is_empty() || v.contains(['=', '\0']) {
                ctx.at(
                    span_of("journal_password_env"),
                    format!("server.journal_password_env: \"{v}\" is not a variable name"),
                );
            }
            Some(Secret::Env(v))
        }
        (None, None) => None,
    };
    server.journal_ca_file = string(ctx, S, t, "journal_ca_file").and_then(|s| {
        abs_path(
            ctx,
            span_of("journal_ca_file"),
            "server.journal_ca_file",
            &s,
        )
    });
    server.journal_at.ca_file = ctx.place(span_of("journal_ca_file"));
    if let Some(b) = boolean(ctx, S, t, "journal_listen") {
        server.journal_listen = b;
    }
    let postgres = matches!(server.journal, JournalAt::Postgres(_));
    for key in [
        "journal_password_file",
        "journal_password_env",
        "journal_ca_file",
        "journal_listen",
    ] {
        if !postgres && get(t, key).is_some() {
            ctx.at(
                span_of(key),
                format!("server.{key} applies only to a postgres:// journal"),
            );
        }
    }
    if let JournalAt::Postgres(u) = &server.journal {
        if !u.tls && get(t, "journal_ca_file").is_some() {
            ctx.at(
                span_of("journal_ca_file"),
                "server.journal_ca_file: the journal URL says sslmode=disable",
            );
        }
    }
}

/// `node_id`, `node_heartbeat` and `node_timeout`.
fn walk_node(ctx: &mut Ctx, t: &DeTable, server: &mut Server) {
    const S: &str = "server";
    let span_of = |key: &str| get(t, key).map(|v| v.span()).unwrap_or(0..0);
    if let Some(id) = string(ctx, S, t, "node_id") {
        if id.is_empty()
            || id.len() > 255
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            ctx.at(
                span_of("node_id"),
                format!("server.node_id: \"{id}\" may only use letters, digits, '-', '_', '.' and ':' (at most 255)"),
            );
        } else {
            server.node_id = Some(id);
        }
    }
    if let Some(d) = duration(ctx, S, t, "node_heartbeat") {
        if d < Duration::from_millis(100) {
            ctx.at(
                span_of("node_heartbeat"),
                "server.node_heartbeat must be at least 100ms",
            );
        } else {
            server.node_heartbeat = d;
        }
    }
    if let Some(d) = duration(ctx, S, t, "node_timeout") {
        server.node_timeout = d;
    }
    if server.node_timeout < server.node_heartbeat * 2 {
        ctx.at(
            span_of("node_timeout"),
            format!(
                "server.node_timeout must be at least twice node_heartbeat ({})",
                humantime::format_duration(server.node_heartbeat)
            ),
        );
    }
}

/// `workers`: a number of threads, or "auto".
fn walk_workers(ctx: &mut Ctx, t: &DeTable, server: &mut Server) {
    const MSG: &str = "server.workers must be a number of threads from 1 to 1024, or \"auto\"";
    let Some(v) = get(t, "workers") else {
        return;
    };
    match v.get_ref() {
        DeValue::String(s) if s.as_ref() == "auto" => server.workers = None,
        DeValue::Integer(_) => match integer(ctx, "server", t, "workers") {
            Some(n) if (1..=1024).contains(&n) => server.workers = Some(n as usize),
            Some(_) => ctx.at(v.span(), MSG),
            None => {}
        },
        _ => ctx.at(v.span(), MSG),
    }
}

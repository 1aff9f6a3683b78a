//! `[[drains]]`: how each drain's messages look and where they go, as
//! plain data. The drain builds its connection (TLS settings loaded from
//! the files named here) when the configuration is checked.

use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

use super::walk::{abs_path, check_keys, get, integer, string, string_array, Ctx, DRAIN_KEYS};
use super::{parse_size, At};

/// One `[[drains]]` entry: how its messages look, where they go, and how
/// much may wait.
#[derive(Debug, Clone)]
pub struct DrainConfig {
    pub spec: Spec,
    pub url: DrainUrl,
    pub queue_bytes: usize,
}

/// Where a drain delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainUrl {
    Tcp(String),
    Tls(TlsFiles),
    Udp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for DrainUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainUrl::Tcp(a) => write!(f, "tcp://{a}"),
            DrainUrl::Tls(t) => write!(f, "tls://{}", t.addr),
            DrainUrl::Udp(a) => write!(f, "udp://{a}"),
            DrainUrl::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// A `tls://` drain: the collector and the files that verify it and, with
/// mutual TLS, identify tollgate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `host:port` to dial.
    pub addr: String,
    /// `None`: the system bundle ([`super::SYSTEM_CA_FILE`]).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Where `url`, `ca_file`, `client_cert` and `client_key` are written.
    pub at: TlsAt,
}

/// Positions of a TLS drain's settings (a key not written: at `url`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsAt {
    pub url: At,
    pub ca_file: At,
    pub client_cert: At,
    pub client_key: At,
}

/// Message format of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
}

/// How one drain wants its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub format: Format,
    pub send_output: bool,
    pub send_events: bool,
    pub facility: u8,
    pub output_facility: u8,
    pub sd_id: String,
    pub max_message_bytes: usize,
    pub ansi: Ansi,
}

/// What to do with terminal escape sequences (colours, cursor movement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ansi {
    /// Remove them: the stored line is the text a person read.
    Strip,
    /// Keep them, escaped like any control character.
    Keep,
}

/// Syslog facility by its usual name (`authpriv`, `local0`, …).
pub fn facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

pub(super) fn walk_drain(ctx: &mut Ctx, span: Range<usize>, t: &DeTable) -> Option<DrainConfig> {
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
                Some(DrainUrl::Tcp(hp.to_string()))
            }
            Some(("udp", hp))
                if hp
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
            {
                Some(DrainUrl::Udp(hp.to_string()))
            }
            Some(("unix", path)) if path.starts_with('/') => {
                Some(DrainUrl::Unix(PathBuf::from(path)))
            }
            Some(("tls", hp))
                if hp
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
            {
                tls_files(ctx, t, &d, hp, at(t, "url"))
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
    if !matches!(target, Some(DrainUrl::Tls(_)) | None) {
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
        Some(f) => facility(&f).unwrap_or_else(|| {
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
        spec: Spec {
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
        url: target?,
        queue_bytes,
    })
}

/// The TLS settings of drain `d` (`ca_file`, `client_cert`, `client_key`):
/// the files are loaded when the configuration is checked.
fn tls_files(
    ctx: &mut Ctx,
    t: &DeTable,
    d: &str,
    host_port: &str,
    url_span: Range<usize>,
) -> Option<DrainUrl> {
    const S: &str = "drains";
    let span_of = |key: &str| get(t, key).map(|v| v.span()).unwrap_or(url_span.clone());
    let path = |ctx: &mut Ctx, key: &str| {
        let s = string(ctx, S, t, key)?;
        abs_path(ctx, span_of(key), &format!("{d}.{key}"), &s)
    };
    let ca_file = match get(t, "ca_file") {
        Some(_) => Some(path(ctx, "ca_file")?),
        None => None,
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
    let at = TlsAt {
        url: ctx.place(url_span.clone()),
        ca_file: ctx.place(span_of("ca_file")),
        client_cert: ctx.place(span_of("client_cert")),
        client_key: ctx.place(span_of("client_key")),
    };
    Some(DrainUrl::Tls(TlsFiles {
        addr: host_port.to_string(),
        ca_file,
        client,
        at,
    }))
}

//! The daemon's HTTP listeners: `[api]`, where the HTTP API listens, with
//! TLS or (on loopback only) without; `[metrics]`, where Prometheus
//! scrapes `/metrics`, on loopback unless `allow_remote` says otherwise.
//! Each is off when its section names no address.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::de::DeTable;

use super::walk::{abs_path, boolean, check_keys, get, integer, string, string_array, Ctx};
use super::At;

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// Empty: no HTTP API.
    pub listen: Vec<SocketAddr>,
    /// Both or neither: the certificate chain and its key (PEM), loaded by
    /// the check; with them every address serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Where `tls_cert` is written, for a problem found loading it.
    pub tls_at: At,
    /// A request body longer than this is refused (413) before it is read.
    pub max_body_bytes: usize,
}

/// The default `api.max_body_bytes`: a collect session with a few
/// webhooks is a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_at: At::default(),
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

impl Api {
    /// Whether the API is served over TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}

pub(super) const API_KEYS: &[&str] = &["listen", "tls_cert", "tls_key", "max_body_bytes"];

pub(super) fn walk_api(ctx: &mut Ctx, t: &DeTable) -> Api {
    const S: &str = "api";
    check_keys(ctx, t, S, API_KEYS);
    let mut api = Api::default();
    let mut files = [None, None];
    for (i, key) in ["tls_cert", "tls_key"].into_iter().enumerate() {
        if let Some(v) = get(t, key) {
            let span = v.span();
            if i == 0 {
                api.tls_at = ctx.place(span.clone());
            }
            files[i] = string(ctx, S, t, key)
                .and_then(|s| abs_path(ctx, span.clone(), &format!("api.{key}"), &s))
                .map(|p| (p, span));
        }
    }
    match files {
        [Some((c, _)), Some((k, _))] => {
            api.tls_cert = Some(c);
            api.tls_key = Some(k);
        }
        [Some((_, span)), None] => ctx.at(span, "api.tls_cert needs api.tls_key"),
        [None, Some((_, span))] => ctx.at(span, "api.tls_key needs api.tls_cert"),
        [None, None] => {}
    }
    let tls = get(t, "tls_cert").is_some();
    if let Some(items) = string_array(ctx, S, t, "listen") {
        for (s, sp) in items {
            match s.parse::<SocketAddr>() {
                // Tokens travel in every request: in the clear only where
                // nobody else can listen.
                Ok(a) if !tls && !a.ip().is_loopback() => ctx.at(
                    sp,
                    format!(
                        "api.listen: \"{s}\" is not a loopback address: plain HTTP is refused there (set api.tls_cert and api.tls_key)"
                    ),
                ),
                Ok(a) => api.listen.push(a),
                Err(_) => ctx.at(
                    sp,
                    format!(
                        "api.listen: \"{s}\" is not an IP address with a port, e.g. \"127.0.0.1:8080\""
                    ),
                ),
            }
        }
    }
    if let Some(n) = integer(ctx, S, t, "max_body_bytes") {
        if (1024..=16 * 1024 * 1024).contains(&n) {
            api.max_body_bytes = n as usize;
        } else {
            let span = get(t, "max_body_bytes").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(span, "api.max_body_bytes must be between 1024 and 16777216");
        }
    }
    api
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Empty: no `/metrics`.
    pub listen: Vec<SocketAddr>,
    /// Addresses other than loopback are allowed.
    pub allow_remote: bool,
}

pub(super) const METRICS_KEYS: &[&str] = &["listen", "allow_remote"];

pub(super) fn walk_metrics(ctx: &mut Ctx, t: &DeTable) -> Metrics {
    const S: &str = "metrics";
    check_keys(ctx, t, S, METRICS_KEYS);
    let allow_remote = boolean(ctx, S, t, "allow_remote").unwrap_or(false);
    let mut listen = Vec::new();
    for (s, sp) in string_array(ctx, S, t, "listen").unwrap_or_default() {
        match s.parse::<SocketAddr>() {
            // Unauthenticated, like every exporter: how busy the bastion
            // is, which profiles run, which drains lag, for whoever asks.
            Ok(a) if !allow_remote && !a.ip().is_loopback() => ctx.at(
                sp,
                format!(
                    "metrics.listen: \"{s}\" is not a loopback address: /metrics has no authentication (set metrics.allow_remote = true to serve it there anyway)"
                ),
            ),
            Ok(a) => listen.push(a),
            Err(_) => ctx.at(
                sp,
                format!(
                    "metrics.listen: \"{s}\" is not an IP address with a port, e.g. \"127.0.0.1:9187\""
                ),
            ),
        }
    }
    Metrics {
        listen,
        allow_remote,
    }
}

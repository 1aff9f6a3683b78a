//! Collect sessions as requests: created with webhooks and an expiry,
//! changed field by field (`PATCH`: a field given changes, `null` clears
//! it, a field not given stays), each checked before the journal sees it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::{texts, AdminError, DurationIn, Invalid};
use crate::collect::valid_identifier;
use crate::journal::collect::{CollectError, CollectPatch, CollectSession, NewCollect};
use crate::journal::now_ms;
use crate::journal::webhooks::{
    NewWebhook, WebhookSpec, DEFAULT_BACKOFF_MULTIPLIER, DEFAULT_INITIAL_BACKOFF, DEFAULT_RETRIES,
    EVENTS, MAX_RETRIES,
};
use crate::journal::Journal;

/// A webhook as a request gives it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `http://` or `https://`.
    pub url: String,
    /// `post` (default), `put` or `patch`.
    #[serde(default = "post")]
    pub method: String,
    /// Extra request headers: name to values.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// `key_collected`, `new_connection`, `status_changed`; empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Attempts after the first failed one.
    #[serde(default = "retries")]
    pub retries: u32,
    /// Seconds before the first retry (at least 1).
    #[serde(default = "initial_backoff")]
    pub initial_backoff: u32,
    /// Each further retry waits this many times longer (1 to 100).
    #[serde(default = "backoff_multiplier")]
    pub backoff_multiplier: f64,
    /// Signs each delivery (HMAC-SHA256 in `X-Tollgate-Signature`); never shown.
    #[serde(default)]
    pub secret: Option<String>,
}

fn post() -> String {
    "post".into()
}
fn retries() -> u32 {
    DEFAULT_RETRIES
}
fn initial_backoff() -> u32 {
    DEFAULT_INITIAL_BACKOFF
}
fn backoff_multiplier() -> f64 {
    DEFAULT_BACKOFF_MULTIPLIER
}

impl WebhookRequest {
    /// A request for `url` with every default.
    pub fn to(url: &str) -> WebhookRequest {
        WebhookRequest {
            url: url.to_string(),
            method: post(),
            headers: BTreeMap::new(),
            events: Vec::new(),
            retries: retries(),
            initial_backoff: initial_backoff(),
            backoff_multiplier: backoff_multiplier(),
            secret: None,
        }
    }

    /// Checked; errors name `at.FIELD` (`at` like `webhooks[0]`).
    pub fn check(&self, at: &str) -> Result<NewWebhook, Invalid> {
        let f = |k: &str| format!("{at}.{k}");
        crate::webhook::Endpoint::parse(&self.url).map_err(|e| Invalid::new(f("url"), e))?;
        let method = self.method.to_ascii_lowercase();
        if !["post", "put", "patch"].contains(&method.as_str()) {
            return Err(Invalid::new(
                f("method"),
                format!("\"{}\" is not post, put or patch", self.method),
            ));
        }
        let mut headers = BTreeMap::<String, Vec<String>>::new();
        for (name, values) in &self.headers {
            for v in values {
                let (n, v) = crate::webhook::parse_header(&format!("{name}: {v}"))
                    .map_err(|e| Invalid::new(f("headers"), e))?;
                headers.entry(n).or_default().push(v);
            }
        }
        let mut events: Vec<String> = Vec::new();
        for e in &self.events {
            if !EVENTS.contains(&e.as_str()) {
                return Err(Invalid::new(
                    f("events"),
                    format!("\"{e}\" is not one of {}", EVENTS.join(", ")),
                ));
            }
            if !events.contains(e) {
                events.push(e.clone());
            }
        }
        if self.retries > MAX_RETRIES {
            return Err(Invalid::new(
                f("retries"),
                format!("{} is more than {MAX_RETRIES}", self.retries),
            ));
        }
        if self.initial_backoff < 1 {
            return Err(Invalid::new(
                f("initial_backoff"),
                "must be at least 1 (second)",
            ));
        }
        let m = self.backoff_multiplier;
        if !(m.is_finite() && (1.0..=100.0).contains(&m)) {
            return Err(Invalid::new(
                f("backoff_multiplier"),
                format!("{m} is not between 1 and 100"),
            ));
        }
        if self.secret.as_deref() == Some("") {
            return Err(Invalid::new(f("secret"), "the secret is empty"));
        }
        Ok(NewWebhook {
            spec: WebhookSpec {
                url: self.url.clone(),
                method,
                headers,
                events,
                retries: self.retries,
                initial_backoff: self.initial_backoff,
                backoff_multiplier: m,
            },
            secret: self.secret.clone(),
        })
    }
}

/// Creating a collect session (the API's body; `collect create`'s flags).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectCreate {
    /// The SSH user name to connect as (3-64 of a-z 0-9 . _ -); random when not given.
    pub connection_identifier: Option<String>,
    /// Free text tying the session to other systems.
    pub external_id: Option<String>,
    /// Keep collecting after the first connection that kept a key.
    #[serde(default)]
    pub multi_connection: bool,
    /// Collect every key the client holds, not only the first.
    #[serde(default)]
    pub multi_key: bool,
    /// The person must type y before the keys are kept.
    #[serde(default)]
    pub must_confirm: bool,
    /// Shown before the keys are listed.
    pub ssh_banner: Option<String>,
    /// Shown after connecting, with the keys found.
    pub ssh_message: Option<String>,
    /// Expire this long from now (seconds, or text such as `1h`); not with `expired_at`.
    pub timeout: Option<DurationIn>,
    /// Expire at this time (RFC 3339); not with `timeout`.
    pub expired_at: Option<String>,
    #[serde(default)]
    pub webhooks: Vec<WebhookRequest>,
}

/// Changing a collect session: only the fields given change; `null` clears
/// one that may be empty (`expired_at: null`: never expires).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectUpdate {
    #[serde(default, deserialize_with = "given")]
    pub external_id: Option<Option<String>>,
    pub multi_connection: Option<bool>,
    pub multi_key: Option<bool>,
    pub must_confirm: Option<bool>,
    #[serde(default, deserialize_with = "given")]
    pub ssh_banner: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    pub ssh_message: Option<Option<String>>,
    /// Expire this long from now; not with `expired_at`.
    pub timeout: Option<DurationIn>,
    /// Expire at this time (RFC 3339), or `null`: never.
    #[serde(default, deserialize_with = "given")]
    pub expired_at: Option<Option<String>>,
    /// Webhooks to add.
    #[serde(default)]
    pub add_webhooks: Vec<WebhookRequest>,
    /// Webhook ids to remove (their pending deliveries are canceled).
    #[serde(default)]
    pub remove_webhooks: Vec<String>,
}

/// A field that was given, `null` or not: `Some(None)` for `null`.
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `timeout` or `expired_at` as milliseconds since the epoch.
pub fn expiry(timeout: Option<&DurationIn>, at: Option<&str>) -> Result<Option<i64>, Invalid> {
    match (timeout, at) {
        (Some(_), Some(_)) => Err(Invalid::new(
            "timeout",
            "give timeout or expired_at, not both",
        )),
        (Some(t), None) => Ok(Some(now_ms() + t.get("timeout")?.as_millis() as i64)),
        (None, Some(a)) => {
            let t = humantime::parse_rfc3339_weak(a).map_err(|e| {
                Invalid::new(
                    "expired_at",
                    format!("\"{a}\" is not a time like 2026-12-01T00:00:00Z ({e})"),
                )
            })?;
            let ms = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| Invalid::new("expired_at", format!("\"{a}\" is before 1970")))?
                .as_millis() as i64;
            if ms <= now_ms() {
                return Err(Invalid::new(
                    "expired_at",
                    format!("\"{a}\" is in the past"),
                ));
            }
            Ok(Some(ms))
        }
        (None, None) => Ok(None),
    }
}

/// Each webhook checked, errors naming `field[i]`.
pub fn webhooks(field: &str, reqs: &[WebhookRequest]) -> Result<Vec<NewWebhook>, Invalid> {
    reqs.iter()
        .enumerate()
        .map(|(i, w)| w.check(&format!("{field}[{i}]")))
        .collect()
}

fn refused(e: CollectError) -> AdminError {
    match e {
        CollectError::IdentifierTaken(i) => AdminError::Conflict(Invalid::new(
            "connection_identifier",
            format!("\"{i}\" is already used by another collect session"),
        )),
        CollectError::NoSuchWebhook(w) => AdminError::Invalid(Invalid::new(
            "remove_webhooks",
            format!("\"{w}\" is not a webhook of this collect session"),
        )),
        CollectError::Journal(j) => AdminError::Journal(j),
    }
}

/// Checks `c` and creates the collect session.
pub fn create(journal: &mut Journal, c: &CollectCreate) -> Result<CollectSession, AdminError> {
    if let Some(i) = &c.connection_identifier {
        if !valid_identifier(i) {
            return Err(Invalid::new(
                "connection_identifier",
                format!("\"{i}\" is not 3 to 64 of a-z 0-9 . _ -"),
            )
            .into());
        }
    }
    texts(&[
        ("external_id", c.external_id.as_ref()),
        ("ssh_banner", c.ssh_banner.as_ref()),
        ("ssh_message", c.ssh_message.as_ref()),
    ])?;
    let n = NewCollect {
        connection_identifier: c.connection_identifier.clone(),
        external_id: c.external_id.clone(),
        multi_connection: c.multi_connection,
        multi_key: c.multi_key,
        must_confirm: c.must_confirm,
        ssh_banner: c.ssh_banner.clone(),
        ssh_message: c.ssh_message.clone(),
        expires_at: expiry(c.timeout.as_ref(), c.expired_at.as_deref())?,
        webhooks: webhooks("webhooks", &c.webhooks)?,
    };
    journal.collect_create(&n).map_err(refused)
}

/// Checks `u` and changes collect session `id`; `None`: no such session.
pub fn update(
    journal: &mut Journal,
    id: &str,
    u: &CollectUpdate,
) -> Result<Option<CollectSession>, AdminError> {
    let expires_at = match (&u.timeout, &u.expired_at) {
        (_, Some(None)) if u.timeout.is_some() => {
            return Err(Invalid::new("timeout", "give timeout or expired_at, not both").into())
        }
        (None, Some(None)) => Some(None),
        (t, at) => expiry(t.as_ref(), at.as_ref().and_then(|a| a.as_deref()))?.map(Some),
    };
    texts(&[
        (
            "external_id",
            u.external_id.as_ref().and_then(|v| v.as_ref()),
        ),
        ("ssh_banner", u.ssh_banner.as_ref().and_then(|v| v.as_ref())),
        (
            "ssh_message",
            u.ssh_message.as_ref().and_then(|v| v.as_ref()),
        ),
    ])?;
    let p = CollectPatch {
        external_id: u.external_id.clone(),
        multi_connection: u.multi_connection,
        multi_key: u.multi_key,
        must_confirm: u.must_confirm,
        ssh_banner: u.ssh_banner.clone(),
        ssh_message: u.ssh_message.clone(),
        expires_at,
        add_webhooks: webhooks("add_webhooks", &u.add_webhooks)?,
        remove_webhooks: u.remove_webhooks.clone(),
    };
    journal.collect_update(id, &p).map_err(refused)
}

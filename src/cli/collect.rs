//! `tollgate collect create|list|show|update|delete|keys|deliveries`:
//! public-key collection sessions and their webhooks.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::session::admin_error;
use super::{load, print_json, CliError, CliResult, Output, EXIT_NOT_FOUND};
use crate::admin::collect::{self as admin, CollectCreate, CollectUpdate, WebhookRequest};
use crate::admin::DurationIn;
use crate::config::Config;
use crate::journal::collect::CollectSession;
use crate::webhook;

#[derive(Subcommand, Debug)]
pub enum CollectCmd {
    /// Create a collect session; prints its id, identifier and the ssh line to send.
    Create(CreateArgs),
    /// Collect sessions, newest first.
    List,
    /// Every field of one collect session, its connections and keys.
    Show { id: String },
    /// Change only the fields given.
    Update(UpdateArgs),
    /// Delete a collect session: its identifier is refused from then on.
    Delete { id: String },
    /// Webhook deliveries of a collect session and every attempt.
    Deliveries { id: String },
    /// The keys collected, ready to paste.
    Keys {
        id: String,
        /// openssh (authorized_keys lines), rfc4716, pem or json.
        #[arg(long, value_enum, default_value_t = KeyFormat::Openssh)]
        format: KeyFormat,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyFormat {
    Openssh,
    Rfc4716,
    Pem,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The SSH user name to connect as (3-64 of a-z 0-9 . _ -); random when not given.
    #[arg(long, value_name = "NAME")]
    pub identifier: Option<String>,
    /// Free text tying the session to other systems.
    #[arg(long, value_name = "TEXT")]
    pub external_id: Option<String>,
    /// Keep collecting after the first connection that kept a key.
    #[arg(long)]
    pub multi_connection: bool,
    /// Collect every key the client holds, not only the first.
    #[arg(long)]
    pub multi_key: bool,
    /// The person must type y before the keys are kept.
    #[arg(long)]
    pub must_confirm: bool,
    /// Shown before the keys are listed.
    #[arg(long, value_name = "TEXT")]
    pub banner: Option<String>,
    /// Shown after connecting, with the keys found.
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Expire this long from now (e.g. 1h, 7d).
    #[arg(long, value_name = "DUR", conflicts_with = "expires_at")]
    pub timeout: Option<String>,
    /// Expire at this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
    /// Call this http:// or https:// URL on collect events (repeatable; the
    /// --webhook-* options apply to each).
    #[arg(long = "webhook", value_name = "URL")]
    pub webhooks: Vec<String>,
    #[command(flatten)]
    pub webhook: WebhookOpts,
}

/// How the webhooks added by one command are called.
#[derive(clap::Args, Debug, Default)]
pub struct WebhookOpts {
    /// post, put or patch.
    #[arg(long, value_name = "METHOD", default_value = "post")]
    pub webhook_method: String,
    /// An extra request header, "Name: value" (repeatable).
    #[arg(long, value_name = "HEADER")]
    pub webhook_header: Vec<String>,
    /// key_collected, new_connection or status_changed (repeatable; none: all).
    #[arg(long, value_name = "EVENT")]
    pub webhook_event: Vec<String>,
    /// Attempts after the first failed one.
    #[arg(long, value_name = "N", default_value_t = webhook::DEFAULT_RETRIES)]
    pub webhook_retries: u32,
    /// Seconds before the first retry (at least 1).
    #[arg(long, value_name = "SECS", default_value_t = webhook::DEFAULT_INITIAL_BACKOFF)]
    pub webhook_initial_backoff: u32,
    /// Each further retry waits this many times longer (at least 1).
    #[arg(long, value_name = "X", default_value_t = webhook::DEFAULT_BACKOFF_MULTIPLIER)]
    pub webhook_backoff_multiplier: f64,
    /// Sign each delivery with the secret in this file (HMAC-SHA256 in X-Tollgate-Signature).
    #[arg(long, value_name = "FILE", conflicts_with = "webhook_secret_env")]
    pub webhook_secret_file: Option<std::path::PathBuf>,
    /// Sign each delivery with the secret in this environment variable.
    #[arg(long, value_name = "VAR")]
    pub webhook_secret_env: Option<String>,
}

impl WebhookOpts {
    /// Whether any option was given (they mean nothing without a webhook).
    fn any_given(&self) -> bool {
        self.webhook_method != "post"
            || !self.webhook_header.is_empty()
            || !self.webhook_event.is_empty()
            || self.webhook_retries != webhook::DEFAULT_RETRIES
            || self.webhook_initial_backoff != webhook::DEFAULT_INITIAL_BACKOFF
            || self.webhook_backoff_multiplier != webhook::DEFAULT_BACKOFF_MULTIPLIER
            || self.webhook_secret_file.is_some()
            || self.webhook_secret_env.is_some()
    }

    /// One request per URL, with these options and the secret read.
    fn requests(&self, flag: &str, urls: &[String]) -> Result<Vec<WebhookRequest>, CliError> {
        if urls.is_empty() {
            if self.any_given() {
                return Err(CliError::usage(format!(
                    "--webhook-* options need a webhook: give {flag} URL"
                )));
            }
            return Ok(Vec::new());
        }
        let mut headers = std::collections::BTreeMap::<String, Vec<String>>::new();
        for h in &self.webhook_header {
            let (name, value) = webhook::parse_header(h)
                .map_err(|e| CliError::usage(format!("--webhook-header: {e}")))?;
            headers.entry(name).or_default().push(value);
        }
        let secret = self.secret()?;
        Ok(urls
            .iter()
            .map(|u| WebhookRequest {
                method: self.webhook_method.clone(),
                headers: headers.clone(),
                events: self.webhook_event.clone(),
                retries: self.webhook_retries,
                initial_backoff: self.webhook_initial_backoff,
                backoff_multiplier: self.webhook_backoff_multiplier,
                secret: secret.clone(),
                ..WebhookRequest::to(u)
            })
            .collect())
    }

    /// The flag that gave `field` of a request (`webhooks[0].method`).
    fn flag(&self, field: &str, url_flag: &str) -> String {
        let last = field.rsplit('.').next().unwrap_or(field);
        match last {
            "connection_identifier" => "--identifier".into(),
            "ssh_banner" => "--banner".into(),
            "ssh_message" => "--message".into(),
            "expired_at" => "--expires-at".into(),
            "remove_webhooks" => "--remove-webhook".into(),
            "secret" if self.webhook_secret_env.is_some() => "--webhook-secret-env".into(),
            "secret" => "--webhook-secret-file".into(),
            "headers" => "--webhook-header".into(),
            "events" => "--webhook-event".into(),
            "url" => url_flag.into(),
            _ if field.contains('.') => format!("--webhook-{}", last.replace('_', "-")),
            _ => super::session::dashed(field),
        }
    }

    /// The signing secret, from a file (one trailing newline dropped) or
    /// the environment: never from the command line, where `ps` shows it.
    fn secret(&self) -> Result<Option<String>, CliError> {
        let (what, value) = if let Some(f) = &self.webhook_secret_file {
            let v = std::fs::read_to_string(f).map_err(|e| {
                CliError::usage(format!("--webhook-secret-file: {}: {e}", f.display()))
            })?;
            ("--webhook-secret-file", v)
        } else if let Some(var) = &self.webhook_secret_env {
            let v = std::env::var(var).map_err(|_| {
                CliError::usage(format!(
                    "--webhook-secret-env: ${var} is not set (or not UTF-8)"
                ))
            })?;
            ("--webhook-secret-env", v)
        } else {
            return Ok(None);
        };
        let v = value.strip_suffix('\n').unwrap_or(&value);
        let v = v.strip_suffix('\r').unwrap_or(v);
        if v.is_empty() {
            return Err(CliError::usage(format!("{what}: the secret is empty")));
        }
        Ok(Some(v.to_string()))
    }
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    pub id: String,
    #[arg(long, value_name = "TEXT")]
    pub external_id: Option<String>,
    #[arg(long, value_name = "BOOL")]
    pub multi_connection: Option<bool>,
    #[arg(long, value_name = "BOOL")]
    pub multi_key: Option<bool>,
    #[arg(long, value_name = "BOOL")]
    pub must_confirm: Option<bool>,
    #[arg(long, value_name = "TEXT")]
    pub banner: Option<String>,
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Expire this long from now.
    #[arg(long, value_name = "DUR", conflicts_with_all = ["expires_at", "no_expiry"])]
    pub timeout: Option<String>,
    /// Expire at this time (RFC 3339).
    #[arg(long, value_name = "TIME", conflicts_with = "no_expiry")]
    pub expires_at: Option<String>,
    /// Never expire.
    #[arg(long)]
    pub no_expiry: bool,
    /// Add a webhook (repeatable; the --webhook-* options apply to each).
    #[arg(long = "add-webhook", value_name = "URL")]
    pub add_webhooks: Vec<String>,
    /// Remove a webhook by its id; its pending deliveries are canceled (repeatable).
    #[arg(long = "remove-webhook", value_name = "WEBHOOK_ID")]
    pub remove_webhooks: Vec<String>,
    #[command(flatten)]
    pub webhook: WebhookOpts,
}

fn not_found(id: &str) -> CliError {
    CliError {
        code: EXIT_NOT_FOUND,
        message: format!("tollgate: no such collect session: {id}"),
    }
}

pub fn run(cmd: CollectCmd, config_path: &Path, output: Output) -> CliResult {
    let (config, mut journal) = load(config_path)?;
    match cmd {
        CollectCmd::Create(a) => {
            let c = CollectCreate {
                connection_identifier: a.identifier.clone(),
                external_id: a.external_id.clone(),
                multi_connection: a.multi_connection,
                multi_key: a.multi_key,
                must_confirm: a.must_confirm,
                ssh_banner: a.banner.clone(),
                ssh_message: a.message.clone(),
                timeout: a.timeout.clone().map(DurationIn::Text),
                expired_at: a.expires_at.clone(),
                webhooks: a.webhook.requests("--webhook", &a.webhooks)?,
            };
            let s = admin::create(&mut journal, &c)
                .map_err(|e| admin_error(e, |f| a.webhook.flag(f, "--webhook")))?;
            print_created(&config, &s, output);
            Ok(())
        }
        CollectCmd::List => {
            let all = journal.collect_list()?;
            match output {
                Output::Json => print_json(&all),
                Output::Text => {
                    println!(
                        "{:<22} {:<14} {:<10} {:>5} {:>5} {:<24}",
                        "ID", "IDENTIFIER", "STATUS", "CONNS", "KEYS", "EXPIRES"
                    );
                    for s in &all {
                        println!(
                            "{:<22} {:<14} {:<10} {:>5} {:>5} {:<24}",
                            s.id,
                            s.connection_identifier,
                            s.status,
                            s.connections.len(),
                            key_count(s),
                            s.expired_at.as_deref().unwrap_or("never")
                        );
                    }
                }
            }
            Ok(())
        }
        CollectCmd::Show { id } => {
            let s = journal.collect_get(&id)?.ok_or_else(|| not_found(&id))?;
            match output {
                Output::Json => print_json(&s),
                Output::Text => print_text(&config, &s),
            }
            Ok(())
        }
        CollectCmd::Update(a) => {
            let u = CollectUpdate {
                external_id: a.external_id.clone().map(Some),
                multi_connection: a.multi_connection,
                multi_key: a.multi_key,
                must_confirm: a.must_confirm,
                ssh_banner: a.banner.clone().map(Some),
                ssh_message: a.message.clone().map(Some),
                timeout: a.timeout.clone().map(DurationIn::Text),
                expired_at: if a.no_expiry {
                    Some(None)
                } else {
                    a.expires_at.clone().map(Some)
                },
                add_webhooks: a.webhook.requests("--add-webhook", &a.add_webhooks)?,
                remove_webhooks: a.remove_webhooks.clone(),
            };
            let s = admin::update(&mut journal, &a.id, &u)
                .map_err(|e| admin_error(e, |f| a.webhook.flag(f, "--add-webhook")))?
                .ok_or_else(|| not_found(&a.id))?;
            match output {
                Output::Json => print_json(&s),
                Output::Text => print_text(&config, &s),
            }
            Ok(())
        }
        CollectCmd::Delete { id } => {
            if !journal.collect_delete(&id)? {
                return Err(not_found(&id));
            }
            match output {
                Output::Json => print_json(&json!({"id": id, "deleted": true})),
                Output::Text => println!("deleted {id}"),
            }
            Ok(())
        }
        CollectCmd::Deliveries { id } => {
            let s = journal.collect_get(&id)?.ok_or_else(|| not_found(&id))?;
            let all = journal.webhook_deliveries(&s.id)?;
            match output {
                Output::Json => print_json(&all),
                Output::Text => {
                    println!(
                        "{:<20} {:<20} {:<15} {:<9} {:>8} {:<10} {:<24}",
                        "DELIVERY", "WEBHOOK", "EVENT", "STATUS", "ATTEMPTS", "LAST", "NEXT"
                    );
                    for d in &all {
                        let last = d.attempts.last().map_or("-".to_string(), |a| {
                            a.status_code
                                .map_or_else(|| "error".to_string(), |c| c.to_string())
                        });
                        println!(
                            "{:<20} {:<20} {:<15} {:<9} {:>8} {:<10} {:<24}",
                            d.id,
                            d.webhook_id,
                            d.event,
                            d.status,
                            d.attempts.len(),
                            last,
                            d.next_attempt_at.as_deref().unwrap_or("-")
                        );
                        for a in d.attempts.iter().filter(|a| a.error.is_some()) {
                            println!(
                                "  attempt {} at {}: {}",
                                a.n,
                                a.started_at,
                                a.error.as_deref().unwrap_or_default()
                            );
                        }
                    }
                }
            }
            Ok(())
        }
        CollectCmd::Keys { id, format } => {
            let s = journal.collect_get(&id)?.ok_or_else(|| not_found(&id))?;
            let keys = s.connections.iter().flat_map(|c| c.keys.iter());
            match (format, output) {
                (KeyFormat::Json, _) | (_, Output::Json) => {
                    print_json(&keys.collect::<Vec<_>>());
                }
                (KeyFormat::Openssh, _) => {
                    for k in keys {
                        println!("{} {}", k.public_key_openssh, s.connection_identifier);
                    }
                }
                (KeyFormat::Rfc4716, _) => keys.for_each(|k| print!("{}", k.public_key_ssh)),
                (KeyFormat::Pem, _) => keys.for_each(|k| print!("{}", k.public_key_pem)),
            }
            Ok(())
        }
    }
}

fn key_count(s: &CollectSession) -> usize {
    s.connections.iter().map(|c| c.keys.len()).sum()
}

fn ssh(config: &Config, s: &CollectSession) -> String {
    config.destination().login_line(&s.connection_identifier)
}

fn print_created(config: &Config, s: &CollectSession, output: Output) {
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["ssh"] = json!(ssh(config, s));
            print_json(&v);
        }
        Output::Text => {
            println!("collect     {}", s.id);
            println!("identifier  {}", s.connection_identifier);
            println!("expires     {}", s.expired_at.as_deref().unwrap_or("never"));
            println!("send        {}", ssh(config, s));
            for w in &s.webhooks {
                println!("webhook     {} {}", w.id, w.spec.url);
            }
        }
    }
}

fn print_text(config: &Config, s: &CollectSession) {
    println!("id                  {}", s.id);
    println!("identifier          {}", s.connection_identifier);
    println!("status              {}", s.status);
    println!("created             {}", s.created_at);
    println!("updated             {}", s.updated_at);
    println!(
        "expires             {}",
        s.expired_at.as_deref().unwrap_or("never")
    );
    println!(
        "external id         {}",
        s.external_id.as_deref().unwrap_or("-")
    );
    println!(
        "multi connection    {}  multi key {}  must confirm {}",
        s.multi_connection, s.multi_key, s.must_confirm
    );
    println!("ssh                 {}", ssh(config, s));
    for wh in &s.webhooks {
        let w = &wh.spec;
        let events = if w.events.is_empty() {
            "all events".to_string()
        } else {
            w.events.join(",")
        };
        println!(
            "webhook {} {} {} ({}; retries {}, backoff {}s x{}{})",
            wh.id,
            w.method.to_ascii_uppercase(),
            w.url,
            events,
            w.retries,
            w.initial_backoff,
            w.backoff_multiplier,
            if wh.has_secret { ", signed" } else { "" }
        );
    }
    for c in &s.connections {
        println!(
            "connection {} from {} ({}) at {}",
            c.id,
            c.ip_address.as_deref().unwrap_or("?"),
            c.client_version.as_deref().unwrap_or("?"),
            c.created_at
        );
        for k in &c.keys {
            println!(
                "  {} {} {}",
                k.public_key_algorithm, k.public_key_sha256, k.public_key_md5
            );
        }
    }
}

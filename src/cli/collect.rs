//! `tollgate collect create|list|show|update|delete|keys`: public-key
//! collection sessions. Webhooks are not built yet.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::{load, print_json, CliError, CliResult, Output, EXIT_NOT_FOUND};
use crate::collect::store::{valid_identifier, CollectPatch, CollectSession, NewCollect};
use crate::config::{parse_duration, ssh_line, Config};
use crate::journal::now_ms;

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
}

fn not_found(id: &str) -> CliError {
    CliError {
        code: EXIT_NOT_FOUND,
        message: format!("tollgate: no such collect session: {id}"),
    }
}

/// `--timeout` or `--expires-at` as milliseconds since the epoch.
fn expiry(timeout: Option<&str>, at: Option<&str>) -> Result<Option<i64>, CliError> {
    if let Some(t) = timeout {
        let d = parse_duration(t).map_err(|e| CliError::usage(format!("--timeout: {e}")))?;
        if d.is_zero() {
            return Err(CliError::usage("--timeout: must be longer than 0s"));
        }
        return Ok(Some(now_ms() + d.as_millis() as i64));
    }
    if let Some(a) = at {
        let t = humantime::parse_rfc3339_weak(a).map_err(|e| {
            CliError::usage(format!(
                "--expires-at: \"{a}\" is not a time like 2026-12-01T00:00:00Z ({e})"
            ))
        })?;
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| CliError::usage(format!("--expires-at: \"{a}\" is before 1970")))?
            .as_millis() as i64;
        if ms <= now_ms() {
            return Err(CliError::usage(format!(
                "--expires-at: \"{a}\" is in the past"
            )));
        }
        return Ok(Some(ms));
    }
    Ok(None)
}

pub fn run(cmd: CollectCmd, config_path: &Path, output: Output) -> CliResult {
    let (config, mut journal) = load(config_path)?;
    match cmd {
        CollectCmd::Create(a) => {
            if let Some(i) = &a.identifier {
                if !valid_identifier(i) {
                    return Err(CliError::usage(format!(
                        "--identifier: \"{i}\" is not 3 to 64 of a-z 0-9 . _ -"
                    )));
                }
            }
            let n = NewCollect {
                connection_identifier: a.identifier.clone(),
                external_id: a.external_id.clone(),
                multi_connection: a.multi_connection,
                multi_key: a.multi_key,
                must_confirm: a.must_confirm,
                ssh_banner: a.banner.clone(),
                ssh_message: a.message.clone(),
                expires_at: expiry(a.timeout.as_deref(), a.expires_at.as_deref())?,
            };
            let s = journal.collect_create(&n).map_err(|e| match e {
                crate::collect::store::CollectError::IdentifierTaken(_) => CliError::usage(e),
                other => CliError::failure(other),
            })?;
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
            let expires_at = if a.no_expiry {
                Some(None)
            } else {
                expiry(a.timeout.as_deref(), a.expires_at.as_deref())?.map(Some)
            };
            let p = CollectPatch {
                external_id: a.external_id.map(Some),
                multi_connection: a.multi_connection,
                multi_key: a.multi_key,
                must_confirm: a.must_confirm,
                ssh_banner: a.banner.map(Some),
                ssh_message: a.message.map(Some),
                expires_at,
            };
            let s = journal
                .collect_update(&a.id, &p)?
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
    let (host, port) = config.ssh_destination();
    ssh_line(&host, port, &s.connection_identifier)
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

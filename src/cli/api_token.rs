//! `tollgate api-token create|list|revoke`: the tokens the HTTP API takes.
//! A token is shown once, when created; the journal keeps its SHA-256.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::{load, print_json, CliError, CliResult, Output, EXIT_NOT_FOUND};
use crate::api::{SCOPES, TOKEN_PREFIX};
use crate::config::parse_duration;
use crate::journal::{now_ms, ApiTokenRow, Journal};

#[derive(Subcommand, Debug)]
pub enum ApiTokenCmd {
    /// Create a token; it is printed once, here.
    Create {
        /// What it is for (shown by list and in the journal's events).
        #[arg(long)]
        name: String,
        /// A scope it grants, RESOURCE:read or RESOURCE:write (repeatable; write grants read).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// Stop working this long from now (e.g. 90d; default: until revoked).
        #[arg(long, value_name = "DUR")]
        expires_in: Option<String>,
    },
    /// Every token: id, name, scopes, created, expires, revoked (never the secret).
    List,
    /// Revoke a token by its id: refused from the next request on. Idempotent.
    Revoke { id: String },
}

/// A new token `tga_ID_SECRET` (the same 32 random bytes as session
/// tokens after its id), stored as its hash; the only copy is returned.
pub fn mint(
    journal: &mut Journal,
    name: &str,
    scopes: &[String],
    expires_at: Option<i64>,
) -> Result<(ApiTokenRow, String), CliError> {
    let id = crate::token::random_id("apt_").map_err(CliError::failure)?;
    let secret = crate::token::Token::generate().map_err(CliError::failure)?;
    let secret = secret.reveal().trim_start_matches(crate::token::PREFIX);
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    let row =
        journal.api_token_create(&id, name, &crate::token::hash(&token), scopes, expires_at)?;
    Ok((row, token))
}

pub fn run(cmd: ApiTokenCmd, config_path: &Path, output: Output) -> CliResult {
    let (_, mut journal) = load(config_path)?;
    match cmd {
        ApiTokenCmd::Create {
            name,
            scopes,
            expires_in,
        } => {
            if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err(CliError::usage("--name: give 1 to 64 printable characters"));
            }
            let mut kept: Vec<String> = Vec::new();
            for s in scopes {
                if !SCOPES.contains(&s.as_str()) {
                    return Err(CliError::usage(format!(
                        "--scope: \"{s}\" is not one of {}",
                        SCOPES.join(", ")
                    )));
                }
                if !kept.contains(&s) {
                    kept.push(s);
                }
            }
            let expires_at = match &expires_in {
                None => None,
                Some(d) => match parse_duration(d) {
                    Ok(d) if !d.is_zero() => Some(now_ms() + d.as_millis() as i64),
                    Ok(_) => return Err(CliError::usage("--expires-in: must be more than 0s")),
                    Err(e) => return Err(CliError::usage(format!("--expires-in: {e}"))),
                },
            };
            let (row, token) = mint(&mut journal, &name, &kept, expires_at)?;
            match output {
                Output::Json => {
                    let mut v = serde_json::to_value(&row).map_err(CliError::failure)?;
                    v["token"] = json!(token);
                    print_json(&v);
                }
                Output::Text => {
                    println!("api token  {}", row.id);
                    println!("token      {token}");
                    println!("           (shown once: only its hash is stored)");
                    println!("scopes     {}", row.scopes.join(" "));
                    println!(
                        "expires    {}",
                        row.expires_at
                            .as_deref()
                            .unwrap_or("never (revoke it when done)")
                    );
                }
            }
            Ok(())
        }
        ApiTokenCmd::List => {
            let all = journal.api_token_list()?;
            match output {
                Output::Json => print_json(&all),
                Output::Text => {
                    println!(
                        "{:<21} {:<16} {:<24} {:<24} SCOPES",
                        "ID", "NAME", "CREATED", "STATE"
                    );
                    for t in &all {
                        let state = match (&t.revoked_at, &t.expires_at) {
                            (Some(r), _) => format!("revoked {r}"),
                            (None, Some(e)) => format!("expires {e}"),
                            (None, None) => "live".into(),
                        };
                        println!(
                            "{:<21} {:<16} {:<24} {:<24} {}",
                            t.id,
                            crate::text::escape_controls(&t.name),
                            t.created_at,
                            state,
                            t.scopes.join(" ")
                        );
                    }
                }
            }
            Ok(())
        }
        ApiTokenCmd::Revoke { id } => {
            let done = journal.api_token_revoke(&id)?.ok_or_else(|| CliError {
                code: EXIT_NOT_FOUND,
                message: format!("tollgate: no such API token: {id}"),
            })?;
            match output {
                Output::Json => print_json(&json!({"id": id, "revoked": true, "already": !done})),
                Output::Text if done => println!("{id}: revoked"),
                Output::Text => println!("{id}: was revoked already"),
            }
            Ok(())
        }
    }
}

//! `tollgate session issue|list|show|cancel`.

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::Output;
use super::{load, print_json, CliError, CliResult};
use crate::config::{parse_duration, Config};
use crate::journal::{CancelOutcome, Journal, NewSession, SessionRow};
use crate::token::{random_id, Token};

#[derive(Subcommand, Debug)]
pub enum SessionCmd {
    /// Issue a one-time token for a profile; the token is printed once, here.
    Issue(IssueArgs),
    /// List sessions, newest first.
    List {
        /// Only sessions in this state (pending, active, canceling, terminated, expired).
        #[arg(long)]
        state: Option<String>,
    },
    /// Show every field of a session and its history.
    Show { id: String },
    /// Cancel a session: void a pending token or end a live session within a second. Idempotent.
    Cancel { id: String },
}

#[derive(clap::Args, Debug, Default)]
#[command(group(clap::ArgGroup::new("grant").required(true).args(["profile", "target"])))]
pub struct IssueArgs {
    /// Profile from the config file: a command in a PTY.
    #[arg(long)]
    pub profile: Option<String>,
    /// Target from the config file ([targets.NAME]): a tunnel to it and nothing else.
    #[arg(long, conflicts_with_all = ["profile", "command"])]
    pub target: Option<String>,
    /// Tunnels: forwarded connections open at once (default: the target's connection_limit).
    #[arg(long, value_name = "N", requires = "target")]
    pub connection_limit: Option<u32>,
    /// SSH user name the person must connect as.
    #[arg(long)]
    pub login_user: String,
    /// How long the token stays redeemable (default: sessions.token_ttl).
    #[arg(long, value_name = "DUR")]
    pub ttl: Option<String>,
    /// Lifetime of the session once redeemed (default: sessions.max_duration).
    #[arg(long, value_name = "DUR")]
    pub max_duration: Option<String>,
    /// Command to run instead of the profile's, for shell and exec requests alike.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// Why this session exists (recorded in the journal).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

pub fn run(cmd: SessionCmd, config_path: &Path, output: Output) -> CliResult {
    let (config, mut journal) = load(config_path)?;
    match cmd {
        SessionCmd::Issue(a) => {
            let issued = issue(&config, &mut journal, &a)?;
            print_issued(&issued, output);
            Ok(())
        }
        SessionCmd::List { state } => {
            use crate::journal::SessionState;
            let state = match &state {
                None => None,
                Some(s) => Some(SessionState::parse(s).ok_or_else(|| {
                    let all: Vec<&str> = SessionState::ALL.iter().map(|s| s.as_str()).collect();
                    CliError::usage(format!(
                        "--state: unknown state \"{s}\" (one of {})",
                        all.join(", ")
                    ))
                })?),
            };
            let rows = journal.list(state)?;
            match output {
                Output::Json => print_json(&rows),
                Output::Text => print_table(&rows),
            }
            Ok(())
        }
        SessionCmd::Show { id } => {
            let row = journal.get(&id)?.ok_or_else(|| CliError::not_found(&id))?;
            let events = journal.events(Some(&id), 0, None)?;
            match output {
                Output::Json => {
                    let mut v = serde_json::to_value(&row).map_err(CliError::failure)?;
                    v["history"] = serde_json::to_value(&events).map_err(CliError::failure)?;
                    print_json(&v);
                }
                Output::Text => {
                    let v = serde_json::to_value(&row).map_err(CliError::failure)?;
                    if let Some(obj) = v.as_object() {
                        for (k, val) in obj {
                            // Reasons and commands are anybody's text: never
                            // let them move the admin's cursor.
                            let shown = match val {
                                serde_json::Value::Null => "-".to_string(),
                                serde_json::Value::String(s) => {
                                    crate::text::escape_controls(s).into_owned()
                                }
                                other => other.to_string(),
                            };
                            println!("{:<15} {shown}", format!("{k}:"));
                        }
                    }
                    println!("history:");
                    for e in &events {
                        println!("  {}  {:<26} {}", e.at, e.kind, e.detail);
                    }
                }
            }
            Ok(())
        }
        SessionCmd::Cancel { id } => {
            let outcome = journal
                .cancel(&id)?
                .ok_or_else(|| CliError::not_found(&id))?;
            let row = journal.get(&id)?.ok_or_else(|| CliError::not_found(&id))?;
            let what = match outcome {
                CancelOutcome::Voided => "token voided",
                CancelOutcome::Requested => {
                    "cancel requested; the daemon ends the session within a second"
                }
                CancelOutcome::AlreadyOver => "nothing to do",
            };
            match output {
                Output::Json => print_json(
                    &json!({"id": id, "state": row.state, "end_reason": row.end_reason, "result": match outcome {
                    CancelOutcome::Voided => "voided", CancelOutcome::Requested => "requested", CancelOutcome::AlreadyOver => "already_over" }}),
                ),
                Output::Text => println!("{id}: {what} (state {})", row.state),
            }
            Ok(())
        }
    }
}

/// A freshly issued session with its token, before printing.
pub struct Issued {
    pub row: SessionRow,
    pub token: Token,
    pub ssh: String,
    /// Tunnels to SSH targets: the `-J` form.
    pub jump: Option<String>,
}

/// Validates the request against the config and writes the pending session.
pub fn issue(config: &Config, journal: &mut Journal, a: &IssueArgs) -> Result<Issued, CliError> {
    let unknown = |flag: &str, what: &str, name: &str, known: Vec<&str>| {
        CliError::usage(format!(
            "{flag}: no {what} \"{name}\" in {} (known: {})",
            config.path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    };
    let target = match (&a.profile, &a.target) {
        (Some(p), _) if config.profile(p).is_none() => {
            return Err(unknown(
                "--profile",
                "profile",
                p,
                config.profiles.keys().map(String::as_str).collect(),
            ))
        }
        (_, Some(t)) => match config.targets.get(t) {
            Some(target) => Some((t.as_str(), target)),
            None => {
                return Err(unknown(
                    "--target",
                    "target",
                    t,
                    config.targets.keys().map(String::as_str).collect(),
                ))
            }
        },
        _ => None,
    };
    if a.connection_limit == Some(0) {
        return Err(CliError::usage("--connection-limit: must be at least 1"));
    }
    let u = &a.login_user;
    if u.is_empty()
        || u.len() > 64
        || !u
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '@' && c != ':')
    {
        return Err(CliError::usage(format!(
            "--login-user: \"{u}\" is not a usable SSH user name (printable ASCII without '@' or ':', at most 64 characters)"
        )));
    }
    let dur = |flag: &str, v: &Option<String>, default: Duration| -> Result<Duration, CliError> {
        match v {
            None => Ok(default),
            Some(s) => match parse_duration(s) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(CliError::usage(format!("{flag}: must be more than 0s"))),
                Err(e) => Err(CliError::usage(format!("{flag}: {e}"))),
            },
        }
    };
    let ttl = dur("--ttl", &a.ttl, config.sessions.token_ttl)?;
    let max_duration = dur(
        "--max-duration",
        &a.max_duration,
        target
            .and_then(|(_, t)| t.max_duration)
            .unwrap_or(config.sessions.max_duration),
    )?;
    if let Some(c) = &a.command {
        if c.trim().is_empty() || c.contains('\0') {
            return Err(CliError::usage(
                "--command: must be a non-empty command line",
            ));
        }
        // Issued all the same: the bastion that redeems it may differ.
        let profile = a.profile.as_deref().and_then(|p| config.profile(p));
        if let Some(why) = profile.and_then(crate::exec::account::shell_refuses) {
            eprintln!(
                "tollgate: warning: --command: {why}; set profiles.{}.shell in {}",
                a.profile.as_deref().unwrap_or_default(),
                config.path.display()
            );
        }
    }
    let token = Token::generate().map_err(CliError::failure)?;
    let id = random_id("ses_").map_err(CliError::failure)?;
    let row = journal.issue(&NewSession {
        id: &id,
        token_sha256: &token.hash(),
        profile: a.profile.as_deref().unwrap_or_default(),
        login_user: u,
        command: a.command.as_deref(),
        reason: a.reason.as_deref(),
        ttl,
        max_duration,
        target: target.map(|(name, _)| name),
        connection_limit: a
            .connection_limit
            .or(target.and_then(|(_, t)| t.connection_limit)),
    })?;
    let dest = config.destination();
    let (ssh, jump) = match target {
        None => (dest.login_line(u), None),
        Some((name, t)) => crate::ssh::tunnel::lines(&dest, u, name, t),
    };
    Ok(Issued {
        row,
        token,
        ssh,
        jump,
    })
}

/// Prints an issued session; the only place a token is ever shown.
pub fn print_issued(i: &Issued, output: Output) {
    match output {
        Output::Json => print_json(&json!({
            "id": i.row.id, "token": i.token.reveal(), "state": i.row.state, "profile": i.row.profile,
            "login_user": i.row.login_user, "command": i.row.command, "reason": i.row.reason,
            "created_at": i.row.created_at, "expires_at": i.row.expires_at,
            "max_duration_s": i.row.max_duration_s, "ssh": i.ssh, "kind": i.row.kind,
            "target": i.row.target, "connection_limit": i.row.connection_limit, "ssh_jump": i.jump,
        })),
        Output::Text => {
            println!("session  {}", i.row.id);
            println!("token    {}", i.token.reveal());
            println!("         (shown once: only its hash is stored)");
            println!("expires  {}", i.row.expires_at);
            println!("connect  {}", i.ssh);
            if let Some(j) = &i.jump {
                println!("    or   {j}");
            }
            println!("         and paste the token at the Token: prompt");
        }
    }
}

fn print_table(rows: &[SessionRow]) {
    println!(
        "{:<20} {:<10} {:<12} {:<12} {:<24} {:<14}",
        "ID", "STATE", "PROFILE", "USER", "CREATED", "END"
    );
    for r in rows {
        println!(
            "{:<20} {:<10} {:<12} {:<12} {:<24} {:<14}",
            r.id,
            r.state,
            r.profile.as_deref().unwrap_or("-"),
            crate::text::escape_controls(&r.login_user),
            r.created_at,
            r.end_reason.map_or("-", |e| e.as_str())
        );
    }
}

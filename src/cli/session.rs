//! `tollgate session issue|list|show|cancel`.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::Output;
use super::{load, print_json, CliError, CliResult};
use crate::admin::{AdminError, DurationIn, IssueRequest, Issued};
use crate::config::{parse_duration, Config};
use crate::journal::{CancelOutcome, Journal, SessionRow};

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
    /// Watch a live session's terminal, read-only, until it ends (q or Ctrl-C stops).
    Watch {
        id: String,
        /// From the session's start (default: from now).
        #[arg(long)]
        from_start: bool,
    },
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
        SessionCmd::Watch { id, from_start } => {
            super::watch::watch(&config, &journal, &id, from_start)
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

impl IssueArgs {
    /// The request these flags make.
    pub fn request(&self) -> Result<IssueRequest, CliError> {
        let dur = |flag: &str, v: &Option<String>| -> Result<Option<DurationIn>, CliError> {
            match v {
                None => Ok(None),
                Some(s) => match parse_duration(s) {
                    Ok(d) if !d.is_zero() => Ok(Some(DurationIn::Text(s.clone()))),
                    Ok(_) => Err(CliError::usage(format!("{flag}: must be more than 0s"))),
                    Err(e) => Err(CliError::usage(format!("{flag}: {e}"))),
                },
            }
        };
        Ok(IssueRequest {
            profile: self.profile.clone(),
            target: self.target.clone(),
            connection_limit: self.connection_limit,
            login_user: self.login_user.clone(),
            ttl: dur("--ttl", &self.ttl)?,
            max_duration: dur("--max-duration", &self.max_duration)?,
            command: self.command.clone(),
            reason: self.reason.clone(),
        })
    }
}

/// An admin refusal as the CLI says it: the field as its flag.
pub fn admin_error(e: AdminError, flag: impl Fn(&str) -> String) -> CliError {
    match e {
        AdminError::Invalid(i) | AdminError::Conflict(i) => {
            CliError::usage(format!("{}: {}", flag(&i.field), i.message))
        }
        AdminError::Journal(j) => CliError::failure(j),
    }
}

/// `login_user` → `--login-user`.
pub fn dashed(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

/// Validates the request against the config and writes the pending session.
pub fn issue(config: &Config, journal: &mut Journal, a: &IssueArgs) -> Result<Issued, CliError> {
    let issued =
        crate::admin::issue(config, journal, &a.request()?).map_err(|e| admin_error(e, dashed))?;
    for w in &issued.warnings {
        eprintln!("tollgate: warning: --{w}");
    }
    Ok(issued)
}

/// Prints an issued session; the only place a token is ever shown.
pub fn print_issued(i: &Issued, output: Output) {
    match output {
        Output::Json => print_json(&i.view()),
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

//! `tollgate journal copy`: moves a bastion's journal (the SQLite file the
//! configuration names) into an empty PostgreSQL database that several
//! bastions then share.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{print_json, CliError, CliResult, Output};
use crate::config::{PgUrl, Secret};
use crate::journal::Journal;

#[derive(clap::Subcommand, Debug)]
pub enum JournalCmd {
    /// Copy every session, event, collect session and webhook delivery into an empty PostgreSQL journal.
    Copy(CopyArgs),
}

#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// The PostgreSQL journal: postgres://ROLE@HOST[:PORT]/DB[?sslmode=verify-full|disable], no password in it.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// A file whose first line is the role's password.
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// A variable holding the role's password instead.
    #[arg(long, value_name = "NAME")]
    pub password_env: Option<String>,
    /// CAs the server's certificate must chain to (sslmode=verify-full; default: the system bundle).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

pub fn run(cmd: JournalCmd, config_path: &Path, output: Output) -> CliResult {
    let JournalCmd::Copy(a) = cmd;
    let url = PgUrl::parse(&a.to).map_err(|e| CliError::usage(format!("--to: the URL {e}")))?;
    let secret = match (a.password_file, a.password_env) {
        (Some(f), _) => Some(Secret::File(f)),
        (None, Some(v)) => Some(Secret::Env(v)),
        (None, None) => None,
    };
    let target = crate::checked::pg_target(&url, secret.as_ref(), a.ca_file.as_deref())
        .map_err(|(_, m)| CliError::usage(m))?;
    let (_, from) = super::load(config_path)?;
    let mut to = Journal::open_target(&target)?;
    let counts = from.copy_into(&mut to)?;
    match output {
        Output::Json => print_json(&json!({
            "to": url.url,
            "copied": counts.iter().map(|(t, n)| (t.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        })),
        Output::Text => {
            println!("copied into {}:", url.url);
            for (t, n) in &counts {
                println!("  {t:<20} {n}");
            }
        }
    }
    Ok(())
}

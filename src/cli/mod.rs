//! Admin commands. Each talks to the journal directly; the daemon notices
//! their writes. Nothing here needs the daemon to be running.

pub mod api_token;
pub mod collect;
pub mod config;
pub mod connect;
pub mod dev;
pub mod drain;
pub mod events;
pub mod journal;
pub mod node;
pub mod recording;
pub mod replay;
pub mod session;
pub mod terminal;
pub mod watch;

use std::fmt;
use std::path::Path;

use crate::config::Config;
use crate::journal::{Journal, JournalError};

/// How admin commands print.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// One stable JSON value.
    Json,
}

/// Exit status 1: the command failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status 2: usage error or invalid input (including a bad config).
pub const EXIT_USAGE: u8 = 2;
/// Exit status 4: no such session.
pub const EXIT_NOT_FOUND: u8 = 4;

/// An error to print once at the edge, with its exit status.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn failure(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_FAILURE,
            message: format!("tollgate: {message}"),
        }
    }
    pub fn usage(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: format!("tollgate: {message}"),
        }
    }
    pub fn not_found(id: &str) -> Self {
        CliError {
            code: EXIT_NOT_FOUND,
            message: format!("tollgate: no such session: {id}"),
        }
    }
}

impl From<JournalError> for CliError {
    fn from(e: JournalError) -> Self {
        CliError::failure(e)
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        // Already `FILE:LINE:COL: message`, one per line: printed as is.
        CliError {
            code: EXIT_USAGE,
            message: e.to_string(),
        }
    }
}

impl From<crate::daemon::DaemonError> for CliError {
    fn from(e: crate::daemon::DaemonError) -> Self {
        use crate::daemon::DaemonError as E;
        match e {
            E::Config(e) => e.into(),
            E::Journal(e) => e.into(),
            E::Failed(m) => CliError::failure(m),
        }
    }
}

pub type CliResult = Result<(), CliError>;

/// Loads the config (exit 2 on problems) and opens its journal (exit 1).
pub fn load(config_path: &Path) -> Result<(Config, Journal), CliError> {
    let checked = crate::checked::load(config_path)?;
    let journal = Journal::open_target(&checked.journal)?;
    Ok((checked.config, journal))
}

/// Prints one JSON value on its own line.
pub fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("tollgate: cannot encode output: {e}"),
    }
}

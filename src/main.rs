//! tollgate: an SSH bastion that grants one-time, token-bound sessions.
//!
//! This file parses the command line and dispatches; each command group lives
//! in `cli/`. Errors are printed once, here, and mapped to the documented exit
//! codes: 0 ok, 1 failure, 2 usage or invalid input, 4 no such session.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::cli::{self, Output};
use tollgate::{config, daemon};

/// mimalloc, not glibc's malloc: a session's many small, short-lived
/// allocations (russh's packets, tokio's tasks, the journal's rows) cost
/// the daemon less CPU and fewer page faults (bench/README.md,
/// "Allocator"). Nothing allocates between a session's clone and its
/// `execve` (exec/child.rs), so the allocator's state never meets a child.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An SSH bastion for one-time, token-bound sessions.
#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version = tollgate::version::current(),
    about,
    long_about = None,
    after_help = "Exit status: 0 ok, 1 failure, 2 usage or invalid input (a bad config included), 4 no such session or collect session; `connect` exits with ssh's own status.\nSee tollgate(8) and tollgate.toml(5)."
)]
struct Args {
    /// Configuration file.
    #[arg(long, global = true, value_name = "PATH", env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Output format of admin commands; json prints one stable JSON value.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: accept SSH connections and run redeemed sessions.
    /// SIGHUP reloads the config; SIGUSR2 hands over to the binary on disk
    /// without ending a live session; SIGTERM stops.
    Serve,
    /// Start a throwaway server with embedded defaults, issue one token and print the ssh line.
    Dev(cli::dev::DevArgs),
    /// Issue, list, show and cancel sessions.
    #[command(subcommand)]
    Session(cli::session::SessionCmd),
    /// Show the journal's events.
    Events(cli::events::EventsArgs),
    /// Public-key collection sessions: create, list, show, update, delete, the keys collected and webhook deliveries.
    #[command(subcommand)]
    Collect(cli::collect::CollectCmd),
    /// Show what the syslog drains delivered, hold and dropped.
    #[command(subcommand)]
    Drain(cli::drain::DrainCmd),
    /// Move the journal: copy it into an empty PostgreSQL database several bastions share.
    #[command(subcommand)]
    Journal(cli::journal::JournalCmd),
    /// The daemons sharing the journal: each one's host, heartbeat and state.
    #[command(subcommand)]
    Node(cli::node::NodeCmd),
    /// Session recordings: export one (asciicast v2 or the text its screen showed), search them.
    #[command(subcommand)]
    Recording(cli::recording::RecordingCmd),
    /// Play a session's recording in this terminal (space pauses, . steps, q stops).
    Replay(cli::replay::ReplayArgs),
    /// Tokens for the HTTP API: create (shown once), list, revoke.
    #[command(subcommand, name = "api-token")]
    ApiToken(cli::api_token::ApiTokenCmd),
    /// Work with the configuration file.
    #[command(subcommand)]
    Config(cli::config::ConfigCmd),
    /// Client side: run the local ssh to the bastion with the token from a file or variable, never in argv.
    Connect(cli::connect::ConnectArgs),
}

fn main() -> ExitCode {
    // Run by ssh as `tollgate connect`'s askpass program: answer and go.
    if let Some(code) = cli::connect::askpass_if_asked() {
        return code;
    }
    let args = Args::parse();
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let result = match args.command {
        Command::Serve => daemon::serve_from_file(&config_path).map_err(cli::CliError::from),
        Command::Dev(a) => cli::dev::run(a, args.output),
        Command::Session(c) => cli::session::run(c, &config_path, args.output),
        Command::Events(a) => cli::events::run(a, &config_path, args.output),
        Command::Collect(c) => cli::collect::run(c, &config_path, args.output),
        Command::Drain(c) => cli::drain::run(c, &config_path, args.output),
        Command::Node(c) => cli::node::run(c, &config_path, args.output),
        Command::Journal(c) => cli::journal::run(c, &config_path, args.output),
        Command::Recording(c) => cli::recording::run(c, &config_path, args.output),
        Command::Replay(a) => cli::replay::run(a, &config_path),
        Command::ApiToken(c) => cli::api_token::run(c, &config_path, args.output),
        Command::Config(c) => cli::config::run(c, &config_path, args.output),
        Command::Connect(a) => cli::connect::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Under systemd each line is its own journal entry: an error.
            let prefix = if tollgate::logging::stderr_is_journal() {
                "<3>"
            } else {
                ""
            };
            for line in e.message.lines() {
                eprintln!("{prefix}{line}");
            }
            ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// tollgate(8) names every subcommand in its SYNOPSIS (`.B tollgate
    /// PATH`) and every long option somewhere (`\-\-name`), so the page
    /// stays true as the command line grows.
    #[test]
    fn every_subcommand_and_option_is_in_the_manual_page() {
        let page = include_str!("../man/tollgate.8");
        let mut missing = Vec::new();
        fn walk(cmd: &clap::Command, path: &str, page: &str, missing: &mut Vec<String>) {
            if !path.is_empty() && !cmd.has_subcommands() {
                let synopsis = format!(".B tollgate {path}");
                // `\-` is how a page writes a hyphen in a name.
                if !page
                    .lines()
                    .map(|l| l.replace("\\-", "-"))
                    .any(|l| l == synopsis || l.starts_with(&format!("{synopsis} ")))
                {
                    missing.push(synopsis);
                }
            }
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if ["help", "version"].contains(&long) {
                    continue;
                }
                let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
                if !page.contains(&escaped) {
                    missing.push(format!("{path}: --{long}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let p = if path.is_empty() {
                    sub.get_name().to_string()
                } else {
                    format!("{path} {}", sub.get_name())
                };
                walk(sub, &p, page, &mut *missing);
            }
        }
        walk(&Args::command(), "", page, &mut missing);
        assert!(missing.is_empty(), "not in man/tollgate.8: {missing:#?}");
    }
}

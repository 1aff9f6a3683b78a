//! `tollgate events [--session ID] [--follow]`.

use std::path::Path;
use std::time::Duration;

use super::Output;
use super::{load, print_json, CliError, CliResult};
use crate::journal::Event;

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Only this session's events.
    #[arg(long)]
    pub session: Option<String>,
    /// Keep printing new events as they arrive (with --output json: one JSON object per line).
    #[arg(long, short)]
    pub follow: bool,
}

pub fn run(a: EventsArgs, config_path: &Path, output: Output) -> CliResult {
    let (_config, journal) = load(config_path)?;
    if let Some(id) = &a.session {
        if journal.get(id)?.is_none() {
            return Err(CliError::not_found(id));
        }
    }
    let events = journal.events(a.session.as_deref(), 0, None)?;
    if !a.follow {
        match output {
            Output::Json => print_json(&events),
            Output::Text => events.iter().for_each(print_text),
        }
        return Ok(());
    }
    let mut last = events.last().map_or(0, |e| e.seq);
    let print = |e: &Event| match output {
        Output::Json => println!("{}", serde_json::to_string(e).unwrap_or_default()),
        Output::Text => print_text(e),
    };
    events.iter().for_each(print);
    let mut version = journal.data_version()?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let v = journal.data_version()?;
        if v == version {
            continue;
        }
        version = v;
        for e in journal.events(a.session.as_deref(), last, None)? {
            last = e.seq;
            print(&e);
        }
    }
}

fn print_text(e: &Event) {
    println!(
        "{:>6} {} {:<20} {:<24} {}",
        e.seq,
        e.at,
        e.session_id.as_deref().unwrap_or("-"),
        e.kind,
        e.detail
    );
}

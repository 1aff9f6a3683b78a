//! `tollgate drain status`: each configured drain as the daemon last
//! recorded it in the journal (it does so every second while running).

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{load, print_json, CliResult, Output};
use crate::journal::DrainRow;

#[derive(clap::Subcommand, Debug)]
pub enum DrainCmd {
    /// Per drain: connected or not, messages delivered, queued and dropped, the last error.
    Status,
}

/// A record older than this means the daemon is not updating it.
const FRESH: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct Status {
    name: String,
    url: String,
    /// In the current config file.
    configured: bool,
    /// Recorded by a running daemon within the last few seconds.
    current: bool,
    #[serde(flatten)]
    recorded: Option<DrainRow>,
}

pub fn run(cmd: DrainCmd, config_path: &Path, output: Output) -> CliResult {
    let DrainCmd::Status = cmd;
    let (config, journal) = load(config_path)?;
    let mut rows = journal.drains()?;
    let mut out: Vec<Status> = Vec::new();
    for d in &config.drains {
        // One record, or on a shared journal one per node that runs it.
        let (mine, rest): (Vec<DrainRow>, Vec<DrainRow>) =
            rows.into_iter().partition(|r| r.name == d.spec.name);
        rows = rest;
        let recorded: Vec<Option<DrainRow>> = if mine.is_empty() {
            vec![None]
        } else {
            mine.into_iter().map(Some).collect()
        };
        for recorded in recorded {
            out.push(Status {
                name: d.spec.name.clone(),
                url: d.url.to_string(),
                configured: true,
                current: recorded.as_ref().is_some_and(fresh),
                recorded,
            });
        }
    }
    // Drains an earlier config had: their last record, for the record.
    for r in rows {
        out.push(Status {
            name: r.name.clone(),
            url: r.url.clone(),
            configured: false,
            current: fresh(&r),
            recorded: Some(r),
        });
    }
    match output {
        Output::Json => print_json(&out),
        Output::Text => {
            if out.is_empty() {
                println!("no drains configured");
            }
            for s in &out {
                print_text(s);
            }
        }
    }
    Ok(())
}

fn fresh(r: &DrainRow) -> bool {
    humantime::parse_rfc3339(&r.updated_at)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age <= FRESH)
}

fn print_text(s: &Status) {
    let note = if s.configured {
        ""
    } else {
        " (no longer configured)"
    };
    let node = match s.recorded.as_ref().and_then(|r| r.node.as_deref()) {
        Some(n) => format!(" (node {n})"),
        None => String::new(),
    };
    println!("{} {}{note}{node}", s.name, s.url);
    let Some(r) = &s.recorded else {
        println!("  never started by the daemon");
        return;
    };
    let link = match (s.current, r.connected) {
        (true, true) => "connected".to_string(),
        (true, false) => "not connected".to_string(),
        (false, _) => format!("daemon not running; last recorded {}", r.updated_at),
    };
    println!("  {link}");
    println!(
        "  delivered {}  queued {} ({} bytes)  dropped {} ({} bytes)  failures {}",
        r.delivered, r.queued, r.queued_bytes, r.dropped, r.dropped_bytes, r.failures
    );
    if let Some(e) = &r.last_error {
        println!("  last error: {e}");
    }
}

//! `tollgate drain status`: each configured drain as the daemon last
//! recorded it in the journal (it does so every second while running).

use std::path::Path;

use super::{load, print_json, CliResult, Output};
use crate::journal::DrainStatus;

#[derive(clap::Subcommand, Debug)]
pub enum DrainCmd {
    /// Per drain: connected or not, messages delivered, queued and dropped, the last error.
    Status,
}

pub fn run(cmd: DrainCmd, config_path: &Path, output: Output) -> CliResult {
    let DrainCmd::Status = cmd;
    let (config, journal) = load(config_path)?;
    let configured: Vec<(String, String)> = config
        .drains
        .iter()
        .map(|d| (d.spec.name.clone(), d.url.to_string()))
        .collect();
    let out = crate::journal::drain_status(&configured, journal.drains()?);
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

fn print_text(s: &DrainStatus) {
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

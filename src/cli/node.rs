//! `tollgate node list`: the daemons sharing this journal, as each last
//! recorded itself (with a PostgreSQL journal, every bastion; with SQLite,
//! the one).

use std::path::Path;

use super::{load, print_json, CliResult, Output};

#[derive(clap::Subcommand, Debug)]
pub enum NodeCmd {
    /// Each node: host, listen addresses, version, last heartbeat, state (running, stopped, lost), live sessions.
    List,
}

pub fn run(cmd: NodeCmd, config_path: &Path, output: Output) -> CliResult {
    let NodeCmd::List = cmd;
    let (_, journal) = load(config_path)?;
    let nodes = journal.nodes()?;
    match output {
        Output::Json => print_json(&nodes),
        Output::Text => {
            if nodes.is_empty() {
                println!("no node has used this journal yet");
            }
            for n in &nodes {
                println!(
                    "{}  {}  {}  pid {}  version {}",
                    n.id,
                    n.state,
                    n.listen.join(","),
                    n.pid,
                    n.version
                );
                println!(
                    "  started {}  heartbeat {}  live sessions {}",
                    n.started_at, n.heartbeat_at, n.live_sessions
                );
            }
        }
    }
    Ok(())
}

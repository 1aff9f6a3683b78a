//! `tollgate dev`: a throwaway server with embedded defaults.
use std::path::PathBuf;

use super::{CliError, CliResult};

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub listen: std::net::SocketAddr,
    /// Keep state (journal, host key) in this directory instead of a fresh temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(_a: DevArgs) -> CliResult {
    Err(CliError::failure("not yet"))
}

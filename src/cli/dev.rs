//! `tollgate dev`: a throwaway server with embedded defaults.
//!
//! Writes a real config into its state directory (so the admin commands work
//! against it with `--config DIR/tollgate.toml`), issues one token, and prints
//! an ssh line that verifies the host key through a known_hosts file written
//! beside it.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::session::{issue, print_issued, IssueArgs};
use super::Output;
use super::{CliError, CliResult};
use crate::config::Config;
use crate::journal::Journal;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub listen: std::net::SocketAddr,
    /// Keep state (config, journal, host key) in this directory instead of a fresh temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(a: DevArgs, output: Output) -> CliResult {
    let dir = match a.dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| CliError::failure(format!("{}: {e}", d.display())))?;
            std::fs::canonicalize(&d)
                .map_err(|e| CliError::failure(format!("{}: {e}", d.display())))?
        }
        None => make_temp_dir()?,
    };
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .ok_or_else(|| {
            CliError::failure("cannot find the invoking user in the password database")
        })?;
    let shell = me.shell.to_string_lossy().into_owned();
    let config_path = dir.join("tollgate.toml");
    let text = format!(
        r#"# Written by `tollgate dev`: a throwaway server for trying tollgate out.
[server]
listen = ["{listen}"]
host_keys = ["{dir}/ssh_host_ed25519_key"]
journal = "{dir}/journal.db"
login_grace_time = "60s"

[sessions]
token_ttl = "1h"
max_duration = "8h"

[profiles.dev]
user = "{user}"
allow_root = {root}
command = "{shell} -l"
allow_exec = true
"#,
        listen = a.listen,
        dir = dir.display(),
        user = me.name,
        root = me.uid.is_root(),
    );
    std::fs::write(&config_path, text)
        .map_err(|e| CliError::failure(format!("{}: {e}", config_path.display())))?;
    let config = Config::load(&config_path)?;
    // The host key exists before the ssh line is printed, so known_hosts can name it.
    let keys = crate::ssh::load_host_keys(&config.server.host_keys).map_err(CliError::failure)?;
    let known_hosts = dir.join("known_hosts");
    let host_field = if a.listen.port() == 22 {
        a.listen.ip().to_string()
    } else {
        format!("[{}]:{}", a.listen.ip(), a.listen.port())
    };
    let mut kh = String::new();
    for k in &keys {
        let line = k.public_key().to_openssh().map_err(CliError::failure)?;
        kh.push_str(&format!("{host_field} {line}\n"));
    }
    std::fs::write(&known_hosts, kh)
        .map_err(|e| CliError::failure(format!("{}: {e}", known_hosts.display())))?;

    let mut journal = Journal::open(&config.server.journal)?;
    let mut issued = issue(
        &config,
        &mut journal,
        &IssueArgs {
            profile: Some("dev".into()),
            login_user: me.name.clone(),
            reason: Some("tollgate dev".into()),
            ..IssueArgs::default()
        },
    )?;
    drop(journal);
    issued.ssh = issued.ssh.replacen(
        "ssh ",
        &format!("ssh -o UserKnownHostsFile={} ", known_hosts.display()),
        1,
    );
    crate::daemon::init_logging(&config.server.log_level);
    let config_shown = config_path.clone();
    crate::daemon::serve(config, crate::daemon::OnHangup::Stop, move |_| {
        print_issued(&issued, output);
        if output == Output::Text {
            println!();
            println!("state    {}", dir_display(&config_shown));
            println!(
                "more     tollgate --config {} session issue --profile dev --login-user {}",
                config_shown.display(),
                me.name
            );
            println!("stop     Ctrl-C");
        }
    })
}

fn dir_display(config: &Path) -> String {
    config
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

fn make_temp_dir() -> Result<PathBuf, CliError> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let d = base.join(crate::token::random_id("tollgate-dev-").map_err(CliError::failure)?);
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(CliError::failure(format!("{}: {e}", d.display()))),
        }
    }
    Err(CliError::failure("cannot create a temporary directory"))
}

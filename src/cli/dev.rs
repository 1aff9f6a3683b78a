//! `tollgate dev`: a throwaway server with embedded defaults.
//!
//! Writes a real config into its state directory (so the admin commands work
//! against it with `--config DIR/tollgate.toml`), issues one token, and prints
//! an ssh line that verifies the host key through a known_hosts file written
//! beside it (the config's `public_known_hosts`, so every ssh line the admin
//! commands print for this server carries it too). A temporary state
//! directory goes when `dev` ends, however it ends; one given with `--dir`
//! stays.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::session::{issue, print_issued, IssueArgs};
use super::Output;
use super::{CliError, CliResult};
use crate::config::shell_word;
use crate::journal::Journal;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Address to listen on (when 2222 is taken: --listen 127.0.0.1:2223).
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub listen: std::net::SocketAddr,
    /// Address of the HTTP API (default: a free loopback port, printed).
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:0")]
    pub api_listen: std::net::SocketAddr,
    /// Address of Prometheus's /metrics (default: a free loopback port, printed).
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:0")]
    pub metrics_listen: std::net::SocketAddr,
    /// Keep state (config, journal, host key) in this directory instead of a fresh temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(a: DevArgs, output: Output) -> CliResult {
    check_free(a.listen)?;
    let (dir, cleanup) = match a.dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| CliError::failure(format!("{}: {e}", d.display())))?;
            let d = std::fs::canonicalize(&d)
                .map_err(|e| CliError::failure(format!("{}: {e}", d.display())))?;
            (d, None)
        }
        None => {
            let d = make_temp_dir()?;
            (d.clone(), Some(RemoveOnDrop(d)))
        }
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
public_known_hosts = "{dir}/known_hosts"

[api]
listen = ["{api}"]

[metrics]
listen = ["{metrics}"]

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
        api = a.api_listen,
        metrics = a.metrics_listen,
        dir = dir.display(),
        user = me.name,
        root = me.uid.is_root(),
    );
    std::fs::write(&config_path, text)
        .map_err(|e| CliError::failure(format!("{}: {e}", config_path.display())))?;
    let checked = crate::checked::load(&config_path)?;
    let config = &checked.config;
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

    let mut journal = Journal::open_target(&checked.journal)?;
    let issued = issue(
        config,
        &mut journal,
        &IssueArgs {
            profile: Some("dev".into()),
            login_user: me.name.clone(),
            reason: Some("tollgate dev".into()),
            ..IssueArgs::default()
        },
    )?;
    // An API token with every scope, kept as a curl header file (mode
    // 0600) so that pasting the curl line puts no secret in argv.
    let header = dir.join("api-header");
    let api_token = api_token_file(&mut journal, &header)?;
    drop(journal);
    crate::daemon::init_logging(&config.server.log_level);
    let more = more_line(&config_path, &me.name);
    let state = match &cleanup {
        Some(_) => format!(
            "{}  (removed when dev stops; --dir DIR keeps state)",
            dir.display()
        ),
        None => dir.display().to_string(),
    };
    crate::daemon::serve(checked, crate::daemon::OnHangup::Stop, move |bound| {
        print_issued(&issued, output);
        if output == Output::Text {
            if let Some(addr) = bound.api.first() {
                println!();
                println!(
                    "api      http://{addr}/api/v1/  (token {api_token}, every scope; shown once)"
                );
                println!(
                    "curl     curl -H @{} http://{addr}/api/v1/sessions",
                    shell_word(&header.display().to_string())
                );
            }
            if let Some(addr) = bound.metrics.first() {
                println!("metrics  curl http://{addr}/metrics");
            }
            println!();
            println!("state    {state}");
            println!("more     {more}");
            println!("stop     Ctrl-C");
        }
    })
    .map_err(CliError::from)
}

/// Creates an API token with every scope and writes `Authorization:
/// Bearer …` to `path` (mode 0600) for `curl -H @path`.
fn api_token_file(journal: &mut Journal, path: &Path) -> Result<String, CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let scopes: Vec<String> = crate::api::SCOPES.iter().map(|s| s.to_string()).collect();
    let (_, token) = super::api_token::mint(journal, "dev", &scopes, None)?;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| writeln!(f, "Authorization: Bearer {token}"))
        .map_err(|e| CliError::failure(format!("{}: {e}", path.display())))?;
    Ok(token)
}

/// The command that issues another token for this server, as it can be
/// pasted: this very binary by its full path (after `cargo run` there is no
/// `tollgate` on the PATH).
fn more_line(config: &Path, user: &str) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "tollgate".into());
    format!(
        "{} --config {} session issue --profile dev --login-user {}",
        shell_word(&exe),
        shell_word(&config.display().to_string()),
        shell_word(user)
    )
}

/// Fails early, before anything is written, when the address is taken,
/// and says how to choose another.
fn check_free(addr: std::net::SocketAddr) -> CliResult {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let mut other = addr;
            let free = (1..100u16)
                .filter_map(|d| addr.port().checked_add(d))
                .find(|&p| {
                    other.set_port(p);
                    std::net::TcpListener::bind(other).is_ok()
                });
            let hint = match free {
                Some(p) => {
                    other.set_port(p);
                    format!("; choose another with --listen, e.g. tollgate dev --listen {other}")
                }
                None => "; choose another with --listen ADDRESS:PORT".into(),
            };
            Err(CliError::failure(format!(
                "cannot listen on {addr}: address already in use (another tollgate dev?){hint}"
            )))
        }
        Err(e) => Err(CliError::failure(format!("cannot listen on {addr}: {e}"))),
    }
}

/// A temporary state directory, removed with everything in it when `dev`
/// returns, whether it stopped on a signal or failed.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

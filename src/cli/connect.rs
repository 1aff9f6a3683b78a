//! `tollgate connect`: the client side, as access proxies ship one.
//!
//! Execs the local `ssh` to the bastion and feeds it the token through
//! `SSH_ASKPASS`, which names this same binary: run by ssh with one argument
//! (the prompt) and the `TOLLGATE_ASKPASS_*` variables set, it answers the
//! bastion's token prompt from the file or environment variable given, and
//! nothing else. The token is never in any process's argv.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{CliError, CliResult};

/// Set for ssh's askpass child: the login user whose token prompt it answers.
const ASKPASS_LOGIN: &str = "TOLLGATE_ASKPASS_LOGIN";
/// Set for ssh's askpass child: the file holding the token.
const ASKPASS_FILE: &str = "TOLLGATE_ASKPASS_TOKEN_FILE";
/// Set for ssh's askpass child: the variable holding the token.
const ASKPASS_ENV: &str = "TOLLGATE_ASKPASS_TOKEN_ENV";

#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// The bastion: HOST, HOST:PORT or [ADDRESS]:PORT. Without a port, ssh's own default applies (22, or ssh_config).
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        env = "TOLLGATE_SERVER",
        default_value = "localhost"
    )]
    pub server: String,
    /// The login user name the token was issued for.
    #[arg(long, value_name = "USER")]
    pub login_user: String,
    /// Read the token from this file (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,
    /// Read the token from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Further ssh arguments, after `--`: options (`-N -L 15432:db:5432`, `-W HOST:PORT`) and a remote command.
    #[arg(last = true, value_name = "SSH_ARGS")]
    pub ssh_args: Vec<OsString>,
}

/// Where the token comes from, as the askpass child is told.
enum Source {
    File(PathBuf),
    Env(String),
}

impl Source {
    fn read(&self) -> Result<String, String> {
        let raw = match self {
            Source::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read token file {}: {e}", p.display()))?,
            Source::Env(v) => std::env::var(v)
                .map_err(|_| format!("environment variable {v} is not set (or not UTF-8)"))?,
        };
        let token = raw.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            return Err(match self {
                Source::File(p) => format!("token file {} is empty", p.display()),
                Source::Env(v) => format!("environment variable {v} is empty"),
            });
        }
        Ok(token)
    }
}

/// Runs `tollgate connect`; returns only when ssh could not be started.
pub fn run(a: ConnectArgs) -> CliResult {
    let (host, port) = split_server(&a.server)?;
    let ssh = find_on_path(OsStr::new("ssh"))
        .ok_or_else(|| CliError::usage("local ssh client not found (no `ssh` on PATH)"))?;
    let source = match (a.token_file, a.token_env) {
        (Some(f), _) => {
            Some(Source::File(std::path::absolute(&f).map_err(|e| {
                CliError::usage(format!("token file {}: {e}", f.display()))
            })?))
        }
        (None, Some(v)) => Some(Source::Env(v)),
        (None, None) => None,
    };
    let mut cmd = std::process::Command::new(&ssh);
    cmd.arg0("ssh").arg("-l").arg(&a.login_user);
    if let Some(p) = port {
        cmd.arg("-p").arg(p);
    }
    // Variables this process was given for an outer connect mean nothing here.
    cmd.env_remove(ASKPASS_LOGIN)
        .env_remove(ASKPASS_FILE)
        .env_remove(ASKPASS_ENV);
    if let Some(source) = &source {
        // Checked now, so a missing token is a usage error, not a failed login.
        source.read().map_err(CliError::usage)?;
        let me = std::env::current_exe()
            .map_err(|e| CliError::failure(format!("cannot find this program's path: {e}")))?;
        // ssh keeps the first value of an option: these win over the
        // caller's. One prompt, by the method tollgate asks for the token.
        cmd.args(["-o", "PreferredAuthentications=keyboard-interactive"])
            .args(["-o", "NumberOfPasswordPrompts=1"])
            .env("SSH_ASKPASS", me)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env(ASKPASS_LOGIN, &a.login_user);
        match source {
            Source::File(p) => cmd.env(ASKPASS_FILE, p),
            Source::Env(v) => cmd.env(ASKPASS_ENV, v),
        };
    }
    // OpenSSH reads options after the destination too; what follows them is
    // the remote command.
    cmd.arg(host).args(&a.ssh_args);
    let e = cmd.exec();
    Err(CliError::failure(format!(
        "cannot run {}: {e}",
        ssh.display()
    )))
}

/// `HOST`, `HOST:PORT`, `[ADDR]:PORT` or a bare IPv6 address. The host is
/// handed to ssh as an argument: it must read as a host name or address
/// and nothing else (never as an option, however it is bracketed).
fn split_server(s: &str) -> Result<(String, Option<String>), CliError> {
    let (host, port) = split_server_parts(s)?;
    let host_ok = !host.starts_with('-')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b));
    if !host_ok {
        return Err(CliError::usage(format!(
            "--server {s:?}: not a host name or address"
        )));
    }
    Ok((host, port))
}

fn split_server_parts(s: &str) -> Result<(String, Option<String>), CliError> {
    let bad = || {
        CliError::usage(format!(
            "--server {s:?}: expected HOST, HOST:PORT or [ADDRESS]:PORT"
        ))
    };
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|n| n > 0);
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']').ok_or_else(bad)?;
        return match tail.strip_prefix(':') {
            None if tail.is_empty() && !addr.is_empty() => Ok((addr.into(), None)),
            Some(p) if !addr.is_empty() && port_ok(p) => Ok((addr.into(), Some(p.into()))),
            _ => Err(bad()),
        };
    }
    match s.split_once(':') {
        _ if s.is_empty() || s.starts_with('-') => Err(bad()),
        None => Ok((s.into(), None)),
        Some((h, p)) if !p.contains(':') => {
            if h.is_empty() || !port_ok(p) {
                Err(bad())
            } else {
                Ok((h.into(), Some(p.into())))
            }
        }
        Some(_) => Ok((s.into(), None)), // a bare IPv6 address
    }
}

/// The first executable file named `name` in PATH's directories.
fn find_on_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// When ssh runs this binary as its askpass program (one argument, the
/// prompt, and `TOLLGATE_ASKPASS_LOGIN` set), answers and returns the exit
/// status; otherwise `None` and the command line is parsed as usual.
pub fn askpass_if_asked() -> Option<ExitCode> {
    let login = std::env::var(ASKPASS_LOGIN).ok()?;
    let mut args = std::env::args_os().skip(1);
    let prompt = args.next()?;
    if args.next().is_some() {
        return None;
    }
    let prompt = prompt.to_string_lossy();
    if is_token_prompt(&prompt, &login) {
        let source = match (std::env::var_os(ASKPASS_FILE), std::env::var(ASKPASS_ENV)) {
            (Some(f), _) => Source::File(f.into()),
            (None, Ok(v)) => Source::Env(v),
            (None, Err(_)) => return Some(ExitCode::FAILURE),
        };
        return Some(match source.read() {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate: {e}");
                ExitCode::FAILURE
            }
        });
    }
    // Anything else ssh asks (a new host key, a key's passphrase, another
    // host's password) is the person's to answer, at their terminal.
    Some(match ask_terminal(&prompt) {
        Some(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    })
}

/// The bastion's keyboard-interactive token prompt for `login`, as OpenSSH
/// shows it: `(LOGIN@HOST) Token: `. HOST is whatever ssh resolved
/// (HostName, HostKeyAlias), so only the login name and the prompt are
/// matched; a prompt for another account is never given the token.
fn is_token_prompt(prompt: &str, login: &str) -> bool {
    let last = prompt.rsplit('\n').next().unwrap_or(prompt);
    last.strip_prefix('(')
        .and_then(|r| r.strip_prefix(login))
        .and_then(|r| r.strip_prefix('@'))
        .and_then(|r| r.strip_suffix(") Token: "))
        .is_some_and(|host| !host.is_empty() && !host.contains([' ', '(', ')']))
}

/// Asks `prompt` at the controlling terminal; echo stays on only for ssh's
/// yes/no questions. `None` without a terminal or on end of input.
fn ask_terminal(prompt: &str) -> Option<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let echo = prompt.contains("(yes/no");
    let saved = tcgetattr(&tty).ok();
    if let (false, Some(t)) = (echo, &saved) {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet);
    }
    let mut w = &tty;
    let _ = w.write_all(prompt.as_bytes());
    let _ = w.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if let (false, Some(t)) = (echo, &saved) {
        let _ = tcsetattr(&tty, SetArg::TCSAFLUSH, t);
        let _ = w.write_all(b"\n");
    }
    match read {
        Ok(n) if n > 0 => Some(line.trim_end_matches(['\r', '\n']).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_split_into_host_and_port() {
        let ok = |s: &str| split_server(s).map_err(|e| e.message).unwrap();
        assert_eq!(ok("bastion"), ("bastion".into(), None));
        assert_eq!(ok("bastion:2222"), ("bastion".into(), Some("2222".into())));
        assert_eq!(ok("[::1]:2222"), ("::1".into(), Some("2222".into())));
        assert_eq!(ok("[::1]"), ("::1".into(), None));
        assert_eq!(ok("fe80::1"), ("fe80::1".into(), None));
        for bad in [
            "",
            "bastion:",
            "bastion:0",
            "bastion:99999",
            ":22",
            "[::1]x",
            "[]:22",
            "-oProxyCommand=x",
            "[-oProxyCommand=x]",
            "[-oProxyCommand=x]:22",
            "host name",
            "a;b",
        ] {
            let e = split_server(bad).unwrap_err();
            assert_eq!(e.code, super::super::EXIT_USAGE, "{bad}");
            assert!(e.message.contains("--server"), "{}", e.message);
        }
    }

    #[test]
    fn only_the_token_prompt_for_the_login_gets_the_token() {
        assert!(is_token_prompt("(ops@127.0.0.1) Token: ", "ops"));
        assert!(is_token_prompt(
            "banner\n(ops@bastion.example) Token: ",
            "ops"
        ));
        assert!(!is_token_prompt("(root@127.0.0.1) Token: ", "ops"));
        assert!(!is_token_prompt("(ops@db) Password: ", "ops"));
        assert!(!is_token_prompt("ops@db's password: ", "ops"));
        assert!(!is_token_prompt("Token: ", "ops"));
        assert!(!is_token_prompt(
            "Enter passphrase for key '/root/.ssh/id_ed25519': ",
            "ops"
        ));
        assert!(!is_token_prompt("(ops@x) (other@y) Token: ", "ops"));
    }
}

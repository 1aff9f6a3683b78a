//! Spawning a session's process and taking it down again.
//!
//! This is the one module allowed `unsafe`: the code that runs between fork
//! and exec (new session, controlling terminal, privilege drop, descriptor
//! closing) and the PTY ioctls. Everything the child needs is prepared before
//! the fork, so the pre-exec hook only makes async-signal-safe system calls.
//!
//! It refuses to run anything as root unless the caller says the profile
//! allows it, and never passes the daemon's environment or descriptors on.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

mod pty;
pub use pty::PtyMaster;

/// A local account a session runs as.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Account {
    /// Looks the account up in the password and group databases.
    pub fn lookup(name: &str) -> io::Result<Account> {
        let user = User::from_name(name)
            .map_err(io::Error::from)?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no such account \"{name}\""),
                )
            })?;
        let cname = CString::new(name).map_err(io::Error::other)?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(io::Error::from)?;
        Ok(Account {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
            shell: user.shell,
        })
    }
}

/// Terminal parameters from the client's `pty-req`.
#[derive(Debug, Clone)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub px_width: u32,
    pub px_height: u32,
}

/// What to run and how.
#[derive(Debug)]
pub struct Spec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Tried first; on failure `/` (what OpenSSH does for a missing home).
    pub cwd: PathBuf,
    /// A configured directory must exist: no fallback.
    pub cwd_required: bool,
    pub account: Account,
    pub allow_root: bool,
    pub pty: Option<PtyRequest>,
}

/// The parent's ends of the child's standard streams.
pub enum Stdio3 {
    Pty(PtyMaster),
    Pipes {
        stdin: tokio::process::ChildStdin,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    },
}

/// A running session process; its pid is also its process group and session id.
pub struct Spawned {
    pub child: tokio::process::Child,
    pub pid: i32,
    pub io: Stdio3,
}

/// Starts `spec` in a new session (setsid), with the PTY as controlling
/// terminal when one was requested, as the account's user and groups, with
/// exactly the given environment and no descriptors beyond 0-2.
pub fn spawn(spec: Spec) -> io::Result<Spawned> {
    if spec.account.uid.is_root() && !spec.allow_root {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "refusing to run a session as root (the profile does not set allow_root)",
        ));
    }
    let me = Uid::effective();
    if !me.is_root() && me != spec.account.uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "tollgate runs as uid {me} and cannot switch to \"{}\" (uid {}); run it as root or use a profile with this account",
                spec.account.name, spec.account.uid
            ),
        ));
    }
    let program = spec
        .argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&spec.argv[1..]);
    cmd.env_clear();
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.kill_on_drop(false);

    let pty_master = match &spec.pty {
        Some(req) => {
            let pair = nix::pty::openpty(None, None).map_err(io::Error::from)?;
            pty::set_size(
                pair.master.as_raw_fd(),
                req.cols,
                req.rows,
                req.px_width,
                req.px_height,
            )?;
            let slave: OwnedFd = pair.slave;
            cmd.stdin(Stdio::from(slave.try_clone()?));
            cmd.stdout(Stdio::from(slave.try_clone()?));
            cmd.stderr(Stdio::from(slave));
            Some(pair.master)
        }
        None => {
            cmd.stdin(Stdio::piped());
            cmd.stdout(Stdio::piped());
            cmd.stderr(Stdio::piped());
            None
        }
    };

    let drop_privileges = me.is_root();
    let uid = spec.account.uid;
    let gid = spec.account.gid;
    let groups: Vec<libc::gid_t> = spec.account.groups.iter().map(|g| g.as_raw()).collect();
    let cwd = CString::new(spec.cwd.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let cwd_required = spec.cwd_required;
    let with_tty = pty_master.is_some();

    // SAFETY: the closure runs in the forked child before exec. It only calls
    // async-signal-safe system calls on data prepared above, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if with_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if drop_privileges {
                if libc::setgroups(groups.len() as _, groups.as_ptr()) < 0
                    || libc::setgid(gid.as_raw()) < 0
                    || libc::setuid(uid.as_raw()) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                // Paranoia: regaining root must be impossible now.
                if uid.as_raw() != 0 && libc::setuid(0) == 0 {
                    return Err(io::Error::from_raw_os_error(libc::EPERM));
                }
            }
            if libc::chdir(cwd.as_ptr()) < 0 {
                if cwd_required {
                    return Err(io::Error::last_os_error());
                }
                libc::chdir(c"/".as_ptr());
            }
            // Every descriptor above 2 closes at exec (std's own error pipe
            // included, which is how exec failures still get reported).
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }

    let mut child = cmd.spawn()?;
    drop(cmd); // closes the parent's copies of the slave
    let pid = child.id().map(|p| p as i32).unwrap_or(-1);
    let io = match pty_master {
        Some(master) => Stdio3::Pty(PtyMaster::new(master)?),
        None => Stdio3::Pipes {
            stdin: child
                .stdin
                .take()
                .ok_or_else(|| io::Error::other("no stdin pipe"))?,
            stdout: child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("no stdout pipe"))?,
            stderr: child
                .stderr
                .take()
                .ok_or_else(|| io::Error::other("no stderr pipe"))?,
        },
    };
    Ok(Spawned { child, pid, io })
}

/// Sends `sig` to everything the session started: its process group, and
/// every process whose session id is the leader's (background jobs an
/// interactive shell moved to process groups of their own).
pub fn signal_tree(leader: i32, sig: Signal) {
    if leader <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(leader), sig);
    for pid in session_members(leader) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// True while any process of the session is still alive (zombies excluded).
pub fn tree_alive(leader: i32) -> bool {
    !session_members(leader).is_empty()
}

/// Pids in /proc whose session id is `sid`, zombies excluded.
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] = state, [1] = ppid, [2] = pgrp, [3] = session
        if fields.len() > 3 && fields[3].parse::<i32>().ok() == Some(sid) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

/// After a crash of an earlier daemon: kills what is left of a session,
/// but only processes that still carry its `TOLLGATE_SESSION_ID` in their
/// environment, so a reused pid is never mistaken for the session. Returns
/// how many processes were killed.
pub fn kill_orphans(session_id: &str, leader: i32) -> usize {
    let marker = format!("TOLLGATE_SESSION_ID={session_id}");
    let mut killed = 0;
    for pid in session_members(leader) {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == marker.as_bytes())
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// Sends a named SSH signal (`INT`, `TERM`, …) to the session's foreground.
pub fn deliver_signal(leader: i32, name: &str) -> bool {
    let sig = match name {
        "ABRT" => Signal::SIGABRT,
        "ALRM" => Signal::SIGALRM,
        "FPE" => Signal::SIGFPE,
        "HUP" => Signal::SIGHUP,
        "ILL" => Signal::SIGILL,
        "INT" => Signal::SIGINT,
        "KILL" => Signal::SIGKILL,
        "PIPE" => Signal::SIGPIPE,
        "QUIT" => Signal::SIGQUIT,
        "SEGV" => Signal::SIGSEGV,
        "TERM" => Signal::SIGTERM,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => return false,
    };
    killpg(Pid::from_raw(leader), sig).is_ok()
}

/// SSH name of a signal number (RFC 4254 §6.10), without the `SIG` prefix.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().trim_start_matches("SIG").to_string())
        .unwrap_or_else(|_| format!("{sig}"))
}

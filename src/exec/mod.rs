//! Spawning a session's process and taking it down again.
//!
//! This is the one module allowed `unsafe`: `posix_spawn` with per-thread
//! credentials (new session, controlling terminal, privilege drop, descriptor
//! closing), waiting through a pidfd, and the PTY ioctls.
//!
//! It refuses to run anything as root unless the caller says the profile
//! allows it, and never passes the daemon's environment or descriptors on.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{Gid, Pid, Uid, User};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

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
    /// Like [`Account::lookup`], but reuses an answer up to five seconds
    /// old: reading the password and group databases for every session
    /// showed in profiles, and an account change still applies within
    /// seconds.
    pub fn lookup_cached(name: &str) -> io::Result<Account> {
        use std::collections::HashMap;
        use std::sync::Mutex;
        use std::time::{Duration, Instant};
        static CACHE: Mutex<Option<HashMap<String, (Instant, Account)>>> = Mutex::new(None);
        const FRESH: Duration = Duration::from_secs(5);
        if let Some((at, acct)) = CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_default()
            .get(name)
        {
            if at.elapsed() < FRESH {
                return Ok(acct.clone());
            }
        }
        let acct = Account::lookup(name)?;
        CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_default()
            .insert(name.to_string(), (Instant::now(), acct.clone()));
        Ok(acct)
    }

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
        stdin: pipe::Sender,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
}

/// A running session process; its pid is also its process group and session id.
pub struct Spawned {
    pub pid: i32,
    pub exit: ExitWatcher,
    pub io: Stdio3,
}

/// Waits for the session's leader to exit, through a pidfd (the leader is
/// not a tokio child: it was started with posix_spawn, see [`spawn`]).
pub struct ExitWatcher {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
}

impl ExitWatcher {
    /// The leader's exit status, reaping it. Cancel-safe; once known, the
    /// status is returned again on later calls.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(st) = self.status {
                return Ok(st);
            }
            let mut guard = self.pidfd.readable().await?;
            let mut raw = 0;
            // SAFETY: waitpid on our own unreaped child, into a local.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
            if r == self.pid {
                self.status = Some(ExitStatus::from_raw(raw));
            } else if r < 0 {
                return Err(io::Error::last_os_error());
            } else {
                guard.clear_ready();
            }
        }
    }
}

/// Starts `spec` in a new session (setsid), with the PTY as controlling
/// terminal when one was requested, as the account's user and groups, with
/// exactly the given environment and no descriptors beyond 0-2.
///
/// The daemon is a large multi-threaded process, and `fork` would copy its
/// page tables and make every page copy-on-write: the biggest cost of a
/// session measured in `bench/run`. Instead a short-lived thread takes on the
/// account's credentials (Linux credentials are per thread when set with the
/// raw system calls) and calls `posix_spawn`, which uses `vfork`-style
/// cloning; the thread ends afterwards, so the daemon's credentials never
/// change.
pub async fn spawn(spec: Spec) -> io::Result<Spawned> {
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
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the program must be an absolute path",
            )
        })?;
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "NUL byte in command or environment",
            )
        })
    };
    let program = cstr(program)?;
    let argv = spec
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = CString::new(spec.cwd.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;

    // The child's ends of its standard streams, and ours.
    let (child_io, parent_io) = match &spec.pty {
        Some(req) => {
            let pair = nix::pty::openpty(None, None).map_err(io::Error::from)?;
            pty::set_size(
                pair.master.as_raw_fd(),
                req.cols,
                req.rows,
                req.px_width,
                req.px_height,
            )?;
            let path = nix::unistd::ttyname(&pair.slave).map_err(io::Error::from)?;
            if me.is_root() {
                // As OpenSSH does: the user owns their terminal, group tty may write.
                let tty = nix::unistd::Group::from_name("tty")
                    .ok()
                    .flatten()
                    .map(|g| g.gid);
                nix::unistd::fchown(
                    &pair.slave,
                    Some(spec.account.uid),
                    tty.or(Some(spec.account.gid)),
                )
                .map_err(io::Error::from)?;
                nix::sys::stat::fchmod(
                    &pair.slave,
                    nix::sys::stat::Mode::from_bits_truncate(0o620),
                )
                .map_err(io::Error::from)?;
            }
            let path = CString::new(path.into_os_string().into_encoded_bytes())
                .map_err(io::Error::other)?;
            (
                ChildIo::Tty {
                    path,
                    _slave: pair.slave,
                },
                ParentIo::Pty(pair.master),
            )
        }
        None => {
            let (in_r, in_w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
            let (out_r, out_w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
            let (err_r, err_w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
            (
                ChildIo::Pipes([in_r, out_w, err_w]),
                ParentIo::Pipes(in_w, out_r, err_r),
            )
        }
    };

    let creds = me.is_root().then(|| Creds {
        uid: spec.account.uid.as_raw(),
        gid: spec.account.gid.as_raw(),
        groups: spec.account.groups.iter().map(|g| g.as_raw()).collect(),
    });
    let cwd_required = spec.cwd_required;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tollgate-spawn".into())
        // It only switches credentials and calls posix_spawn.
        .stack_size(64 * 1024)
        .spawn(move || {
            let r = spawn_as(creds, &program, &argv, &envp, &cwd, cwd_required, &child_io);
            drop(child_io);
            let _ = tx.send(r);
        })?;
    let pid = rx
        .await
        .map_err(|_| io::Error::other("spawner thread died"))??;

    // SAFETY: pidfd_open returns a new descriptor that we own, or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the OwnedFd moves into the AsyncFd and stays open while registered.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))?;
    let io = match parent_io {
        ParentIo::Pty(master) => Stdio3::Pty(PtyMaster::new(master)?),
        ParentIo::Pipes(w, out, err) => Stdio3::Pipes {
            stdin: pipe::Sender::from_owned_fd(w)?,
            stdout: pipe::Receiver::from_owned_fd(out)?,
            stderr: pipe::Receiver::from_owned_fd(err)?,
        },
    };
    Ok(Spawned {
        pid,
        exit: ExitWatcher {
            pid,
            pidfd,
            status: None,
        },
        io,
    })
}

/// The account to become in the spawner thread (only when running as root).
struct Creds {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

enum ChildIo {
    /// The PTY slave's path (opened by the child after setsid, so it becomes
    /// the controlling terminal) and the slave, kept open until then.
    Tty { path: CString, _slave: OwnedFd },
    /// stdin's read end, stdout's and stderr's write ends.
    Pipes([OwnedFd; 3]),
}

enum ParentIo {
    Pty(OwnedFd),
    Pipes(OwnedFd, OwnedFd, OwnedFd),
}

/// Runs on a thread of its own, which it leaves with the account's
/// credentials: never call it on a thread that lives on.
fn spawn_as(
    creds: Option<Creds>,
    program: &CString,
    argv: &[CString],
    envp: &[CString],
    cwd: &CString,
    cwd_required: bool,
    io: &ChildIo,
) -> io::Result<i32> {
    let check = |r: libc::c_long| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if let Some(c) = &creds {
        // SAFETY: raw system calls on this thread's own credentials (glibc's
        // wrappers would change every thread of the process).
        unsafe {
            check(libc::syscall(
                libc::SYS_setgroups,
                c.groups.len(),
                c.groups.as_ptr(),
            ))?;
            check(libc::syscall(libc::SYS_setresgid, c.gid, c.gid, c.gid))?;
            check(libc::syscall(libc::SYS_setresuid, c.uid, c.uid, c.uid))?;
        }
    }
    // Checked as the account: a home it cannot enter falls back to `/`.
    // SAFETY: access() on a NUL-terminated path.
    let cwd: &CStr = if cwd_required || unsafe { libc::access(cwd.as_ptr(), libc::X_OK) } == 0 {
        cwd
    } else {
        c"/"
    };
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_p.push(std::ptr::null_mut());

    // SAFETY: the spawn attributes and file actions are initialised before
    // use and destroyed on every path; every pointer outlives the call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let e = |code: libc::c_int| {
            if code != 0 {
                Err(io::Error::from_raw_os_error(code))
            } else {
                Ok(())
            }
        };
        e(libc::posix_spawn_file_actions_init(&mut fa))?;
        e(libc::posix_spawnattr_init(&mut attr)).inspect_err(|_| {
            libc::posix_spawn_file_actions_destroy(&mut fa);
        })?;
        let result = (|| {
            match io {
                ChildIo::Tty { path, .. } => {
                    e(libc::posix_spawn_file_actions_addopen(
                        &mut fa,
                        0,
                        path.as_ptr(),
                        libc::O_RDWR,
                        0,
                    ))?;
                    e(libc::posix_spawn_file_actions_adddup2(&mut fa, 0, 1))?;
                    e(libc::posix_spawn_file_actions_adddup2(&mut fa, 0, 2))?;
                }
                ChildIo::Pipes(fds) => {
                    for (i, fd) in fds.iter().enumerate() {
                        e(libc::posix_spawn_file_actions_adddup2(
                            &mut fa,
                            fd.as_raw_fd(),
                            i as libc::c_int,
                        ))?;
                    }
                }
            }
            e(libc::posix_spawn_file_actions_addchdir_np(
                &mut fa,
                cwd.as_ptr(),
            ))?;
            // Nothing of the daemon's beyond 0-2 reaches the session.
            e(libc::posix_spawn_file_actions_addclosefrom_np(&mut fa, 3))?;
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            e(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            // SIGPIPE in particular: Rust ignores it, a shell must not.
            e(libc::posix_spawnattr_setsigdefault(&mut attr, &all))?;
            e(libc::posix_spawnattr_setflags(
                &mut attr,
                libc::POSIX_SPAWN_SETSID
                    | (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
            let mut pid: libc::pid_t = 0;
            e(libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &fa,
                &attr,
                argv_p.as_ptr(),
                envp_p.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut attr);
        result
    }
}

/// Sends each of `sigs` to everything the session started: its process
/// group, and every process whose session id is the leader's (background
/// jobs an interactive shell moved to process groups of their own). /proc is
/// read once for all the signals.
pub fn signal_tree(leader: i32, sigs: &[Signal]) {
    if leader <= 1 {
        return;
    }
    let members = session_members(leader);
    for &sig in sigs {
        let _ = killpg(Pid::from_raw(leader), sig);
        for &pid in &members {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

/// True while the leader's process group has a member. Cheap (no /proc).
pub fn group_alive(leader: i32) -> bool {
    leader > 1 && killpg(Pid::from_raw(leader), None).is_ok()
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

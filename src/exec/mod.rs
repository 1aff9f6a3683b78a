//! Spawning a session's process and taking it down again.
//!
//! This is the one module allowed `unsafe`: starting the child with
//! `clone` (new session, controlling terminal, privilege drop, open-file
//! limit, descriptor closing, all in the child before exec), reaping
//! ([`reaper`]), and the PTY ioctls.
//!
//! It refuses to run anything as root unless the caller says the profile
//! allows it, and never passes the daemon's environment or descriptors on.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitStatus;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{Gid, Pid, Uid, User};
use tokio::net::unix::pipe;

pub mod account;
pub mod cgroup;
mod child;
pub mod handover;
mod identity;
pub mod plan;
mod pty;
mod reaper;
pub use child::set_session_nofile;
use child::{clone_child, Child, ChildIo, Creds, ParentIo};
pub use identity::process_identity;
use identity::{boot_id, boot_ticks, start_ticks};
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

/// What to run and how: made only by [`plan::plan`], from a redeemed
/// token that grants a command.
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
    /// The session's cgroup, made by [`spawn`] on the thread that starts
    /// the process (which then starts in it), not on the runtime's.
    pub cgroup: Option<cgroup::Wanted>,
    /// Only this module (and [`plan`]) can name it, so only they build one.
    _planned: Planned,
}

#[derive(Debug)]
struct Planned;

/// The parent's ends of the child's standard streams.
pub enum Stdio3 {
    Pty(PtyMaster),
    Pipes {
        stdin: Stdin,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
}

/// The parent's end of the child's standard input, registered with the
/// reactor only when input comes ([`Stdin::sender`]): most sessions get
/// none, and closing the pipe is all their EOF takes (registering and
/// deregistering would be three system calls each).
pub struct Stdin(OwnedFd);

impl Stdin {
    /// The pipe as a non-blocking writer.
    pub fn sender(self) -> io::Result<pipe::Sender> {
        pipe::Sender::from_owned_fd_unchecked(nonblocking(self.0)?)
    }
}

/// A running session process; its pid is also its process group and session id.
pub struct Spawned {
    pub pid: i32,
    pub exit: ExitWatcher,
    pub io: Stdio3,
    /// The cgroup it started in, when [`Spec::cgroup`] asked for one and
    /// the daemon has per-session cgroups.
    pub cgroup: Option<cgroup::SessionCgroup>,
    /// Its leader's [`process_identity`], read as soon as it started.
    pub leader: Option<String>,
}

/// Waits for the session's leader to exit: the daemon's one reaper thread
/// reaps it and hands its status over (no descriptor per session).
pub struct ExitWatcher {
    rx: tokio::sync::oneshot::Receiver<ExitStatus>,
    status: Option<ExitStatus>,
}

impl ExitWatcher {
    /// The leader's exit status. Cancel-safe; once known, the status is
    /// returned again on later calls.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        let st = (&mut self.rx)
            .await
            .map_err(|_| io::Error::other("the reaper thread stopped"))?;
        self.status = Some(st);
        Ok(st)
    }
}

/// Starts `spec` in a new session (setsid), with the PTY as controlling
/// terminal when one was requested, as the account's user and groups, with
/// exactly the given environment and no descriptors beyond 0-2.
///
/// The daemon is a large multi-threaded process, and `fork` would copy its
/// page tables and make every page copy-on-write: the biggest cost of a
/// session measured in `bench/run`. The child is cloned the way
/// `posix_spawn` does it (`CLONE_VM | CLONE_VFORK`, on a stack of its own,
/// only raw system calls until exec; by clone3 straight into its cgroup
/// when it has one), which also lets it take the open-file limit the
/// daemon started with (the daemon raises its own).
/// It runs on a thread of the blocking pool, so a blocked clone never holds
/// up the runtime; so do the session cgroup's `mkdir` and the read of the
/// leader's identity (`/proc`). An error making the cgroup starts with
/// `cgroup: `; nothing is left of a session that could not start.
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
    let wanted = spec.cgroup;
    // On a thread of the blocking pool: the clone holds its thread until
    // the child has exec'd, and a pool thread is reused where a thread of
    // its own per session cost a thread's creation each time.
    let (pid, rx, cgroup, leader) = tokio::task::spawn_blocking(move || {
        let made = match &wanted {
            Some(w) => w
                .containment
                .session(&w.id, &w.limits)
                .map_err(|e| io::Error::new(e.kind(), format!("cgroup: {e}")))?,
            None => None,
        };
        let (cgroup, dir) = made.unzip();
        let child = Child {
            program: &program,
            argv: &argv,
            envp: &envp,
            cwd: &cwd,
            cwd_required,
            io: &child_io,
        };
        let before = boot_ticks();
        let r = clone_child(creds, &child, dir.as_ref(), reaper::discard);
        let after = boot_ticks();
        drop(child_io);
        let pid = match r {
            Ok(pid) => pid,
            Err(e) => {
                // A child that failed before exec has released this thread
                // (vfork) but may not have left its cgroup yet: the
                // removal waits for it, briefly.
                if let Some(c) = &cgroup {
                    c.remove_blocking(std::time::Duration::from_secs(2));
                }
                return Err(e);
            }
        };
        // Before the reaper is told to watch the child (it may have exited
        // already; then /proc has no identity to give).
        let leader = identity::of_child(pid, before, after);
        // Watched here, so a caller that gives up on the spawn cannot leave
        // the child unwatched.
        Ok((pid, reaper::watch(pid), cgroup, leader))
    })
    .await
    .map_err(|_| io::Error::other("spawner thread died"))??;

    let exit = ExitWatcher { rx, status: None };
    let io = match parent_io {
        ParentIo::Pty(master) => Stdio3::Pty(PtyMaster::new(master)?),
        // Pipes made just above, each end in its own access mode: made
        // non-blocking with one call each (`from_owned_fd` would fstat it
        // and read its flags first, six system calls more per session).
        ParentIo::Pipes(w, out, err) => Stdio3::Pipes {
            stdin: Stdin(w),
            stdout: pipe::Receiver::from_owned_fd_unchecked(nonblocking(out)?)?,
            stderr: pipe::Receiver::from_owned_fd_unchecked(nonblocking(err)?)?,
        },
    };
    Ok(Spawned {
        pid,
        exit,
        io,
        cgroup,
        leader,
    })
}

/// Sets O_NONBLOCK on a pipe end (F_SETFL leaves its access mode as it is).
fn nonblocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(fd)
}

/// Everything a session started: its process group and session, or its
/// cgroup when it has one (then nothing it forked can be missed).
pub struct Tree {
    leader: i32,
    cgroup: Option<cgroup::SessionCgroup>,
}

impl Tree {
    pub fn new(leader: i32, cgroup: Option<cgroup::SessionCgroup>) -> Tree {
        Tree { leader, cgroup }
    }

    /// The session's cgroup directory, when it has one.
    pub fn cgroup(&self) -> Option<&std::path::Path> {
        self.cgroup.as_ref().map(|c| c.path())
    }

    /// Sends each of `sigs` to every process of the session; SIGKILL to a
    /// cgroup is `cgroup.kill`.
    pub fn signal(&self, sigs: &[Signal]) {
        match &self.cgroup {
            Some(cg) => sigs.iter().for_each(|&s| cg.signal(s)),
            None => signal_tree(self.leader, sigs),
        }
    }

    /// True while any process of the session is alive. Cheap with a cgroup
    /// (one small file); reads /proc without.
    pub fn alive(&self) -> bool {
        match &self.cgroup {
            Some(cg) => cg.populated(),
            None => tree_alive(self.leader),
        }
    }

    /// Like [`Tree::alive`], but without a cgroup only the leader's process
    /// group is looked at (no /proc); a cgroup found empty is removed at
    /// once (that is the look).
    pub fn maybe_alive(&self) -> bool {
        match &self.cgroup {
            Some(cg) => !cg.remove_if_empty() && cg.populated(),
            None => group_alive(self.leader),
        }
    }

    /// Removes the session's cgroup once it is empty.
    pub async fn release(self) {
        if let Some(cg) = self.cgroup {
            cg.remove(std::time::Duration::from_secs(2)).await;
        }
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

/// Puts the calling thread, and every thread it starts from now on, under
/// `SCHED_BATCH` when it runs under the default `SCHED_OTHER`; sessions
/// started afterwards get `SCHED_OTHER` back before exec. A thread under
/// SCHED_BATCH does not preempt the one running when it wakes: the daemon's
/// threads (the runtime's, the journal's, the reaper's) wake one another
/// several times per session, and each preemption was a context switch.
/// Returns whether the thread now runs under `SCHED_BATCH`; any other
/// policy (systemd's `CPUSchedulingPolicy=`) is left as it is, and so is
/// what sessions inherit from it.
pub fn batch_scheduling() -> io::Result<bool> {
    // SAFETY: plain system calls on the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    let keep = policy & libc::SCHED_RESET_ON_FORK;
    match policy & !libc::SCHED_RESET_ON_FORK {
        libc::SCHED_OTHER => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as above, with a parameter that outlives the call.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH | keep, &param) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        libc::SCHED_BATCH => {}
        _ => return Ok(false),
    }
    child::set_session_sched_other();
    Ok(true)
}

/// Sets the calling thread's nice value (on Linux, priority is per thread).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: plain system calls on the calling thread's own id.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// After a crash of an earlier daemon: kills what is left of a session
/// whose leader was `leader` with identity `identity` (from
/// [`process_identity`] when it started). Found by what a process cannot
/// rewrite: its kernel session id is the leader's pid and it started no
/// earlier than the leader did, in the same boot. When the leader is still
/// alive its start time must match, or the pid is someone else's and
/// nothing is touched. (A descendant that made a session of its own with
/// setsid(2) is out of reach here; per-session cgroups catch it.) Returns
/// how many processes were killed.
pub fn kill_orphans(leader: i32, identity: &str) -> usize {
    let Some((boot, ticks)) = identity.split_once(':') else {
        return 0;
    };
    let Ok(since) = ticks.parse::<u64>() else {
        return 0;
    };
    if leader <= 1 || boot_id().as_deref() != Some(boot) {
        // Another boot: nothing of that run survives.
        return 0;
    }
    if let Some(t) = start_ticks(leader) {
        if t != since {
            return 0;
        }
    }
    let mut killed = 0;
    for pid in session_members(leader) {
        if start_ticks(pid).is_some_and(|t| t >= since)
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

//! Spawning a session's process and taking it down again.
//!
//! This is the one module allowed `unsafe`: starting the child with
//! `clone` (new session, controlling terminal, privilege drop, open-file
//! limit, descriptor closing, all in the child before exec), waiting
//! through a pidfd, and the PTY ioctls.
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

pub mod cgroup;
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
    /// The session's cgroup directory ([`cgroup::SessionCgroup::open`]):
    /// the process starts in it.
    pub cgroup: Option<OwnedFd>,
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
/// session measured in `bench/run`. Without a cgroup the child is cloned
/// the way `posix_spawn` does it (`CLONE_VM | CLONE_VFORK`, on a stack of
/// its own, only raw system calls until exec), which also lets it take the
/// open-file limit the daemon started with (the daemon raises its own).
/// It runs on a short-lived thread, so a blocked clone never holds up the
/// runtime.
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
    let cgroup = spec.cgroup;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tollgate-spawn".into())
        // It only sets up the child's arguments and clones it.
        .stack_size(64 * 1024)
        .spawn(move || {
            let child = Child {
                program: &program,
                argv: &argv,
                envp: &envp,
                cwd: &cwd,
                cwd_required,
                io: &child_io,
            };
            let r = clone_child(creds, &child, cgroup.as_ref());
            drop(child_io);
            let _ = tx.send(r);
        })?;
    let (pid, pidfd) = rx
        .await
        .map_err(|_| io::Error::other("spawner thread died"))??;

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

/// Everything the child needs, made ready before it exists: between clone
/// and exec nothing may be allocated.
struct Child<'a> {
    program: &'a CString,
    argv: &'a [CString],
    envp: &'a [CString],
    cwd: &'a CString,
    cwd_required: bool,
    io: &'a ChildIo,
}

/// `struct clone_args` of clone3(2), the fields this module uses and the
/// ones before them.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The open-file limit (soft, hard) the daemon started with, before it
/// raised its own: what every session starts with. (0, 0) until recorded.
static SESSION_NOFILE: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// Records the open-file limit sessions start with: the daemon's own, read
/// before it raises it.
pub fn set_session_nofile(soft: u64, hard: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    SESSION_NOFILE[0].store(soft, Relaxed);
    SESSION_NOFILE[1].store(hard, Relaxed);
}

/// Starts the child and returns its pid and a pidfd. With a cgroup `dir`
/// the child starts inside it (there is no moment at which it, or anything
/// it forks, is outside): that needs clone3's `CLONE_INTO_CGROUP`, here
/// without `CLONE_VM`, so the child gets a copy of this address space.
/// Without one it is cloned as `posix_spawn` does (`CLONE_VM |
/// CLONE_VFORK` on a stack of its own: nothing is copied and this thread
/// waits until the child has called exec). Either way the child sets
/// itself up with raw system calls only ([`exec_child`]): it is a copy of,
/// or shares, a multi-threaded process in which another thread may hold a
/// lock. Called as root when `creds` is set (moving into the cgroup needs
/// the daemon's rights); the child takes on the account's before anything
/// else, and this thread's credentials never change.
fn clone_child(
    creds: Option<Creds>,
    child: &Child,
    dir: Option<&OwnedFd>,
) -> io::Result<(i32, OwnedFd)> {
    let mut argv_p: Vec<*const libc::c_char> = child.argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = child.envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let tty: Option<&CStr> = match child.io {
        ChildIo::Tty { path, .. } => Some(path),
        ChildIo::Pipes(_) => None,
    };
    let pipes: [RawFd; 3] = match child.io {
        ChildIo::Pipes(fds) => [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()],
        ChildIo::Tty { .. } => [-1; 3],
    };
    // The child reports a failed step here; a successful exec closes it.
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let nofile = {
        use std::sync::atomic::Ordering::Relaxed;
        let (soft, hard) = (
            SESSION_NOFILE[0].load(Relaxed),
            SESSION_NOFILE[1].load(Relaxed),
        );
        (soft > 0).then_some(libc::rlimit64 {
            rlim_cur: soft,
            rlim_max: hard,
        })
    };
    let args = ChildArgs {
        creds: creds.as_ref(),
        child,
        tty,
        pipes,
        argv: &argv_p,
        envp: &envp_p,
        report: err_w.as_raw_fd(),
        nofile,
    };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: signal masks of this (short-lived) thread, into locals.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // No handler of the daemon's may run in the child.
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let pid = match dir {
        Some(dir) => {
            let clone = CloneArgs {
                flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
                pidfd: &mut pidfd as *mut libc::c_int as u64,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: dir.as_raw_fd() as u64,
                ..Default::default()
            };
            // SAFETY: clone3 without CLONE_VM: the child gets a copy of this
            // address space and returns here with 0, then only runs `exec_child`.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &clone as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            if pid == 0 {
                // SAFETY: in the child; everything it touches was made ready above.
                unsafe { exec_child(&args) }
            }
            pid
        }
        None => {
            // The child's stack: it only makes system calls, as posix_spawn's
            // child does (glibc gives that one 32 KiB plus the arguments).
            let mut stack = vec![0u8; 96 * 1024];
            let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
            // SAFETY: CLONE_VM | CLONE_VFORK: the child runs `vfork_child` on
            // its own stack in this address space while this thread waits,
            // until it has called exec or exited; `args` and the stack
            // outlive it.
            unsafe {
                libc::clone(
                    vfork_child,
                    top as *mut libc::c_void,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                    &args as *const ChildArgs as *mut libc::c_void,
                    &mut pidfd as *mut libc::c_int,
                ) as libc::c_long
            }
        }
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's own mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(err_w);
    if pid < 0 {
        return Err(clone_error);
    }
    let pid = pid as i32;
    // SAFETY: clone stored a new descriptor that we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match nix::unistd::read(&err_r, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if got == 0 {
        return Ok((pid, pidfd));
    }
    // The child failed before exec and exits 127: reap it.
    let mut raw = 0;
    // SAFETY: waitpid on our own child, into a local.
    unsafe { libc::waitpid(pid, &mut raw, 0) };
    let step = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
    let e = io::Error::from_raw_os_error(errno);
    let what = match step {
        STEP_CREDS => "switching to the account",
        STEP_SETSID => "starting a session",
        STEP_TTY => "opening the terminal",
        STEP_STDIO => "connecting standard streams",
        STEP_CWD => "changing to the working directory",
        STEP_FDS => "closing descriptors",
        STEP_LIMITS => "setting the open-file limit",
        _ => return Err(e),
    };
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

const STEP_CREDS: i32 = 1;
const STEP_SETSID: i32 = 2;
const STEP_TTY: i32 = 3;
const STEP_STDIO: i32 = 4;
const STEP_CWD: i32 = 5;
const STEP_FDS: i32 = 6;
const STEP_EXEC: i32 = 7;
const STEP_LIMITS: i32 = 8;

/// What the child needs, made ready by the parent before the clone.
struct ChildArgs<'a> {
    creds: Option<&'a Creds>,
    child: &'a Child<'a>,
    tty: Option<&'a CStr>,
    pipes: [RawFd; 3],
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    report: RawFd,
    nofile: Option<libc::rlimit64>,
}

/// The entry point of a `CLONE_VM | CLONE_VFORK` child.
extern "C" fn vfork_child(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `args` is the parent's `ChildArgs`, alive while it waits.
    unsafe { exec_child(&*(args as *const ChildArgs)) }
}

/// The child's side of [`clone_child`]: new session, terminal, standard
/// streams, working directory, open-file limit, descriptors, signals, one
/// raw system call at a time, then exec. Never returns.
///
/// # Safety
/// Only in a child fresh from clone, with every pointer made ready by the
/// parent (no allocation, no locks, no Rust runtime past this point).
unsafe fn exec_child(args: &ChildArgs) -> ! {
    let &ChildArgs {
        creds,
        child,
        tty,
        pipes,
        argv,
        envp,
        report,
        nofile,
    } = args;
    let fail = |step: i32| -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    };
    if let Some(c) = creds {
        // Raw calls: glibc's wrappers would try to reach the parent's threads.
        if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) < 0
            || libc::syscall(libc::SYS_setresgid, c.gid, c.gid, c.gid) < 0
            || libc::syscall(libc::SYS_setresuid, c.uid, c.uid, c.uid) < 0
        {
            fail(STEP_CREDS);
        }
    }
    if libc::setsid() < 0 {
        fail(STEP_SETSID);
    }
    match tty {
        // Opened after setsid, without O_NOCTTY: it becomes the controlling terminal.
        Some(path) => {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                fail(STEP_TTY);
            }
            for target in 0..3 {
                if fd != target && libc::dup2(fd, target) < 0 {
                    fail(STEP_STDIO);
                }
            }
        }
        None => {
            for (target, fd) in pipes.iter().enumerate() {
                if libc::dup2(*fd, target as libc::c_int) < 0 {
                    fail(STEP_STDIO);
                }
            }
        }
    }
    // Checked as the account: a home it cannot enter falls back to `/`.
    let cwd = child.cwd.as_ptr();
    if child.cwd_required || libc::access(cwd, libc::X_OK) == 0 {
        if libc::chdir(cwd) < 0 {
            fail(STEP_CWD);
        }
    } else if libc::chdir(c"/".as_ptr()) < 0 {
        fail(STEP_CWD);
    }
    // The limit the daemon started with, not the one it raised for itself.
    if let Some(limit) = &nofile {
        if libc::prlimit64(0, libc::RLIMIT_NOFILE, limit, std::ptr::null_mut()) < 0 {
            fail(STEP_LIMITS);
        }
    }
    // Nothing of the daemon's beyond 0-2 reaches the session (the report
    // pipe stays open until exec succeeds).
    if libc::syscall(
        libc::SYS_close_range,
        3u32,
        u32::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) < 0
    {
        fail(STEP_FDS);
    }
    // SIGPIPE in particular: Rust ignores it, a shell must not.
    for sig in 1..=libc::SIGRTMAX() {
        libc::signal(sig, libc::SIG_DFL);
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    libc::execve(child.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    fail(STEP_EXEC)
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
    /// group is looked at (no /proc).
    pub fn maybe_alive(&self) -> bool {
        match &self.cgroup {
            Some(cg) => cg.populated(),
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

/// What tells a process apart from any later one that reuses its pid, and
/// that the process cannot rewrite: this boot's id and the process's start
/// time in clock ticks since boot (`/proc/PID/stat`, field 22), as
/// `BOOT_ID:TICKS`. None once the process is reaped.
pub fn process_identity(pid: i32) -> Option<String> {
    let boot = boot_id()?;
    Some(format!("{boot}:{}", start_ticks(pid)?))
}

fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    })
    .clone()
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks
/// since boot.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest[0] is field 3 (state); field 22 is rest[19].
    rest.split_whitespace().nth(19)?.parse().ok()
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

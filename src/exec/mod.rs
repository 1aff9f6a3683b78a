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
    let cgroup = spec.cgroup;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tollgate-spawn".into())
        // It only switches credentials and calls posix_spawn or clone3.
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
            let r = match &cgroup {
                Some(dir) => clone_into(creds, &child, dir),
                None => spawn_as(creds, &child).map(|pid| (pid, None)),
            };
            drop(child_io);
            let _ = tx.send(r);
        })?;
    let (pid, pidfd) = rx
        .await
        .map_err(|_| io::Error::other("spawner thread died"))??;

    let pidfd = match pidfd {
        Some(fd) => fd,
        None => {
            // SAFETY: pidfd_open returns a new descriptor that we own, or -1.
            let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh descriptor owned by nobody else.
            unsafe { OwnedFd::from_raw_fd(raw) }
        }
    };
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

/// Everything the child needs, prepared before it exists: between clone
/// and exec nothing may be allocated.
struct Child<'a> {
    program: &'a CString,
    argv: &'a [CString],
    envp: &'a [CString],
    cwd: &'a CString,
    cwd_required: bool,
    io: &'a ChildIo,
}

/// Runs on a thread of its own, which it leaves with the account's
/// credentials: never call it on a thread that lives on.
fn spawn_as(creds: Option<Creds>, child: &Child) -> io::Result<i32> {
    let Child {
        program,
        argv,
        envp,
        cwd,
        cwd_required,
        io,
    } = *child;
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

/// Like [`spawn_as`], but the child starts inside the cgroup `dir` (there is
/// no moment at which it, or anything it forks, is outside). posix_spawn
/// cannot do that, so this forks with clone3 and the child sets itself up
/// with raw system calls only: it is a copy of a multi-threaded process in
/// which another thread may have held a lock. Called as root when `creds`
/// is set (moving into the cgroup needs the daemon's rights); the child
/// takes on the account's before anything else.
fn clone_into(
    creds: Option<Creds>,
    child: &Child,
    dir: &OwnedFd,
) -> io::Result<(i32, Option<OwnedFd>)> {
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
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: signal masks of this (short-lived) thread, into locals.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // No handler of the daemon's may run in the child.
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: clone3 without CLONE_VM: the child gets a copy of this
    // address space and returns here with 0, then only runs `exec_child`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child; everything it touches was prepared above.
        unsafe {
            exec_child(
                creds.as_ref(),
                child,
                tty,
                pipes,
                &argv_p,
                &envp_p,
                err_w.as_raw_fd(),
            )
        }
    }
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's own mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(err_w);
    if pid < 0 {
        return Err(clone_error);
    }
    let pid = pid as i32;
    // SAFETY: clone3 stored a new descriptor that we own.
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
        return Ok((pid, Some(pidfd)));
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

/// The child's side of [`clone_into`]: the same setup posix_spawn does in
/// [`spawn_as`], one raw system call at a time, then exec. Never returns.
///
/// # Safety
/// Only in a child fresh from clone3, with every pointer prepared by the
/// parent (no allocation, no locks, no Rust runtime past this point).
unsafe fn exec_child(
    creds: Option<&Creds>,
    child: &Child,
    tty: Option<&CStr>,
    pipes: [RawFd; 3],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    report: RawFd,
) -> ! {
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

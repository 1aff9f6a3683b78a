//! The child's side of starting a session: cloned (with `CLONE_VM |
//! CLONE_VFORK` as posix_spawn does, or with clone3 into its cgroup), it
//! takes on the account, a new session, its terminal or pipes, the working
//! directory and the open-file limit, closes every other descriptor and
//! execs, one raw system call at a time.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The account to become in the spawner thread (only when running as root).
pub(super) struct Creds {
    pub(super) uid: libc::uid_t,
    pub(super) gid: libc::gid_t,
    pub(super) groups: Vec<libc::gid_t>,
}

pub(super) enum ChildIo {
    /// The PTY slave's path (opened by the child after setsid, so it becomes
    /// the controlling terminal) and the slave, kept open until then.
    Tty { path: CString, _slave: OwnedFd },
    /// stdin's read end, stdout's and stderr's write ends.
    Pipes([OwnedFd; 3]),
}

pub(super) enum ParentIo {
    Pty(OwnedFd),
    Pipes(OwnedFd, OwnedFd, OwnedFd),
}

/// Everything the child needs, made ready before it exists: between clone
/// and exec nothing may be allocated.
pub(super) struct Child<'a> {
    pub(super) program: &'a CString,
    pub(super) argv: &'a [CString],
    pub(super) envp: &'a [CString],
    pub(super) cwd: &'a CString,
    pub(super) cwd_required: bool,
    pub(super) io: &'a ChildIo,
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
pub(super) fn clone_child(
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
            // Not zeroed: nothing reads it before the child writes it.
            let mut stack: Vec<u8> = Vec::with_capacity(96 * 1024);
            let top = (stack.as_mut_ptr() as usize + stack.capacity()) & !15;
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

//! The child's side of starting a session: cloned with `CLONE_VM |
//! CLONE_VFORK` as posix_spawn does (by clone3 when it starts in its
//! cgroup), it
//! takes on the account, a new session, its terminal or pipes, the working
//! directory and the open-file limit, closes every other descriptor and
//! execs, one raw system call at a time.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

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
#[derive(Default, Clone, Copy)]
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

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const CLONE_VM_VFORK: u64 = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;

/// clone3(2) for a child that shares this address space and runs `entry(arg)`
/// on the stack `args` names, then exits with its result; returns the
/// child's pid (or -1 with errno set) once the child has exec'd or exited.
/// The C library offers no clone3 wrapper that calls a function: a child
/// that returned from a plain `syscall` would pop a return address from a
/// stack it has not got. This is glibc's `__clone3` (which
/// `posix_spawnattr_setcgroup_np` of glibc 2.41 uses the same way).
///
/// # Safety
/// `args` must name a stack of `stack_size` bytes whose top is 16-byte
/// aligned, alive until the call returns, and `entry` may only do what is
/// safe in a vfork child.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_vfork(
    args: &CloneArgs,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    std::arch::asm!(
        "syscall",
        "test rax, rax",
        "jnz 2f",
        // The child: the kernel set rsp to the top of its stack.
        "xor ebp, ebp",
        "mov rdi, r12",
        "call r13",
        "mov edi, eax",
        "mov eax, {exit}",
        "syscall",
        "ud2",
        "2:",
        exit = const libc::SYS_exit,
        inlateout("rax") libc::SYS_clone3 => ret,
        in("rdi") args as *const CloneArgs,
        in("rsi") std::mem::size_of::<CloneArgs>(),
        in("r12") arg,
        in("r13") entry,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    if ret < 0 {
        *libc::__errno_location() = -ret as libc::c_int;
        return -1;
    }
    ret
}

/// Elsewhere than x86_64, the child of clone3 gets a copy of this address
/// space (no `CLONE_VM`), returns from the system call like fork's child
/// and runs `entry(arg)`.
///
/// # Safety
/// As the x86_64 version; the copy costs the page tables.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_vfork(
    args: &CloneArgs,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> libc::c_long {
    let copy = CloneArgs {
        flags: args.flags & !CLONE_VM_VFORK,
        stack: 0,
        stack_size: 0,
        ..*args
    };
    let pid = libc::syscall(
        libc::SYS_clone3,
        &copy as *const CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    if pid == 0 {
        libc::_exit(entry(arg));
    }
    pid
}

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

/// Whether a session gets `SCHED_OTHER` back before exec: set once the
/// daemon runs under `SCHED_BATCH` ([`super::batch_scheduling`]).
static SESSION_SCHED_OTHER: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Sessions started from now on get `SCHED_OTHER` before exec.
pub(super) fn set_session_sched_other() {
    SESSION_SCHED_OTHER.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Starts the child and returns its pid; a child that failed before exec
/// is handed to `reap`. With a cgroup `dir`
/// the child starts inside it (there is no moment at which it, or anything
/// it forks, is outside): that needs clone3's `CLONE_INTO_CGROUP`
/// ([`clone3_vfork`]). Either way it is cloned as `posix_spawn` does
/// (`CLONE_VM | CLONE_VFORK` on a stack of its own: no page table is
/// copied and this thread waits until the child has called exec; until
/// 2026-11 the cgroup path copied them, and started sessions at 0.4 of the
/// other's rate). The child sets itself up with raw system calls only
/// ([`exec_child`]): it shares a multi-threaded process in which another
/// thread may hold a lock. Called as root when `creds` is set (moving into the cgroup needs
/// the daemon's rights); the child takes on the account's before anything
/// else, and this thread's credentials never change.
pub(super) fn clone_child(
    creds: Option<Creds>,
    child: &Child,
    dir: Option<&OwnedFd>,
    reap: impl FnOnce(i32),
) -> io::Result<i32> {
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
    // The child reports a failed step in `failed`, memory it shares with
    // this thread (CLONE_VM), which waits until the child has exec'd or
    // exited (CLONE_VFORK): no pipe to make, read and close. Only clone3
    // elsewhere than x86_64 gives the child a copy; it reports on a pipe,
    // which a successful exec closes.
    let failed = std::sync::atomic::AtomicU64::new(0);
    let shared = dir.is_none() || cfg!(target_arch = "x86_64");
    let pipe = if shared {
        None
    } else {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?)
    };
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
        report: pipe.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
        failed: &failed,
        nofile,
        sched_other: SESSION_SCHED_OTHER.load(std::sync::atomic::Ordering::Relaxed),
        #[cfg(test)]
        fail_at: tests::FAIL_AT.get(),
    };
    // SAFETY: signal masks of this (short-lived) thread, into locals.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // No handler of the daemon's may run in the child.
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // The child's stack: it only makes system calls, as posix_spawn's child
    // does (glibc gives that one 32 KiB plus the arguments). Not zeroed:
    // nothing reads it before the child writes it.
    let mut stack: Vec<u8> = Vec::with_capacity(96 * 1024);
    let base = stack.as_mut_ptr() as usize;
    let top = (base + stack.capacity()) & !15;
    let entry = &args as *const ChildArgs as *mut libc::c_void;
    let pid = match dir {
        Some(dir) => {
            let clone = CloneArgs {
                flags: CLONE_VM_VFORK | CLONE_INTO_CGROUP,
                exit_signal: libc::SIGCHLD as u64,
                stack: base as u64,
                stack_size: (top - base) as u64,
                cgroup: dir.as_raw_fd() as u64,
                ..Default::default()
            };
            // SAFETY: as the clone below, with clone3 so that the child
            // starts in its cgroup: it runs `vfork_child` on `stack` while
            // this thread waits, until it has called exec or exited.
            unsafe { clone3_vfork(&clone, vfork_child, entry) }
        }
        None => {
            // SAFETY: CLONE_VM | CLONE_VFORK: the child runs `vfork_child` on
            // its own stack in this address space while this thread waits,
            // until it has called exec or exited; `args` and the stack
            // outlive it.
            unsafe {
                libc::clone(
                    vfork_child,
                    top as *mut libc::c_void,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    entry,
                ) as libc::c_long
            }
        }
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's own mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let err_r = pipe.map(|(r, w)| {
        drop(w);
        r
    });
    if pid < 0 {
        return Err(clone_error);
    }
    let pid = pid as i32;
    let report = match err_r {
        None => failed
            .load(std::sync::atomic::Ordering::SeqCst)
            .to_ne_bytes(),
        Some(err_r) => {
            let mut report = [0u8; 8];
            let mut got = 0;
            while got < report.len() {
                match nix::unistd::read(&err_r, &mut report[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        reap(pid);
                        return Err(e.into());
                    }
                }
            }
            report
        }
    };
    // Steps are numbered from 1: all zeros is no report.
    if report == [0; 8] {
        return Ok(pid);
    }
    // The child failed before exec and exits 127.
    reap(pid);
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
        STEP_EXEC => "starting the program",
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
    /// A pipe for the report when the child has a copy of this memory
    /// (else -1), and the report where it shares it: step and errno, in
    /// the bytes the pipe would carry.
    report: RawFd,
    failed: &'a std::sync::atomic::AtomicU64,
    nofile: Option<libc::rlimit64>,
    /// Back to `SCHED_OTHER` (the daemon's threads run `SCHED_BATCH`).
    sched_other: bool,
    /// Unit tests make this step fail (with EIO) to see it reported.
    #[cfg(test)]
    fail_at: i32,
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
        failed,
        nofile,
        sched_other,
        ..
    } = args;
    // Whether a unit test makes `step` fail; never in the daemon.
    let injected = |_step: i32| -> bool {
        #[cfg(test)]
        if args.fail_at == _step {
            *libc::__errno_location() = libc::EIO;
            return true;
        }
        false
    };
    let fail = |step: i32| -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        failed.store(u64::from_ne_bytes(msg), std::sync::atomic::Ordering::SeqCst);
        if report >= 0 {
            libc::write(report, msg.as_ptr().cast(), msg.len());
        }
        libc::_exit(127)
    };
    // The session is scheduled as any login's process, not as the daemon's
    // threads are. Cannot fail (BATCH to OTHER needs no privilege), and a
    // failure would only leave the session under SCHED_BATCH.
    if sched_other {
        let normal = libc::sched_param { sched_priority: 0 };
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_OTHER,
            &normal as *const libc::sched_param,
        );
    }
    if let Some(c) = creds {
        // Raw calls: glibc's wrappers would try to reach the parent's threads.
        if injected(STEP_CREDS)
            || libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) < 0
            || libc::syscall(libc::SYS_setresgid, c.gid, c.gid, c.gid) < 0
            || libc::syscall(libc::SYS_setresuid, c.uid, c.uid, c.uid) < 0
        {
            fail(STEP_CREDS);
        }
    }
    if injected(STEP_SETSID) || libc::setsid() < 0 {
        fail(STEP_SETSID);
    }
    match tty {
        // Opened after setsid, without O_NOCTTY: it becomes the controlling terminal.
        Some(path) => {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 || injected(STEP_TTY) {
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
                if injected(STEP_STDIO) || libc::dup2(*fd, target as libc::c_int) < 0 {
                    fail(STEP_STDIO);
                }
            }
        }
    }
    // Checked as the account: a home it cannot enter falls back to `/`.
    let cwd = child.cwd.as_ptr();
    if injected(STEP_CWD) {
        fail(STEP_CWD);
    }
    if child.cwd_required || libc::access(cwd, libc::X_OK) == 0 {
        if libc::chdir(cwd) < 0 {
            fail(STEP_CWD);
        }
    } else if libc::chdir(c"/".as_ptr()) < 0 {
        fail(STEP_CWD);
    }
    // The limit the daemon started with, not the one it raised for itself.
    if let Some(limit) = &nofile {
        if injected(STEP_LIMITS)
            || libc::prlimit64(0, libc::RLIMIT_NOFILE, limit, std::ptr::null_mut()) < 0
        {
            fail(STEP_LIMITS);
        }
    }
    // Nothing of the daemon's beyond 0-2 reaches the session (a report
    // pipe stays open until exec succeeds).
    if injected(STEP_FDS)
        || libc::syscall(
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
    if !injected(STEP_EXEC) {
        libc::execve(child.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    fail(STEP_EXEC)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::Read;
    use std::path::PathBuf;

    thread_local! {
        /// The step [`clone_child`] on this thread makes fail (0: none).
        pub(super) static FAIL_AT: Cell<i32> = const { Cell::new(0) };
    }

    fn cstrings(v: &[&str]) -> Vec<CString> {
        v.iter().map(|s| CString::new(*s).unwrap()).collect()
    }

    /// Runs `argv` through [`clone_child`] with its stdout on a pipe; returns
    /// what it printed and how it exited, or the reported error.
    fn run(
        argv: &[&str],
        cwd: &str,
        tty: Option<&str>,
        dir: Option<&OwnedFd>,
        fail_at: i32,
    ) -> io::Result<(String, i32)> {
        let (in_r, _in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let err_w = out_w.try_clone().unwrap();
        let io = match tty {
            Some(path) => ChildIo::Tty {
                path: CString::new(path).unwrap(),
                _slave: in_r,
            },
            None => ChildIo::Pipes([in_r, out_w, err_w]),
        };
        let argv = cstrings(argv);
        let envp = cstrings(&["PATH=/usr/bin:/bin"]);
        let cwd = CString::new(cwd).unwrap();
        let child = Child {
            program: &argv[0],
            argv: &argv,
            envp: &envp,
            cwd: &cwd,
            cwd_required: true,
            io: &io,
        };
        let creds = Uid::effective().is_root().then(|| {
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            Creds {
                uid: nobody.uid.as_raw(),
                gid: nobody.gid.as_raw(),
                groups: vec![nobody.gid.as_raw()],
            }
        });
        FAIL_AT.set(fail_at);
        let reap = |pid| {
            // SAFETY: waitpid on our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        };
        let r = clone_child(creds, &child, dir, reap);
        FAIL_AT.set(0);
        drop(io);
        let pid = r?;
        let mut out = String::new();
        std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
        let mut raw = 0;
        // SAFETY: waitpid on our own child, into a local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut raw, 0) }, pid);
        Ok((out, libc::WEXITSTATUS(raw)))
    }
    use nix::unistd::Uid;

    /// A cgroup v2 directory of this process's own for the test, when there
    /// is one it may make (root, a cgroup2 mount): removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn make() -> Option<Scratch> {
            if !Uid::effective().is_root() {
                return None;
            }
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            let mount = mounts.lines().find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let dash = f.iter().position(|x| *x == "-")?;
                (f.get(dash + 1) == Some(&"cgroup2") && f[3] == "/").then(|| f[4].to_string())
            })?;
            let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
            let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
            let dir = PathBuf::from(format!(
                "{mount}{}/tollgate-unit-{}-{:?}",
                rel.trim_end_matches('/'),
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir(&dir).ok()?;
            Some(Scratch(dir))
        }
        fn open(&self) -> OwnedFd {
            std::fs::File::open(&self.0).unwrap().into()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn a_child_starts_inside_its_cgroup_and_runs() {
        let (out, status) = run(&["/bin/sh", "-c", "echo ran"], "/", None, None, 0).unwrap();
        assert_eq!((out.as_str(), status), ("ran\n", 0));
        let Some(cg) = Scratch::make() else {
            println!("NOT TESTED: the clone3 path (needs root and a cgroup2 mount)");
            return;
        };
        let (out, status) = run(
            &["/bin/sh", "-c", "cat /proc/self/cgroup; exit 3"],
            "/",
            None,
            Some(&cg.open()),
            0,
        )
        .unwrap();
        let name = cg.0.file_name().unwrap().to_str().unwrap();
        assert!(out.contains(&format!("/{name}\n")), "{out}");
        assert_eq!(status, 3);
    }

    /// Every step before exec reports its own failure, on both paths (the
    /// clone3 one into a cgroup and the plain one); some for real (a
    /// missing terminal, directory or program), each one injected.
    #[test]
    fn each_step_before_exec_reports_its_failure() {
        // SAFETY: reads this process's own limit into a local.
        let mut lim: libc::rlimit64 = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::prlimit64(0, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim) },
            0
        );
        set_session_nofile(lim.rlim_cur, lim.rlim_max);
        let cg = Scratch::make();
        let mut dirs = vec![None];
        match &cg {
            Some(cg) => dirs.push(Some(cg.open())),
            None => println!("NOT TESTED: the clone3 path (needs root and a cgroup2 mount)"),
        }
        let mut steps = vec![
            (STEP_SETSID, "starting a session"),
            (STEP_STDIO, "connecting standard streams"),
            (STEP_CWD, "changing to the working directory"),
            (STEP_LIMITS, "setting the open-file limit"),
            (STEP_FDS, "closing descriptors"),
            (STEP_EXEC, "starting the program"),
        ];
        if Uid::effective().is_root() {
            steps.push((STEP_CREDS, "switching to the account"));
        }
        for dir in &dirs {
            for &(step, what) in &steps {
                let e = run(&["/bin/true"], "/", None, dir.as_ref(), step).unwrap_err();
                assert_eq!(
                    e.to_string(),
                    format!("{what}: Input/output error (os error 5)")
                );
            }
            let e = run(
                &["/bin/true"],
                "/",
                Some("/nonexistent/tty"),
                dir.as_ref(),
                0,
            )
            .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("opening the terminal: No such file"),
                "{e}"
            );
            let e = run(&["/bin/true"], "/nonexistent", None, dir.as_ref(), 0).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("changing to the working directory: No such file"),
                "{e}"
            );
            let e = run(&["/nonexistent/program"], "/", None, dir.as_ref(), 0).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("starting the program: No such file"),
                "{e}"
            );
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
        }
    }
}

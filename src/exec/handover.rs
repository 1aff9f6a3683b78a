//! Handing the daemon over to a new binary (SIGUSR2): the listening sockets
//! pass to the new process as inherited descriptors named in its
//! environment, with a socket pair to say when it is ready; and what tells
//! one daemon process from another (a session's owner).
//!
//! The old process starts the new one with
//! - `TOLLGATE_HANDOVER_LISTENERS`: `KIND=ADDRESS=FD` items joined by `,`
//!   (`ssh`, `api`, `metrics`; the address as configured),
//! - `TOLLGATE_HANDOVER_FD`: its end of the socket pair,
//! - `TOLLGATE_HANDOVER_FROM`: the old process as an owner (`PID:BOOT:TICKS`).
//!
//! Every other descriptor stays close-on-exec. The new process checks each
//! named descriptor (a listening TCP socket, or a socket for the channel)
//! before it takes it, and marks it close-on-exec again.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;

use tokio::sync::oneshot;

const LISTENERS_VAR: &str = "TOLLGATE_HANDOVER_LISTENERS";
const CHANNEL_VAR: &str = "TOLLGATE_HANDOVER_FD";
const FROM_VAR: &str = "TOLLGATE_HANDOVER_FROM";

/// This process as the owner of the sessions it serves: `PID:BOOT:TICKS`.
pub fn own_identity() -> String {
    let pid = std::process::id() as i32;
    format!(
        "{pid}:{}",
        super::process_identity(pid).unwrap_or_else(|| "unknown:0".into())
    )
}

/// The pid of the process `owner` (`PID:BOOT:TICKS`) names, if that very
/// process still runs (not another that reused its pid).
pub fn owner_alive(owner: &str) -> Option<i32> {
    let (pid, identity) = owner.split_once(':')?;
    let pid: i32 = pid.parse().ok()?;
    (pid > 1 && super::process_identity(pid).as_deref() == Some(identity) && running(pid))
        .then_some(pid)
}

/// Whether `pid` is a process that has not exited (a zombie has).
pub fn running(pid: i32) -> bool {
    super::identity::stat_fields(pid)
        .and_then(|f| f.first().map(|state| state != "Z" && state != "X"))
        .unwrap_or(false)
}

/// Listeners passed by the previous process, not yet taken.
static INHERITED: Mutex<Vec<(String, SocketAddr, OwnedFd)>> = Mutex::new(Vec::new());

/// What the previous process passed on, when this one was started by a
/// hand-over.
pub struct Incoming {
    /// The process handing over (`PID:BOOT:TICKS`).
    pub from: String,
    channel: UnixStream,
}

/// Reads the hand-over variables, if any, and takes the descriptors they
/// name. Call once, early. A descriptor that is not what it should be is
/// left alone and said in the returned warnings.
pub fn adopt_from_env() -> (Option<Incoming>, Vec<String>) {
    let mut warnings = Vec::new();
    let Some(channel) = std::env::var(CHANNEL_VAR).ok() else {
        return (None, warnings);
    };
    let from = std::env::var(FROM_VAR).unwrap_or_default();
    let channel = match channel
        .parse::<RawFd>()
        .ok()
        .filter(|&fd| is_socket(fd, false))
    {
        // SAFETY: a socket this process inherited under that name, owned
        // by nothing else in it.
        Some(fd) => unsafe { UnixStream::from_raw_fd(fd) },
        None => {
            warnings.push(format!(
                "{CHANNEL_VAR}={channel} is not an inherited socket"
            ));
            return (None, warnings);
        }
    };
    let _ = set_cloexec(channel.as_raw_fd(), true);
    let mut taken = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    for item in std::env::var(LISTENERS_VAR)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let parsed = (|| {
            let mut parts = item.splitn(3, '=');
            let kind = parts.next()?.to_string();
            let addr: SocketAddr = parts.next()?.parse().ok()?;
            let fd: RawFd = parts.next()?.parse().ok()?;
            Some((kind, addr, fd))
        })();
        match parsed {
            Some((kind, addr, fd)) if fd > 2 && is_socket(fd, true) => {
                let _ = set_cloexec(fd, true);
                // SAFETY: a listening socket inherited under that name.
                taken.push((kind, addr, unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            _ => warnings.push(format!(
                "{LISTENERS_VAR}: \"{item}\" is not an inherited listening socket"
            )),
        }
    }
    (Some(Incoming { from, channel }), warnings)
}

/// The listener the previous process passed for `kind` at `addr`.
pub fn take_listener(kind: &str, addr: &SocketAddr) -> Option<std::net::TcpListener> {
    let mut all = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    let i = all.iter().position(|(k, a, _)| k == kind && a == addr)?;
    let (_, _, fd) = all.remove(i);
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true).ok()?;
    Some(l)
}

/// Closes what was passed and not taken (addresses no longer configured).
pub fn close_untaken() -> Vec<SocketAddr> {
    let mut all = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    all.drain(..).map(|(_, a, _)| a).collect()
}

impl Incoming {
    /// Tells the old process this one accepts; waits until it answers that
    /// this one is now the service's main process (or until it is gone).
    pub fn ready(self) -> io::Result<()> {
        use std::io::{BufRead, Write};
        let mut ch = self.channel;
        ch.write_all(b"ready\n")?;
        ch.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        let mut line = String::new();
        std::io::BufReader::new(ch).read_line(&mut line)?;
        Ok(())
    }
}

/// A new process being handed the listeners.
pub struct Successor {
    pub pid: i32,
    channel: UnixStream,
    exit: oneshot::Receiver<std::process::ExitStatus>,
}

/// Starts `exe` with `args` (this process's own, without argv\[0\]) and
/// the listeners `(kind, configured address, descriptor)`.
pub fn start_successor(
    exe: &Path,
    args: &[OsString],
    listeners: &[(&str, SocketAddr, RawFd)],
) -> io::Result<Successor> {
    use std::os::unix::process::CommandExt;
    // std's spawn waits for a child whose exec failed, which the reaper
    // may already have reaped: make that case an error before it arises.
    nix::unistd::access(exe, nix::unistd::AccessFlags::X_OK)
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{}: {e}", exe.display())))?;
    let (mine, theirs) = UnixStream::pair()?;
    let names = listeners
        .iter()
        .map(|(k, a, fd)| format!("{k}={a}={fd}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut keep: Vec<RawFd> = listeners.iter().map(|l| l.2).collect();
    keep.push(theirs.as_raw_fd());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env(LISTENERS_VAR, names)
        .env(CHANNEL_VAR, theirs.as_raw_fd().to_string())
        .env(FROM_VAR, own_identity())
        // The watchdog is the new process's once it is the main one.
        .env_remove("WATCHDOG_PID")
        .stdin(std::process::Stdio::null());
    // SAFETY: between fork and exec the closure only calls fcntl, which
    // is async-signal-safe, on descriptors this process owns.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                set_cloexec(fd, false)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    // The reaper owns every child: it collects this one's status.
    let exit = super::reaper::watch(pid);
    drop(child);
    drop(theirs);
    Ok(Successor {
        pid,
        channel: mine,
        exit,
    })
}

impl Successor {
    /// Waits (blocking) until the new process says it accepts; an error
    /// if it exits, closes the channel or takes longer than `limit`.
    pub fn wait_ready(&mut self, limit: std::time::Duration) -> io::Result<()> {
        use std::io::BufRead;
        self.channel.set_read_timeout(Some(limit))?;
        let mut line = String::new();
        let n = std::io::BufReader::new(&self.channel).read_line(&mut line)?;
        if n == 0 || line.trim() != "ready" {
            // Its exit status, once the reaper has it.
            let mut status = String::new();
            for _ in 0..40 {
                if let Ok(s) = self.exit.try_recv() {
                    status = format!(" ({s})");
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            return Err(io::Error::other(format!(
                "the new process ended before it was ready{status}"
            )));
        }
        Ok(())
    }

    /// Tells the new process it is the service's main process now.
    pub fn confirm(mut self) -> io::Result<()> {
        use std::io::Write;
        self.channel.write_all(b"main\n")
    }

    /// Gives up on it: kills it (it never accepted a connection of its own
    /// that it could not finish, as it was not yet told to go on).
    pub fn abandon(self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Whether `fd` is a socket (listening, when `listening`).
fn is_socket(fd: RawFd, listening: bool) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st` only; an fd that is not open fails.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return false;
    }
    if !listening {
        return true;
    }
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: reads one int option into `on`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut on as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && on == 1
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on a descriptor; async-signal-safe.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_alive_only_while_that_very_process_runs() {
        let me = own_identity();
        assert_eq!(owner_alive(&me), Some(std::process::id() as i32));
        // The same pid with another start time is someone else.
        let (pid, rest) = me.split_once(':').unwrap();
        let (boot, ticks) = rest.split_once(':').unwrap();
        let other = format!("{pid}:{boot}:{}", ticks.parse::<u64>().unwrap() + 1);
        assert_eq!(owner_alive(&other), None);
        assert_eq!(owner_alive("garbage"), None);
        assert_eq!(owner_alive("1:x:0"), None);
    }

    #[test]
    fn only_listening_sockets_are_taken() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(is_socket(l.as_raw_fd(), true));
        assert!(!is_socket(c.as_raw_fd(), true));
        assert!(is_socket(c.as_raw_fd(), false));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_socket(f.as_raw_fd(), false));
    }
}

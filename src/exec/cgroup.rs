//! Per-session cgroups (cgroup v2), when the daemon's own cgroup was
//! delegated to it (systemd's `Delegate=yes`).
//!
//! The daemon moves itself into a leaf, `daemon`, and each session's
//! processes start in a cgroup of their own, named after the session
//! (`clone3` with `CLONE_INTO_CGROUP`: there is no moment at which a session
//! process is outside it). Teardown writes `cgroup.kill`, which ends a
//! process that called `setsid` and forked twice just as surely as the
//! session's leader. A profile's `memory_max`, `pids_max`, `cpu_weight` and
//! `cpu_max` are written into the session's cgroup before anything runs in it.
//!
//! It refuses a cgroup that nobody delegated: one without systemd's
//! `trusted.delegate`/`user.delegate` mark, the root, or one it cannot
//! write. Then teardown goes by process group and session id, as before.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{access, AccessFlags, Pid};

/// Controllers the daemon enables for its sessions when its cgroup has them.
const WANTED: [&str; 3] = ["cpu", "memory", "pids"];

/// The name of the leaf the daemon's own processes live in.
const DAEMON_LEAF: &str = "daemon";

pub use crate::config::Limits;

impl Limits {
    /// Each limit that is set: its profile key, controller, file and value.
    fn files(&self) -> Vec<(&'static str, &'static str, &'static str, String)> {
        let mut out = Vec::new();
        if let Some(b) = self.memory_max {
            out.push(("memory_max", "memory", "memory.max", b.to_string()));
        }
        if let Some(n) = self.pids_max {
            out.push(("pids_max", "pids", "pids.max", n.to_string()));
        }
        if let Some(w) = self.cpu_weight {
            out.push(("cpu_weight", "cpu", "cpu.weight", w.to_string()));
        }
        if let Some(p) = self.cpu_max_percent {
            // Quota per 100 ms period.
            out.push(("cpu_max", "cpu", "cpu.max", format!("{} 100000", p * 1000)));
        }
        out
    }
}

/// A session's cgroup, asked of [`super::spawn`]: made where the process
/// is started, with `limits` in force, named by the session's id.
#[derive(Debug)]
pub struct Wanted {
    pub containment: std::sync::Arc<Containment>,
    pub id: String,
    pub limits: Limits,
}

/// How session processes are contained and ended.
#[derive(Debug)]
pub enum Containment {
    /// A delegated cgroup v2 subtree: one cgroup per session.
    Cgroups(Delegated),
    /// Process group and session id; the reason cgroups are not used.
    ProcessGroups(String),
}

impl Containment {
    /// Looks at the daemon's own cgroup and, when it was delegated, takes
    /// it over (see [`Delegated::take_over`]). Never fails: anything that
    /// stands in the way is the reason process groups are used instead.
    ///
    /// A process started by a hand-over (`successor`) begins in its
    /// predecessor's leaf: it takes the delegated cgroup above it, and a
    /// leaf of its own (`daemon.PID`).
    pub fn detect(successor: bool) -> Containment {
        match Delegated::take_over(successor) {
            Ok(d) => Containment::Cgroups(d),
            Err(why) => Containment::ProcessGroups(why),
        }
    }

    /// One line for the log: which mode, and why or where.
    pub fn describe(&self) -> String {
        match self {
            Containment::Cgroups(d) => format!(
                "per-session cgroups under {} (controllers: {})",
                d.root.display(),
                if d.controllers.is_empty() {
                    "none".to_string()
                } else {
                    d.controllers.join(" ")
                }
            ),
            Containment::ProcessGroups(why) => {
                format!("process groups (no per-session cgroups: {why})")
            }
        }
    }

    /// Why a profile's limit cannot be enforced here, for each limit that
    /// cannot.
    pub fn unenforceable(&self, limits: &Limits) -> Vec<(&'static str, String)> {
        limits
            .files()
            .into_iter()
            .filter_map(|(key, controller, ..)| match self {
                Containment::ProcessGroups(why) => Some((key, why.clone())),
                Containment::Cgroups(d) if !d.controllers.iter().any(|c| c == controller) => {
                    Some((
                        key,
                        format!(
                            "the {controller} controller is not available in {}",
                            d.root.display()
                        ),
                    ))
                }
                Containment::Cgroups(_) => None,
            })
            .collect()
    }

    /// A cgroup for one session with `limits` in force, and its directory
    /// opened for `clone3`'s `CLONE_INTO_CGROUP`; `None` in process-group
    /// mode.
    pub fn session(
        &self,
        id: &str,
        limits: &Limits,
    ) -> io::Result<Option<(SessionCgroup, OwnedFd)>> {
        match self {
            Containment::Cgroups(d) => d.session(id, limits).map(Some),
            Containment::ProcessGroups(_) => Ok(None),
        }
    }

    /// Kills what is left in a session's cgroup and removes it (a session
    /// whose serving process died).
    pub fn kill_session(&self, id: &str) {
        if let Containment::Cgroups(d) = self {
            if !id.is_empty() && !id.contains('/') && !id.starts_with('.') {
                let s = SessionCgroup::at(d.root.join(id));
                if s.path().is_dir() {
                    s.kill();
                    s.remove_blocking(Duration::from_secs(2));
                }
            }
        }
    }

    /// Kills and removes the session cgroups found at start-up, except
    /// those of `spare` (sessions a live daemon process still serves: one
    /// draining after a hand-over). Returns how many still had processes.
    pub fn kill_leftovers(&self, spare: &[String]) -> usize {
        let Containment::Cgroups(d) = self else {
            return 0;
        };
        let found = std::mem::take(&mut *d.found.lock().unwrap_or_else(|e| e.into_inner()));
        let mut killed = 0;
        for dir in found {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| spare.contains(&n)) {
                continue;
            }
            let s = SessionCgroup::at(dir);
            if s.populated() {
                killed += 1;
            }
            s.kill();
            s.remove_blocking(Duration::from_secs(2));
        }
        killed
    }
}

/// The daemon's delegated cgroup.
#[derive(Debug)]
pub struct Delegated {
    root: PathBuf,
    /// Enabled for the session cgroups.
    controllers: Vec<String>,
    /// Session cgroups found at start-up, until [`Containment::kill_leftovers`].
    found: std::sync::Mutex<Vec<PathBuf>>,
}

impl Delegated {
    fn take_over(successor: bool) -> Result<Delegated, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no cgroup v2 hierarchy (the machine uses cgroup v1 only)")?;
        if rel == "/" {
            return Err("the daemon runs in the root cgroup, which is nobody's to delegate".into());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mut root = cgroup2_dir(&mounts, rel).ok_or("cgroup v2 is not mounted")?;
        // Started by a hand-over: in the leaf of the process before it.
        if is_daemon_leaf(&root) && !delegated(&root) {
            if let Some(parent) = root.parent().filter(|p| delegated(p)) {
                root = parent.to_path_buf();
            }
        }
        if !delegated(&root) {
            return Err(format!(
                "{} was not delegated (no trusted.delegate or user.delegate mark; systemd sets it with Delegate=yes)",
                root.display()
            ));
        }
        for f in ["", "cgroup.procs", "cgroup.subtree_control"] {
            let p = root.join(f);
            access(&p, AccessFlags::W_OK)
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        }
        if !root.join("cgroup.kill").exists() {
            return Err("the kernel has no cgroup.kill (Linux 5.14 or later is needed)".into());
        }
        // No process may stay in a cgroup whose children have controllers:
        // everything systemd started in the unit moves to the leaf. A
        // successor moves only itself, to a leaf of its own.
        let leaf = root.join(if successor {
            format!("{DAEMON_LEAF}.{}", std::process::id())
        } else {
            DAEMON_LEAF.to_string()
        });
        mkdir(&leaf)?;
        let procs = if successor {
            std::process::id().to_string()
        } else {
            read(&root.join("cgroup.procs"))?
        };
        for pid in procs.split_whitespace() {
            if let Err(e) = std::fs::write(leaf.join("cgroup.procs"), pid) {
                // A process that exited in the meantime.
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(format!(
                        "cannot move process {pid} into {}: {e}",
                        leaf.display()
                    ));
                }
            }
        }
        // Sessions of an earlier run, killed once the journal says which
        // are still served; empty leaves of processes that ended go now.
        let mut found = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&root) {
            for entry in dir.flatten() {
                let path = entry.path();
                if !path.is_dir() || path == leaf {
                    continue;
                }
                if is_daemon_leaf(&path) {
                    let _ = std::fs::remove_dir(&path);
                } else {
                    found.push(path);
                }
            }
        }
        let available = read(&root.join("cgroup.controllers"))?;
        let mut controllers = Vec::new();
        for c in WANTED {
            if available.split_whitespace().any(|a| a == c)
                && std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}")).is_ok()
            {
                controllers.push(c.to_string());
            }
        }
        Ok(Delegated {
            root,
            controllers,
            found: std::sync::Mutex::new(found),
        })
    }

    fn session(&self, id: &str, limits: &Limits) -> io::Result<(SessionCgroup, OwnedFd)> {
        if id.is_empty()
            || id == DAEMON_LEAF
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("\"{id}\" cannot name a cgroup"),
            ));
        }
        let dir = self.root.join(id);
        std::fs::create_dir(&dir)?;
        let cg = SessionCgroup::at(dir);
        let fd = match cg.open() {
            Ok(fd) => fd,
            Err(e) => {
                cg.remove_blocking(Duration::ZERO);
                return Err(e);
            }
        };
        for (key, controller, file, value) in limits.files() {
            if !self.controllers.iter().any(|c| c == controller) {
                // Said once at startup and reload, per profile.
                continue;
            }
            if let Err(e) = std::fs::write(cg.dir.join(file), &value) {
                cg.remove_blocking(Duration::ZERO);
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot set {key} ({file} = {value}): {e}"),
                ));
            }
        }
        Ok((cg, fd))
    }
}

/// Where the cgroup v2 hierarchy shows `rel` (a path from /proc/self/cgroup).
fn cgroup2_dir(mountinfo: &str, rel: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        let (root, mount) = (*f.get(3)?, *f.get(4)?);
        // The mount may show only a subtree (a cgroup namespace).
        let below = if root == "/" {
            rel
        } else {
            rel.strip_prefix(root)?
        };
        Some(Path::new(mount).join(below.trim_start_matches('/')))
    })
}

/// True when systemd (or whoever made the cgroup) marked it delegated.
/// `daemon` or `daemon.PID`: where daemon processes live, not a session.
fn is_daemon_leaf(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n == DAEMON_LEAF
            || n.strip_prefix(DAEMON_LEAF)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn delegated(dir: &Path) -> bool {
    ["trusted.delegate", "user.delegate"]
        .iter()
        .any(|name| xattr(dir, name).as_deref() == Some(b"1".as_slice()))
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: NUL-terminated strings and a buffer of the length given.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn mkdir(p: &Path) -> Result<(), String> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", p.display())),
    }
}

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// One session's cgroup.
#[derive(Debug)]
pub struct SessionCgroup {
    dir: PathBuf,
    /// Removed already (found empty by [`SessionCgroup::remove_if_empty`]).
    removed: std::sync::atomic::AtomicBool,
}

impl SessionCgroup {
    fn at(dir: PathBuf) -> SessionCgroup {
        SessionCgroup {
            dir,
            removed: Default::default(),
        }
    }

    /// Removes the cgroup if no process is left in it; true when it is
    /// gone. The kernel refuses to remove a populated cgroup (EBUSY), so
    /// this is also the cheapest look at whether anything is left: no
    /// `cgroup.events` to open and read.
    pub fn remove_if_empty(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.removed.load(Ordering::Acquire) {
            return true;
        }
        let gone = match std::fs::remove_dir(&self.dir) {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        self.removed.store(gone, Ordering::Release);
        gone
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn open(&self) -> io::Result<OwnedFd> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir)?;
        Ok(f.into())
    }

    /// True while a process of the session is alive.
    pub fn populated(&self) -> bool {
        // One read: `populated N` is the file's first line (read_to_string
        // would stat it and read twice).
        let mut buf = [0u8; 256];
        let n = std::fs::File::open(self.dir.join("cgroup.events"))
            .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
            .unwrap_or(0);
        buf[..n].split(|&b| b == b'\n').any(|l| l == b"populated 1")
    }

    /// Sends `sig` to every process in the cgroup.
    pub fn signal(&self, sig: Signal) {
        if sig == Signal::SIGKILL {
            self.kill();
            return;
        }
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// SIGKILL to everything in the cgroup at once, forks in flight included.
    pub fn kill(&self) {
        if let Err(e) = std::fs::write(self.dir.join("cgroup.kill"), "1") {
            tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot write cgroup.kill");
        }
    }

    /// Removes the cgroup, waiting up to `limit` for it to empty.
    pub async fn remove(self, limit: Duration) {
        if self.removed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let until = Instant::now() + limit;
        while self.rmdir(Instant::now() < until) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(super) fn remove_blocking(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.rmdir(Instant::now() < until) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One try at removing the cgroup; true when it still has processes
    /// (EBUSY: the kernel refuses to remove a populated cgroup, which is
    /// the check, without reading `cgroup.events` first) and `again`.
    fn rmdir(&self, again: bool) -> bool {
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && again => true,
            Err(e) => {
                tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot remove a session's cgroup");
                false
            }
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_mount_is_found_whole_or_as_a_namespace_subtree() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_dir(hybrid, "/system.slice/tollgate.service"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/tollgate.service"
            ))
        );
        let ns = "30 25 0:26 /system.slice/x.service /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_dir(ns, "/system.slice/x.service/inner"),
            Some(PathBuf::from("/sys/fs/cgroup/inner"))
        );
        assert_eq!(cgroup2_dir(ns, "/elsewhere"), None);
        assert_eq!(cgroup2_dir("", "/a"), None);
    }

    #[test]
    fn limits_become_cgroup_files() {
        let l = Limits {
            memory_max: Some(64 << 20),
            pids_max: Some(32),
            cpu_weight: Some(50),
            cpu_max_percent: Some(150),
        };
        let files: Vec<_> = l.files().into_iter().map(|(_, _, f, v)| (f, v)).collect();
        assert_eq!(
            files,
            vec![
                ("memory.max", "67108864".to_string()),
                ("pids.max", "32".to_string()),
                ("cpu.weight", "50".to_string()),
                ("cpu.max", "150000 100000".to_string()),
            ]
        );
        assert_eq!(
            Containment::ProcessGroups("why".into())
                .unenforceable(&l)
                .len(),
            4
        );
        assert!(Limits::default().files().is_empty());
    }
}

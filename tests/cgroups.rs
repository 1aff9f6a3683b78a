//! Per-session cgroups (the systemd issue, acceptance 3): in a delegated
//! cgroup, a session that ran `setsid … &` and disconnected leaves nothing
//! behind, and the profile's `pids_max` and `memory_max` are in force. The
//! test makes its own delegated cgroup (marked the way systemd marks one
//! for `Delegate=yes`) under the cgroup v2 hierarchy when it can, and says
//! so when it cannot.
mod common;
use common::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A cgroup made for one test, removed (with anything left in it) at the end.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    /// A child of this process's own cgroup v2, marked delegated when asked.
    fn make(tag: &str, delegated: bool) -> Result<TestCgroup, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("the tests do not run as root".into());
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no cgroup v2 hierarchy on this machine")?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mount = mounts
            .lines()
            .filter(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|r| r.starts_with("cgroup2 "))
            })
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(3) == Some(&"/")).then(|| f[4].to_string())
            })
            .ok_or("cgroup v2 is not mounted (whole) on this machine")?;
        let parent = Path::new(&mount).join(rel.trim_start_matches('/'));
        let dir = parent.join(format!("tollgate-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cg = TestCgroup { dir };
        // Offer the session controllers when the parent has them (best effort:
        // a parent with processes of its own cannot).
        let offered =
            std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        for c in ["cpu", "memory", "pids"] {
            if offered.split_whitespace().any(|o| o == c) {
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
            }
        }
        if delegated {
            let p = CString::new(cg.dir.as_os_str().as_bytes()).unwrap();
            // SAFETY: NUL-terminated path and name, a one-byte value.
            let r = unsafe {
                libc::setxattr(
                    p.as_ptr(),
                    c"trusted.delegate".as_ptr(),
                    b"1".as_ptr().cast(),
                    1,
                    0,
                )
            };
            if r != 0 {
                return Err(format!(
                    "cannot mark {} delegated: {}",
                    cg.dir.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(cg)
    }

    fn controllers(&self) -> String {
        std::fs::read_to_string(self.dir.join("cgroup.controllers")).unwrap_or_default()
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers()
            .split_whitespace()
            .any(|c| c == controller)
    }

    /// Starts the server's daemon inside this cgroup.
    fn start(&self, s: &mut Server) {
        let procs = CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        let mut c = s.serve_command();
        // As under the unit's LimitNOFILE=SOFT:HARD: the daemon raises its own.
        lower_nofile(&mut c, 1000);
        // SAFETY: only open/write/close between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        s.child = Some(c.spawn().unwrap());
        s.wait_listening();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let empty = || {
            std::fs::read_to_string(self.dir.join("cgroup.events"))
                .is_ok_and(|e| e.contains("populated 0"))
        };
        eventually(Duration::from_secs(5), empty);
        if let Ok(d) = std::fs::read_dir(&self.dir) {
            for e in d.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn a_session_that_called_setsid_leaves_nothing_behind_and_its_limits_hold() {
    let cg = match TestCgroup::make("session", true) {
        Ok(cg) => cg,
        Err(why) => {
            println!("NOT TESTED: per-session cgroups (cannot make a delegated cgroup: {why})");
            return;
        }
    };
    let mut s = Server::configure(
        "cgroups",
        Opts {
            profile_extra:
                "allow_exec = true\npids_max = 40\nmemory_max = \"64MiB\"\ncpu_weight = 50\n".into(),
            tail: format!(
                "[profiles.missing]\nuser = \"{}\"\ncommand = \"/no/such/program\"\n",
                session_user()
            ),
            ..Opts::default()
        },
    );
    cg.start(&mut s);
    let log = s.log_text();
    assert!(
        log.contains(&format!(
            "sessions are contained by per-session cgroups under {}",
            cg.dir.display()
        )),
        "{log}"
    );
    // The daemon moved itself into a leaf of its own.
    let leaf = std::fs::read_to_string(cg.dir.join("daemon/cgroup.procs")).unwrap();
    assert!(
        leaf.split_whitespace().any(|p| p == s.pid().to_string()),
        "the daemon ({}) is not in daemon/: {leaf:?}",
        s.pid()
    );

    // Started in its cgroup with the open-file limit the daemon started with.
    let (nid, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "cat /proc/self/cgroup /proc/self/limits");
    let o = text(&out.stdout);
    assert!(o.contains(&format!("/{nid}\n")), "{o}");
    let daemon = std::fs::read_to_string(format!("/proc/{}/limits", s.pid())).unwrap();
    assert_eq!(nofile_of(&o), ("1000".into(), nofile_of(&daemon).1), "{o}");
    // Its command exited and left nothing: the cgroup is removed.
    s.wait_state(&nid, "terminated", Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(3), || !cg.dir.join(&nid).exists()).is_some(),
        "an ended session's cgroup was left"
    );
    // A cgroup that cannot be made (its name is taken): the session is
    // refused with the reason, and nothing runs.
    let (taken, tok) = s.issue("ops", &[]);
    std::fs::create_dir(cg.dir.join(&taken)).unwrap();
    let out = s.ssh_run("ops", &tok, &[], "echo ran");
    assert!(!text(&out.stdout).contains("ran"), "{}", text(&out.stdout));
    let err = s.events_of(Some(&taken), "session.error");
    let why = err[0]["detail"]["error"].as_str().unwrap_or_default();
    assert!(why.starts_with("cgroup: "), "{err:?}");
    assert!(s.events_of(Some(&taken), "session.started").is_empty());
    std::fs::remove_dir(cg.dir.join(&taken)).unwrap();
    // A command that cannot start: its cgroup, made first, is removed.
    let (missing, tok) = s.issue_profile("missing", "ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "");
    assert!(!out.status.success());
    let err = s.events_of(Some(&missing), "session.error");
    assert!(
        err[0]["detail"]["error"]
            .as_str()
            .is_some_and(|e| !e.starts_with("cgroup: ")),
        "{err:?}"
    );
    assert!(
        !cg.dir.join(&missing).exists(),
        "the cgroup of a session that did not start was left"
    );
    // A command that exits leaving a job with none of the session's
    // descriptors (nothing for the output pumps to wait on): the look for
    // what is left must find it in the cgroup (the removal is refused),
    // and it is killed.
    let (did, tok) = s.issue("ops", &[]);
    let out = s.ssh_run(
        "ops",
        &tok,
        &[],
        "setsid sh -c 'sleep 7309' </dev/null >/dev/null 2>&1 & echo detached",
    );
    assert_eq!(text(&out.stdout), "detached\n", "{}", text(&out.stderr));
    assert!(
        eventually(Duration::from_secs(5), || pids_matching("sleep 7309")
            .is_empty())
        .is_some(),
        "the detached job outlived its session"
    );
    assert!(
        eventually(Duration::from_secs(3), || !cg.dir.join(&did).exists()).is_some(),
        "the detached job's session cgroup was left"
    );

    // `setsid` and a second fork: a new session id, reparented away from
    // the session's leader, out of reach of its process group.
    let (id, mut ssh) = live(&s, "setsid sh -c 'sleep 7301 &'; echo started; sleep 7302");
    // "started" is printed before the shell has forked `sleep 7302`:
    // both are waited for.
    assert!(
        eventually(Duration::from_secs(5), || pids_matching("sleep 7301").len()
            == 1
            && !pids_matching("sleep 7302").is_empty())
        .is_some()
    );
    let escaped = pids_matching("sleep 7301")[0];
    let leader = pids_matching("sleep 7302");
    let session_cg = cgroup_of(escaped);
    assert!(
        session_cg.ends_with(&format!("/{id}")),
        "the double-forked process is in {session_cg:?}, not the session's cgroup"
    );
    assert_ne!(
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(escaped))).unwrap(),
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(leader[0]))).unwrap(),
        "setsid did not give the background job a session of its own"
    );
    let started = s.events_of(Some(&id), "session.started");
    let dir = cg.dir.join(&id);
    assert_eq!(started[0]["detail"]["cgroup"], dir.display().to_string());
    if cg.has("cpu") {
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.weight")).unwrap(),
            "50\n"
        );
    }

    ssh.kill().unwrap(); // the client vanishes
    ssh.wait().unwrap();
    let gone = eventually(Duration::from_secs(4), || {
        pids_matching("sleep 7301").is_empty() && pids_matching("sleep 7302").is_empty()
    });
    assert!(
        gone.is_some(),
        "the setsid'd process survived the disconnect"
    );
    assert!(
        eventually(Duration::from_secs(3), || !dir.exists()).is_some(),
        "the session's cgroup was not removed"
    );
    s.wait_state(&id, "terminated", Duration::from_secs(5));

    // pids_max: a session that tries to start 60 background jobs gets no
    // more than 40 processes at once.
    if cg.has("pids") {
        let (id, mut ssh) = live(
            &s,
            "( for i in $(seq 60); do sleep 7303 & done ) 2>/dev/null; echo started; sleep 7304",
        );
        let dir = cg.dir.join(&id);
        let running = pids_matching("sleep 7303").len();
        let max = std::fs::read_to_string(dir.join("pids.max")).unwrap_or_default();
        let events = std::fs::read_to_string(dir.join("pids.events")).unwrap_or_default();
        println!("pids_max = 40: {running} of 60 background jobs started; pids.events {events:?}");
        assert_eq!(max, "40\n");
        assert!(
            (1..40).contains(&running),
            "{running} sleeps ran under pids_max = 40"
        );
        assert!(
            !events.contains("max 0"),
            "the limit was never hit: {events:?}"
        );
        ssh.kill().unwrap();
        ssh.wait().unwrap();
        s.wait_state(&id, "terminated", Duration::from_secs(5));
    } else {
        assert!(!limits_required(), "no pids controller in cgroup v2 here");
        println!(
            "NOT TESTED: pids_max (the pids controller is not available to {}; its cgroup.controllers: {:?})",
            cg.dir.display(),
            cg.controllers().trim()
        );
        assert!(s
            .log_text()
            .contains("profiles.console.pids_max is not enforced"));
    }
    // memory_max: a shell that holds 200 MB in a variable is killed.
    if cg.has("memory") {
        let (id, tok) = s.issue("ops", &[]);
        let out = s.ssh_run(
            "ops",
            &tok,
            &[],
            "cat /proc/self/cgroup; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
        );
        let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
        println!(
            "memory_max = 64MiB: stdout {:?}, exit_signal {}",
            text(&out.stdout),
            v["exit_signal"]
        );
        assert!(
            text(&out.stdout).contains(&id),
            "not in the session's cgroup"
        );
        assert!(!text(&out.stdout).contains("survived"));
        assert_eq!(v["exit_signal"], "KILL");
    } else {
        assert!(!limits_required(), "no memory controller in cgroup v2 here");
        println!(
            "NOT TESTED: memory_max (the memory controller is not available to {}; its cgroup.controllers: {:?})",
            cg.dir.display(),
            cg.controllers().trim()
        );
        assert!(s
            .log_text()
            .contains("profiles.console.memory_max is not enforced"));
    }
}

/// Set inside User-Mode Linux (below): the limits must be checked there.
fn limits_required() -> bool {
    std::env::var_os("TOLLGATE_TEST_LIMITS").is_some()
}

/// Where this machine does not offer the memory and pids controllers to
/// cgroup v2 (a hybrid v1 layout, like the development machine's), the test
/// above runs again inside User-Mode Linux: a real Linux kernel with a pure
/// cgroup v2 hierarchy, booted as a process on this machine's own files
/// (hostfs), where the limits must hold.
#[test]
fn the_limits_hold_on_a_pure_cgroup_v2_kernel() {
    if limits_required() {
        return; // already inside
    }
    let here = TestCgroup::make("probe", false).map(|cg| cg.has("pids") && cg.has("memory"));
    if here == Ok(true) {
        println!("the limits are checked on this machine itself");
        return;
    }
    if !Path::new("/usr/bin/linux.uml").exists() || !nix::unistd::Uid::effective().is_root() {
        println!("NOT TESTED: limits on a pure cgroup v2 kernel (needs root and user-mode-linux)");
        return;
    }
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("uml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.txt");
    let init = dir.join("init.sh");
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        &init,
        format!(
            r#"#!/bin/sh
# PID 1 of the guest: a minimal machine with cgroup v2 alone, then the test.
# The test's files go to a tmpfs of the guest's own (the checkout itself may
# be anywhere, /tmp included, and stays visible).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TOLLGATE_TEST_LIMITS=1 TMPDIR=/run/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs run /run
mkdir /run/tmp
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts -o ptmxmode=0666,newinstance devpts /dev/pts && ln -sf pts/ptmx /dev/ptmx
mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up 2>/dev/null || ifconfig lo up
{{
  echo "guest kernel $(uname -r), cgroup v2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
  cd {cwd} && {exe} --exact a_session_that_called_setsid_leaves_nothing_behind_and_its_limits_hold --nocapture
  echo "exit $?"
}} >{out} 2>&1
sync
echo o >/proc/sysrq-trigger
"#,
            cwd = shell_quote(&std::env::current_dir().unwrap().display().to_string()),
            exe = shell_quote(&exe.display().to_string()),
            out = shell_quote(&out.display().to_string()),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Debian's UML through the wrapper that lets it boot where the host's
    // XSAVE area is larger than its own (AVX-512, AMX): scripts/uml.
    let uml = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/uml");
    // The wrapper's own errors (building its preload) land in the console
    // file too.
    let console = std::fs::File::create(dir.join("console.txt")).unwrap();
    let console_err = console.try_clone().unwrap();
    let mut guest = std::process::Command::new(uml)
        .args([
            "mem=1G",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            "con=null",
            "con0=null,fd:1",
        ])
        .arg(format!("init={}", init.display()))
        .env("TMPDIR", &dir)
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err)
        .process_group(0)
        .spawn()
        .unwrap();
    let done = eventually(Duration::from_secs(300), || {
        guest.try_wait().unwrap().is_some()
    });
    if done.is_none() {
        // The guest's processes are host processes in UML's process group:
        // killing UML alone would leave them running. (UML is not reaped
        // yet, so the group is still its own.)
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(guest.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = guest.wait();
    }
    let report = std::fs::read_to_string(&out).unwrap_or_default();
    let console = std::fs::read_to_string(dir.join("console.txt")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    println!("{report}");
    assert!(
        done.is_some(),
        "the guest did not finish in 300 s: {console}"
    );
    assert!(
        report.contains("cgroup v2 controllers:"),
        "the guest did not start: {console}"
    );
    assert!(
        report.contains("pids_max = 40:") && report.contains("memory_max = 64MiB:"),
        "{report}"
    );
    assert!(
        report.contains("test result: ok. 1 passed") && report.contains("exit 0"),
        "{report}"
    );
}

/// Starts `ssh -tt … CMD` and waits until it prints "started".
fn live(s: &Server, cmd: &str) -> (String, std::process::Child) {
    let (id, tok) = s.issue("ops", &[]);
    let mut ssh = s.ssh("ops", &tok);
    ssh.args(["-tt", cmd])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ssh = ssh.spawn().unwrap();
    let mut out = buffered(ssh.stdout.take().unwrap());
    read_until(&mut out, "started");
    (id, ssh)
}

#[test]
fn a_hand_over_leaves_the_old_sessions_in_their_cgroups_and_takes_a_leaf_of_its_own() {
    let cg = match TestCgroup::make("handover", true) {
        Ok(cg) => cg,
        Err(why) => {
            println!("NOT TESTED: hand-over with per-session cgroups (cannot make a delegated cgroup: {why})");
            return;
        }
    };
    let mut s = Server::configure("cgroups-handover", Opts::default());
    cg.start(&mut s);
    let old_pid = s.pid();
    // A session on the old process with a job that left its process group.
    let (old_id, mut old_ssh) = live(&s, "setsid sh -c 'sleep 7401 &'; echo started; sleep 7402");
    assert!(
        eventually(Duration::from_secs(5), || pids_matching("sleep 7401").len()
            == 1)
        .is_some()
    );
    let old_dir = cg.dir.join(&old_id);
    assert!(old_dir.is_dir());

    let new_pid = s.hand_over(old_pid);
    let guard = KillOnDrop(new_pid);
    // The new process left the old one's leaf for one of its own, and
    // touched neither the old session's cgroup nor what runs in it.
    let leaf = format!("daemon.{new_pid}");
    assert!(
        cgroup_of(new_pid).ends_with(&format!("/{leaf}")),
        "the new process is in {:?}",
        cgroup_of(new_pid)
    );
    assert!(
        cgroup_of(old_pid).ends_with("/daemon"),
        "{}",
        cgroup_of(old_pid)
    );
    assert!(old_dir.is_dir(), "the old session's cgroup went");
    assert_eq!(
        pids_matching("sleep 7401").len(),
        1,
        "the old session's job was killed"
    );
    // Sessions of the new process start in cgroups of their own.
    let (nid, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "cat /proc/self/cgroup");
    assert!(text(&out.stdout).contains(&format!("/{nid}\n")), "{out:?}");

    // Canceled, the old session still ends whole (cgroup.kill, from the old
    // process), and the old process, with nothing left, exits.
    s.cli(&["session", "cancel", &old_id]);
    let v = s.wait_state(&old_id, "terminated", Duration::from_secs(10));
    assert_eq!(v["end_reason"], "canceled", "{v:#}");
    assert!(
        eventually(Duration::from_secs(5), || pids_matching("sleep 7401")
            .is_empty()
            && !old_dir.exists())
        .is_some(),
        "the old session's setsid'd job or cgroup survived its end"
    );
    let _ = old_ssh.wait();
    let old = s.child.as_mut().unwrap();
    assert!(eventually(Duration::from_secs(10), || old
        .try_wait()
        .unwrap()
        .is_some())
    .is_some());
    drop(guard);
}

/// A daemon process the test did not start (a hand-over did): SIGTERM at
/// the end, then SIGKILL if it is still there.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if eventually(Duration::from_secs(10), || !running(self.0)).is_none() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn a_cgroup_nobody_delegated_is_left_alone() {
    let cg = match TestCgroup::make("undelegated", false) {
        Ok(cg) => cg,
        Err(why) => {
            println!("NOT TESTED: (cannot make a cgroup: {why})");
            return;
        }
    };
    let mut s = Server::configure(
        "cgroups-off",
        Opts {
            profile_extra: "allow_exec = true\npids_max = 40\n".into(),
            ..Opts::default()
        },
    );
    cg.start(&mut s);
    let log = s.log_text();
    assert!(
        log.contains("sessions are contained by process groups (no per-session cgroups:")
            && log.contains("was not delegated"),
        "{log}"
    );
    assert!(
        log.contains("profiles.console.pids_max is not enforced"),
        "{log}"
    );
    assert!(
        !cg.dir.join("daemon").exists(),
        "it took over a cgroup nobody delegated"
    );
    // Sessions still run and end as before.
    let (id, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "echo ran-$TOLLGATE_SESSION_ID");
    assert!(text(&out.stdout).contains(&format!("ran-{id}")));
    // The start is queued, not waited for, and the end recorded after the
    // client is told: once the end is in the journal, so is the start.
    s.wait_state(&id, "terminated", Duration::from_secs(10));
    let started = s.events_of(Some(&id), "session.started");
    assert!(started[0]["detail"]["cgroup"].is_null());
}

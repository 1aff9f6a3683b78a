//! SIGUSR2: the hand-over to a new binary. The old process starts the
//! binary at the path it was started from (a package upgrade has replaced
//! the file by then) with the listeners, waits until the new process
//! accepts, names it the service's main process (`MAINPID=`), and from then
//! on serves only its live sessions: it exits when the last one ends, or
//! ends those left at `server.handover_deadline` (`daemon_upgraded`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::exec::handover::{self as passing, owner_alive};
use crate::journal::{EndReason, EventKind};
use crate::notify::Notifier;
use crate::state::{Current, Shared};

use super::signals::{Sig, Signals};

/// Set once this process handed over: it only drains from then on, and
/// leaves what belongs to the node as a whole (forwarding the journal's
/// events, the drains' recorded state, expiry, retention) to the new one.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Whether this process handed its listeners over and only drains.
pub(super) fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::Relaxed)
}

/// The binary and arguments this process was started with, taken at start
/// (before an upgrade replaces the file at that path).
static STARTED_AS: OnceLock<(PathBuf, Vec<OsString>)> = OnceLock::new();

/// Records the binary's path and arguments for a later hand-over.
pub(super) fn remember_invocation() {
    STARTED_AS.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        // Already replaced on disk: the path is what /proc shows before
        // " (deleted)".
        let exe = exe
            .to_str()
            .and_then(|s| s.strip_suffix(" (deleted)"))
            .map(PathBuf::from)
            .unwrap_or(exe);
        (exe, std::env::args_os().skip(1).collect())
    });
}

/// Starts the new binary with `listeners` (`kind`, configured address,
/// descriptor) and waits until it accepts. On success the caller stops
/// accepting and then calls [`finish`]; on failure nothing changed (said
/// in the log and the journal).
pub(super) async fn start(
    shared: &Arc<Shared>,
    listeners: Vec<(&'static str, SocketAddr, RawFd)>,
    notifier: &Notifier,
) -> Option<passing::Successor> {
    let (exe, args) = STARTED_AS.get().cloned()?;
    tracing::info!(binary = %exe.display(), "SIGUSR2: handing over to the binary at the path this one started from");
    notifier.status(&format!("handing over to {}", exe.display()));
    let limit = Duration::from_secs(60);
    let started = tokio::task::spawn_blocking(move || {
        let mut s = passing::start_successor(&exe, &args, &listeners)?;
        match s.wait_ready(limit) {
            Ok(()) => Ok(s),
            Err(e) => {
                s.abandon();
                Err(e)
            }
        }
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    match started {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "hand-over failed; this process goes on serving");
            let detail = serde_json::json!({"error": e.to_string()});
            if let Err(e) = shared
                .db
                .call(move |j| j.event(None, EventKind::DaemonHandoverFailed, detail))
                .await
            {
                tracing::error!(error = %e, "could not record daemon.handover_failed");
            }
            None
        }
    }
}

/// Once this process no longer accepts: names the new process the main one
/// (`MAINPID=`), tells it so (it then says `READY=1`), and records the
/// hand-over. This process only drains from now on.
pub(super) async fn finish(
    shared: &Arc<Shared>,
    successor: passing::Successor,
    notifier: &mut Notifier,
) {
    let live = shared.live_count();
    let pid = successor.pid;
    // The new process is the main one before it says READY=1; from here on
    // this one's notifications would be refused (NotifyAccess=main).
    notifier.send(&[
        format!("MAINPID={pid}"),
        format!(
            "STATUS=handed over to pid {pid}; pid {} drains {live} session(s)",
            std::process::id()
        ),
    ]);
    notifier.disown();
    HANDED_OVER.store(true, Ordering::Relaxed);
    if let Err(e) = successor.confirm() {
        tracing::warn!(error = %e, "could not tell the new process it is the main one (it goes on regardless)");
    }
    tracing::info!(
        new_pid = pid,
        sessions = live,
        "handed over; serving only the live sessions from now on"
    );
    let detail = serde_json::json!({
        "pid": std::process::id(), "version": crate::version::current(),
        "new_pid": pid, "sessions": live,
        "deadline": humantime::format_duration(shared.config.server.handover_deadline).to_string(),
    });
    if let Err(e) = shared
        .db
        .call(move |j| j.event(None, EventKind::DaemonHandedOver, detail))
        .await
    {
        tracing::error!(error = %e, "could not record daemon.handed_over");
    }
}

/// After a hand-over: waits until the last live session ends, or the
/// deadline (then they end `daemon_upgraded`), or SIGTERM (`daemon_stopped`).
/// Returns the reason to end what is left with.
pub(super) async fn drain(current: &Arc<Current>, signals: &mut Signals) -> EndReason {
    let deadline = tokio::time::Instant::now() + current.get().config.server.handover_deadline;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Sig::Stop => return EndReason::DaemonStopped,
                Sig::Reload | Sig::Upgrade => {
                    tracing::info!("this process handed over and only drains: the signal is for the new one");
                }
            },
            _ = tick.tick() => {
                // Connections still authenticating count: each may yet
                // become a session here.
                if current.get().live_count() == 0 && crate::ssh::open_connections() == 0 {
                    tracing::info!("the last connection served by this process ended");
                    return EndReason::DaemonUpgraded;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(sessions = current.get().live_count(), "server.handover_deadline reached: ending the sessions left (daemon_upgraded)");
                    return EndReason::DaemonUpgraded;
                }
            }
        }
    }
}

/// On the way out of the main process: the processes still draining
/// sessions of this node after earlier hand-overs end theirs too (SIGTERM),
/// so a stop or restart ends every session. Returns their pids.
pub(super) async fn stop_predecessors(shared: &Shared) -> Vec<i32> {
    let owners = match shared.db.call(|j| j.live_owners()).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which processes serve live sessions");
            return Vec::new();
        }
    };
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = owners
        .iter()
        .filter_map(|(_, o)| o.as_deref().and_then(owner_alive))
        .filter(|&p| p != me)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    for &pid in &pids {
        tracing::info!(
            pid,
            "stopping a process still draining sessions after a hand-over"
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    pids
}

/// Waits until each of `pids` has exited, at most `limit`.
pub(super) async fn wait_gone(pids: &[i32], limit: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < limit && pids.iter().any(|&p| passing::running(p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status line's note on a predecessor still draining.
pub(super) fn predecessor_note(from: Option<&str>) -> String {
    match from.and_then(owner_alive) {
        Some(pid) => format!("; pid {pid} (before the hand-over) still drains its sessions"),
        None => String::new(),
    }
}

/// The file that tells the package's upgrade script this process takes
/// SIGUSR2 as a hand-over (`$RUNTIME_DIRECTORY/handover`, holding its pid):
/// a daemon of a version before hand-overs would die of the signal, so the
/// script restarts one that has not written it.
fn marker() -> Option<PathBuf> {
    let dir = std::env::var_os("RUNTIME_DIRECTORY")?;
    // systemd may name several, separated by ':'; the first is the unit's.
    let first = std::env::split_paths(&dir).next()?;
    Some(first.join("handover"))
}

/// Writes the marker once this process is the service's main one.
pub(super) fn advertise() {
    if let Some(path) = marker() {
        if let Err(e) = std::fs::write(&path, format!("{}\n", std::process::id())) {
            tracing::warn!(file = %path.display(), error = %e, "cannot say that this process takes SIGUSR2 (upgrades will restart it instead)");
        }
    }
}

/// Removes the marker when the main process stops (it names this one).
pub(super) fn withdraw() {
    if let Some(path) = marker() {
        let mine = format!("{}\n", std::process::id());
        if std::fs::read_to_string(&path).is_ok_and(|s| s == mine) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

//! One reaper for every process the daemon starts: a thread blocked in
//! `waitpid(-1)` hands each exit status to whoever watches that pid. A
//! session costs no descriptor for its leader (a pidfd each, before), and
//! nothing is polled.
//!
//! The daemon starts no child it reaps itself, so the reaper owns them all.
//! A child may exit before it is watched (the status waits in `early`), and
//! one that failed before exec is discarded.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Condvar, Mutex, OnceLock};

use tokio::sync::oneshot;

#[derive(Default)]
struct Table {
    /// Watched pids not yet reaped.
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
    /// Reaped before anyone watched them.
    early: HashMap<i32, ExitStatus>,
    /// Whose status nobody wants.
    discard: HashSet<i32>,
    /// Counts calls to [`watch`] and [`discard`]: a reaper that found no
    /// child sleeps until it changes.
    generation: u64,
}

struct Reaper {
    table: Mutex<Table>,
    wake: Condvar,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let r: &'static Reaper = Box::leak(Box::new(Reaper {
            table: Mutex::default(),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("tollgate-reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || r.run())
            .expect("cannot start the reaper thread");
        r
    })
}

impl Reaper {
    fn run(&self) {
        loop {
            let seen = self.lock().generation;
            let mut raw = 0;
            // SAFETY: waitpid into a local; every child of the daemon is ours.
            let pid = unsafe { libc::waitpid(-1, &mut raw, 0) };
            let mut t = self.lock();
            if pid < 0 {
                // ECHILD: no child now. One started after `seen` was read
                // has changed the generation by the time it is watched; one
                // started before would have been waited for.
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                    while t.generation == seen {
                        t = self.wake.wait(t).unwrap_or_else(|e| e.into_inner());
                    }
                }
                continue;
            }
            let status = ExitStatus::from_raw(raw);
            if t.discard.remove(&pid) {
                continue;
            }
            match t.waiting.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    t.early.insert(pid, status);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a child the reaper must now wait for.
    fn changed(&self, mut t: std::sync::MutexGuard<'_, Table>) {
        t.generation += 1;
        drop(t);
        self.wake.notify_one();
    }
}

/// The exit status of `pid`, a child just started.
pub(super) fn watch(pid: i32) -> oneshot::Receiver<ExitStatus> {
    let (tx, rx) = oneshot::channel();
    let r = reaper();
    let mut t = r.lock();
    match t.early.remove(&pid) {
        Some(status) => {
            let _ = tx.send(status);
        }
        None => {
            t.waiting.insert(pid, tx);
        }
    }
    r.changed(t);
    rx
}

/// `pid`, a child just started, exited (or will) and nobody wants its
/// status.
pub(super) fn discard(pid: i32) {
    let r = reaper();
    let mut t = r.lock();
    if t.early.remove(&pid).is_none() {
        t.discard.insert(pid);
    }
    r.changed(t);
}

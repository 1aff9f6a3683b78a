//! `tollgate serve`: listeners, the journal watcher, signals and shutdown.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::checked::Checked;
use crate::config::{Config, ConfigError};
use crate::drain::syslog::Origin;
use crate::drain::tee::Sink;
use crate::exec::cgroup::Containment;
use crate::journal::EventKind;
use crate::journal::{Db, EndReason, Journal, JournalError, NewNode};
use crate::state::{Current, Shared};

mod handover;
mod reload;
mod signals;
use reload::reload;
mod watcher;
pub use signals::OnHangup;
use signals::{Sig, Signals};
use watcher::{drain_row, drain_rows, forward_events, heartbeat, watch_journal};

/// Why the daemon could not start.
#[derive(Debug)]
pub enum DaemonError {
    /// The configuration file has problems (`FILE:LINE:COL: …`, one a line).
    Config(ConfigError),
    /// The journal cannot be opened or written.
    Journal(JournalError),
    /// Anything else, said in full.
    Failed(String),
}

impl DaemonError {
    fn failed(message: impl std::fmt::Display) -> DaemonError {
        DaemonError::Failed(message.to_string())
    }
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Config(e) => e.fmt(f),
            DaemonError::Journal(e) => e.fmt(f),
            DaemonError::Failed(m) => f.write_str(m),
        }
    }
}

impl From<ConfigError> for DaemonError {
    fn from(e: ConfigError) -> Self {
        DaemonError::Config(e)
    }
}

impl From<JournalError> for DaemonError {
    fn from(e: JournalError) -> Self {
        DaemonError::Journal(e)
    }
}

/// What the daemon's entry points return.
pub type DaemonResult = Result<(), DaemonError>;

/// Entry point of `tollgate serve`.
pub fn serve_from_file(path: &Path) -> DaemonResult {
    let checked = crate::checked::load(path)?;
    init_logging(&checked.config.server.log_level);
    serve(checked, OnHangup::Reload, |_| {})
}

/// Logs on stderr. Under systemd (stderr is the journal, `JOURNAL_STREAM`)
/// without timestamps and with `<N>` priority prefixes, so `journalctl -p`
/// works; elsewhere human-readable with times. The filter is
/// `TOLLGATE_LOG`, else `RUST_LOG`, else `level` (server.log_level).
pub fn init_logging(level: &str) {
    let spec = ["TOLLGATE_LOG", "RUST_LOG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| level.to_string());
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // Whatever the filter says: the SSH library's debug output is
        // never needed in production and must not be a way to log auth data.
        .add_directive("russh=warn".parse().expect("literal directive"));
    // Colour only for a person at a terminal: a file, a pipe or journald
    // gets plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = if crate::logging::stderr_is_journal() {
        builder
            .without_time()
            .with_ansi(false)
            .event_format(crate::logging::JournalFormat)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The addresses the daemon listens on, as bound.
pub struct Bound {
    pub ssh: Vec<std::net::SocketAddr>,
    pub api: Vec<std::net::SocketAddr>,
    pub metrics: Vec<std::net::SocketAddr>,
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the config.
/// `on_ready` is called once every listener is bound.
pub fn serve(checked: Checked, hangup: OnHangup, on_ready: impl FnOnce(&Bound)) -> DaemonResult {
    // Before any thread of the daemon's starts: each inherits it.
    if let Err(e) = crate::exec::batch_scheduling() {
        tracing::warn!(error = %e, "cannot run the daemon's threads under SCHED_BATCH");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(checked.config.server.workers())
        .enable_all()
        .build()
        .map_err(DaemonError::failed)?;
    runtime.block_on(run(checked, hangup, on_ready))
}

/// One listening address and its accept loop.
struct Listener {
    bound: std::net::SocketAddr,
    /// Its descriptor, owned by the accept loop (passed on at a hand-over).
    fd: std::os::fd::RawFd,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// Listeners by configured address.
type Listeners = std::collections::BTreeMap<std::net::SocketAddr, Listener>;

/// Binds each of `addrs` not in `have`; all or nothing.
async fn bind_new(
    addrs: &[std::net::SocketAddr],
    have: &Listeners,
) -> Result<Vec<(std::net::SocketAddr, tokio::net::TcpListener)>, String> {
    let mut out = Vec::new();
    for addr in addrs.iter().filter(|a| !have.contains_key(a)) {
        // Passed on by the process this one took over from, or bound here.
        let l = match crate::exec::handover::take_listener("ssh", addr) {
            Some(l) => tokio::net::TcpListener::from_std(l),
            None => tokio::net::TcpListener::bind(addr).await,
        }
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        out.push((*addr, l));
    }
    Ok(out)
}

/// The config's own warnings (`FILE:LINE:COL: warning: …`), and profiles
/// whose limits cannot be put in force here, once per profile and limit
/// (at startup and after a reload).
fn warn_unenforced(config: &Config, containment: &Containment) {
    for w in config.warning_lines() {
        tracing::warn!("{w}");
    }
    for (name, p) in &config.profiles {
        for (key, why) in containment.unenforceable(&p.limits) {
            tracing::warn!(profile = %name, "profiles.{name}.{key} is not enforced: {why}");
        }
    }
}

fn start_listeners(
    new: Vec<(std::net::SocketAddr, tokio::net::TcpListener)>,
    current: &Arc<Current>,
    into: &mut Listeners,
) {
    for (addr, l) in new {
        let bound = l.local_addr().unwrap_or(addr);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(crate::ssh::accept_loop(l, current.clone(), stop_rx));
        tracing::info!(address = %bound, "listening");
        into.insert(
            addr,
            Listener {
                bound,
                fd,
                task,
                stop,
            },
        );
    }
}

async fn run(checked: Checked, hangup: OnHangup, on_ready: impl FnOnce(&Bound)) -> DaemonResult {
    raise_fd_limit();
    let Checked {
        config,
        drains: planned,
        webhook_tls,
        journal: journal_target,
        api_tls,
    } = checked;
    let mut notifier = crate::notify::Notifier::from_env();
    let mut signals = Signals::install(hangup).map_err(DaemonError::failed)?;
    // Started by a hand-over: the listeners the old process passed on.
    let incoming = if hangup == OnHangup::Reload {
        handover::remember_invocation();
        let (incoming, warnings) = crate::exec::handover::adopt_from_env();
        warnings.iter().for_each(|w| tracing::warn!("{w}"));
        incoming
    } else {
        None
    };
    let predecessor = incoming.as_ref().map(|i| i.from.clone());
    let keys = crate::ssh::load_host_keys(&config.server.host_keys).map_err(DaemonError::failed)?;
    let containment = Arc::new(Containment::detect(incoming.is_some()));
    tracing::info!("sessions are contained by {}", containment.describe());
    tracing::info!(
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "threads serving connections"
    );
    warn_unenforced(&config, &containment);
    // The PostgreSQL client blocks on a runtime of its own: not on one of
    // this runtime's threads.
    let listen: Vec<String> = config.server.listen.iter().map(|a| a.to_string()).collect();
    let node_id = config.node_id();
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let node = NewNode {
        id: &node_id,
        hostname: &hostname,
        listen: &listen,
        version: crate::version::current(),
        pid: std::process::id(),
        owner: &crate::exec::handover::own_identity(),
    };
    let timeout_ms = config.server.node_timeout.as_millis() as i64;
    let (journal, newest_event, saved) = tokio::task::block_in_place(|| {
        start_journal(&journal_target, &node, timeout_ms, &containment)
    })?;
    tracing::info!(node = %node_id, journal = %config.server.journal, version = node.version, "journal open");
    // A SQLite journal also gets a connection for reads outside any batch
    // (is this user name a live collect session's?): see Db::read.
    let db = match &journal_target {
        crate::journal::JournalTarget::Sqlite(path) => {
            match tokio::task::block_in_place(|| Journal::open(path)) {
                Ok(reader) => Db::new(journal).with_reader(reader),
                Err(e) => {
                    tracing::warn!(error = %e, "no reader connection: reads queue with the writes");
                    Db::new(journal)
                }
            }
        }
        crate::journal::JournalTarget::Postgres(_) => Db::new(journal),
    };
    // Once it exists: opening creates a missing file.
    let journal_file = config.server.journal.file().and_then(file_id);
    let config = Arc::new(config);
    // Event delivery resumes where each drain stopped; a new drain starts
    // with what happens from now on.
    let resume_after: Vec<i64> = config
        .drains
        .iter()
        .map(|d| {
            saved
                .iter()
                .find(|r| r.name == d.spec.name)
                .map_or(newest_event, |r| r.event_seq.min(newest_event))
        })
        .collect();
    let event_cursor = config
        .drains
        .iter()
        .zip(&resume_after)
        .filter(|(d, _)| d.spec.send_events)
        .map(|(_, &r)| r)
        .min()
        .unwrap_or(newest_event);
    let drains: Arc<Vec<Sink>> = Arc::new(planned.iter().map(Sink::start).collect());
    let origin = Arc::new(Origin {
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        app_name: "tollgate".into(),
        procid: std::process::id().to_string(),
    });
    let shared = Arc::new(Shared {
        russh: Arc::new(crate::ssh::russh_config(&config, keys)),
        config: config.clone(),
        webhook_tls,
        db,
        drains,
        origin,
        resume_after,
        sent_seq: Arc::new(Mutex::new(event_cursor)),
        live: Arc::new(Mutex::new(HashMap::new())),
        webhooks: Arc::new(tokio::sync::Notify::new()),
        journal_down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        containment,
        admission: crate::admission::Admission::new(config.server.admission.clone()),
    });
    let current = Arc::new(Current(std::sync::RwLock::new(shared)));

    let mut listeners = Listeners::new();
    let new = bind_new(&config.server.listen, &listeners)
        .await
        .map_err(DaemonError::failed)?;
    start_listeners(new, &current, &mut listeners);
    let (mut http, api, mut http_fds) = crate::api::start(&config.api, api_tls, &current)
        .await
        .map_err(DaemonError::failed)?;
    let (m, metrics, m_fds) = crate::api::metrics::start(&config.metrics, &current)
        .await
        .map_err(DaemonError::failed)?;
    http.extend(m);
    http_fds.extend(m_fds);
    for addr in crate::exec::handover::close_untaken() {
        tracing::info!(address = %addr, "no longer configured: the listener passed on for it is closed");
    }
    let detail = serde_json::json!({
        "pid": std::process::id(), "version": crate::version::current(),
        "handed_over_from": predecessor.as_deref().and_then(|p| p.split(':').next()?.parse::<i64>().ok()),
    });
    if let Err(e) = current
        .get()
        .db
        .call(move |j| j.event(None, EventKind::DaemonStarted, detail))
        .await
    {
        tracing::warn!(error = %e, "could not record daemon.started");
    }
    let wake = match &journal_target {
        crate::journal::JournalTarget::Postgres(_) if config.server.journal_listen => {
            let wake = Arc::new(tokio::sync::Notify::new());
            watcher::listen(journal_target.clone(), wake.clone());
            Some(wake)
        }
        _ => None,
    };
    let watcher = tokio::spawn(watch_journal(
        journal_target.clone(),
        current.clone(),
        event_cursor,
        wake,
    ));
    // Deliveries left pending by an earlier run resume at once.
    let webhooks = tokio::spawn(crate::webhook::worker(current.clone()));
    let beats = tokio::spawn(heartbeat(current.clone()));
    let ssh = listeners.values().map(|l| l.bound).collect();
    on_ready(&Bound { ssh, api, metrics });
    // The old process names this one the main process before READY=1.
    if let Some(incoming) = incoming {
        if let Err(e) = tokio::task::spawn_blocking(move || incoming.ready())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        {
            tracing::warn!(error = %e, "the process handing over did not confirm (going on as the main process)");
        }
    }
    // Only now: the journal is open and every listener accepts.
    let note = || handover::predecessor_note(predecessor.as_deref());
    notifier.ready(&(status_line(&current.get(), &listeners) + &note()));
    if hangup == OnHangup::Reload {
        handover::advertise();
    }
    let mut last_status = String::new();

    let watchdog = crate::notify::watchdog_interval().filter(|_| notifier.enabled());
    let mut next_ping = tokio::time::Instant::now();
    let mut unhealthy = false;
    // Four ticks a ping interval at least: a ping falls due between ticks,
    // and waiting a whole interval for the next one would double the gap.
    let step = watchdog.map_or(Duration::from_secs(1), |w| {
        (w / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    });
    let mut tick = tokio::time::interval(step);
    let mut reason = EndReason::DaemonStopped;
    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Sig::Stop => break,
                Sig::Upgrade if hangup == OnHangup::Stop => {
                    tracing::warn!("SIGUSR2: a hand-over is for tollgate serve, not dev");
                }
                Sig::Upgrade => {
                    let mut fds: Vec<_> = listeners.iter().map(|(a, l)| ("ssh", *a, l.fd)).collect();
                    fds.extend(http_fds.iter().copied());
                    if let Some(next) = handover::start(&current.get(), fds, &notifier).await {
                        // The new process accepts; this one stops before
                        // it names that one the main process.
                        stop_accepting(&mut listeners, &http).await;
                        webhooks.abort();
                        handover::finish(&current.get(), next, &mut notifier).await;
                        reason = handover::drain(&current, &mut signals).await;
                        break;
                    }
                }
                Sig::Reload => {
                    notifier.reloading();
                    reload(&current, &mut listeners).await;
                    notifier.ready(&status_line(&current.get(), &listeners));
                }
            },
            // Status and pings only matter to a service manager.
            _ = tick.tick(), if notifier.enabled() => {
                let shared = current.get();
                let status = status_line(&shared, &listeners) + &note();
                if status != last_status {
                    notifier.status(&status);
                    last_status = status;
                }
                if let Some(every) = watchdog.filter(|_| tokio::time::Instant::now() >= next_ping) {
                    next_ping = tokio::time::Instant::now() + every.saturating_sub(step);
                    match health(&shared, &listeners, journal_file).await {
                        Ok(()) => {
                            if std::mem::take(&mut unhealthy) {
                                tracing::info!("health check passes again; watchdog pings resume");
                            }
                            notifier.watchdog();
                        }
                        Err(e) => {
                            if !std::mem::replace(&mut unhealthy, true) {
                                tracing::error!(problem = %e, "health check failed: no watchdog ping (systemd restarts the service when the watchdog runs out)");
                            }
                        }
                    }
                }
            }
        }
    }
    notifier.stopping();
    // After a hand-over the marker is the new process's.
    if !handover::handed_over() {
        handover::withdraw();
    }
    tracing::info!("stopping: no new connections; ending live sessions");
    stop_accepting(&mut listeners, &http).await;
    watcher.abort();
    beats.abort();
    // A delivery cut short here was not recorded: it is sent again next run.
    webhooks.abort();
    let shared = current.get();
    // Processes still draining after earlier hand-overs end theirs too.
    let draining = if handover::handed_over() {
        Vec::new()
    } else {
        handover::stop_predecessors(&shared).await
    };
    shared.end_all(reason);
    let limit = shared.config.sessions.kill_grace + Duration::from_secs(3);
    let start = std::time::Instant::now();
    while shared.live_count() > 0 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if shared.live_count() > 0 {
        tracing::error!(count = shared.live_count(), "sessions did not end in time");
    }
    handover::wait_gone(&draining, limit + Duration::from_secs(2)).await;
    if handover::handed_over() {
        // The node, its drains' state and the journal's events are the new
        // process's: only this process's own deliveries are finished.
        for sink in shared.drains.iter() {
            sink.drain.close(Duration::from_secs(3)).await;
        }
        tracing::info!("stopped (handed over)");
        return Ok(());
    }
    // Said, so no other node declares this one lost.
    if let Err(e) = shared.db.call(|j| j.node_stopped()).await {
        tracing::warn!(error = %e, "could not record that this node stops");
    }
    // The events of the shutdown itself, then whatever the drains still hold.
    // (A shared journal's events are sent by the node holding each
    // drain's lease, which takes over from this one.)
    if shared.config.server.journal.file().is_some() {
        tokio::task::block_in_place(|| {
            if let Ok(j) = Journal::open_target(&journal_target) {
                let mut cursor =
                    (*shared.sent_seq.lock().unwrap_or_else(|e| e.into_inner())).max(event_cursor);
                forward_events(&j, &shared, &mut cursor, None);
            }
        });
    }
    let mut rows = drain_rows(&shared);
    for (sink, row) in shared.drains.iter().zip(rows.iter_mut()) {
        let (msgs, bytes) = sink.drain.close(Duration::from_secs(3)).await;
        let (dropped, dropped_bytes) = sink.drain.take_dropped();
        if msgs + dropped > 0 {
            tracing::error!(drain = %sink.spec.name, unsent = msgs, unsent_bytes = bytes, dropped, dropped_bytes,
                "drain could not deliver everything before shutdown (events are offered again at the next start)");
            // Recorded like any other loss; delivered by the next run.
            let detail = serde_json::json!({
                "drain": sink.spec.name, "messages": msgs + dropped, "bytes": bytes + dropped_bytes,
                "stage": "shutdown",
            });
            if let Err(e) = shared
                .db
                .call(move |j| j.event(None, EventKind::DrainDropped, detail))
                .await
            {
                tracing::error!(error = %e, "could not record drain.dropped");
            }
        }
        let st = sink.drain.stats();
        *row = drain_row(sink, row.event_seq.max(st.delivered_event_seq), &st);
        row.connected = false;
    }
    if !rows.is_empty() {
        if let Err(e) = shared.db.call(move |j| j.save_drains(&rows)).await {
            tracing::error!(error = %e, "could not record the drains' state");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Stops every accept loop (SSH and HTTP): their listeners close here (a
/// new process that took them over keeps its own copies).
async fn stop_accepting(listeners: &mut Listeners, http: &[tokio::task::JoinHandle<()>]) {
    for l in listeners.values() {
        let _ = l.stop.send(true);
    }
    for (_, l) in std::mem::take(listeners) {
        let _ = l.task.await;
    }
    http.iter().for_each(|t| t.abort());
}

/// What `systemctl status` shows beside the unit.
fn status_line(shared: &Shared, listeners: &Listeners) -> String {
    let connected = shared
        .drains
        .iter()
        .filter(|s| s.drain.stats().connected)
        .count();
    let n = shared.live_count();
    let down = if shared
        .journal_down
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        "journal unreachable; "
    } else {
        ""
    };
    format!(
        "{down}{n} active session{}; {connected} of {} drains connected; listening on {}",
        if n == 1 { "" } else { "s" },
        shared.drains.len(),
        listeners
            .values()
            .map(|l| l.bound.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Opens the journal at startup, ends what an earlier run left live
/// (killing its leftovers), expires due tokens; returns it with the newest
/// event and the drains' recorded state.
fn start_journal(
    target: &crate::journal::JournalTarget,
    node: &NewNode,
    timeout_ms: i64,
    containment: &Containment,
) -> Result<(Journal, i64, Vec<crate::journal::DrainRow>), DaemonError> {
    let mut journal = Journal::open_target(target)?;
    journal.node_register(node)?;
    recover_stale(&mut journal, containment)?;
    // Session cgroups of the sessions a live process (one draining after
    // a hand-over) serves are spared; the rest are an earlier run's.
    let spare: Vec<String> = journal
        .live_owners()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let killed = containment.kill_leftovers(&spare);
    if killed > 0 {
        tracing::warn!(
            sessions = killed,
            "killed what was left of an earlier run's sessions in their cgroups"
        );
    }
    // Sessions another node declared lost while this one was down.
    for lost in journal.node_leftovers()? {
        let killed = match (lost.pid, &lost.leader) {
            (Some(pid), Some(leader)) => crate::exec::kill_orphans(pid as i32, leader),
            _ => 0,
        };
        tracing::warn!(session = %lost.id, pid = lost.pid, orphans_killed = killed, "session of this node ended by another while it was down (node_lost): its leftovers killed");
    }
    let ended = journal.nodes_lost(timeout_ms)?;
    if !ended.is_empty() {
        tracing::warn!(
            sessions = ended.len(),
            "nodes sharing the journal were lost: their sessions ended (node_lost)"
        );
    }
    journal.expire_due()?;
    let newest = journal.last_event_seq()?;
    let saved = journal.drains()?;
    Ok((journal, newest, saved))
}

/// Ends the sessions of this node whose serving process is gone (killing
/// what is left of their processes); those of a live process, such as one
/// draining after a hand-over, go on. At start and with every heartbeat.
fn recover_stale(journal: &mut Journal, containment: &Containment) -> Result<(), JournalError> {
    use crate::exec::handover::owner_alive;
    for stale in journal.recover_stale(&|o| owner_alive(o).is_some())? {
        let killed = match (stale.pid, &stale.leader) {
            (Some(pid), Some(leader)) => crate::exec::kill_orphans(pid as i32, leader),
            _ => 0,
        };
        containment.kill_session(&stale.id);
        tracing::warn!(session = %stale.id, pid = stale.pid, orphans_killed = killed, "session left active by a daemon process that is gone marked terminated (daemon_stopped)");
    }
    Ok(())
}

/// The journal file's identity, to notice it being replaced or removed.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What the watchdog pings vouch for: every accept loop runs, the journal
/// takes a durable write, and it is still the file the admin CLI opens.
async fn health(
    shared: &Shared,
    listeners: &Listeners,
    journal_file: Option<(u64, u64)>,
) -> Result<(), String> {
    if let Some(l) = listeners.values().find(|l| l.task.is_finished()) {
        return Err(format!("the accept loop for {} has ended", l.bound));
    }
    if let Some(path) = shared.config.server.journal.file() {
        if file_id(path) != journal_file {
            return Err(format!(
                "{} is no longer the file the daemon has open (removed or replaced)",
                path.display()
            ));
        }
    }
    let pid = std::process::id();
    match tokio::time::timeout(
        Duration::from_secs(5),
        shared.db.call(move |j| j.record_health(pid)),
    )
    .await
    {
        Ok(Ok(())) => {
            shared
                .journal_down
                .store(false, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        // A shared journal out of reach is the database's outage, not this
        // daemon's: live sessions go on (a watchdog restart would end
        // them), new logins are refused, and the status says so.
        Ok(Err(e)) if shared.config.server.journal.file().is_none() => {
            if !shared
                .journal_down
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::error!(error = %e, "the journal is unreachable: new logins are refused, live sessions go on");
            }
            Ok(())
        }
        Ok(Err(e)) => Err(format!("the journal does not take writes: {e}")),
        Err(_) => Err("a journal write took more than 5 s".into()),
    }
}

/// Each session holds a socket and two to four descriptors for its process:
/// use every descriptor the hard limit allows (systemd's LimitNOFILE).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        // Sessions start with the limit the daemon started with.
        crate::exec::set_session_nofile(soft, hard);
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
}

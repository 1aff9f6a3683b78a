//! `tollgate serve`: listeners, the journal watcher, signals and shutdown.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

use crate::cli::{CliError, CliResult};
use crate::config::Config;
use crate::drain::deliver::{Drain, Stats};
use crate::drain::syslog::Origin;
use crate::drain::tee::{encode_event, Sink};
use crate::journal::{DrainRow, Journal, JournalError};
use crate::ssh::session::EndReason;

/// The journal as the daemon's tasks use it: one thread owns the
/// connection and runs queued calls in batches, each batch one transaction
/// with one fsync (group commit). Every call still gets its own savepoint,
/// so one failing call does not undo the others, and none is answered
/// before its batch is durable.
#[derive(Clone)]
pub struct Db {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// Runs a call (saying whether it succeeded), then reports the batch's
/// commit result to its caller.
type Job = Box<dyn FnOnce(&mut Journal) -> (bool, Report) + Send>;
type Report = Box<dyn FnOnce(Option<&str>) + Send>;

/// Calls in one batch at most.
const BATCH: usize = 256;

impl Db {
    /// Starts the journal thread.
    pub fn new(mut j: Journal) -> Db {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tollgate-journal".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < BATCH {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let began = j.begin_batch();
                    let mut broken = began.as_ref().err().map(|e| e.to_string());
                    let mut reports = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        if let Err(e) = j.begin_call() {
                            broken.get_or_insert(e.to_string());
                        }
                        let (ok, report) = job(&mut j);
                        if let Err(e) = j.end_call(ok) {
                            broken.get_or_insert(e.to_string());
                        }
                        reports.push(report);
                    }
                    let outcome = match broken {
                        None => j.commit_batch().err().map(|e| e.to_string()),
                        Some(e) => {
                            let _ = j.commit_batch();
                            Some(e)
                        }
                    };
                    for report in reports {
                        report(outcome.as_deref());
                    }
                }
            })
            .expect("cannot start the journal thread");
        Db { jobs: tx }
    }

    /// Runs `f` with the journal on the journal thread; returns once the
    /// batch it ran in is committed.
    pub async fn call<R, F>(&self, f: F) -> Result<R, JournalError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Journal) -> Result<R, JournalError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |j: &mut Journal| {
            let result = f(j);
            let ok = result.is_ok();
            let report: Report = Box::new(move |commit_error: Option<&str>| {
                let _ = tx.send(match commit_error {
                    None => result,
                    Some(e) => Err(JournalError::Io {
                        path: "journal".into(),
                        source: std::io::Error::other(format!("commit failed: {e}")),
                    }),
                });
            });
            (ok, report)
        });
        if self.jobs.send(job).is_err() {
            return Err(journal_gone());
        }
        rx.await.unwrap_or_else(|_| Err(journal_gone()))
    }
}

fn journal_gone() -> JournalError {
    JournalError::Io {
        path: "journal".into(),
        source: std::io::Error::other("the journal thread is gone"),
    }
}

/// State every connection can reach.
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    /// Every configured drain, and how messages say where they come from.
    pub drains: Arc<Vec<Sink>>,
    pub origin: Arc<Origin>,
    /// Per drain (same order): journal events up to this sequence number
    /// were delivered by an earlier run and are not offered again.
    resume_after: Vec<i64>,
    /// The last journal event offered to the drains.
    sent_seq: Mutex<i64>,
    /// Live sessions by id: where to send a request to end.
    live: Mutex<HashMap<String, UnboundedSender<EndReason>>>,
    /// Wakes the webhook worker when a collect step created deliveries.
    pub webhooks: tokio::sync::Notify,
}

impl Shared {
    /// Makes a live session reachable for cancel and shutdown.
    pub fn register(&self, id: &str, stop: UnboundedSender<EndReason>) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), stop);
    }

    pub fn unregister(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn end(&self, id: &str, reason: EndReason) -> bool {
        match self.live.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            Some(tx) => tx.send(reason).is_ok(),
            None => false,
        }
    }

    fn end_all(&self, reason: EndReason) {
        for tx in self.live.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let _ = tx.send(reason);
        }
    }

    fn live_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Entry point of `tollgate serve`.
pub fn serve_from_file(path: &Path) -> CliResult {
    let config = Config::load(path)?;
    init_logging();
    serve(config, |_| {})
}

/// Sets up human-readable logs on stderr (journald adds timestamps).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // Whatever TOLLGATE_LOG says: the SSH library's debug output is
        // never needed in production and must not be a way to log auth data.
        .add_directive("russh=warn".parse().expect("literal directive"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Runs the daemon until SIGTERM or SIGINT. `on_ready` is called once every
/// listener is bound, with the addresses actually bound.
pub fn serve(config: Config, on_ready: impl FnOnce(&[std::net::SocketAddr])) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::failure)?;
    runtime.block_on(run(config, on_ready))
}

async fn run(config: Config, on_ready: impl FnOnce(&[std::net::SocketAddr])) -> CliResult {
    raise_fd_limit();
    let keys = crate::ssh::load_host_keys(&config.server.host_keys).map_err(CliError::failure)?;
    let mut journal = Journal::open(&config.server.journal)?;
    for (id, pid) in journal.recover_stale()? {
        let killed = pid.map_or(0, |p| crate::exec::kill_orphans(&id, p as i32));
        tracing::warn!(session = %id, ?pid, orphans_killed = killed, "session left active by an earlier run marked terminated (daemon_stopped)");
    }
    journal.expire_due()?;
    let config = Arc::new(config);
    let newest_event = journal.last_event_seq()?;
    // Event delivery resumes where each drain stopped; a new drain starts
    // with what happens from now on.
    let saved = journal.drains()?;
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
    let drains: Arc<Vec<Sink>> = Arc::new(
        config
            .drains
            .iter()
            .map(|d| Sink {
                spec: d.spec.clone(),
                drain: Drain::start(d.target.clone(), d.queue_bytes),
            })
            .collect(),
    );
    let origin = Arc::new(Origin {
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        app_name: "tollgate".into(),
        procid: std::process::id().to_string(),
    });
    let shared = Arc::new(Shared {
        config: config.clone(),
        db: Db::new(journal),
        drains,
        origin,
        resume_after,
        sent_seq: Mutex::new(event_cursor),
        live: Mutex::new(HashMap::new()),
        webhooks: tokio::sync::Notify::new(),
    });
    let russh_config = Arc::new(crate::ssh::russh_config(&config, keys));

    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for addr in &config.server.listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::failure(format!("cannot listen on {addr}: {e}")))?;
        bound.push(l.local_addr().map_err(CliError::failure)?);
        listeners.push(l);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accepts = Vec::new();
    for l in listeners {
        accepts.push(tokio::spawn(crate::ssh::accept_loop(
            l,
            shared.clone(),
            russh_config.clone(),
            stop_rx.clone(),
        )));
    }
    let watcher = tokio::spawn(watch_journal(
        config.server.journal.clone(),
        shared.clone(),
        event_cursor,
    ));
    // Deliveries left pending by an earlier run resume at once.
    let webhooks = tokio::spawn(crate::webhook::worker(shared.clone()));
    for a in &bound {
        tracing::info!(address = %a, "listening");
    }
    on_ready(&bound);

    wait_for_stop_signal().await;
    tracing::info!("stopping: no new connections; ending live sessions");
    let _ = stop_tx.send(true);
    for a in accepts {
        let _ = a.await;
    }
    watcher.abort();
    // A delivery cut short here was not recorded: it is sent again next run.
    webhooks.abort();
    shared.end_all(EndReason::DaemonStopped);
    let limit = config.sessions.kill_grace + Duration::from_secs(3);
    let start = std::time::Instant::now();
    while shared.live_count() > 0 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if shared.live_count() > 0 {
        tracing::error!(count = shared.live_count(), "sessions did not end in time");
    }
    // The events of the shutdown itself, then whatever the drains still hold.
    if let Ok(j) = Journal::open(&config.server.journal) {
        let mut cursor =
            (*shared.sent_seq.lock().unwrap_or_else(|e| e.into_inner())).max(event_cursor);
        forward_events(&j, &shared, &mut cursor);
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
                .call(move |j| j.event(None, "drain.dropped", detail))
                .await
            {
                tracing::error!(error = %e, "could not record drain.dropped");
            }
        }
        let st = sink.drain.stats();
        *row = drain_row(
            &shared,
            sink,
            row.event_seq.max(st.delivered_event_seq),
            &st,
        );
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

/// Each session holds a socket and two to four descriptors for its process:
/// use every descriptor the hard limit allows (systemd's LimitNOFILE).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Notices what other processes (the admin CLI) wrote: cancels within a
/// second, and moves tokens past their TTL to `expired`. Uses its own
/// connection so `data_version` sees every commit not made through it.
async fn watch_journal(path: std::path::PathBuf, shared: Arc<Shared>, mut cursor: i64) {
    // Reads only, on a connection of its own: never in the writer's batches.
    let conn = match tokio::task::spawn_blocking(move || Journal::open(&path)).await {
        Ok(Ok(j)) => Arc::new(Mutex::new(j)),
        Ok(Err(e)) => return tracing::error!(error = %e, "journal watcher cannot open the journal"),
        Err(_) => return,
    };
    let mut last_version = -1;
    let mut last_drop_report = std::time::Instant::now();
    let mut failures_seen: Vec<(u64, bool)> = vec![(0, false); shared.drains.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let periodic = n % 5 == 0;
        let version = match read(&conn, |j| j.data_version()).await {
            Ok(v) => v,
            Err(_) => last_version,
        };
        if version == last_version && !periodic {
            continue;
        }
        last_version = version;
        if shared.drains.iter().any(|d| d.spec.send_events) {
            let sh = shared.clone();
            let c = conn.clone();
            cursor = tokio::task::spawn_blocking(move || {
                let mut cur = cursor;
                forward_events(&c.lock().unwrap_or_else(|e| e.into_inner()), &sh, &mut cur);
                cur
            })
            .await
            .unwrap_or(cursor);
            *shared.sent_seq.lock().unwrap_or_else(|e| e.into_inner()) = cursor;
        }
        match read(&conn, |j| j.canceling()).await {
            Ok(ids) => {
                for id in ids {
                    if shared.end(&id, EndReason::Canceled) {
                        tracing::info!(session = %id, "cancel requested; ending session");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "journal watcher: cannot read cancellations"),
        }
        if periodic {
            report_drops(&shared, &mut last_drop_report).await;
            report_links(&shared, &mut failures_seen).await;
            let rows = drain_rows(&shared);
            if !rows.is_empty() {
                if let Err(e) = shared.db.call(move |j| j.save_drains(&rows)).await {
                    tracing::error!(error = %e, "could not record the drains' state");
                }
            }
            match shared.db.call(|j| j.expire_due()).await {
                Ok(ids) => {
                    for id in ids {
                        tracing::info!(session = %id, "token expired unused");
                    }
                }
                Err(e) => tracing::error!(error = %e, "journal watcher: cannot expire tokens"),
            }
        }
    }
}

/// Runs a read on the watcher's own connection, off the async threads.
async fn read<T, F>(conn: &Arc<Mutex<Journal>>, f: F) -> Result<T, JournalError>
where
    T: Send + 'static,
    F: FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
{
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(|e| e.into_inner())))
        .await
        .unwrap_or_else(|_| Err(journal_gone()))
}

/// Offers every journal event after `*cursor` to the drains that want
/// events, and moves the cursor. Events come from the journal itself, so
/// those written by the admin CLI are sent too.
fn forward_events(j: &Journal, shared: &Shared, cursor: &mut i64) {
    let Ok(events) = j.events(None, *cursor, Some(1000)) else {
        return;
    };
    for e in events {
        let at = humantime::parse_rfc3339(&e.at).unwrap_or_else(|_| std::time::SystemTime::now());
        for (sink, _) in shared
            .drains
            .iter()
            .zip(&shared.resume_after)
            .filter(|(s, &after)| s.spec.send_events && e.seq > after)
        {
            sink.drain.offer_event(
                encode_event(
                    &sink.spec,
                    &shared.origin,
                    at,
                    e.seq,
                    e.session_id.as_deref(),
                    &e.kind,
                    &e.detail,
                ),
                e.seq,
            );
        }
        *cursor = e.seq;
    }
}

/// Turns each drain's overflow since the last report into a `drain.dropped`
/// event (which the journal then offers to every drain).
async fn report_drops(shared: &Shared, since: &mut std::time::Instant) {
    let interval_ms = since.elapsed().as_millis() as u64;
    *since = std::time::Instant::now();
    for sink in shared.drains.iter() {
        let (messages, bytes) = sink.drain.take_dropped();
        if messages == 0 {
            continue;
        }
        let detail = serde_json::json!({
            "drain": sink.spec.name, "messages": messages, "bytes": bytes, "interval_ms": interval_ms,
        });
        tracing::warn!(drain = %sink.spec.name, messages, bytes, "drain queue full: messages dropped");
        if let Err(e) = shared
            .db
            .call(move |j| j.event(None, "drain.dropped", detail))
            .await
        {
            tracing::error!(error = %e, "could not record drain.dropped");
        }
    }
}

/// Each drain's state as `drain status` shows it.
fn drain_rows(shared: &Shared) -> Vec<DrainRow> {
    shared
        .drains
        .iter()
        .zip(&shared.resume_after)
        .map(|(sink, &after)| {
            let st = sink.drain.stats();
            drain_row(shared, sink, after.max(st.delivered_event_seq), &st)
        })
        .collect()
}

fn drain_row(shared: &Shared, sink: &Sink, event_seq: i64, st: &Stats) -> DrainRow {
    let url = shared
        .config
        .drains
        .iter()
        .find(|d| d.spec.name == sink.spec.name)
        .map(|d| d.target.to_string())
        .unwrap_or_default();
    DrainRow {
        name: sink.spec.name.clone(),
        url,
        connected: st.connected,
        delivered: st.delivered,
        queued: st.queued,
        queued_bytes: st.queued_bytes,
        dropped: st.dropped_total,
        dropped_bytes: st.dropped_bytes_total,
        failures: st.failures,
        last_error: st.last_error.clone(),
        event_seq,
        daemon_pid: std::process::id(),
        updated_at: String::new(),
    }
}

/// Records a `drain.error` event when a drain could not connect or lost
/// its connection since the last look (once per run of failures with the
/// same cause, not once per retry), and `drain.connected` when it is back.
async fn report_links(shared: &Shared, seen: &mut [(u64, bool)]) {
    for (sink, seen) in shared.drains.iter().zip(seen.iter_mut()) {
        let st = sink.drain.stats();
        let (failures_before, troubled) = *seen;
        let mut event = None;
        if st.failures > failures_before && !troubled {
            let error = st.last_error.clone().unwrap_or_default();
            tracing::warn!(drain = %sink.spec.name, %error, "drain cannot deliver");
            event = Some((
                "drain.error",
                serde_json::json!({"drain": sink.spec.name, "error": error, "queued": st.queued}),
            ));
            *seen = (st.failures, true);
        } else if troubled && st.connected && st.failures == failures_before {
            tracing::info!(drain = %sink.spec.name, "drain connected again");
            event = Some((
                "drain.connected",
                serde_json::json!({"drain": sink.spec.name, "queued": st.queued}),
            ));
            *seen = (st.failures, false);
        } else {
            seen.0 = st.failures;
        }
        if let Some((kind, detail)) = event {
            if let Err(e) = shared.db.call(move |j| j.event(None, kind, detail)).await {
                tracing::error!(error = %e, "could not record {kind}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_call_in_a_batch_undoes_only_itself() {
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-db-").unwrap());
        let db = Db::new(Journal::open(&dir.join("j.db")).unwrap());
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.call(move |j| {
                        j.event(None, "test.write", json!({"i": i}))?;
                        if i % 2 == 0 {
                            // Fails after writing: its write must not survive.
                            j.event(None, "test.write", json!({"i": i, "again": true}))?;
                            return Err(JournalError::TooNew { found: 0, known: 0 });
                        }
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        let mut ok = 0;
        for c in calls {
            if c.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 25);
        let events = db.call(|j| j.events(None, 0, None)).await.unwrap();
        assert_eq!(events.len(), 25, "only the successful calls' writes remain");
        assert!(events
            .iter()
            .all(|e| e.detail["i"].as_i64().unwrap() % 2 == 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The journal watcher: what other processes (the admin CLI) wrote, the
//! events the drains are offered, and each drain's state recorded for
//! `tollgate drain status` and reported when it changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::drain::deliver::Stats;
use crate::drain::tee::{encode_event, Sink};
use crate::journal::{DrainRow, EndReason, EventKind, Journal, JournalError, JournalTarget};
use crate::state::{Current, Shared};

/// Notices what other processes (the admin CLI, other nodes) wrote:
/// cancels, and tokens past their TTL moved to `expired`. Uses its own
/// connection so `data_version` sees every commit not made through it.
/// SQLite: checked every 200 ms (a counter in memory). PostgreSQL: every
/// second, and at once when `wake` is told (see [`listen`]).
pub(super) async fn watch_journal(
    target: JournalTarget,
    current: Arc<Current>,
    mut cursor: i64,
    wake: Option<Arc<tokio::sync::Notify>>,
) {
    let pg = matches!(target, JournalTarget::Postgres(_));
    // Reads only, on a connection of its own: never in the writer's batches.
    let conn = match tokio::task::spawn_blocking(move || Journal::open_target(&target)).await {
        Ok(Ok(j)) => Arc::new(Mutex::new(j)),
        Ok(Err(e)) => return tracing::error!(error = %e, "journal watcher cannot open the journal"),
        Err(_) => return,
    };
    let mut last_version = -1;
    // A shared journal: the event drains this node holds the lease of,
    // each with the last event offered to it (see `Journal::drain_lease`).
    let mut leased: HashMap<String, i64> = HashMap::new();
    // Where a drain no node sent events to yet starts: the newest event
    // when this daemon started.
    let started_at = cursor;
    let mut last_drop_report = std::time::Instant::now();
    let mut failures_seen: HashMap<String, (u64, bool)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(if pg { 1000 } else { 200 }));
    let mut n: u64 = 0;
    let mut pruned: Option<std::time::Instant> = None;
    let started = std::time::SystemTime::now();
    loop {
        match &wake {
            Some(w) => tokio::select! {
                _ = tick.tick() => {}
                _ = w.notified() => {}
            },
            None => {
                tick.tick().await;
            }
        }
        let shared = current.get();
        n += 1;
        let periodic = pg || n % 5 == 0;
        let version = match read(&conn, |j| j.data_version()).await {
            Ok(v) => v,
            Err(_) => last_version,
        };
        if version == last_version && !periodic {
            continue;
        }
        last_version = version;
        let shared_journal = shared.config.server.journal.file().is_none();
        // After a hand-over what belongs to the node as a whole (events to
        // the drains, their recorded state, expiry, retention) is the new
        // process's; this one still acts on cancels of its sessions.
        let node_work = !super::handover::handed_over();
        if node_work && shared_journal && periodic {
            take_leases(&shared, &mut leased, &mut cursor, started_at).await;
        }
        if node_work && shared.drains.iter().any(|d| d.spec.send_events) {
            let sh = shared.clone();
            let c = conn.clone();
            let backup = (cursor, leased.clone());
            let mut l = std::mem::take(&mut leased);
            (cursor, leased) = tokio::task::spawn_blocking(move || {
                let mut cur = cursor;
                let gate = shared_journal.then_some(&mut l);
                forward_events(
                    &c.lock().unwrap_or_else(|e| e.into_inner()),
                    &sh,
                    &mut cur,
                    gate,
                );
                (cur, l)
            })
            .await
            .unwrap_or(backup);
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
        if periodic && node_work {
            if pruned.is_none_or(|p| p.elapsed() >= PRUNE_EVERY) {
                pruned = Some(std::time::Instant::now());
                tokio::spawn(prune_recordings(shared.clone(), started));
            }
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

/// A PostgreSQL journal: a thread with a connection of its own listens for
/// what other processes announce (a cancel) and wakes the watcher at once;
/// a lost connection is made again every second, and the watcher woken
/// then for what it may have missed.
pub(super) fn listen(target: JournalTarget, wake: Arc<tokio::sync::Notify>) {
    let run = move || loop {
        match Journal::open_target(&target).and_then(|mut j| j.listen().map(|()| j)) {
            Ok(mut j) => {
                wake.notify_one();
                loop {
                    match j.wait_notified(Duration::from_secs(10)) {
                        Ok(true) => wake.notify_one(),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "journal listener: connection lost");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "journal listener cannot connect"),
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    if let Err(e) = std::thread::Builder::new()
        .name("tollgate-journal-listen".into())
        .spawn(run)
    {
        tracing::error!(error = %e, "cannot start the journal listener; cancels are noticed within a second");
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
        .unwrap_or_else(|_| Err(JournalError::gone()))
}

/// On a shared journal, every second: takes or keeps the lease of each
/// event drain (recording what this node's copy delivered), and forgets
/// those another node holds. A lease newly taken resumes after what the
/// last holder recorded as delivered: the cursor goes back there.
async fn take_leases(
    shared: &Shared,
    leased: &mut HashMap<String, i64>,
    cursor: &mut i64,
    start: i64,
) {
    const LEASE_MS: i64 = 5_000;
    for sink in shared.drains.iter().filter(|s| s.spec.send_events) {
        let name = sink.spec.name.clone();
        let delivered = sink.drain.stats().delivered_event_seq;
        let n = name.clone();
        match shared
            .db
            .call(move |j| j.drain_lease(&n, LEASE_MS, delivered, start))
            .await
        {
            Ok(Some(from)) => {
                if let std::collections::hash_map::Entry::Vacant(v) = leased.entry(name) {
                    tracing::info!(drain = %v.key(), after_event = from, "this node sends the journal's events to the drain");
                    v.insert(from);
                    *cursor = (*cursor).min(from);
                }
            }
            Ok(None) => {
                if leased.remove(&name).is_some() {
                    tracing::info!(drain = %name, "another node sends the journal's events to the drain");
                }
            }
            // The journal out of reach: nothing to read events from either.
            Err(_) => {}
        }
    }
}

/// Offers every journal event after `*cursor` to the drains that want
/// events, and moves the cursor. Events come from the journal itself, so
/// those written by the admin CLI are sent too. With `leased` (a shared
/// journal), only to the drains this node holds the lease of, each after
/// the last event offered to it.
pub(super) fn forward_events(
    j: &Journal,
    shared: &Shared,
    cursor: &mut i64,
    mut leased: Option<&mut HashMap<String, i64>>,
) {
    let Ok(events) = j.events(None, *cursor, Some(1000)) else {
        return;
    };
    for e in events {
        let at = humantime::parse_rfc3339(&e.at).unwrap_or_else(|_| std::time::SystemTime::now());
        // Resuming after a restart: by each drain's recorded state, or on a
        // shared journal by its lease.
        let resume = leased.is_none();
        for (sink, _) in shared
            .drains
            .iter()
            .zip(&shared.resume_after)
            .filter(|(s, &after)| s.spec.send_events && (!resume || e.seq > after))
        {
            if let Some(l) = leased.as_deref_mut() {
                match l.get_mut(&sink.spec.name) {
                    Some(last) if e.seq > *last => *last = e.seq,
                    _ => continue,
                }
            }
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
            .call(move |j| j.event(None, EventKind::DrainDropped, detail))
            .await
        {
            tracing::error!(error = %e, "could not record drain.dropped");
        }
    }
}

/// Each drain's state as `drain status` shows it.
pub(super) fn drain_rows(shared: &Shared) -> Vec<DrainRow> {
    shared
        .drains
        .iter()
        .zip(&shared.resume_after)
        .map(|(sink, &after)| {
            let st = sink.drain.stats();
            drain_row(sink, after.max(st.delivered_event_seq), &st)
        })
        .collect()
}

pub(super) fn drain_row(sink: &Sink, event_seq: i64, st: &Stats) -> DrainRow {
    let url = sink.planned.target.to_string();
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
        // The journal records which node wrote it.
        node: None,
    }
}

/// Records a `drain.error` event when a drain could not connect or lost
/// its connection since the last look (once per run of failures with the
/// same cause, not once per retry), and `drain.connected` when it is back.
async fn report_links(shared: &Shared, seen: &mut HashMap<String, (u64, bool)>) {
    for sink in shared.drains.iter() {
        let seen = seen.entry(sink.spec.name.clone()).or_default();
        let st = sink.drain.stats();
        let (failures_before, troubled) = *seen;
        let mut event = None;
        if st.failures > failures_before && !troubled {
            let error = st.last_error.clone().unwrap_or_default();
            tracing::warn!(drain = %sink.spec.name, %error, "drain cannot deliver");
            event = Some((
                EventKind::DrainError,
                serde_json::json!({"drain": sink.spec.name, "error": error, "queued": st.queued}),
            ));
            *seen = (st.failures, true);
        } else if troubled && st.connected && st.failures == failures_before {
            tracing::info!(drain = %sink.spec.name, "drain connected again");
            event = Some((
                EventKind::DrainConnected,
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

/// The node's heartbeat, and the sweep that declares silent nodes lost
/// (ending their sessions `node_lost`), every `server.node_heartbeat`.
pub(super) async fn heartbeat(current: Arc<Current>) {
    loop {
        let shared = current.get();
        let every = shared.config.server.node_heartbeat;
        let timeout_ms = shared.config.server.node_timeout.as_millis() as i64;
        let beat = shared
            .db
            .call(move |j| {
                j.node_heartbeat()?;
                j.nodes_lost(timeout_ms)
            })
            .await;
        // Sessions of a daemon process of this node that died while this
        // one runs (one of two around a hand-over).
        let containment = shared.containment.clone();
        if let Err(e) = shared
            .db
            .call(move |j| super::recover_stale(j, &containment))
            .await
        {
            tracing::warn!(error = %e, "could not look for sessions of daemon processes that are gone");
        }
        match beat {
            Ok(ended) if !ended.is_empty() => {
                tracing::warn!(
                    sessions = ended.len(),
                    "a node sharing the journal was lost: its sessions ended (node_lost)"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not record this node's heartbeat"),
        }
        drop(shared);
        tokio::time::sleep(every).await;
    }
}

/// How often recordings past `recordings.retention` are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Finishes the recordings an earlier run left unfinished (killed
/// mid-session), then removes those past their retention; records both.
async fn prune_recordings(shared: Arc<Shared>, started: std::time::SystemTime) {
    let config = &shared.config;
    let dir = config.recordings.dir(&config.server.journal);
    let (d, sh) = (dir.clone(), shared.clone());
    let recovered = tokio::task::spawn_blocking(move || {
        let live = |id: &str| {
            sh.live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(id)
        };
        crate::record::recover(&d, started, &live)
    })
    .await
    .unwrap_or_default();
    for (id, summary) in recovered {
        tracing::info!(session = %id, path = %summary.path.display(), "finished a recording an earlier run left");
        let detail = serde_json::json!({
            "path": summary.path.display().to_string(), "bytes": summary.bytes,
            "stored_bytes": summary.stored_bytes, "sha256": summary.sha256,
            "truncated": summary.truncated, "recovered": true,
        });
        if let Err(e) = shared
            .db
            .call(move |j| j.event(Some(&id), EventKind::SessionRecorded, detail))
            .await
        {
            tracing::error!(error = %e, "could not record a recovered recording");
        }
    }
    let keep = config.recordings.retention;
    let d = dir.clone();
    let removed = tokio::task::spawn_blocking(move || crate::record::prune(&d, keep)).await;
    match removed {
        Ok(Ok(ids)) if !ids.is_empty() => {
            tracing::info!(removed = ids.len(), dir = %dir.display(), "recordings past their retention removed");
            let detail = serde_json::json!({
                "dir": dir.display().to_string(), "removed": ids.len(),
                "retention_s": keep.as_secs(), "sessions": ids.iter().take(100).collect::<Vec<_>>(),
            });
            if let Err(e) = shared
                .db
                .call(move |j| j.event(None, EventKind::RecordingsRemoved, detail))
                .await
            {
                tracing::error!(error = %e, "could not record the recordings removed");
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot remove old recordings")
        }
        Err(e) => tracing::error!(error = %e, "cannot remove old recordings"),
    }
}

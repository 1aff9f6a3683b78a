//! The daemon's shared state: what every connection, session and worker
//! can reach ([`Shared`]), and the one new connections get ([`Current`]),
//! replaced whole by a reload. Below `ssh`, `webhook` and the daemon's
//! wiring, above the journal, drains and process control it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;

use crate::checked::Checked;
use crate::config::Config;
use crate::drain::syslog::Origin;
use crate::drain::tee::Sink;
use crate::exec::cgroup::Containment;
use crate::journal::{Db, EndReason};

/// State every connection can reach. A reload makes a new one (new config,
/// drains and SSH settings) around the same journal, live-session registry
/// and webhook wake-up; a connection keeps the one it was accepted under,
/// so a reload never changes a live session.
pub struct Shared {
    pub config: Arc<Config>,
    /// The client https:// webhooks use when `webhooks.ca_file` is set.
    pub webhook_tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    pub db: Db,
    /// Every configured drain, and how messages say where they come from.
    pub drains: Arc<Vec<Sink>>,
    pub origin: Arc<Origin>,
    /// russh's settings: host keys, ciphers, authentication attempts.
    pub russh: Arc<russh::server::Config>,
    /// Per drain (same order): journal events up to this sequence number
    /// were delivered by an earlier run and are not offered again.
    pub(crate) resume_after: Vec<i64>,
    /// The last journal event offered to the drains.
    pub(crate) sent_seq: Arc<Mutex<i64>>,
    /// Live sessions by id: where to send a request to end.
    pub(crate) live: Arc<Mutex<HashMap<String, UnboundedSender<EndReason>>>>,
    /// Wakes the webhook worker when a collect step created deliveries.
    pub webhooks: Arc<tokio::sync::Notify>,
    /// A shared journal is out of reach (the health check found so).
    pub journal_down: Arc<std::sync::atomic::AtomicBool>,
    /// Per-session cgroups or process groups, decided at startup.
    pub containment: Arc<Containment>,
    /// Admission control: pending connections and penalties, kept across
    /// reloads (a reload changes only the policy).
    pub admission: Arc<crate::admission::Admission>,
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

    pub fn end(&self, id: &str, reason: EndReason) -> bool {
        match self.live.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            Some(tx) => tx.send(reason).is_ok(),
            None => false,
        }
    }

    pub fn end_all(&self, reason: EndReason) {
        for tx in self.live.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let _ = tx.send(reason);
        }
    }

    pub fn live_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The same daemon under `checked`: drains whose settings did not
    /// change keep their queue and connection, new ones start with the
    /// events from now on.
    pub fn next(&self, checked: Checked, russh: russh::server::Config) -> Shared {
        let Checked {
            config,
            drains: planned,
            webhook_tls,
            ..
        } = checked;
        self.admission.set_policy(config.server.admission.clone());
        let now = *self.sent_seq.lock().unwrap_or_else(|e| e.into_inner());
        let (drains, resume_after) = planned
            .iter()
            .map(|p| {
                let kept = self
                    .drains
                    .iter()
                    .zip(&self.resume_after)
                    .find(|(sink, _)| sink.runs(p));
                match kept {
                    Some((sink, &after)) => (sink.clone(), after),
                    None => (Sink::start(p), now),
                }
            })
            .unzip();
        Shared {
            config: Arc::new(config),
            webhook_tls,
            db: self.db.clone(),
            drains: Arc::new(drains),
            origin: self.origin.clone(),
            russh: Arc::new(russh),
            resume_after,
            sent_seq: self.sent_seq.clone(),
            live: self.live.clone(),
            webhooks: self.webhooks.clone(),
            journal_down: self.journal_down.clone(),
            containment: self.containment.clone(),
            admission: self.admission.clone(),
        }
    }
}

/// The [`Shared`] new connections get: replaced whole by a reload.
pub struct Current(pub(crate) std::sync::RwLock<Arc<Shared>>);

impl Current {
    pub fn get(&self) -> Arc<Shared> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, s: Arc<Shared>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

//! The daemon's Prometheus metrics: one process-wide set of counters,
//! gauges and histograms ([`get`]) that the SSH server, sessions, the
//! journal writer, the webhook worker and the HTTP API add to, and that
//! `[metrics] listen` serves as `/metrics` (with what is read at scrape
//! time: drains, unauthenticated connections).
//!
//! Labels are drawn from small fixed sets (kinds, methods, results, end
//! reasons) or from names in the config (profiles, targets, drains, API
//! routes): never a user name, token, session id or client address, so
//! nothing a client sends can add a series.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client::metrics::counter::Counter;

/// Every name starts so.
pub const PREFIX: &str = "tollgate";

/// What a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A command (shell, console) in a PTY or on pipes.
    Command,
    /// A tunnel to one target.
    Tunnel,
    /// A key-collection connection.
    Collect,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Tunnel => "tunnel",
            Kind::Collect => "collect",
        }
    }
}

/// A session's kind and profile (a tunnel's: its target; a collect
/// connection's: empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SessionLabels {
    pub kind: &'static str,
    pub profile: String,
}

impl SessionLabels {
    pub fn new(kind: Kind, profile: &str) -> SessionLabels {
        SessionLabels {
            kind: kind.as_str(),
            profile: profile.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndLabels {
    pub kind: &'static str,
    pub profile: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndingLabel {
    pub ending: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthLabels {
    pub method: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BytesLabels {
    pub kind: &'static str,
    /// `in` from the client, `out` to it.
    pub direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ApiLabels {
    pub method: &'static str,
    /// The route's template (`/api/v1/sessions/{id}`), `unmatched` for a
    /// path no route takes.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
}

/// The process's metrics. Handles are cheap to clone (shared counters).
pub struct Metrics {
    pub connections_accepted: Counter,
    pub connections_refused: Family<ReasonLabel, Counter>,
    pub connections_closed: Family<EndingLabel, Counter>,
    pub auth: Family<AuthLabels, Counter>,
    pub sessions_started: Family<SessionLabels, Counter>,
    pub sessions_ended: Family<EndLabels, Counter>,
    pub sessions_active: Family<SessionLabels, Gauge>,
    pub session_start: Histogram,
    pub redemption: Family<ResultLabel, Histogram>,
    pub session_bytes: Family<BytesLabels, Counter>,
    pub collect_keys: Counter,
    pub webhook_deliveries: Family<ResultLabel, Counter>,
    pub journal_commit: Histogram,
    pub api_requests: Family<ApiLabels, Counter>,
    build_info: Family<VersionLabel, Gauge>,
}

/// Latency buckets: 0.5 ms to about 8 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        connections_accepted: Counter::default(),
        connections_refused: Family::default(),
        connections_closed: Family::default(),
        auth: Family::default(),
        sessions_started: Family::default(),
        sessions_ended: Family::default(),
        sessions_active: Family::default(),
        session_start: latency(),
        redemption: Family::new_with_constructor(latency),
        session_bytes: Family::default(),
        collect_keys: Counter::default(),
        webhook_deliveries: Family::default(),
        journal_commit: latency(),
        api_requests: Family::default(),
        build_info: Family::default(),
    };
    m.build_info
        .get_or_create(&VersionLabel {
            version: crate::version::current(),
        })
        .set(1);
    // Every value of the fixed label sets from 0, so that a rate over the
    // first one seen starts at the daemon's start, not at the first event.
    for reason in ["penalty", "per_source_max_startups", "max_startups"] {
        let _ = m.connections_refused.get_or_create(&ReasonLabel { reason });
    }
    for ending in ["authenticated", "auth_failed", "no_auth", "grace_exceeded"] {
        let _ = m.connections_closed.get_or_create(&EndingLabel { ending });
    }
    for method in ["password", "keyboard-interactive"] {
        for result in ["success", "failure", "unavailable"] {
            let _ = m.auth.get_or_create(&AuthLabels { method, result });
        }
    }
    for result in ["delivered", "retrying", "failed", "gone", "unrecorded"] {
        let _ = m.webhook_deliveries.get_or_create(&ResultLabel { result });
    }
    for result in ["granted", "refused", "unavailable"] {
        let _ = m.redemption.get_or_create(&ResultLabel { result });
    }
    m
});

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Seconds, as histograms take them.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Metrics {
    /// A registry with every metric of the process under [`PREFIX`]; the
    /// caller adds what is read at scrape time.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix(PREFIX);
        r.register(
            "build_info",
            "The running version (always 1)",
            self.build_info.clone(),
        );
        r.register(
            "ssh_connections_accepted",
            "SSH connections admitted at accept",
            self.connections_accepted.clone(),
        );
        r.register(
            "ssh_connections_refused",
            "SSH connections refused at accept by admission control, by reason (penalty, per_source_max_startups, max_startups)",
            self.connections_refused.clone(),
        );
        r.register(
            "ssh_connections_closed",
            "Admitted SSH connections that ended, by how far they got (authenticated, auth_failed, no_auth, grace_exceeded)",
            self.connections_closed.clone(),
        );
        r.register(
            "ssh_auth",
            "SSH authentication requests by method (none, password, keyboard-interactive, publickey) and result (success, failure, unavailable: the journal could not be asked; collected: a key proven to a collect session)",
            self.auth.clone(),
        );
        r.register(
            "sessions_started",
            "Sessions started, by kind (command, tunnel, collect) and profile (a tunnel's target)",
            self.sessions_started.clone(),
        );
        r.register(
            "sessions_ended",
            "Sessions ended, by kind, profile and end reason",
            self.sessions_ended.clone(),
        );
        r.register(
            "sessions_active",
            "Sessions running now, by kind and profile",
            self.sessions_active.clone(),
        );
        r.register_with_unit(
            "session_start",
            "From a shell or exec request to the command running and recorded",
            Unit::Seconds,
            self.session_start.clone(),
        );
        r.register_with_unit(
            "token_redemption",
            "The journal call that checks and spends a presented token, by result (granted, refused, unavailable)",
            Unit::Seconds,
            self.redemption.clone(),
        );
        r.register_with_unit(
            "session",
            "Bytes of session traffic by kind and direction (in: from the client, out: to it)",
            Unit::Bytes,
            self.session_bytes.clone(),
        );
        r.register(
            "collect_keys",
            "Public keys proven to collect sessions",
            self.collect_keys.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome",
            self.webhook_deliveries.clone(),
        );
        r.register_with_unit(
            "journal_commit",
            "Commits of the journal writer's batches",
            Unit::Seconds,
            self.journal_commit.clone(),
        );
        r.register(
            "api_requests",
            "HTTP API requests by method, route and status",
            self.api_requests.clone(),
        );
        r
    }

    /// Counts a session that started; the returned guard keeps it among the
    /// active ones until dropped.
    pub fn session_started(&self, kind: Kind, profile: &str) -> Active {
        let labels = SessionLabels::new(kind, profile);
        self.sessions_started.get_or_create(&labels).inc();
        self.sessions_active.get_or_create(&labels).inc();
        Active { labels }
    }

    /// The counter of a session kind's bytes one way (`in` or `out`).
    pub fn bytes(&self, kind: Kind, direction: &'static str) -> Counter {
        self.session_bytes.get_or_create_owned(&BytesLabels {
            kind: kind.as_str(),
            direction,
        })
    }
}

/// A session among the active ones, until [`Active::ended`] or drop.
pub struct Active {
    labels: SessionLabels,
}

impl Active {
    /// Counts the end, for `reason`.
    pub fn ended(self, reason: &'static str) {
        get()
            .sessions_ended
            .get_or_create(&EndLabels {
                kind: self.labels.kind,
                profile: self.labels.profile.clone(),
                reason,
            })
            .inc();
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        get().sessions_active.get_or_create(&self.labels).dec();
    }
}

/// An HTTP method as a label: the ones the API answers, else `other` (a
/// client cannot add series by inventing methods).
pub fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn an_active_session_counts_until_it_ends_and_its_end_is_counted_once() {
        let m = get();
        let labels = SessionLabels::new(Kind::Tunnel, "unit-test-target");
        let a = m.session_started(Kind::Tunnel, "unit-test-target");
        assert_eq!(m.sessions_active.get_or_create(&labels).get(), 1);
        a.ended("canceled");
        assert_eq!(m.sessions_active.get_or_create(&labels).get(), 0);
        let ended = EndLabels {
            kind: "tunnel",
            profile: "unit-test-target".into(),
            reason: "canceled",
        };
        assert_eq!(m.sessions_ended.get_or_create(&ended).get(), 1);
        let t = text(&m.registry());
        assert!(
            t.contains(
                "tollgate_sessions_ended_total{kind=\"tunnel\",profile=\"unit-test-target\",reason=\"canceled\"} 1"
            ),
            "{t}"
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("get"), "other");
    }
}

//! `[metrics]`: `/metrics` in the Prometheus text format, on its own
//! listeners (no authentication, like every exporter: loopback unless
//! `metrics.allow_remote`). Serves the process's counters ([`crate::metrics`])
//! and what is read when scraped: each drain's delivered, queued and
//! dropped messages, connections not yet authenticated, whether the
//! journal is reachable. Nothing else is served there.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::drain::deliver::Stats;
use crate::state::Current;

/// What is read from the running daemon at each scrape.
struct Scraped(Arc<Current>);

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

/// One family of per-drain values, read from each drain's [`Stats`].
struct PerDrain {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    counter: bool,
    value: fn(&Stats) -> u64,
}

const PER_DRAIN: [PerDrain; 7] = [
    PerDrain {
        name: "drain_connected",
        help: "1 while the drain's collector is connected (UDP: always).",
        unit: None,
        counter: false,
        value: |s| u64::from(s.connected),
    },
    PerDrain {
        name: "drain_delivered",
        help: "Messages delivered to the drain's collector.",
        unit: None,
        counter: true,
        value: |s| s.delivered,
    },
    PerDrain {
        name: "drain_queued",
        help: "Messages waiting for the drain's collector.",
        unit: None,
        counter: false,
        value: |s| s.queued,
    },
    PerDrain {
        name: "drain_queued",
        help: "Bytes waiting for the drain's collector.",
        unit: Some(Unit::Bytes),
        counter: false,
        value: |s| s.queued_bytes,
    },
    PerDrain {
        name: "drain_dropped",
        help: "Messages dropped because the drain's queue was full (each reported in a drain.dropped event).",
        unit: None,
        counter: true,
        value: |s| s.dropped_total,
    },
    PerDrain {
        name: "drain_dropped",
        help: "Bytes of the messages dropped because the drain's queue was full.",
        unit: Some(Unit::Bytes),
        counter: true,
        value: |s| s.dropped_bytes_total,
    },
    PerDrain {
        name: "drain_failures",
        help: "Failed connection attempts and broken connections to the drain's collector.",
        unit: None,
        counter: true,
        value: |s| s.failures,
    },
];

impl PerDrain {
    fn encode(
        &self,
        encoder: &mut DescriptorEncoder,
        drains: &[(String, Stats)],
    ) -> Result<(), std::fmt::Error> {
        if drains.is_empty() {
            return Ok(());
        }
        let kind = if self.counter {
            ConstCounter::new(0u64).metric_type()
        } else {
            ConstGauge::new(0i64).metric_type()
        };
        let mut family =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), kind)?;
        for (drain, stats) in drains {
            let labels = [("drain", drain.as_str())];
            let e = family.encode_family(&labels)?;
            let v = (self.value)(stats);
            if self.counter {
                ConstCounter::new(v).encode(e)?;
            } else {
                ConstGauge::new(v as i64).encode(e)?;
            }
        }
        Ok(())
    }
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = self.0.get();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let g = ConstGauge::new(v);
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)
        };
        gauge(
            &mut encoder,
            "ssh_connections_unauthenticated",
            "SSH connections admitted and not yet authenticated (what max_startups counts).",
            i64::from(shared.admission.pending()),
        )?;
        gauge(
            &mut encoder,
            "journal_reachable",
            "1 while the journal takes calls (0: a shared journal is out of reach).",
            i64::from(
                !shared
                    .journal_down
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        )?;
        let drains: Vec<_> = shared
            .drains
            .iter()
            .map(|s| (s.spec.name.clone(), s.drain.stats()))
            .collect();
        for family in &PER_DRAIN {
            family.encode(&mut encoder, &drains)?;
        }
        Ok(())
    }
}

/// The registry `/metrics` encodes: the process's metrics and [`Scraped`].
pub fn registry(current: Arc<Current>) -> Registry {
    let mut r = crate::metrics::get().registry();
    r.register_collector(Box::new(Scraped(current)));
    r
}

async fn scrape(State(registry): State<Arc<Registry>>) -> Response {
    let mut body = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
        tracing::error!(error = %e, "metrics: cannot encode");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    r
}

/// `GET /metrics`, and 404 for anything else.
pub fn router(current: Arc<Current>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registry(current)))
}

/// Binds `[metrics] listen` and serves `/metrics` on each address; like
/// [`super::start`], a reload does not move them.
pub async fn start(
    config: &crate::config::Metrics,
    current: &Arc<Current>,
) -> Result<super::Listening, String> {
    super::listen("metrics", &config.listen, None, router(current.clone())).await
}

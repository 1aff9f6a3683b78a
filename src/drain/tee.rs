//! From a session's output and the journal's events to messages queued on
//! each drain: one line cutter per drain (budgets and ANSI handling differ),
//! the session's metadata as structured data, and nothing that waits.

use std::sync::Arc;
use std::time::SystemTime;

use super::deliver::{Drain, Target};
use super::lines::{Line, LineCutter};
use super::syslog::{rfc3164, rfc5424, Origin, Severity, StructuredData};

pub use crate::config::{Format, Spec};

/// Niceness of the thread that cuts and encodes every session's output
/// for the drains: under CPU contention the sessions themselves come
/// first, and what the tee cannot keep up with is dropped and counted.
pub const TEE_NICE: i32 = 10;

/// The runtime, on one thread of its own at [`TEE_NICE`], where sessions'
/// tees run (see `ssh::session`).
pub fn tee_runtime() -> &'static tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tollgate-tee".into())
            .spawn(move || {
                lower_thread_priority(TEE_NICE);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .expect("spawn the tee thread");
        rx.recv().expect("the tee thread starts")
    })
}

/// Sets the calling thread's nice value (Linux: per thread).
fn lower_thread_priority(nice: i32) {
    if let Err(e) = crate::exec::set_thread_nice(nice) {
        tracing::warn!(error = %e, "cannot lower the tee thread's priority");
    }
}

/// A configured drain with its delivery built (TLS settings loaded): what
/// a [`Sink`] starts from.
#[derive(Debug, Clone)]
pub struct Planned {
    pub spec: Spec,
    pub target: Target,
    pub queue_bytes: usize,
}

impl Planned {
    /// `d`'s delivery built.
    pub fn new(d: &crate::config::DrainConfig) -> Result<Planned, super::tls::TlsError> {
        Ok(Planned {
            spec: d.spec.clone(),
            target: Target::from_url(&d.url)?,
            queue_bytes: d.queue_bytes,
        })
    }
}

/// A configured drain and its delivery.
#[derive(Clone)]
pub struct Sink {
    pub spec: Spec,
    pub drain: Drain,
    /// What it was started with: a reload keeps it when that is unchanged.
    pub planned: Planned,
}

impl Sink {
    /// Starts delivering as `p` says.
    pub fn start(p: &Planned) -> Sink {
        Sink {
            spec: p.spec.clone(),
            drain: Drain::start(p.target.clone(), p.queue_bytes),
            planned: p.clone(),
        }
    }

    /// Whether it was started as `p` says.
    pub fn runs(&self, p: &Planned) -> bool {
        self.planned.spec == p.spec
            && self.planned.target == p.target
            && self.planned.queue_bytes == p.queue_bytes
    }
}

/// What every output message says about its session.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    pub id: String,
    pub profile: String,
    pub login_user: String,
    pub client_addr: String,
}

/// Encodes one output line for `spec`.
fn encode_line(
    spec: &Spec,
    origin: &Origin,
    meta: &SessionMeta,
    at: SystemTime,
    line: &Line,
) -> String {
    let seq = line.seq.to_string();
    let part = line.part.map(|p| p.to_string());
    match spec.format {
        Format::Rfc5424 => {
            let mut params = vec![
                ("session", meta.id.as_str()),
                ("profile", meta.profile.as_str()),
                ("user", meta.login_user.as_str()),
                ("client", meta.client_addr.as_str()),
                ("seq", seq.as_str()),
            ];
            if let Some(p) = &part {
                params.push(("part", p.as_str()));
            }
            let sd = [StructuredData {
                id: &spec.sd_id,
                params: &params,
            }];
            rfc5424(
                origin,
                spec.output_facility,
                Severity::Info,
                at,
                "output",
                &sd,
                &line.text,
            )
        }
        Format::Rfc3164 => {
            let prefix = match &part {
                Some(p) => format!("[{} {} #{}.{}] ", meta.id, meta.login_user, seq, p),
                None => format!("[{} {} #{}] ", meta.id, meta.login_user, seq),
            };
            rfc3164(
                origin,
                spec.output_facility,
                Severity::Info,
                at,
                &(prefix + &line.text),
            )
        }
    }
}

/// The text budget of a drain's output lines: its size cap less the
/// longest header and structured data a line of this session can carry.
fn text_budget(spec: &Spec, origin: &Origin, meta: &SessionMeta) -> usize {
    let widest = Line {
        seq: u64::MAX,
        part: Some(u32::MAX),
        text: String::new(),
    };
    let overhead = encode_line(spec, origin, meta, SystemTime::now(), &widest).len() + 1;
    spec.max_message_bytes.saturating_sub(overhead)
}

/// Tees one session's output to every drain that wants output.
pub struct OutputTee {
    meta: SessionMeta,
    origin: Arc<Origin>,
    sinks: Arc<Vec<Sink>>,
    cutters: Vec<(usize, LineCutter)>,
    lines: Vec<Line>,
}

impl OutputTee {
    pub fn new(sinks: Arc<Vec<Sink>>, origin: Arc<Origin>, meta: SessionMeta) -> Self {
        let cutters = sinks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.spec.send_output)
            .map(|(i, s)| {
                (
                    i,
                    LineCutter::new(text_budget(&s.spec, &origin, &meta), s.spec.ansi),
                )
            })
            .collect();
        OutputTee {
            meta,
            origin,
            sinks,
            cutters,
            lines: Vec::new(),
        }
    }

    /// True when no drain wants output (the session need not tee at all).
    pub fn is_empty(&self) -> bool {
        self.cutters.is_empty()
    }

    /// Output as the person saw it; complete lines are queued on each drain.
    pub fn push(&mut self, data: &[u8]) {
        for k in 0..self.cutters.len() {
            self.cutters[k].1.push(data, &mut self.lines);
            self.send(k);
        }
    }

    /// Queues partial lines (the output went quiet, or the session ended).
    pub fn flush(&mut self) {
        for k in 0..self.cutters.len() {
            self.cutters[k].1.flush(&mut self.lines);
            self.send(k);
        }
    }

    fn send(&mut self, k: usize) {
        let sink = &self.sinks[self.cutters[k].0];
        let now = SystemTime::now();
        for line in self.lines.drain(..) {
            // A full queue would turn the message away: skip encoding it.
            if !sink.drain.has_room(line.text.len()) {
                sink.drain.count_dropped(1, line.text.len() as u64);
                continue;
            }
            sink.drain.offer(encode_line(
                &sink.spec,
                &self.origin,
                &self.meta,
                now,
                &line,
            ));
        }
    }
}

/// Encodes a journal event for `spec`: MSGID the event kind, the detail as
/// structured data (scalars) and as JSON text.
pub fn encode_event(
    spec: &Spec,
    origin: &Origin,
    at: SystemTime,
    seq: i64,
    session: Option<&str>,
    kind: &str,
    detail: &serde_json::Value,
) -> String {
    // A kind this build does not know (written by a newer one) is news.
    let trouble = crate::journal::EventKind::parse(kind).is_some_and(|k| k.is_trouble());
    let severity = if trouble {
        Severity::Warning
    } else {
        Severity::Notice
    };
    let seq_s = seq.to_string();
    let text = detail.to_string();
    let scalars: Vec<(String, String)> = detail
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                    serde_json::Value::Number(n) => Some((k.clone(), n.to_string())),
                    serde_json::Value::Bool(b) => Some((k.clone(), b.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let encode = |text: &str, value_cap: usize| match spec.format {
        Format::Rfc5424 => {
            let mut params: Vec<(&str, &str)> = vec![("event_seq", seq_s.as_str())];
            if let Some(s) = session {
                params.push(("session", s));
            }
            params.extend(
                scalars
                    .iter()
                    .map(|(k, v)| (k.as_str(), prefix(v, value_cap))),
            );
            let sd = [StructuredData {
                id: &spec.sd_id,
                params: &params,
            }];
            rfc5424(origin, spec.facility, severity, at, kind, &sd, text)
        }
        Format::Rfc3164 => rfc3164(
            origin,
            spec.facility,
            severity,
            at,
            &format!("{kind} session={} {text}", session.unwrap_or("-")),
        ),
    };
    let max = spec.max_message_bytes;
    let full = encode(&text, usize::MAX);
    if full.len() <= max {
        return full;
    }
    // Too long for the drain's cap: the JSON text is cut first (its
    // scalars are in the structured data), then long values.
    let bare = encode("", usize::MAX);
    // (+1: the space before a non-empty MSG; +4: " ...")
    if bare.len() + 5 <= max {
        let room = max - bare.len() - 5;
        return encode(&format!("{} ...", prefix(&text, room)), usize::MAX);
    }
    let mut cap = 256;
    loop {
        let m = encode("", cap);
        if m.len() <= max || cap == 0 {
            return m;
        }
        cap /= 2;
    }
}

/// The longest prefix of `s` of at most `n` bytes that ends on a character
/// boundary.
fn prefix(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ansi;

    fn spec(format: Format, max: usize) -> Spec {
        Spec {
            name: "t".into(),
            format,
            send_output: true,
            send_events: true,
            facility: 10,
            output_facility: 16,
            sd_id: "tollgate@32473".into(),
            max_message_bytes: max,
            ansi: Ansi::Strip,
        }
    }

    fn origin() -> Arc<Origin> {
        Arc::new(Origin {
            hostname: "bastion".into(),
            app_name: "tollgate".into(),
            procid: "7".into(),
        })
    }

    fn meta() -> SessionMeta {
        SessionMeta {
            id: "ses_1".into(),
            profile: "console".into(),
            login_user: "ops".into(),
            client_addr: "127.0.0.1:5000".into(),
        }
    }

    /// Drains whose collector can never be reached, so every message stays
    /// queued where the test can read it.
    fn captured(specs: Vec<Spec>) -> (Arc<Vec<Sink>>, Vec<Drain>) {
        let nowhere = std::path::PathBuf::from("/nonexistent-tollgate-test/log.sock");
        let sinks: Vec<Sink> = specs
            .into_iter()
            .map(|spec| {
                Sink::start(&Planned {
                    spec,
                    target: Target::Unix(nowhere.clone()),
                    queue_bytes: 1 << 20,
                })
            })
            .collect();
        let drains = sinks.iter().map(|s| s.drain.clone()).collect();
        (Arc::new(sinks), drains)
    }

    #[tokio::test]
    async fn output_lines_carry_session_metadata_and_stay_under_the_cap() {
        let (sinks, drains) =
            captured(vec![spec(Format::Rfc5424, 480), spec(Format::Rfc3164, 480)]);
        let mut tee = OutputTee::new(sinks, origin(), meta());
        tee.push(b"$ echo hi\r\nhi\r\n");
        tee.push("x".repeat(2000).as_bytes());
        tee.flush();
        for d in &drains {
            let queued = d.queued_messages();
            assert!(queued.len() > 4, "{queued:?}");
            for m in &queued {
                assert!(m.len() <= 480, "{} bytes: {m}", m.len());
            }
        }
        let m5424 = drains[0].queued_messages();
        assert!(m5424[0].starts_with("<134>1 "), "{}", m5424[0]);
        assert!(m5424[0].contains(r#" bastion tollgate 7 output [tollgate@32473 session="ses_1" profile="console" user="ops" client="127.0.0.1:5000" seq="1"] $ echo hi"#), "{}", m5424[0]);
        assert!(m5424[1].ends_with(r#"seq="2"] hi"#), "{}", m5424[1]);
        assert!(m5424[2].contains(r#"seq="3" part="1"]"#), "{}", m5424[2]);
        let m3164 = drains[1].queued_messages();
        assert!(
            m3164[0].ends_with("tollgate[7]: [ses_1 ops #1] $ echo hi"),
            "{}",
            m3164[0]
        );
    }

    #[tokio::test]
    async fn events_use_their_kind_as_msgid_and_warning_for_failures() {
        let s = spec(Format::Rfc5424, 2048);
        let at = SystemTime::UNIX_EPOCH;
        let ok = encode_event(
            &s,
            &origin(),
            at,
            9,
            Some("ses_1"),
            "session.redeemed",
            &serde_json::json!({"client_addr": "1.2.3.4:5", "n": 3, "nested": {"a": 1}}),
        );
        assert!(ok.starts_with("<85>1 1970-01-01T00:00:00.000000Z bastion tollgate 7 session.redeemed [tollgate@32473 event_seq=\"9\" session=\"ses_1\" client_addr=\"1.2.3.4:5\" n=\"3\"] {"), "{ok}");
        let bad = encode_event(
            &s,
            &origin(),
            at,
            10,
            None,
            "auth.failed",
            &serde_json::json!({}),
        );
        assert!(bad.starts_with("<84>1 "), "{bad}");
    }

    #[test]
    fn events_stay_under_the_cap_text_first_then_long_values() {
        let s = spec(Format::Rfc5424, 480);
        let enc = |detail| {
            encode_event(
                &s,
                &origin(),
                SystemTime::UNIX_EPOCH,
                1,
                Some("ses_1"),
                "session.issued",
                &detail,
            )
        };
        let m =
            enc(serde_json::json!({"reason": "r".repeat(200), "nested": {"x": "y".repeat(300)}}));
        assert!(m.len() <= 480, "{} bytes", m.len());
        assert!(
            m.contains(&format!("reason=\"{}\"", "r".repeat(200))),
            "values kept whole: {m}"
        );
        assert!(m.ends_with(" ..."), "{m}");
        let m = enc(serde_json::json!({"reason": "é".repeat(400)}));
        assert!(m.len() <= 480, "{} bytes", m.len());
        assert!(m.contains("reason=\"éé"), "{m}");
        let m = enc(
            serde_json::json!({"a": "x".repeat(30), "b": "y".repeat(300), "c": "z".repeat(300)}),
        );
        assert!(m.len() <= 480 && m.contains("event_seq=\"1\""), "{m}");
    }
}

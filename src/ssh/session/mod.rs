//! The per-connection session task: owns everything that happens after a
//! token was redeemed — the channel's requests, the process, the timers, the
//! teardown — and records each step in the journal.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::server::Handle;
use russh::{ChannelId, ChannelMsg, Disconnect, Sig};
use serde_json::json;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use super::auth::AuthorizedSession;
pub use super::ctl::{Ctl, Latest, WinSize};

mod recording;
mod teardown;
pub use super::pumps::InputGate;
use super::pumps::{
    feed_pipe, feed_pty, pump_pipe, pump_pty, run_tee, wait_pumps, Activity, Output, TeeTx,
};
use crate::drain::tee::{OutputTee, SessionMeta};
use crate::exec::plan::{plan, Refused, Request};
use crate::exec::{self, Account, PtyMaster, PtyRequest, Stdio3};
use crate::journal::{Ending, EventKind, Grant};
use crate::metrics;
use crate::state::Shared;
use nix::sys::signal::Signal;
use teardown::{bounded, end_channel, wait_child};

pub use crate::journal::EndReason;

/// Client `env` requests kept per session at most; later ones are refused
/// (OpenSSH ignores env requests past its own limit too).
pub const ENV_MAX: usize = 64;

/// Events of one kind (resized, signal, request refused, tunnel refused)
/// recorded per session at most; the rest are counted and summed up in
/// one `session.events_suppressed` event when the session ends.
pub const EVENTS_PER_KIND: u64 = 32;

/// Starts the task for a freshly authorized connection; returns where the
/// handler sends channel traffic, and the gate it passes client data
/// through. The task ends the session if that sender is dropped (the
/// connection is gone).
pub fn start(
    shared: Arc<Shared>,
    auth: AuthorizedSession,
    handle: Handle,
) -> (UnboundedSender<Ctl>, Arc<InputGate>, Arc<Latest<WinSize>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let gate = Arc::new(InputGate::new());
    let resize = Arc::new(Latest::default());
    let task_resize = resize.clone();
    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    shared.register(auth.id(), stop_tx);
    let task_gate = gate.clone();
    let tunnel = match &auth.redeemed.grant {
        Grant::Tunnel {
            target,
            connection_limit,
        } => shared
            .config
            .targets
            .get(target)
            .map(|t| super::tunnel::Tunnel::new(target.clone(), t.clone(), *connection_limit)),
        Grant::Command { .. } => None,
    };
    let (kind, profile) = match &auth.redeemed.grant {
        Grant::Tunnel { target, .. } => (metrics::Kind::Tunnel, target.as_str()),
        Grant::Command { profile, .. } => (metrics::Kind::Command, profile.as_str()),
    };
    let active = metrics::get().session_started(kind, profile);
    tokio::spawn(async move {
        let id = auth.id().to_string();
        let task = Task {
            active: Some(active),
            tunnel,
            shared: shared.clone(),
            auth,
            handle,
            channel: None,
            pty: None,
            client_env: Vec::new(),
            activity: Arc::new(Activity::new(kind)),
            epoch: Instant::now(),
            running: None,
            gate: task_gate,
            resize: task_resize,
            recorded: std::collections::HashMap::new(),
            recorder: None,
        };
        task.run(rx, stop_rx).await;
        shared.unregister(&id);
    });
    (tx, gate, resize)
}

struct Running {
    exit: exec::ExitWatcher,
    pid: i32,
    tree: exec::Tree,
    master: Option<Arc<PtyMaster>>,
    input: UnboundedSender<Option<Vec<u8>>>,
    pumps: Vec<JoinHandle<()>>,
}

struct Task {
    /// Among the process's active sessions until its end is counted.
    active: Option<metrics::Active>,
    /// Tunnel sessions: their forwarded connections.
    tunnel: Option<super::tunnel::Tunnel>,
    shared: Arc<Shared>,
    auth: AuthorizedSession,
    handle: Handle,
    channel: Option<ChannelId>,
    pty: Option<PtyRequest>,
    client_env: Vec<(String, String)>,
    activity: Arc<Activity>,
    epoch: Instant,
    running: Option<Running>,
    gate: Arc<InputGate>,
    resize: Arc<Latest<WinSize>>,
    /// Events recorded so far by kind, for [`EVENTS_PER_KIND`].
    recorded: std::collections::HashMap<EventKind, u64>,
    /// The PTY session's recording, while it runs.
    recorder: Option<Arc<crate::record::Recorder>>,
}

/// How the main loop ended.
enum Outcome {
    Exited(std::process::ExitStatus),
    Ended(EndReason),
}

impl Task {
    fn touch(&self) {
        self.activity
            .last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Records an event of a kind a client can repeat at will, up to
    /// [`EVENTS_PER_KIND`] per session; past that it is only counted.
    async fn capped_event(&mut self, kind: EventKind, detail: serde_json::Value) {
        let n = self.recorded.entry(kind).or_default();
        *n += 1;
        if *n <= EVENTS_PER_KIND {
            self.event(kind, detail).await;
        }
    }

    /// Records the session's end, retrying (0.5 s, doubling to 30 s) for
    /// as long as the journal refuses it (a full disk, say): a session that
    /// ended never stays `active` while this daemon runs, and the person
    /// is not held up by it (the connection is already closed). If the
    /// daemon stops first, its next start marks the session
    /// `terminated (daemon_stopped)`.
    async fn record_end(&self, ending: &Ending) {
        let mut delay = Duration::from_millis(500);
        let mut failures = 0u32;
        loop {
            let (id, e2) = (self.auth.id().to_string(), ending.clone());
            match self.shared.db.call(move |j| j.finish(&id, &e2)).await {
                Ok(_) => {
                    if failures > 0 {
                        tracing::warn!(session = %self.auth.id(), attempts = failures + 1, "recorded the end of the session in the journal after retrying");
                    }
                    return;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::error!(session = %self.auth.id(), error = %e, "could not record the end of the session in the journal; retrying until it can");
                    }
                    failures += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// What [`Task::capped_event`] did not record, as one event.
    async fn record_suppressed(&mut self) {
        let mut over: serde_json::Map<String, serde_json::Value> = self
            .recorded
            .iter()
            .filter(|(_, n)| **n > EVENTS_PER_KIND)
            .map(|(k, n)| (k.to_string(), json!(n - EVENTS_PER_KIND)))
            .collect();
        if let Some(t) = &self.tunnel {
            if t.refusals() > EVENTS_PER_KIND {
                over.insert(
                    EventKind::TunnelRefused.to_string(),
                    json!(t.refusals() - EVENTS_PER_KIND),
                );
            }
        }
        if !over.is_empty() {
            self.event(
                EventKind::SessionEventsSuppressed,
                json!({"after_each": EVENTS_PER_KIND, "suppressed": over}),
            )
            .await;
        }
    }

    /// Records an event; one the journal refuses (out of reach) is kept
    /// and written, with the time it happened, once it takes writes again.
    async fn event(&self, kind: EventKind, detail: serde_json::Value) {
        let id = self.auth.id().to_string();
        let at = crate::journal::now_ms();
        let kept = detail.clone();
        if let Err(e) = self
            .shared
            .db
            .call(move |j| j.event_at(at, Some(&id), kind, detail))
            .await
        {
            tracing::warn!(session = %self.auth.id(), kind = kind.as_str(), error = %e, "could not record event in the journal; kept to write later");
            self.shared
                .db
                .event_later(at, Some(self.auth.id()), kind, kept);
        }
    }

    async fn run(
        mut self,
        mut ctl: UnboundedReceiver<Ctl>,
        mut stop: UnboundedReceiver<EndReason>,
    ) {
        self.touch();
        let deadline =
            tokio::time::Instant::from_std(self.auth.started + self.auth.redeemed.max_duration);
        let idle = self.shared.config.sessions.idle_timeout;
        let mut idle_tick = tokio::time::interval(idle.map_or(Duration::from_secs(3600), |d| {
            (d / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
        }));
        let outcome = loop {
            tokio::select! {
                msg = ctl.recv() => match msg {
                    None => break Outcome::Ended(EndReason::Disconnected),
                    Some(m) => if let Err(reason) = self.on_ctl(m).await {
                        break Outcome::Ended(reason);
                    },
                },
                reason = stop.recv() => break Outcome::Ended(reason.unwrap_or(EndReason::DaemonStopped)),
                _ = tokio::time::sleep_until(deadline) => break Outcome::Ended(EndReason::MaxDuration),
                _ = idle_tick.tick(), if idle.is_some() => {
                    let last = Duration::from_millis(self.activity.last_ms.load(Ordering::Relaxed));
                    if idle.is_some_and(|t| self.epoch.elapsed().saturating_sub(last) >= t) {
                        break Outcome::Ended(EndReason::IdleTimeout);
                    }
                },
                status = wait_child(&mut self.running) => break Outcome::Exited(status),
            }
        };
        self.teardown(outcome).await;
    }

    /// Handles one message; `Err` ends the session.
    async fn on_ctl(&mut self, msg: Ctl) -> Result<(), EndReason> {
        match msg {
            Ctl::ChannelOpen(id) => self.channel = Some(id),
            // The handler accepted it: it comes before any shell or exec.
            Ctl::Pty(req) => self.pty = Some(req),
            Ctl::Env(k, v) if self.client_env.len() < ENV_MAX => self.client_env.push((k, v)),
            Ctl::Env(..) => {}
            Ctl::Shell | Ctl::Exec(_) if self.auth.is_tunnel() => self.explain_tunnel().await,
            Ctl::Shell => return self.start_process(None).await,
            Ctl::Exec(cmd) => return self.start_process(Some(cmd)).await,
            Ctl::Forward(f) => self.forward(f).await,
            Ctl::Data(d) => {
                self.touch();
                self.activity.add_in(d.len() as u64);
                let n = d.len();
                let delivered = match &self.running {
                    Some(r) => r.input.send(Some(d)).is_ok(),
                    None => false,
                };
                if !delivered {
                    self.gate.release(n);
                }
            }
            Ctl::Eof => {
                if let Some(r) = &self.running {
                    let _ = r.input.send(None);
                }
            }
            // A tunnel outlives its (optional) session channel.
            Ctl::Close if self.auth.is_tunnel() => {}
            Ctl::Close => return Err(EndReason::Disconnected),
            Ctl::Resized => {
                let Some((cols, rows, pw, ph)) = self.resize.take() else {
                    return Ok(());
                };
                if let Some(m) = self.running.as_ref().and_then(|r| r.master.clone()) {
                    if let Err(e) = m.resize(cols, rows, pw, ph) {
                        tracing::warn!(session = %self.auth.id(), error = %e, "resize failed");
                    }
                    if let Some(r) = &self.recorder {
                        r.resize(cols, rows).await;
                    }
                    self.capped_event(
                        EventKind::SessionResized,
                        json!({"cols": cols, "rows": rows}),
                    )
                    .await;
                }
            }
            Ctl::Signal(name) => {
                if let Some(r) = &self.running {
                    let delivered = exec::deliver_signal(r.pid, &name);
                    self.capped_event(
                        EventKind::SessionSignal,
                        json!({"signal": name, "delivered": delivered}),
                    )
                    .await;
                }
            }
            Ctl::Refused(what) => {
                self.capped_event(EventKind::SessionRequestRefused, json!({"request": what}))
                    .await;
            }
        }
        Ok(())
    }

    /// A `direct-tcpip` request: forwarded on a tunnel session to its
    /// target, refused (and recorded) everywhere else.
    async fn forward(&mut self, f: super::tunnel::ForwardRequest) {
        let Some(tunnel) = self.tunnel.as_mut() else {
            let what = format!("{f:?}");
            f.reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            self.capped_event(EventKind::SessionRequestRefused, json!({"request": what}))
                .await;
            return;
        };
        let (activity, epoch) = (self.activity.clone(), self.epoch);
        let on_bytes: super::tunnel::OnBytes = Arc::new(move |up, down| {
            activity.add_in(up);
            activity.add_out(down);
            activity
                .last_ms
                .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        });
        tunnel
            .request(&self.shared, self.auth.id(), f, on_bytes)
            .await;
    }

    /// A shell or exec request on a tunnel token: how to use it instead,
    /// then the channel closes (the tunnel stays).
    async fn explain_tunnel(&mut self) {
        let Some(ch) = self.channel else { return };
        let text = match &self.tunnel {
            Some(t) => {
                let dest = self.shared.config.destination();
                super::tunnel::explanation(&t.name, &t.target, &self.auth.login_user, &dest)
            }
            None => "This token's target is no longer configured.\n".to_string(),
        };
        let text = if self.pty.is_some() {
            text.replace('\n', "\r\n")
        } else {
            text
        };
        let handle = &self.handle;
        let _ = bounded(async {
            let _ = handle.data(ch, text.into_bytes()).await;
            end_channel(handle, ch, ChannelMsg::ExitStatus { exit_status: 0 }).await;
        })
        .await;
        self.channel = None;
        self.event(
            EventKind::SessionRequestRefused,
            json!({"request": "session channel on a tunnel token (explained)"}),
        )
        .await;
    }

    /// Tells the person something on the terminal (or stderr without one).
    async fn say(&self, text: &str) {
        let Some(ch) = self.channel else { return };
        let _ = bounded(async {
            if self.pty.is_some() {
                let line = format!("\r\ntollgate: {text}\r\n");
                self.handle.data(ch, line.into_bytes()).await
            } else {
                let line = format!("tollgate: {text}\n");
                self.handle.extended_data(ch, 1, line.into_bytes()).await
            }
        })
        .await;
    }

    /// Ends a shell or exec request that cannot run. The handler accepted
    /// the request; the reason goes to the person's stderr before the exit
    /// status (OpenSSH quits on a failure reply without showing data it
    /// already got).
    async fn refuse(
        &mut self,
        message: &str,
        kind: EventKind,
        detail: serde_json::Value,
    ) -> Result<(), EndReason> {
        self.say(message).await;
        self.event(kind, detail).await;
        Err(EndReason::Error)
    }

    /// Runs the shell (`exec_cmd` = None) or an exec request.
    async fn start_process(&mut self, exec_cmd: Option<String>) -> Result<(), EndReason> {
        if self.running.is_some() {
            return Ok(()); // the handler refused it
        }
        let requested = Instant::now();
        let Some(profile) = self.shared.config.profile(self.auth.profile()).cloned() else {
            return self
                .refuse(
                    "this token's profile is no longer configured",
                    EventKind::SessionError,
                    json!({"error": "profile not configured", "profile": self.auth.profile()}),
                )
                .await;
        };
        let account = match Account::lookup_cached(&profile.user) {
            Ok(a) => a,
            Err(e) => {
                return self
                    .refuse(
                        "the session's account is not available",
                        EventKind::SessionError,
                        json!({"error": e.to_string()}),
                    )
                    .await
            }
        };
        let request = Request {
            command: exec_cmd.as_deref(),
            pty: self.pty.as_ref(),
            client_env: &self.client_env,
        };
        let mut spec = match plan(&self.auth.redeemed, &profile, account, &request) {
            Ok(spec) => spec,
            Err(Refused::ExecNotAllowed) => {
                let cmd = exec_cmd.as_deref().unwrap_or_default();
                return self
                    .refuse(
                        "this token does not allow running a command; connect without one to get the console",
                        EventKind::SessionRequestRefused,
                        json!({"request": "exec", "command": crate::text::clip(cmd, crate::text::COMMAND_MAX)}),
                    )
                    .await;
            }
            // A tunnel's shell and exec requests are explained, not run.
            Err(Refused::NotACommand) => return Ok(()),
        };
        let argv = spec.argv.clone();

        spec.cgroup = Some(exec::cgroup::Wanted {
            containment: self.shared.containment.clone(),
            id: self.auth.id().to_string(),
            limits: profile.limits.clone(),
        });
        let user = spec.account.name.clone();
        let spawned = match exec::spawn(spec).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(session = %self.auth.id(), error = %e, "could not start the session's command");
                return self
                    .refuse(
                        "the session's command could not be started",
                        EventKind::SessionError,
                        json!({"error": e.to_string()}),
                    )
                    .await;
            }
        };
        let Some(ch) = self.channel else {
            return Err(EndReason::Error);
        };
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let tee = OutputTee::new(
            self.shared.drains.clone(),
            self.shared.origin.clone(),
            SessionMeta {
                id: self.auth.id().to_string(),
                profile: self.auth.profile().to_string(),
                login_user: self.auth.login_user.clone(),
                client_addr: self.auth.client_addr.to_string(),
            },
        );
        let tee_tx: TeeTx = if tee.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(256);
            crate::drain::tee::tee_runtime().spawn(run_tee(tee, rx));
            Some((tx, self.shared.drains.clone()))
        };
        if spawned_pty(&spawned.io) {
            self.recorder = self.start_recording(&profile).await;
        }
        let output = |ext: Option<u32>| Output {
            recorder: if ext.is_none() {
                self.recorder.clone()
            } else {
                None
            },
            handle: self.handle.clone(),
            ch,
            ext,
            activity: self.activity.clone(),
            epoch: self.epoch,
            tee_tx: tee_tx.clone(),
        };
        let mut pumps = Vec::new();
        let master = match spawned.io {
            Stdio3::Pty(m) => {
                let m = Arc::new(m);
                pumps.push(tokio::spawn(pump_pty(m.clone(), output(None))));
                tokio::spawn(feed_pty(
                    m.clone(),
                    input_rx,
                    self.gate.clone(),
                    self.recorder.clone(),
                ));
                Some(m)
            }
            Stdio3::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                pumps.push(tokio::spawn(pump_pipe(stdout, output(None))));
                pumps.push(tokio::spawn(pump_pipe(stderr, output(Some(1)))));
                tokio::spawn(feed_pipe(stdin, input_rx, self.gate.clone()));
                None
            }
        };
        let pid = spawned.pid;
        let leader = spawned.leader;
        let tree = exec::Tree::new(pid, spawned.cgroup);
        let cgroup_path = tree.cgroup().map(|p| p.display().to_string());
        self.running = Some(Running {
            exit: spawned.exit,
            pid,
            tree,
            master,
            input: input_tx,
            pumps,
        });
        let id = self.auth.id().to_string();
        let detail = json!({
            "pid": pid, "user": user, "pty": self.pty.is_some(),
            "argv": argv.iter().map(|a| crate::text::clip(a, crate::text::COMMAND_MAX)).collect::<Vec<_>>(),
            "term": self.pty.as_ref().map(|p| p.term.clone()),
            "request": if exec_cmd.is_some() { "exec" } else { "shell" },
            "cgroup": cgroup_path,
        });
        // Not waited for: the session's process runs already, and the
        // calls that follow (its resizes, its end) are queued after it.
        let session = id.clone();
        self.shared.db.queue(
            move |j| j.started(&id, pid as u32, leader, detail),
            move |r| match r {
                Ok(()) => metrics::get()
                    .session_start
                    .observe(metrics::seconds(requested.elapsed())),
                Err(e) => {
                    tracing::error!(%session, error = %e, "could not record session start")
                }
            },
        );
        tracing::info!(session = %self.auth.id(), pid, login_user = %self.auth.login_user, client = %self.auth.client_addr, "session started");
        Ok(())
    }
}

fn spawned_pty(io: &Stdio3) -> bool {
    matches!(io, Stdio3::Pty(_))
}

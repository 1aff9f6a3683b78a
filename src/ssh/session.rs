//! The per-connection session task: owns everything that happens after a
//! token was redeemed — the channel's requests, the process, the timers, the
//! teardown — and records each step in the journal.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::server::Handle;
use russh::{ChannelId, Disconnect, Sig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::auth::AuthorizedSession;
use crate::drain::tee::{OutputTee, SessionMeta, Sink};
use crate::exec::{self, Account, PtyMaster, PtyRequest, Spec, Stdio3};
use crate::journal::Ending;
use crate::journal::EventKind;
use crate::state::Shared;
use nix::sys::signal::Signal;

/// What the handler tells the session task.
#[derive(Debug)]
pub enum Ctl {
    ChannelOpen(ChannelId),
    Pty(PtyRequest),
    Env(String, String),
    Shell,
    Exec(String),
    Data(Vec<u8>),
    Eof,
    Close,
    /// The window changed: its latest size is in the session's
    /// [`Latest`] slot (a flood of changes is one message at a time).
    Resized,
    Signal(String),
    /// A request refused by policy, recorded as an event.
    Refused(String),
    /// A `direct-tcpip` channel (tunnel sessions forward it to their target).
    Forward(super::tunnel::ForwardRequest),
}

pub use crate::journal::EndReason;

/// Client `env` requests kept per session at most; later ones are refused
/// (OpenSSH ignores env requests past its own limit too).
pub const ENV_MAX: usize = 64;

/// Events of one kind (resized, signal, request refused, tunnel refused)
/// recorded per session at most; the rest are counted and summed up in
/// one `session.events_suppressed` event when the session ends.
pub const EVENTS_PER_KIND: u64 = 32;

/// The latest of a value the handler may set faster than the session task
/// reads it (a window size): one slot, not a queue.
#[derive(Default)]
pub struct Latest<T>(std::sync::Mutex<Option<T>>);

impl<T> Latest<T> {
    /// Stores `v`; true when the slot was empty (the reader must be told).
    pub fn put(&self, v: T) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(v)
            .is_none()
    }

    pub fn take(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A window size: columns, rows, pixel width, pixel height.
pub type WinSize = (u32, u32, u32, u32);

/// Client `env` requests allowed through: locale only, as OpenSSH's default
/// `AcceptEnv LANG LC_*`.
pub fn client_env_allowed(name: &str, value: &str) -> bool {
    (name == "LANG" || name.starts_with("LC_"))
        && name.len() <= 64
        && value.len() <= 256
        && !value.contains('\0')
        && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// SSH signal name without `SIG`.
pub fn sig_name(s: &Sig) -> String {
    match s {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(c) => c.as_str(),
    }
    .to_string()
}

fn sig_from_name(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_string()),
    }
}

/// Bounds what the client may have sent that the session's process has not
/// read yet. Past the limit the handler waits, which stops russh reading the
/// connection and so pushes back on the client through TCP.
pub struct InputGate {
    queued: AtomicUsize,
    closed: AtomicBool,
    room: Notify,
}

/// Undelivered input allowed per session before the client is held back.
const INPUT_LIMIT: usize = 1 << 20;

impl InputGate {
    fn new() -> Self {
        InputGate {
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            room: Notify::new(),
        }
    }

    /// Waits until `n` more bytes fit (or the session is over).
    pub async fn admit(&self, n: usize) {
        loop {
            let room = self.room.notified();
            if self.closed.load(Ordering::Acquire)
                || self.queued.load(Ordering::Acquire) < INPUT_LIMIT
            {
                self.queued.fetch_add(n, Ordering::AcqRel);
                return;
            }
            room.await;
        }
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }
}

/// Byte counters and the last moment anything moved, shared with the pumps.
#[derive(Default)]
struct Activity {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Milliseconds since `epoch`.
    last_ms: AtomicU64,
}

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
    shared.register(&auth.id, stop_tx);
    let task_gate = gate.clone();
    let tunnel = auth.target.as_ref().and_then(|name| {
        let t = shared.config.targets.get(name)?;
        Some(super::tunnel::Tunnel::new(
            name.clone(),
            t.clone(),
            auth.connection_limit,
        ))
    });
    tokio::spawn(async move {
        let id = auth.id.clone();
        let task = Task {
            tunnel,
            shared: shared.clone(),
            auth,
            handle,
            channel: None,
            pty: None,
            client_env: Vec::new(),
            activity: Arc::new(Activity::default()),
            epoch: Instant::now(),
            running: None,
            gate: task_gate,
            resize: task_resize,
            recorded: std::collections::HashMap::new(),
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
            let (id, e2) = (self.auth.id.clone(), ending.clone());
            match self.shared.db.call(move |j| j.finish(&id, &e2)).await {
                Ok(_) => {
                    if failures > 0 {
                        tracing::warn!(session = %self.auth.id, attempts = failures + 1, "recorded the end of the session in the journal after retrying");
                    }
                    return;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::error!(session = %self.auth.id, error = %e, "could not record the end of the session in the journal; retrying until it can");
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

    async fn event(&self, kind: EventKind, detail: serde_json::Value) {
        let id = self.auth.id.clone();
        if let Err(e) = self
            .shared
            .db
            .call(move |j| j.event(Some(&id), kind, detail))
            .await
        {
            tracing::error!(session = %self.auth.id, kind = kind.as_str(), error = %e, "could not record event in the journal");
        }
    }

    async fn run(
        mut self,
        mut ctl: UnboundedReceiver<Ctl>,
        mut stop: UnboundedReceiver<EndReason>,
    ) {
        self.touch();
        let deadline = tokio::time::Instant::from_std(self.auth.started + self.auth.max_duration);
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
            Ctl::Shell | Ctl::Exec(_) if self.auth.target.is_some() => self.explain_tunnel().await,
            Ctl::Shell => return self.start_process(None).await,
            Ctl::Exec(cmd) => return self.start_process(Some(cmd)).await,
            Ctl::Forward(f) => self.forward(f).await,
            Ctl::Data(d) => {
                self.touch();
                self.activity
                    .bytes_in
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
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
            Ctl::Close if self.auth.target.is_some() => {}
            Ctl::Close => return Err(EndReason::Disconnected),
            Ctl::Resized => {
                let Some((cols, rows, pw, ph)) = self.resize.take() else {
                    return Ok(());
                };
                if let Some(m) = self.running.as_ref().and_then(|r| r.master.clone()) {
                    if let Err(e) = m.resize(cols, rows, pw, ph) {
                        tracing::warn!(session = %self.auth.id, error = %e, "resize failed");
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
            activity.bytes_in.fetch_add(up, Ordering::Relaxed);
            activity.bytes_out.fetch_add(down, Ordering::Relaxed);
            activity
                .last_ms
                .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        });
        tunnel
            .request(&self.shared, &self.auth.id, f, on_bytes)
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
            let _ = handle.exit_status_request(ch, 0).await;
            let _ = handle.eof(ch).await;
            let _ = handle.close(ch).await;
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
        let Some(profile) = self.shared.config.profile(&self.auth.profile).cloned() else {
            return self
                .refuse(
                    "this token's profile is no longer configured",
                    EventKind::SessionError,
                    json!({"error": "profile not configured", "profile": self.auth.profile}),
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
        let shell = profile
            .shell
            .clone()
            .unwrap_or_else(|| account.shell.to_string_lossy().into_owned());
        let argv = match (&self.auth.command, &exec_cmd) {
            (Some(issued), _) => vec![shell.clone(), "-c".into(), issued.clone()],
            (None, None) => profile.command.clone(),
            (None, Some(cmd)) if profile.allow_exec => {
                vec![shell.clone(), "-c".into(), cmd.clone()]
            }
            (None, Some(cmd)) => {
                return self
                    .refuse(
                        "this token does not allow running a command; connect without one to get the console",
                        EventKind::SessionRequestRefused,
                        json!({"request": "exec", "command": crate::text::clip(cmd, crate::text::COMMAND_MAX)}),
                    )
                    .await
            }
        };
        let mut env = vec![
            (
                "HOME".to_string(),
                account.home.to_string_lossy().into_owned(),
            ),
            ("USER".into(), account.name.clone()),
            ("LOGNAME".into(), account.name.clone()),
            ("SHELL".into(), shell.clone()),
            (
                "PATH".into(),
                if account.uid.is_root() {
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
                } else {
                    "/usr/local/bin:/usr/bin:/bin".into()
                },
            ),
            ("TOLLGATE_SESSION_ID".into(), self.auth.id.clone()),
        ];
        if let Some(p) = &self.pty {
            env.push(("TERM".into(), p.term.clone()));
        }
        env.extend(self.client_env.iter().cloned());
        env.extend(profile.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // Later entries win, so the profile overrides the client.
        env.reverse();
        let mut seen = std::collections::HashSet::new();
        env.retain(|(k, _)| seen.insert(k.clone()));
        env.reverse();

        let (cgroup, cgroup_fd) = match self
            .shared
            .containment
            .session(&self.auth.id, &profile.limits)
        {
            Ok(made) => made.unzip(),
            Err(e) => {
                tracing::error!(session = %self.auth.id, error = %e, "could not make the session's cgroup");
                return self
                    .refuse(
                        "the session's command could not be started",
                        EventKind::SessionError,
                        json!({"error": format!("cgroup: {e}")}),
                    )
                    .await;
            }
        };
        let spec = Spec {
            cgroup: cgroup_fd,
            argv: argv.clone(),
            env,
            cwd: profile.cwd.clone().unwrap_or_else(|| account.home.clone()),
            cwd_required: profile.cwd.is_some(),
            account,
            allow_root: profile.allow_root,
            pty: self.pty.clone(),
        };
        let user = spec.account.name.clone();
        let spawned = match exec::spawn(spec).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(c) = cgroup {
                    c.remove(Duration::ZERO).await;
                }
                tracing::error!(session = %self.auth.id, error = %e, "could not start the session's command");
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
                id: self.auth.id.clone(),
                profile: self.auth.profile.clone(),
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
        let mut pumps = Vec::new();
        let master = match spawned.io {
            Stdio3::Pty(m) => {
                let m = Arc::new(m);
                pumps.push(tokio::spawn(pump_pty(
                    m.clone(),
                    self.handle.clone(),
                    ch,
                    self.activity.clone(),
                    self.epoch,
                    tee_tx.clone(),
                )));
                tokio::spawn(feed_pty(m.clone(), input_rx, self.gate.clone()));
                Some(m)
            }
            Stdio3::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                pumps.push(tokio::spawn(pump_pipe(
                    stdout,
                    None,
                    self.handle.clone(),
                    ch,
                    self.activity.clone(),
                    self.epoch,
                    tee_tx.clone(),
                )));
                pumps.push(tokio::spawn(pump_pipe(
                    stderr,
                    Some(1),
                    self.handle.clone(),
                    ch,
                    self.activity.clone(),
                    self.epoch,
                    tee_tx.clone(),
                )));
                tokio::spawn(feed_pipe(stdin, input_rx, self.gate.clone()));
                None
            }
        };
        let pid = spawned.pid;
        // Read before anything can reap it.
        let leader = exec::process_identity(pid);
        let tree = exec::Tree::new(pid, cgroup);
        let cgroup_path = tree.cgroup().map(|p| p.display().to_string());
        self.running = Some(Running {
            exit: spawned.exit,
            pid,
            tree,
            master,
            input: input_tx,
            pumps,
        });
        let id = self.auth.id.clone();
        let detail = json!({
            "pid": pid, "user": user, "pty": self.pty.is_some(),
            "argv": argv.iter().map(|a| crate::text::clip(a, crate::text::COMMAND_MAX)).collect::<Vec<_>>(),
            "term": self.pty.as_ref().map(|p| p.term.clone()),
            "request": if exec_cmd.is_some() { "exec" } else { "shell" },
            "cgroup": cgroup_path,
        });
        if let Err(e) = self
            .shared
            .db
            .call(move |j| j.started(&id, pid as u32, leader, detail))
            .await
        {
            tracing::error!(session = %self.auth.id, error = %e, "could not record session start");
        }
        tracing::info!(session = %self.auth.id, pid, login_user = %self.auth.login_user, client = %self.auth.client_addr, "session started");
        Ok(())
    }

    async fn teardown(mut self, outcome: Outcome) {
        // Nothing more will be read: never hold the client back again.
        self.gate.close();
        let grace = self.shared.config.sessions.kill_grace;
        let (reason, status) = match outcome {
            Outcome::Exited(status) => {
                if let Some(r) = &mut self.running {
                    // Let the last output drain, then clear out anything the
                    // command left running in the background. When every
                    // output stream has reached EOF (nothing holds the
                    // session's terminal or pipes) and its process group is
                    // empty, there is nothing to look for in /proc.
                    wait_pumps(&mut r.pumps, Duration::from_millis(300)).await;
                    if !r.pumps.is_empty() || r.tree.maybe_alive() {
                        stop_tree(&r.tree, grace).await;
                    }
                }
                (EndReason::Exited, Some(status))
            }
            Outcome::Ended(reason) => {
                if reason != EndReason::Disconnected {
                    if let Some(m) = reason.message() {
                        self.say(m).await;
                    }
                }
                let status = match &mut self.running {
                    Some(r) => {
                        let st = kill_and_wait(r, grace).await;
                        stop_tree(&r.tree, grace).await;
                        st
                    }
                    None => None,
                };
                (reason, status)
            }
        };
        if let Some(mut r) = self.running.take() {
            wait_pumps(&mut r.pumps, Duration::from_millis(500)).await;
            for p in &r.pumps {
                p.abort();
            }
            r.tree.release().await;
        }
        if let (Some(ch), true) = (self.channel, reason != EndReason::Disconnected) {
            let handle = &self.handle;
            // A client that stopped reading must not hold up the teardown.
            let _ = bounded(async {
                use std::os::unix::process::ExitStatusExt;
                match status.map(|st| (st.code(), st.signal(), st.core_dumped())) {
                    Some((Some(code), _, _)) => {
                        let _ = handle.exit_status_request(ch, code as u32).await;
                    }
                    Some((None, Some(sig), core)) => {
                        let name = sig_from_name(&exec::signal_name(sig));
                        let _ = handle
                            .exit_signal_request(ch, name, core, String::new(), String::new())
                            .await;
                    }
                    // No process ran (refused, or ended before it started).
                    _ => {
                        let _ = handle.exit_status_request(ch, 1).await;
                    }
                }
                let _ = handle.eof(ch).await;
                let _ = handle.close(ch).await;
            })
            .await;
        }
        let forwards = match self.tunnel.as_mut() {
            Some(t) => {
                t.close_all().await;
                t.count()
            }
            None => 0,
        };
        self.record_suppressed().await;
        let ending = {
            use std::os::unix::process::ExitStatusExt;
            Ending {
                forwards,
                reason,
                exit_status: status.and_then(|s| s.code()).map(i64::from),
                exit_signal: status.and_then(|s| s.signal()).map(exec::signal_name),
                bytes_in: self.activity.bytes_in.load(Ordering::Relaxed),
                bytes_out: self.activity.bytes_out.load(Ordering::Relaxed),
            }
        };
        self.record_end(&ending).await;
        tracing::info!(
            session = %self.auth.id,
            reason = reason.as_str(),
            exit_status = ending.exit_status,
            exit_signal = ending.exit_signal.as_deref(),
            "session ended"
        );
        if !matches!(reason, EndReason::Exited | EndReason::Disconnected) {
            // The channel is closed; make sure the connection goes too.
            let handle = self.handle.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = handle
                    .disconnect(
                        Disconnect::ByApplication,
                        "session ended".into(),
                        String::new(),
                    )
                    .await;
            });
        }
    }
}

/// Runs a write to the client for at most two seconds.
async fn bounded<F: std::future::Future>(f: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(2), f).await.ok()
}

async fn wait_child(running: &mut Option<Running>) -> std::process::ExitStatus {
    match running {
        Some(r) => match r.exit.wait().await {
            Ok(s) => s,
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn wait_pumps(pumps: &mut Vec<JoinHandle<()>>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    // A finished JoinHandle must not be polled again: pop each as it completes.
    while let Some(p) = pumps.last_mut() {
        if tokio::time::timeout_at(deadline, p).await.is_err() {
            return;
        }
        pumps.pop();
    }
}

/// SIGHUP and SIGTERM to everything the session started; SIGKILL after `grace`.
/// Returns the leader's exit status.
async fn kill_and_wait(r: &mut Running, grace: Duration) -> Option<std::process::ExitStatus> {
    r.tree
        .signal(&[Signal::SIGHUP, Signal::SIGCONT, Signal::SIGTERM]);
    match tokio::time::timeout(grace, r.exit.wait()).await {
        Ok(Ok(s)) => Some(s),
        _ => {
            r.tree.signal(&[Signal::SIGKILL]);
            r.exit.wait().await.ok()
        }
    }
}

/// After the leader is gone: anything still in its session gets the same
/// treatment, so nothing outlives the session.
async fn stop_tree(tree: &exec::Tree, grace: Duration) {
    if !tree.alive() {
        return;
    }
    tree.signal(&[Signal::SIGHUP, Signal::SIGCONT, Signal::SIGTERM]);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !tree.alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tree.signal(&[Signal::SIGKILL]);
}

fn mark(activity: &Activity, epoch: Instant, n: usize) {
    activity.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    activity
        .last_ms
        .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// Where a pump copies output for the drains (and the drains, to count
/// what could not be copied); `None` without drains.
type TeeTx = Option<(mpsc::Sender<bytes::Bytes>, Arc<Vec<Sink>>)>;

/// Copies a chunk to the tee without ever waiting: the person's output
/// never slows down for a drain. A chunk the tee has no room for is
/// counted as dropped by every output drain, one message per line in it,
/// and reported with the drains' other drops (`drain.dropped`).
fn tee(tx: &TeeTx, chunk: &bytes::Bytes) {
    if let Some((tx, sinks)) = tx {
        if tx.try_send(chunk.clone()).is_err() {
            let lines = memchr::memchr_iter(b'\n', chunk).count().max(1) as u64;
            for s in sinks.iter().filter(|s| s.spec.send_output) {
                s.drain.count_dropped(lines, chunk.len() as u64);
            }
        }
    }
}

/// Cuts and queues a session's output for the drains; flushes a partial
/// line after 200 ms of quiet, and everything when the output ends.
async fn run_tee(mut tee: OutputTee, mut rx: mpsc::Receiver<bytes::Bytes>) {
    loop {
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(chunk)) => tee.push(&chunk),
            Ok(None) => break,
            Err(_) => tee.flush(),
        }
    }
    tee.flush();
}

/// PTY output to the client, respecting the client's window (backpressure).
async fn pump_pty(
    master: Arc<PtyMaster>,
    handle: Handle,
    ch: ChannelId,
    activity: Arc<Activity>,
    epoch: Instant,
    tee_tx: TeeTx,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match master.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let n = n + master.read_ready(&mut buf[n..]);
                mark(&activity, epoch, n);
                let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                tee(&tee_tx, &chunk);
                if handle.data(ch, chunk).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// A pipe (stdout, or stderr as extended data 1) to the client.
async fn pump_pipe<R: tokio::io::AsyncRead + Unpin>(
    mut pipe: R,
    ext: Option<u32>,
    handle: Handle,
    ch: ChannelId,
    activity: Arc<Activity>,
    epoch: Instant,
    tee_tx: TeeTx,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                mark(&activity, epoch, n);
                let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                tee(&tee_tx, &chunk);
                let sent = match ext {
                    None => handle.data(ch, chunk).await,
                    Some(code) => handle.extended_data(ch, code, chunk).await,
                };
                if sent.is_err() {
                    break;
                }
            }
        }
    }
}

/// What the person types, into the PTY. EOF is not forwarded to a terminal
/// (the person types ^D for that).
async fn feed_pty(
    master: Arc<PtyMaster>,
    mut rx: UnboundedReceiver<Option<Vec<u8>>>,
    gate: Arc<InputGate>,
) {
    while let Some(msg) = rx.recv().await {
        if let Some(d) = msg {
            let ok = master.write_all(&d).await.is_ok();
            gate.release(d.len());
            if !ok {
                break;
            }
        }
    }
}

/// Client data into the child's stdin; EOF closes it.
async fn feed_pipe(
    mut stdin: tokio::net::unix::pipe::Sender,
    mut rx: UnboundedReceiver<Option<Vec<u8>>>,
    gate: Arc<InputGate>,
) {
    while let Some(Some(d)) = rx.recv().await {
        let ok = stdin.write_all(&d).await.is_ok();
        gate.release(d.len());
        if !ok {
            return;
        }
    }
    let _ = stdin.shutdown().await;
}

//! The russh handler: a thin adapter. Authentication calls into `auth`;
//! everything after it is turned into [`Ctl`] messages for the connection's
//! session task, which owns all state.
//!
//! Channel requests are answered here, inside the callback, and nowhere
//! else: russh keeps one "wants a reply" flag per channel, which the next
//! request overwrites, so a reply sent later (from the session task) is
//! lost when a client pipelines requests (PuTTY sends `pty-req` and `shell`
//! back to back). What the answer is depends only on what the handler
//! already knows: whether this is the session's channel and whether a
//! shell or command was already started on it.

use std::net::SocketAddr;
use std::sync::Arc;

use russh::server::{Auth, Msg, Response, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty, Sig};
use tokio::sync::mpsc::UnboundedSender;

use super::auth::{self, AuthorizedSession, Redemption};
use super::collecting::Collecting;
use super::ctl::{self, Ctl, Latest, WinSize};
use super::session::{self, InputGate};
use super::Progress;
use crate::exec::PtyRequest;
use crate::metrics;
use crate::state::Shared;

/// Prompt shown by keyboard-interactive authentication.
const TOKEN_PROMPT: &str = "Token: ";

/// What a keyboard-interactive client is told when the journal cannot be
/// reached to check its token (which is then not spent).
const UNAVAILABLE: &str =
    "tollgate: the bastion cannot check tokens right now (its journal is unreachable); your token is not used up, try again shortly";

/// Where a connection is.
enum Phase {
    /// No authentication request yet: the first one decides between a
    /// token login and a collect connection.
    Undecided,
    /// A token login: tokens are tried until one is redeemed.
    Login,
    /// A token was redeemed; its session starts when russh reports the
    /// authentication done.
    Authorized(AuthorizedSession),
    /// The session task runs: where channel traffic goes, the gate client
    /// data passes, and the latest window size for the task to apply.
    Session {
        ctl: UnboundedSender<Ctl>,
        input: Arc<InputGate>,
        resize: Arc<Latest<WinSize>>,
    },
    /// A key-collection connection (a live collect identifier as user name).
    Collecting(Box<Collecting>),
}

/// One per TCP connection.
pub struct Handler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Authentication as the connection's grace timer and penalty see it;
    /// also the client's identification line.
    progress: Arc<Progress>,
    phase: Phase,
    /// Env requests accepted so far (at most [`session::ENV_MAX`]).
    env_kept: usize,
    channel: Option<ChannelId>,
    /// A shell or exec request was accepted on `channel`: nothing else may
    /// start, and a PTY can no longer be asked for.
    started: bool,
    /// The client was just told the journal cannot be reached; its answer
    /// (no prompts) ends in a refusal.
    told_unavailable: bool,
}

impl Handler {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr, progress: Arc<Progress>) -> Self {
        Handler {
            shared,
            peer,
            progress,
            phase: Phase::Undecided,
            env_kept: 0,
            channel: None,
            started: false,
            told_unavailable: false,
        }
    }

    fn collecting(&self) -> bool {
        matches!(self.phase, Phase::Collecting(_))
    }

    /// Where channel traffic goes, once the session task runs.
    fn ctl(&self) -> Option<&UnboundedSender<Ctl>> {
        match &self.phase {
            Phase::Session { ctl, .. } => Some(ctl),
            _ => None,
        }
    }

    /// On the first authentication request, whichever method it uses
    /// (paramiko skips the `none` probe): a live collect session's
    /// identifier makes this a collect connection; any other user name (a
    /// dead identifier included) is a token login.
    async fn decide(&mut self, user: &str) {
        if let Phase::Undecided = self.phase {
            self.phase =
                match Collecting::lookup(&self.shared, self.peer, &self.progress, user).await {
                    Some(c) => {
                        self.progress.collecting();
                        Phase::Collecting(Box::new(c))
                    }
                    None => Phase::Login,
                };
        }
    }

    /// The collect state for `user`, when this connection is collecting.
    fn collecting_for(&mut self, user: &str) -> Option<&mut Collecting> {
        match &mut self.phase {
            Phase::Collecting(c) if c.is_for(user) => Some(c),
            _ => None,
        }
    }

    fn methods() -> MethodSet {
        MethodSet::from(&[MethodKind::KeyboardInteractive, MethodKind::Password][..])
    }

    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(Self::methods()),
            partial_success: false,
        }
    }

    /// Counts the answer to a `method` request with `result`.
    fn count(method: &'static str, result: &'static str) {
        metrics::get()
            .auth
            .get_or_create(&metrics::AuthLabels { method, result })
            .inc();
    }

    /// Counts `auth` as the answer to a `method` request: accepted or
    /// rejected (a prompt is not an answer, and is not counted).
    fn counted(method: &'static str, auth: Auth) -> Auth {
        match &auth {
            Auth::Accept => Self::count(method, "success"),
            Auth::Reject { .. } | Auth::UnsupportedMethod => Self::count(method, "failure"),
            Auth::Partial { .. } => {}
        }
        auth
    }

    /// A token for `user`, tried only while this is a token login (not
    /// after one was redeemed, and never on a collect connection, where it
    /// would be spent for nothing). When the journal cannot be asked, a
    /// keyboard-interactive client is told so (once) before the refusal.
    async fn try_token(&mut self, user: &str, presented: &str, interactive: bool) -> Auth {
        let method = if interactive {
            "keyboard-interactive"
        } else {
            "password"
        };
        if !matches!(self.phase, Phase::Login) {
            return Self::counted(method, Self::reject());
        }
        self.progress.attempted();
        match auth::redeem(&self.shared.db, user, presented, self.peer).await {
            Redemption::Granted(a) => {
                self.phase = Phase::Authorized(a);
                Self::counted(method, Auth::Accept)
            }
            Redemption::Unavailable => {
                Self::count(method, "unavailable");
                if interactive && !self.told_unavailable {
                    self.told_unavailable = true;
                    Auth::Partial {
                        name: "".into(),
                        instructions: UNAVAILABLE.into(),
                        prompts: Vec::new().into(),
                    }
                } else {
                    Self::reject()
                }
            }
            Redemption::Refused => Self::counted(method, Self::reject()),
        }
    }

    /// On a collect connection, a shell or exec request gets the outcome as
    /// its last line and exit status 0, and the channel closes.
    fn finish_collect(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, russh::Error> {
        let Phase::Collecting(c) = &self.phase else {
            return Ok(false);
        };
        let line = c.last_line();
        session.channel_success(channel)?;
        session.data(channel, format!("{line}\r\n").into_bytes())?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(true)
    }

    /// Answers a shell or exec request. The first on the session's channel
    /// is accepted (what it runs, or why it cannot, the session task says
    /// on the channel), any other refused; on a collect connection it shows
    /// the outcome instead. Returns whether the session task takes it.
    fn start(&mut self, channel: ChannelId, session: &mut Session) -> Result<bool, russh::Error> {
        if self.channel != Some(channel) || self.started {
            session.channel_failure(channel)?;
            return Ok(false);
        }
        self.started = true;
        if self.finish_collect(channel, session)? {
            return Ok(false);
        }
        session.channel_success(channel)?;
        Ok(true)
    }

    /// Forwards to the session task if this is our channel.
    fn send(&self, channel: ChannelId, msg: Ctl) {
        if self.channel == Some(channel) {
            if let Some(ctl) = self.ctl() {
                let _ = ctl.send(msg);
            }
        }
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.decide(user).await;
        Ok(Self::counted(
            "none",
            match self.collecting_for(user) {
                Some(c) => c.methods(),
                None => Self::reject(),
            },
        ))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.decide(user).await;
        if let Some(c) = self.collecting_for(user) {
            return Ok(Self::counted("password", c.methods()));
        }
        Ok(self.try_token(user, password, false).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.decide(user).await;
        // PK_OK: the client then signs, and russh verifies before
        // `auth_publickey` sees the key. Nothing is recorded on an offer.
        Ok(match self.collecting_for(user) {
            Some(c) if c.wants_key() => Auth::Accept,
            Some(c) => c.methods(),
            None => Self::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(c) = self.collecting_for(user) else {
            return Ok(Self::counted("publickey", Self::reject()));
        };
        c.proved(key.public_key).await;
        Self::count("publickey", "collected");
        // Rejected so the client offers its next key (or goes on to
        // keyboard-interactive, where the person sees what was found).
        Ok(c.methods())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.decide(user).await;
        if let Some(c) = self.collecting_for(user) {
            return Ok(match response {
                None => c.prompt(),
                Some(mut answers) => {
                    c.answered(&answers.next().unwrap_or_default());
                    Self::counted("keyboard-interactive", Auth::Accept)
                }
            });
        }
        match response {
            None => Ok(Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![(TOKEN_PROMPT.into(), false)].into(),
            }),
            // The answer to being told the journal is unavailable.
            Some(_) if std::mem::take(&mut self.told_unavailable) => Ok(Self::reject()),
            Some(mut answers) => {
                let answer = answers.next().unwrap_or_default();
                let text = String::from_utf8_lossy(&answer).into_owned();
                Ok(self.try_token(user, &text, true).await)
            }
        }
    }

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        let b = &self.shared.config.server.banner;
        Ok((!b.is_empty()).then(|| {
            if b.ends_with('\n') {
                b.clone()
            } else {
                format!("{b}\n")
            }
        }))
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.progress.authenticated();
        if let Phase::Collecting(c) = &mut self.phase {
            c.finish().await;
            // Nothing else happens on this connection: it may show the
            // outcome, then it goes, even if the client keeps it open.
            let handle = session.handle();
            let grace = self.shared.config.server.login_grace_time;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "collection finished".into(),
                        String::new(),
                    )
                    .await;
            });
            return Ok(());
        }
        self.phase = match std::mem::replace(&mut self.phase, Phase::Login) {
            Phase::Authorized(authorized) => {
                let (ctl, input, resize) =
                    session::start(self.shared.clone(), authorized, session.handle());
                Phase::Session { ctl, input, resize }
            }
            other => other,
        };
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.collecting() && self.channel.is_none() {
            // Only to show the outcome (see `shell_request`).
            let id = channel.id();
            drop(channel);
            reply.accept().await;
            self.channel = Some(id);
            return Ok(());
        }
        // One session channel per token.
        if self.ctl().is_none() || self.channel.is_some() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let id = channel.id();
        // Dropped on purpose: data arrives through the `data` callback, and a
        // kept-but-unread Channel would stall the connection.
        drop(channel);
        reply.accept().await;
        self.channel = Some(id);
        self.send(id, Ctl::ChannelOpen(id));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The session task decides: a tunnel forwards to its target only.
        if let Some(ctl) = self.ctl() {
            let _ = ctl.send(Ctl::Forward(super::tunnel::ForwardRequest {
                channel,
                host: crate::text::clip(host_to_connect, crate::text::HOST_MAX),
                port: port_to_connect,
                origin: format!("{originator_address}:{originator_port}"),
                reply,
            }));
            return Ok(());
        }
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channel != Some(channel) {
            return Ok(());
        }
        if let Phase::Session { input, .. } = &self.phase {
            input.admit(data.len()).await;
        }
        self.send(channel, Ctl::Data(data.to_vec()));
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(channel, Ctl::Eof);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(channel, Ctl::Close);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channel != Some(channel) || self.started {
            session.channel_failure(channel)?;
            return Ok(());
        }
        session.channel_success(channel)?;
        if self.collecting() {
            return Ok(());
        }
        self.send(
            channel,
            Ctl::Pty(PtyRequest {
                // A terminal name is short and printable; anything else
                // (a 200 kB or escape-laden one) is taken as "dumb".
                term: if term.len() <= crate::text::TERM_MAX
                    && term.bytes().all(|b| b.is_ascii_graphic())
                {
                    term.to_string()
                } else {
                    "dumb".to_string()
                },
                cols: col_width,
                rows: row_height,
                px_width: pix_width,
                px_height: pix_height,
            }),
        );
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channel == Some(channel)
            && self.env_kept < session::ENV_MAX
            && ctl::client_env_allowed(name, value)
        {
            self.env_kept += 1;
            self.send(channel, Ctl::Env(name.to_string(), value.to_string()));
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.start(channel, session)? {
            return Ok(());
        }
        self.send(channel, Ctl::Shell);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.start(channel, session)? {
            return Ok(());
        }
        self.send(
            channel,
            Ctl::Exec(String::from_utf8_lossy(data).into_owned()),
        );
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let name = crate::text::clip(name, crate::text::HOST_MAX);
        self.send(channel, Ctl::Refused(format!("subsystem {name}")));
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(channel, Ctl::Refused("x11 forwarding".into()));
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _s: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.send(channel, Ctl::Refused("agent forwarding".into()));
        Ok(false)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channel != Some(channel) {
            return Ok(());
        }
        if let Phase::Session { resize, .. } = &self.phase {
            if resize.put((col_width, row_height, pix_width, pix_height)) {
                self.send(channel, Ctl::Resized);
            }
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(channel, Ctl::Signal(ctl::sig_name(&signal)));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _s: &mut Session,
    ) -> Result<bool, Self::Error> {
        if let Some(ctl) = self.ctl() {
            let address = crate::text::clip(address, crate::text::HOST_MAX);
            let _ = ctl.send(Ctl::Refused(format!("remote forwarding {address}:{port}")));
        }
        Ok(false)
    }
}

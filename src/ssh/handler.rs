//! The russh handler: a thin adapter. Authentication calls into `auth`;
//! everything after it is turned into [`Ctl`] messages for the connection's
//! session task, which owns all state and answers requests itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use russh::server::{Auth, Msg, Response, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty, Sig};
use tokio::sync::mpsc::UnboundedSender;

use super::auth::{self, AuthorizedSession};
use super::session::{self, Ctl, InputGate};
use crate::collect::keys::KeyForms;
use crate::daemon::Shared;
use crate::exec::PtyRequest;

/// Prompt shown by keyboard-interactive authentication.
const TOKEN_PROMPT: &str = "Token: ";

/// A connection whose user name is a live collect session's identifier.
struct Collecting {
    identifier: String,
    multi_key: bool,
    must_confirm: bool,
    banner: Option<String>,
    message: Option<String>,
    /// Verified keys, in the order the client proved them.
    keys: Vec<KeyForms>,
    /// Whether the person kept them (asked at keyboard-interactive).
    keep: bool,
    /// The last line the person sees, once the outcome is known.
    last_line: Option<String>,
}

/// One per TCP connection.
pub struct Handler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    authenticated: Arc<AtomicBool>,
    authorized: Option<AuthorizedSession>,
    ctl: Option<UnboundedSender<Ctl>>,
    input: Option<Arc<InputGate>>,
    channel: Option<ChannelId>,
    collecting: Option<Collecting>,
}

impl Handler {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr, authenticated: Arc<AtomicBool>) -> Self {
        Handler {
            shared,
            peer,
            authenticated,
            authorized: None,
            ctl: None,
            input: None,
            channel: None,
            collecting: None,
        }
    }

    fn collect_reject(methods: &[MethodKind]) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(methods)),
            partial_success: false,
        }
    }

    /// The collect state for `user`, when this connection is collecting.
    fn collecting_for(&mut self, user: &str) -> Option<&mut Collecting> {
        self.collecting
            .as_mut()
            .filter(|c| c.identifier == user && c.last_line.is_none())
    }

    /// What keyboard-interactive shows a collecting person: the banner, the
    /// message, the keys found, and the question when one is needed.
    fn collect_prompt(c: &Collecting) -> Auth {
        let mut text = String::new();
        for part in [&c.banner, &c.message].into_iter().flatten() {
            text.push_str(part.trim_end());
            text.push('\n');
        }
        if c.keys.is_empty() {
            text.push_str("Your SSH client proved no public key. Load one (ssh-add, or ssh -i FILE) and connect again.\n");
        } else {
            text.push_str(&format!("Public keys found ({}):\n", c.keys.len()));
            for k in &c.keys {
                text.push_str(&format!(
                    "  {} {}\n",
                    k.public_key_sha256, k.public_key_algorithm
                ));
            }
        }
        let prompts = if c.must_confirm && !c.keys.is_empty() {
            vec![("Keep these keys? Type y and Enter: ".into(), true)]
        } else {
            Vec::new()
        };
        Auth::Partial {
            name: "".into(),
            instructions: text.into(),
            prompts: prompts.into(),
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

    async fn try_token(&mut self, user: &str, presented: &str) -> Auth {
        if self.authorized.is_some() || self.ctl.is_some() {
            return Self::reject();
        }
        match auth::redeem(&self.shared.db, user, presented, self.peer).await {
            Some(a) => {
                self.authorized = Some(a);
                Auth::Accept
            }
            None => Self::reject(),
        }
    }

    /// On a collect connection, a shell or exec request gets the outcome as
    /// its last line and exit status 0, and the channel closes.
    fn finish_collect(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, russh::Error> {
        let Some(c) = &self.collecting else {
            return Ok(false);
        };
        let line = c.last_line.clone().unwrap_or_default();
        session.channel_success(channel)?;
        session.data(channel, format!("{line}\r\n").into_bytes())?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(true)
    }

    /// Forwards to the session task if this is our channel.
    fn send(&self, channel: ChannelId, msg: Ctl) {
        if self.channel == Some(channel) {
            if let Some(ctl) = &self.ctl {
                let _ = ctl.send(msg);
            }
        }
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        // A live collect session's identifier collects keys; any other
        // user name (a dead identifier included) is a token login.
        let ident = user.to_string();
        let live = if crate::collect::store::valid_identifier(user) {
            self.shared
                .db
                .call(move |j| j.collect_live(&ident))
                .await
                .unwrap_or(None)
        } else {
            None
        };
        match live {
            Some(s) => {
                tracing::info!(peer = %self.peer, collect = %s.id, "collect connection");
                self.collecting = Some(Collecting {
                    identifier: user.to_string(),
                    multi_key: s.multi_key,
                    must_confirm: s.must_confirm,
                    banner: s.ssh_banner,
                    message: s.ssh_message,
                    keys: Vec::new(),
                    keep: false,
                    last_line: None,
                });
                Ok(Self::collect_reject(&[
                    MethodKind::PublicKey,
                    MethodKind::KeyboardInteractive,
                ]))
            }
            None => Ok(Self::reject()),
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.try_token(user, password).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // PK_OK: the client then signs, and russh verifies before
        // `auth_publickey` sees the key. Nothing is recorded on an offer.
        match self.collecting_for(user) {
            Some(c) if c.multi_key || c.keys.is_empty() => Ok(Auth::Accept),
            Some(_) => Ok(Self::collect_reject(&[MethodKind::KeyboardInteractive])),
            None => Ok(Self::reject()),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let peer = self.peer;
        let Some(c) = self.collecting_for(user) else {
            return Ok(Self::reject());
        };
        match KeyForms::of(key.public_key) {
            Ok(forms) => {
                if !c
                    .keys
                    .iter()
                    .any(|k| k.public_key_sha256 == forms.public_key_sha256)
                {
                    c.keys.push(forms);
                }
            }
            Err(e) => tracing::info!(%peer, error = %e, "collect: key not collected"),
        }
        // Rejected so the client offers its next key (or goes on to
        // keyboard-interactive, where the person sees what was found).
        let more = c.multi_key;
        Ok(if more {
            Self::collect_reject(&[MethodKind::PublicKey, MethodKind::KeyboardInteractive])
        } else {
            Self::collect_reject(&[MethodKind::KeyboardInteractive])
        })
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if let Some(c) = self.collecting_for(user) {
            return Ok(match response {
                None => Self::collect_prompt(c),
                Some(mut answers) => {
                    let answer = answers.next().unwrap_or_default();
                    let yes = matches!(
                        String::from_utf8_lossy(&answer).trim(),
                        "y" | "Y" | "yes" | "YES" | "Yes"
                    );
                    c.keep = !c.keys.is_empty() && (!c.must_confirm || yes);
                    c.last_line = Some(String::new()); // decided; written in auth_succeeded
                    Auth::Accept
                }
            });
        }
        match response {
            None => Ok(Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![(TOKEN_PROMPT.into(), false)].into(),
            }),
            Some(mut answers) => {
                let answer = answers.next().unwrap_or_default();
                let text = String::from_utf8_lossy(&answer).into_owned();
                Ok(self.try_token(user, &text).await)
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
        self.authenticated.store(true, Ordering::SeqCst);
        if let Some(c) = self.collecting.as_mut() {
            let version = String::from_utf8_lossy(session.remote_sshid()).into_owned();
            let ident = c.identifier.clone();
            let ip = self.peer.ip().to_string();
            let keys = if c.keep { c.keys.clone() } else { Vec::new() };
            let offered = c.keys.len();
            let kept = self
                .shared
                .db
                .call(move |j| j.collect_keep(&ident, &version, &ip, &keys))
                .await;
            if matches!(kept, Ok(Some(_))) {
                self.shared.webhooks.notify_one();
            }
            c.last_line = Some(match kept {
                Ok(Some(conn)) if !conn.keys.is_empty() => format!(
                    "tollgate: {} public key{} recorded for {}. You can close this connection.",
                    conn.keys.len(),
                    if conn.keys.len() == 1 { "" } else { "s" },
                    c.identifier
                ),
                Ok(Some(_)) if offered == 0 => {
                    "tollgate: no public key was proved; nothing was recorded.".into()
                }
                Ok(Some(_)) => "tollgate: not confirmed; no key was recorded.".into(),
                Ok(None) => "tollgate: this collection has ended; nothing was recorded.".into(),
                Err(e) => {
                    tracing::error!(error = %e, "collect: cannot record keys");
                    "tollgate: the keys could not be recorded; please try again later.".into()
                }
            });
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
        if let Some(authorized) = self.authorized.take() {
            let (ctl, input) = session::start(self.shared.clone(), authorized, session.handle());
            self.ctl = Some(ctl);
            self.input = Some(input);
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.collecting.is_some() && self.channel.is_none() {
            // Only to show the outcome (see `shell_request`).
            let id = channel.id();
            drop(channel);
            reply.accept().await;
            self.channel = Some(id);
            return Ok(());
        }
        // One session channel per token.
        if self.ctl.is_none() || self.channel.is_some() {
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
        if let Some(ctl) = &self.ctl {
            let _ = ctl.send(Ctl::Forward(super::tunnel::ForwardRequest {
                channel,
                host: host_to_connect.to_string(),
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
        if let Some(gate) = &self.input {
            gate.admit(data.len()).await;
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
        if self.channel != Some(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        if self.collecting.is_some() {
            session.channel_success(channel)?;
            return Ok(());
        }
        self.send(
            channel,
            Ctl::Pty(PtyRequest {
                term: term.to_string(),
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
        if self.channel == Some(channel) && session::client_env_allowed(name, value) {
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
        if self.channel != Some(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        if self.finish_collect(channel, session)? {
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
        if self.channel != Some(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        if self.finish_collect(channel, session)? {
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
        self.send(
            channel,
            Ctl::WindowChange(col_width, row_height, pix_width, pix_height),
        );
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(channel, Ctl::Signal(session::sig_name(&signal)));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _s: &mut Session,
    ) -> Result<bool, Self::Error> {
        if let Some(ctl) = &self.ctl {
            let _ = ctl.send(Ctl::Refused(format!("remote forwarding {address}:{port}")));
        }
        Ok(false)
    }
}

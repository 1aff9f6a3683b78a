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
use crate::daemon::Shared;
use crate::exec::PtyRequest;

/// Prompt shown by keyboard-interactive authentication.
const TOKEN_PROMPT: &str = "Token: ";

/// One per TCP connection.
pub struct Handler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    authenticated: Arc<AtomicBool>,
    authorized: Option<AuthorizedSession>,
    ctl: Option<UnboundedSender<Ctl>>,
    input: Option<Arc<InputGate>>,
    channel: Option<ChannelId>,
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

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.try_token(user, password).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Self::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
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
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(ctl) = &self.ctl {
            let _ = ctl.send(Ctl::Refused(format!(
                "direct-tcpip to {host_to_connect}:{port_to_connect}"
            )));
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

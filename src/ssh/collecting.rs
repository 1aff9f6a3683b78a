//! One connection to a collect session, from its first authentication
//! request to its close: which keys the client proved, what is recorded in
//! the journal and when, and what the person is shown.
//!
//! Without `must_confirm`, a key is recorded the moment russh has verified
//! its signature, so clients that never reach keyboard-interactive
//! (`ssh -o BatchMode=yes`, asyncssh's defaults, scripts offering keys
//! only) lose nothing; the connection is recorded at the latest when it
//! closes. With `must_confirm`, nothing is kept until the person types `y`
//! at the keyboard-interactive prompt; a connection that closes before
//! that is recorded with the reason its keys were not kept.
//!
//! It never decides that a user name is a collect identifier on its own:
//! [`Collecting::lookup`] asks the journal for a live session.

use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::PublicKey;
use russh::server::Auth;
use russh::{MethodKind, MethodSet};

use super::Progress;
use crate::collect::keys::KeyForms;
use crate::collect::valid_identifier;
use crate::journal::collect::CollectConnection;
use crate::journal::JournalError;
use crate::journal::OpenConnection;
use crate::metrics;
use crate::state::Shared;

/// Why a `must_confirm` connection that proved keys kept none.
const NEVER_CONFIRMED: &str = "this collection must be confirmed at the keyboard-interactive prompt, which the client never reached (keys only, or BatchMode)";

/// A connection whose user name is a live collect session's identifier.
pub struct Collecting {
    shared: Arc<Shared>,
    peer: SocketAddr,
    progress: Arc<Progress>,
    collect_id: String,
    identifier: String,
    multi_key: bool,
    must_confirm: bool,
    banner: Option<String>,
    message: Option<String>,
    /// Verified keys, in the order the client proved them.
    keys: Vec<KeyForms>,
    /// The journal record of this connection, once open (without
    /// `must_confirm`, at the first verified key).
    open: Option<OpenConnection>,
    /// The journal refused a record: the collection ended meanwhile.
    ended: bool,
    /// A journal write failed.
    failed: bool,
    /// Whether the person kept the keys (asked at keyboard-interactive).
    keep: bool,
    /// The last line the person sees, once the outcome is known.
    last_line: Option<String>,
    /// The journal has the final record of this connection.
    finished: bool,
    /// Among the process's active sessions until it ends.
    active: Option<metrics::Active>,
}

impl Collecting {
    /// A collect connection when `user` names a live collect session.
    pub async fn lookup(
        shared: &Arc<Shared>,
        peer: SocketAddr,
        progress: &Arc<Progress>,
        user: &str,
    ) -> Option<Collecting> {
        if !valid_identifier(user) {
            return None;
        }
        let ident = user.to_string();
        let s = shared
            .db
            .read(move |j| j.collect_live(&ident))
            .await
            .unwrap_or(None)?;
        tracing::info!(%peer, collect = %s.id, "collect connection");
        Some(Collecting {
            shared: shared.clone(),
            peer,
            progress: progress.clone(),
            collect_id: s.id,
            identifier: user.to_string(),
            multi_key: s.multi_key,
            must_confirm: s.must_confirm,
            banner: s.ssh_banner,
            message: s.ssh_message,
            keys: Vec::new(),
            open: None,
            ended: false,
            failed: false,
            keep: false,
            last_line: None,
            finished: false,
            active: Some(metrics::get().session_started(metrics::Kind::Collect, "")),
        })
    }

    /// Whether `user`'s authentication requests are this collection's
    /// (and it is not decided yet).
    pub fn is_for(&self, user: &str) -> bool {
        self.identifier == user && self.last_line.is_none()
    }

    /// Methods to offer: another key while one more may be collected, and
    /// keyboard-interactive (the message, and the confirmation) always.
    pub fn methods(&self) -> Auth {
        let mut m = Vec::with_capacity(2);
        if self.wants_key() {
            m.push(MethodKind::PublicKey);
        }
        m.push(MethodKind::KeyboardInteractive);
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&m[..])),
            partial_success: false,
        }
    }

    /// Whether an offered key gets PK_OK.
    pub fn wants_key(&self) -> bool {
        self.multi_key || self.keys.is_empty()
    }

    fn client_version(&self) -> String {
        self.progress.client_id().unwrap_or_default().to_string()
    }

    /// A key whose signature russh verified: noted, and recorded at once
    /// unless the person must confirm first.
    pub async fn proved(&mut self, key: &PublicKey) {
        let forms = match KeyForms::of(key) {
            Ok(f) => f,
            Err(e) => {
                tracing::info!(peer = %self.peer, error = %e, "collect: key not collected");
                return;
            }
        };
        if self
            .keys
            .iter()
            .any(|k| k.public_key_sha256 == forms.public_key_sha256)
        {
            return;
        }
        self.keys.push(forms.clone());
        metrics::get().collect_keys.inc();
        if self.must_confirm || self.ended {
            return;
        }
        let db = &self.shared.db;
        if self.open.is_none() {
            let (ident, version, ip) = (
                self.identifier.clone(),
                self.client_version(),
                self.peer.ip().to_string(),
            );
            match db
                .call(move |j| j.collect_connection_open(&ident, &version, &ip))
                .await
            {
                Ok(Some(open)) => self.open = Some(open),
                Ok(None) => {
                    self.ended = true;
                    return;
                }
                Err(e) => return self.journal_failed(e),
            }
        }
        let Some(open) = self.open.clone() else {
            return;
        };
        match db.call(move |j| j.collect_key_add(&open, &forms)).await {
            Ok(true) => self.shared.webhooks.notify_one(),
            Ok(false) => self.ended = true,
            Err(e) => self.journal_failed(e),
        }
    }

    fn journal_failed(&mut self, e: JournalError) {
        tracing::error!(peer = %self.peer, collect = %self.collect_id, error = %e, "collect: cannot record keys");
        self.failed = true;
    }

    /// What keyboard-interactive shows: the banner, the message, the keys
    /// found, and the question when one is needed.
    pub fn prompt(&self) -> Auth {
        let mut text = String::new();
        for part in [&self.banner, &self.message].into_iter().flatten() {
            text.push_str(part.trim_end());
            text.push('\n');
        }
        if self.keys.is_empty() {
            text.push_str("Your SSH client proved no public key. Load one (ssh-add, or ssh -i FILE) and connect again.\n");
        } else {
            text.push_str(&format!("Public keys found ({}):\n", self.keys.len()));
            for k in &self.keys {
                text.push_str(&format!(
                    "  {} {}\n",
                    k.public_key_sha256, k.public_key_algorithm
                ));
            }
        }
        let prompts = if self.must_confirm && !self.keys.is_empty() {
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

    /// The keyboard-interactive answer: decides whether the keys are kept
    /// (written when authentication completes, in [`Collecting::finish`]).
    pub fn answered(&mut self, answer: &[u8]) {
        let yes = matches!(
            String::from_utf8_lossy(answer).trim(),
            "y" | "Y" | "yes" | "YES" | "Yes"
        );
        self.keep = !self.keys.is_empty() && (!self.must_confirm || yes);
        self.last_line = Some(String::new()); // decided; written in finish
    }

    /// Authentication completed (the person saw the prompt): the final
    /// record, and the line the person is shown.
    pub async fn finish(&mut self) {
        let result = self.close().await;
        self.finished = true;
        if let Some(a) = self.active.take() {
            a.ended("finished");
        }
        let offered = self.keys.len();
        self.last_line = Some(match result {
            _ if self.failed => {
                "tollgate: the keys could not be recorded; please try again later.".into()
            }
            Ok(Some(conn)) if !conn.keys.is_empty() => format!(
                "tollgate: {} public key{} recorded for {}. You can close this connection.",
                conn.keys.len(),
                if conn.keys.len() == 1 { "" } else { "s" },
                self.identifier
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
    }

    /// The line to show on the session channel once authentication is over.
    pub fn last_line(&self) -> String {
        self.last_line.clone().unwrap_or_default()
    }

    /// Writes the final record of this connection: its keys when they are
    /// kept only now (`must_confirm`), and the session's completion.
    async fn close(&mut self) -> Result<Option<CollectConnection>, JournalError> {
        let db = self.shared.db.clone();
        let result = match self.open.take() {
            Some(open) => db.call(move |j| j.collect_connection_close(&open)).await,
            None if self.ended => Ok(None),
            None => {
                // Without `must_confirm` keys are here only when recording
                // them as they came failed: this is the second try.
                self.failed = false;
                let keys = if !self.must_confirm || self.keep {
                    self.keys.clone()
                } else {
                    Vec::new()
                };
                let (ident, version, ip) = (
                    self.identifier.clone(),
                    self.client_version(),
                    self.peer.ip().to_string(),
                );
                db.call(move |j| j.collect_keep(&ident, &version, &ip, &keys))
                    .await
            }
        };
        if matches!(result, Ok(Some(_))) {
            self.shared.webhooks.notify_one();
        }
        result
    }
}

impl Drop for Collecting {
    /// A connection that closed before authentication completed still
    /// leaves its record: its keys (already recorded without
    /// `must_confirm`), or why they were not kept.
    fn drop(&mut self) {
        if let Some(a) = self.active.take() {
            a.ended("disconnected");
        }
        if self.finished {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut me = Collecting {
            shared: self.shared.clone(),
            peer: self.peer,
            progress: self.progress.clone(),
            collect_id: std::mem::take(&mut self.collect_id),
            identifier: std::mem::take(&mut self.identifier),
            multi_key: self.multi_key,
            must_confirm: self.must_confirm,
            banner: None,
            message: None,
            keys: std::mem::take(&mut self.keys),
            open: self.open.take(),
            ended: self.ended,
            failed: self.failed,
            keep: false,
            last_line: None,
            finished: true,
            active: None,
        };
        rt.spawn(async move {
            let proved = me.keys.len();
            match me.close().await {
                Ok(Some(conn)) if me.must_confirm && proved > 0 => {
                    tracing::info!(peer = %me.peer, collect = %me.collect_id, keys = proved, "collect: keys not kept: {NEVER_CONFIRMED}");
                    let id = me.collect_id.clone();
                    if let Err(e) = me
                        .shared
                        .db
                        .call(move |j| j.collect_not_kept(&conn, &id, proved, NEVER_CONFIRMED))
                        .await
                    {
                        tracing::error!(error = %e, "collect: cannot record why keys were not kept");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(peer = %me.peer, error = %e, "collect: cannot record the connection"),
            }
        });
    }
}

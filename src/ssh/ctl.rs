//! What the SSH handler tells a session's task, and the small rules it
//! applies on the way (which `env` requests pass, how a signal is named).

use russh::{ChannelId, Sig};

use crate::exec::PtyRequest;

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

//! Issuing a session: a one-time token for a profile's command or for a
//! tunnel to one target, checked against the config.

use serde::{Deserialize, Serialize};

use super::{AdminError, DurationIn, Invalid};
use crate::config::Config;
use crate::journal::{Journal, NewSession, SessionRow};
use crate::token::Token;

/// What issuing a session asks for (the API's body; `session issue`'s flags).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// A profile from the config: its command in a PTY.
    pub profile: Option<String>,
    /// A target from the config: a tunnel to it and nothing else.
    pub target: Option<String>,
    /// Tunnels: forwarded connections open at once (default: the target's).
    pub connection_limit: Option<u32>,
    /// The SSH user name the person must connect as.
    pub login_user: String,
    /// How long the token stays redeemable (default: `sessions.token_ttl`).
    pub ttl: Option<DurationIn>,
    /// The session's lifetime once redeemed (default: `sessions.max_duration`).
    pub max_duration: Option<DurationIn>,
    /// A command to run instead of the profile's.
    pub command: Option<String>,
    /// Why this session exists (recorded in the journal).
    pub reason: Option<String>,
}

/// A freshly issued session with its token, before it is shown.
pub struct Issued {
    pub row: SessionRow,
    pub token: Token,
    pub ssh: String,
    /// Tunnels to SSH targets: the `-J` form.
    pub jump: Option<String>,
    /// Issued all the same, but worth saying (a command the profile's
    /// login shell refuses).
    pub warnings: Vec<String>,
}

/// An issued session as shown, once: the only value that holds a token.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct IssuedView {
    #[serde(flatten)]
    pub session: SessionRow,
    /// The one-time token: shown here once, only its hash is stored.
    pub token: String,
    /// The line to paste.
    pub ssh: String,
    /// Tunnels to SSH targets: the `-J` form.
    pub ssh_jump: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(default)]
    pub warnings: Vec<String>,
}

impl Issued {
    pub fn view(&self) -> IssuedView {
        IssuedView {
            session: self.row.clone(),
            token: self.token.reveal().to_string(),
            ssh: self.ssh.clone(),
            ssh_jump: self.jump.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// Checks `a` against the config and writes the pending session.
pub fn issue(
    config: &Config,
    journal: &mut Journal,
    a: &IssueRequest,
) -> Result<Issued, AdminError> {
    let unknown = |field: &str, what: &str, name: &str, known: Vec<&str>| {
        Invalid::new(
            field,
            format!(
                "no {what} \"{name}\" in {} (known: {})",
                config.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    };
    let target = match (&a.profile, &a.target) {
        (None, None) => return Err(Invalid::new("profile", "give a profile or a target").into()),
        (Some(_), Some(_)) => {
            return Err(Invalid::new("target", "give a profile or a target, not both").into())
        }
        (Some(p), None) if config.profile(p).is_none() => {
            return Err(unknown(
                "profile",
                "profile",
                p,
                config.profiles.keys().map(String::as_str).collect(),
            )
            .into())
        }
        (None, Some(t)) => match config.targets.get(t) {
            Some(target) => Some((t.as_str(), target)),
            None => {
                return Err(unknown(
                    "target",
                    "target",
                    t,
                    config.targets.keys().map(String::as_str).collect(),
                )
                .into())
            }
        },
        _ => None,
    };
    if target.is_some() && a.command.is_some() {
        return Err(Invalid::new("command", "a tunnel runs no command").into());
    }
    if target.is_none() && a.connection_limit.is_some() {
        return Err(Invalid::new("connection_limit", "only tunnels have one").into());
    }
    if a.connection_limit == Some(0) {
        return Err(Invalid::new("connection_limit", "must be at least 1").into());
    }
    let u = &a.login_user;
    if u.is_empty()
        || u.len() > 64
        || !u
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '@' && c != ':')
    {
        return Err(Invalid::new(
            "login_user",
            format!("\"{u}\" is not a usable SSH user name (printable ASCII without '@' or ':', at most 64 characters)"),
        )
        .into());
    }
    let ttl = match &a.ttl {
        Some(d) => d.get("ttl")?,
        None => config.sessions.token_ttl,
    };
    let max_duration = match &a.max_duration {
        Some(d) => d.get("max_duration")?,
        None => target
            .and_then(|(_, t)| t.max_duration)
            .unwrap_or(config.sessions.max_duration),
    };
    super::texts(&[
        ("reason", a.reason.as_ref()),
        ("command", a.command.as_ref()),
    ])?;
    let mut warnings = Vec::new();
    if let Some(c) = &a.command {
        if c.trim().is_empty() {
            return Err(Invalid::new("command", "must be a non-empty command line").into());
        }
        // Issued all the same: the bastion that redeems it may differ.
        let profile = a.profile.as_deref().and_then(|p| config.profile(p));
        if let Some(why) = profile.and_then(crate::exec::account::shell_refuses) {
            warnings.push(format!(
                "command: {why}; set profiles.{}.shell in {}",
                a.profile.as_deref().unwrap_or_default(),
                config.path.display()
            ));
        }
    }
    let io = |e: std::io::Error| {
        AdminError::Journal(crate::journal::JournalError::Io {
            path: "random".into(),
            source: e,
        })
    };
    let token = Token::generate().map_err(io)?;
    let id = crate::token::session_id().map_err(io)?;
    let row = journal.issue(&NewSession {
        id: &id,
        token_sha256: &token.hash(),
        profile: a.profile.as_deref().unwrap_or_default(),
        login_user: u,
        command: a.command.as_deref(),
        reason: a.reason.as_deref(),
        ttl,
        max_duration,
        target: target.map(|(name, _)| name),
        connection_limit: a
            .connection_limit
            .or(target.and_then(|(_, t)| t.connection_limit)),
    })?;
    let dest = config.destination();
    let (ssh, jump) = match target {
        None => (dest.login_line(u), None),
        Some((name, t)) => dest.tunnel_lines(u, name, t),
    };
    Ok(Issued {
        row,
        token,
        ssh,
        jump,
        warnings,
    })
}

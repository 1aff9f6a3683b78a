//! What an administrator asks for, whoever asks: the CLI on the bastion or
//! the HTTP API. Each request is plain data (the API's JSON bodies, which
//! the CLI builds from its flags), checked against the config here and
//! written to the journal here, so both refuse the same things with the
//! same words. A refusal names the field at fault ([`Invalid`]); the CLI
//! shows it as its flag, the API as a problem's `field`.

pub mod collect;
mod issue;

pub use issue::{issue, IssueRequest, Issued, IssuedView};

use crate::journal::JournalError;

/// A request refused for a field the caller can fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field as the API names it (`login_user`, `webhooks[1].method`).
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why an admin request did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Something in the request is wrong (the CLI's exit 2, the API's 422).
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(Invalid),
    /// The request collides with what exists (an identifier in use).
    #[error("{}: {}", .0.field, .0.message)]
    Conflict(Invalid),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl From<Invalid> for AdminError {
    fn from(i: Invalid) -> Self {
        AdminError::Invalid(i)
    }
}

/// The longest free text a request may carry (a reason, a message).
pub const TEXT_MAX: usize = 4096;

/// Free text a person typed, kept to what a journal row and a terminal
/// take: each `(field, value)` given is at most [`TEXT_MAX`] bytes, no NUL.
pub fn texts(fields: &[(&str, Option<&String>)]) -> Result<(), Invalid> {
    for (name, v) in fields {
        match v {
            Some(s) if s.len() > TEXT_MAX => {
                return Err(Invalid::new(
                    *name,
                    format!("is {} bytes; at most {TEXT_MAX}", s.len()),
                ))
            }
            Some(s) if s.contains('\0') => return Err(Invalid::new(*name, "must not contain NUL")),
            _ => {}
        }
    }
    Ok(())
}

/// A duration given as seconds or as text such as `15m` or `7d`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum DurationIn {
    Seconds(u64),
    Text(String),
}

impl DurationIn {
    /// The duration, more than zero; errors name `field`.
    pub fn get(&self, field: &str) -> Result<std::time::Duration, Invalid> {
        let d = match self {
            DurationIn::Seconds(s) => std::time::Duration::from_secs(*s),
            DurationIn::Text(t) => {
                crate::config::parse_duration(t).map_err(|e| Invalid::new(field, e.to_string()))?
            }
        };
        if d.is_zero() {
            return Err(Invalid::new(field, "must be more than 0s"));
        }
        if d.as_secs() > 100 * 365 * 24 * 3600 {
            return Err(Invalid::new(field, "must be less than 100 years"));
        }
        Ok(d)
    }
}

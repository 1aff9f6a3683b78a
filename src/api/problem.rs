//! Errors as RFC 9457 (RFC 7807) problem details: `application/problem+json`
//! with a stable `type` URI per kind of problem, the field at fault when
//! there is one, and the request's id. Handlers return a [`Problem`]; the
//! outer layer ([`super::guard::outer`]) fills in `instance` and
//! `request_id` and turns any other error response (a route that does not
//! exist, a method it does not take) into one too.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One kind of problem: its `type` URI is `urn:tollgate:problem:` + name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The body or query string is not what the route reads.
    BadRequest,
    /// A field the route does not know.
    UnknownField,
    /// A field whose value cannot be used.
    InvalidField,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The request collides with what exists (an identifier in use).
    Conflict,
    BodyTooLarge,
    UnsupportedMediaType,
    /// The journal did not answer; nothing was changed.
    JournalUnavailable,
    Internal,
    /// Any other error status.
    Other(u16),
}

impl Kind {
    pub fn status(self) -> u16 {
        match self {
            Kind::BadRequest | Kind::UnknownField => 400,
            Kind::Unauthorized => 401,
            Kind::Forbidden => 403,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed => 405,
            Kind::Conflict => 409,
            Kind::BodyTooLarge => 413,
            Kind::UnsupportedMediaType => 415,
            Kind::InvalidField => 422,
            Kind::Internal => 500,
            Kind::JournalUnavailable => 503,
            Kind::Other(s) => s,
        }
    }

    fn name(self) -> String {
        match self {
            Kind::BadRequest => "bad-request".into(),
            Kind::UnknownField => "unknown-field".into(),
            Kind::InvalidField => "invalid-field".into(),
            Kind::Unauthorized => "unauthorized".into(),
            Kind::Forbidden => "forbidden".into(),
            Kind::NotFound => "not-found".into(),
            Kind::MethodNotAllowed => "method-not-allowed".into(),
            Kind::Conflict => "conflict".into(),
            Kind::BodyTooLarge => "body-too-large".into(),
            Kind::UnsupportedMediaType => "unsupported-media-type".into(),
            Kind::JournalUnavailable => "journal-unavailable".into(),
            Kind::Internal => "internal".into(),
            Kind::Other(s) => format!("http-{s}"),
        }
    }

    /// The kind an error status without a problem of its own gets.
    pub fn of_status(status: u16) -> Kind {
        match status {
            400 => Kind::BadRequest,
            401 => Kind::Unauthorized,
            403 => Kind::Forbidden,
            404 => Kind::NotFound,
            405 => Kind::MethodNotAllowed,
            409 => Kind::Conflict,
            413 => Kind::BodyTooLarge,
            415 => Kind::UnsupportedMediaType,
            422 => Kind::InvalidField,
            500 => Kind::Internal,
            503 => Kind::JournalUnavailable,
            s => Kind::Other(s),
        }
    }
}

/// A problem, boxed: it travels in every handler's `Err`.
#[derive(Debug, Clone)]
pub struct Problem(pub Box<Details>);

impl std::ops::Deref for Problem {
    type Target = Details;
    fn deref(&self) -> &Details {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut Details {
        &mut self.0
    }
}

/// A problem details object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Problem")]
pub struct Details {
    /// `urn:tollgate:problem:NAME`, stable for each kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// The same for every problem of this type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// The request's path.
    pub instance: String,
    /// The request's id, also in the `X-Request-Id` header (and the log).
    pub request_id: String,
    /// The field at fault (`login_user`, `webhooks[0].method`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Problem {
        let status = kind.status();
        Problem(Box::new(Details {
            kind: format!("urn:tollgate:problem:{}", kind.name()),
            title: StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error")
                .to_string(),
            status,
            detail: detail.into(),
            instance: String::new(),
            request_id: String::new(),
            field: None,
        }))
    }

    pub fn field(kind: Kind, field: impl Into<String>, detail: impl Into<String>) -> Problem {
        let mut p = Problem::new(kind, detail);
        p.field = Some(field.into());
        p
    }

    pub fn not_found(what: &str, id: &str) -> Problem {
        Problem::new(Kind::NotFound, format!("no such {what}: {id}"))
    }
}

impl IntoResponse for Problem {
    /// The status and the problem, kept for the outer layer to write once
    /// it knows the request's id.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = status.into_response();
        r.extensions_mut().insert(self);
        r
    }
}

impl From<crate::journal::JournalError> for Problem {
    fn from(e: crate::journal::JournalError) -> Problem {
        tracing::error!(error = %e, "API: the journal refused a call");
        Problem::new(
            Kind::JournalUnavailable,
            "the journal did not take the call; nothing was changed, try again",
        )
    }
}

impl From<crate::admin::AdminError> for Problem {
    fn from(e: crate::admin::AdminError) -> Problem {
        use crate::admin::AdminError as E;
        match e {
            E::Invalid(i) => Problem::field(Kind::InvalidField, i.field, i.message),
            E::Conflict(i) => Problem::field(Kind::Conflict, i.field, i.message),
            E::Journal(j) => j.into(),
        }
    }
}

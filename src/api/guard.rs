//! What every request goes through: an id, the body limit (refused by
//! `Content-Length` before anything is read), bearer-token authentication
//! and the route's scope, problem+json for every error, and a journal
//! event for every call that changes something, naming its API token.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::problem::{Kind, Problem, PROBLEM_JSON};
use super::App;
use crate::journal::{ApiCaller, EventKind};

/// The prefix of every API token (then the token's id, `_`, its secret).
pub const TOKEN_PREFIX: &str = "tga_";

/// The caller a request authenticated as (request and response extension).
#[derive(Clone)]
pub struct Caller(pub Arc<ApiCaller>);

/// The request's id (request extension).
#[derive(Clone)]
pub struct RequestId(pub String);

/// Splits `tga_apt_0123456789abcdef_SECRET` into the token's id and the
/// SHA-256 of the whole token.
pub fn parse_token(presented: &str) -> Option<(String, String)> {
    let rest = presented.strip_prefix(TOKEN_PREFIX)?;
    // The secret is base64url and may hold `_`: the id has a fixed length.
    let id = rest.get(..20)?;
    let secret = rest.get(20..)?.strip_prefix('_')?;
    if !id.starts_with("apt_") || secret.len() < 32 {
        return None;
    }
    Some((id.to_string(), crate::token::hash(presented)))
}

/// Whether `scopes` grant `need` (`RESOURCE:write` grants `RESOURCE:read`).
pub fn grants(scopes: &[String], need: &str) -> bool {
    scopes.iter().any(|s| {
        s == need
            || need
                .strip_suffix(":read")
                .is_some_and(|r| s.strip_suffix(":write") == Some(r))
    })
}

/// The outer layer: runs around every route and the fallback.
pub async fn outer(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let id = crate::token::random_id("req_").unwrap_or_else(|_| "req_unknown".into());
    let instance = req.uri().path().to_string();
    let method = req.method().clone();
    // The route's template, never the path itself (ids, or anything a
    // client makes up), for the counter.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| {
            let p = m.as_str();
            p.strip_suffix('/').unwrap_or(p).to_string()
        })
        .unwrap_or_else(|| "unmatched".into());
    req.extensions_mut().insert(RequestId(id.clone()));
    let limit = app.current.get().config.api.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut resp = match declared {
        Some(n) if n > limit as u64 => Problem::new(
            Kind::BodyTooLarge,
            format!("the body is {n} bytes; at most {limit}"),
        )
        .into_response(),
        _ => next.run(req).await,
    };
    let status = resp.status();
    crate::metrics::get()
        .api_requests
        .get_or_create(&crate::metrics::ApiLabels {
            method: crate::metrics::method_label(method.as_str()),
            route,
            status: status.as_u16(),
        })
        .inc();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let caller = resp.extensions_mut().remove::<Caller>();
    let problem = resp.extensions_mut().remove::<Problem>();
    if status.is_client_error() || status.is_server_error() {
        let mut p = match problem {
            Some(p) => p,
            None => {
                // axum's own refusals (no such route, method, path): plain
                // text, made a problem like the rest.
                let allow = resp.headers().get(header::ALLOW).cloned();
                let body = axum::body::to_bytes(std::mem::take(resp.body_mut()), 4096)
                    .await
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&body).trim().to_string();
                let mut p = Problem::new(Kind::of_status(status.as_u16()), text);
                if p.detail.is_empty() {
                    p.detail = match (status.as_u16(), &allow) {
                        (404, _) => format!("no such resource: {instance}"),
                        (405, Some(a)) => format!(
                            "{method} is not allowed here; allowed: {}",
                            a.to_str().unwrap_or("")
                        ),
                        _ => p.title.clone(),
                    };
                }
                p
            }
        };
        p.instance = instance.clone();
        p.request_id = id.clone();
        let body = serde_json::to_vec(&*p.0).unwrap_or_default();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.remove(header::CONTENT_LENGTH);
        if status.as_u16() == 401 {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate\""),
            );
        }
        *resp.body_mut() = Body::from(body);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let who = caller
        .as_ref()
        .map(|Caller(c)| c.id.as_str())
        .unwrap_or("-");
    if status.is_server_error() {
        tracing::warn!(request_id = %id, %method, path = %instance, status = status.as_u16(), api_token = who, "API request failed");
    } else {
        tracing::debug!(request_id = %id, %method, path = %instance, status = status.as_u16(), api_token = who, "API request");
    }
    if let Some(Caller(c)) = caller {
        if method != Method::GET && method != Method::HEAD {
            let call = Call {
                method: &method,
                path: &instance,
                status: status.as_u16(),
                id: &id,
                location: location.as_deref(),
            };
            record(&app, &c, call).await;
        }
    }
    resp
}

/// A call as its `api.request` event records it.
struct Call<'a> {
    method: &'a Method,
    path: &'a str,
    status: u16,
    id: &'a str,
    /// What it created.
    location: Option<&'a str>,
}

/// The `api.request` event of a call that meant to change something.
async fn record(app: &App, c: &ApiCaller, call: Call<'_>) {
    let mut detail = json!({
        "api_token": c.id, "name": c.name, "method": call.method.as_str(), "path": call.path,
        "status": call.status, "request_id": call.id,
    });
    if let Some(l) = call.location {
        detail["created"] = json!(l);
    }
    let id = call.id.to_string();
    let db = app.current.get().db.clone();
    if let Err(e) = db
        .call(move |j| j.event(None, EventKind::ApiRequest, detail))
        .await
    {
        tracing::error!(request_id = %id, error = %e, "could not record an API call in the journal");
    }
}

/// The per-route guard: a live API token whose scopes grant `scope`.
pub async fn guard(
    State((app, scope)): State<(App, &'static str)>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .map(str::to_string);
    let Some(presented) = presented else {
        return Problem::new(
            Kind::Unauthorized,
            "this route needs an API token: Authorization: Bearer tga_…",
        )
        .into_response();
    };
    let unknown = || {
        Problem::new(
            Kind::Unauthorized,
            "the API token is unknown, revoked or expired",
        )
        .into_response()
    };
    let Some((id, hash)) = parse_token(&presented) else {
        return unknown();
    };
    let db = app.current.get().db.clone();
    let caller = match db.call(move |j| j.api_token_check(&id, &hash)).await {
        Ok(Some(c)) => Arc::new(c),
        Ok(None) => return unknown(),
        Err(e) => return Problem::from(e).into_response(),
    };
    if !grants(&caller.scopes, scope) {
        let mut r = Problem::new(
            Kind::Forbidden,
            format!(
                "the API token \"{}\" lacks the scope {scope} (it has: {})",
                caller.name,
                if caller.scopes.is_empty() {
                    "none".to_string()
                } else {
                    caller.scopes.join(", ")
                }
            ),
        )
        .into_response();
        r.extensions_mut().insert(Caller(caller));
        return r;
    }
    req.extensions_mut().insert(Caller(caller.clone()));
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(Caller(caller));
    resp
}

/// The request's JSON body as `T`: `application/json`, within the limit,
/// no unknown field; errors name the field.
pub async fn body<T: DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Problem::new(
            Kind::UnsupportedMediaType,
            format!("the body must be application/json, not \"{ct}\""),
        ));
    }
    let limit = app.current.get().config.api.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Problem::new(
            Kind::BodyTooLarge,
            format!("the body is longer than {limit} bytes"),
        )
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // `unknown field `x`, expected one of …`: the field is x.
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let field = if path == "." {
                name.to_string()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path
            } else {
                format!("{path}.{name}")
            };
            return Problem::field(Kind::UnknownField, field, msg);
        }
        let field = (path != ".").then_some(path);
        let mut p = Problem::new(
            Kind::BadRequest,
            format!("the body is not what this route reads: {msg}"),
        );
        p.field = field;
        p
    })
}

/// The query string as `T`; errors say which parameter.
pub fn query<T: DeserializeOwned + Default>(raw: Option<&str>) -> Result<T, Problem> {
    match raw {
        None | Some("") => serde_urlencoded::from_str("").map_err(bad_query),
        Some(q) => serde_urlencoded::from_str(q).map_err(bad_query),
    }
}

fn bad_query(e: serde_urlencoded::de::Error) -> Problem {
    let msg = e.to_string();
    match msg.strip_prefix("unknown field `") {
        Some(rest) => Problem::field(
            Kind::UnknownField,
            rest.split('`').next().unwrap_or_default(),
            format!("unknown query parameter: {msg}"),
        ),
        None => Problem::new(Kind::BadRequest, format!("the query string: {msg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_grants_read_of_the_same_resource_only() {
        let s = vec!["sessions:write".to_string(), "events:read".to_string()];
        assert!(grants(&s, "sessions:write"));
        assert!(grants(&s, "sessions:read"));
        assert!(grants(&s, "events:read"));
        assert!(!grants(&s, "collect:read"));
        assert!(!grants(&s, "events:write"));
        assert!(!grants(&[], "sessions:read"));
    }

    #[test]
    fn tokens_parse_to_their_id_and_hash_of_the_whole() {
        let t = "tga_apt_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let (id, hash) = parse_token(t).unwrap();
        assert_eq!(id, "apt_0123456789abcdef");
        assert_eq!(hash, crate::token::hash(t));
        assert!(
            parse_token("tg_apt_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
                .is_none()
        );
        assert!(parse_token("tga_apt_01_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_none());
        assert!(parse_token("tga_apt_0123456789abcdef_short").is_none());
        let with_underscore =
            "tga_apt_0123456789abcdef_AA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            parse_token(with_underscore).unwrap().0,
            "apt_0123456789abcdef"
        );
    }
}

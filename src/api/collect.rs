//! `/api/v1/ssh/collect/sessions/`: collect sessions over HTTP, as the
//! key-collection service this project follows specifies them (create,
//! list, get, `PATCH` with only the fields given, delete), each object
//! with `$schema`, the URL of its JSON Schema.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::guard::{body, query};
use super::problem::Problem;
use super::sessions::{page_limit, Page};
use super::{admin, created, json, App};
use crate::admin::collect::{CollectCreate, CollectUpdate};
use crate::journal::collect::{CollectSession, CollectedKey};
use crate::journal::webhooks::Delivery;

/// A collect session as the API returns it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CollectView {
    /// The URL of this object's JSON Schema.
    #[serde(rename = "$schema")]
    pub schema: String,
    #[serde(flatten)]
    pub session: CollectSession,
    /// On creation: the line the person runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
}

/// What a delete did (`collect delete --output json`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectQuery {
    /// Only sessions with this status (pending, active, completed, expired).
    pub status: Option<String>,
    pub external_id: Option<String>,
    pub connection_identifier: Option<String>,
    /// Items per page (1-1000, default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
}

/// `scheme://host/api/v1/schemas/CollectSession`, as this request reached us.
fn schema_url(app: &App, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .or_else(|| {
            let c = app.current.get();
            c.config.api.listen.first().map(|a| a.to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    let scheme = if app.tls { "https" } else { "http" };
    format!("{scheme}://{host}/api/v1/schemas/CollectSession")
}

fn view(app: &App, headers: &HeaderMap, session: CollectSession, ssh: bool) -> CollectView {
    let ssh = ssh.then(|| {
        app.current
            .get()
            .config
            .destination()
            .login_line(&session.connection_identifier)
    });
    CollectView {
        schema: schema_url(app, headers),
        session,
        ssh,
    }
}

async fn load(app: &App, id: String) -> Result<CollectSession, Problem> {
    let key = id.clone();
    app.current
        .get()
        .db
        .call(move |j| j.collect_get(&key))
        .await?
        .ok_or_else(|| Problem::not_found("collect session", &id))
}

pub async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    b: Body,
) -> Result<Response, Problem> {
    let req: CollectCreate = body(&app, &headers, b).await?;
    let db = app.current.get().db.clone();
    let s = db
        .call(move |j| admin(crate::admin::collect::create(j, &req)))
        .await??;
    let location = format!("/api/v1/ssh/collect/sessions/{}", s.id);
    Ok(created(&location, &view(&app, &headers, s, true)))
}

pub async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let q: CollectQuery = query(q.as_deref())?;
    let limit = page_limit(q.limit)?;
    let all = app.current.get().db.call(|j| j.collect_list()).await?;
    let matching = all.into_iter().filter(|s| {
        q.status.as_ref().is_none_or(|v| &s.status == v)
            && q.external_id
                .as_ref()
                .is_none_or(|v| s.external_id.as_ref() == Some(v))
            && q.connection_identifier
                .as_ref()
                .is_none_or(|v| &s.connection_identifier == v)
    });
    // Newest first, as listed; the cursor is the last id of a page.
    let mut rest: Vec<CollectSession> = match &q.cursor {
        None => matching.collect(),
        Some(c) => matching.skip_while(|s| &s.id != c).skip(1).collect(),
    };
    let next_cursor = (rest.len() > limit).then(|| rest[limit - 1].id.clone());
    rest.truncate(limit);
    let items = rest
        .into_iter()
        .map(|s| view(&app, &headers, s, false))
        .collect();
    Ok(json(StatusCode::OK, &Page { items, next_cursor }))
}

pub async fn get(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let s = load(&app, id).await?;
    Ok(json(StatusCode::OK, &view(&app, &headers, s, false)))
}

pub async fn update(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Body,
) -> Result<Response, Problem> {
    let req: CollectUpdate = body(&app, &headers, b).await?;
    let key = id.clone();
    let db = app.current.get().db.clone();
    let s = db
        .call(move |j| admin(crate::admin::collect::update(j, &key, &req)))
        .await??
        .ok_or_else(|| Problem::not_found("collect session", &id))?;
    Ok(json(StatusCode::OK, &view(&app, &headers, s, false)))
}

pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> Result<Response, Problem> {
    let key = id.clone();
    let gone = app
        .current
        .get()
        .db
        .call(move |j| j.collect_delete(&key))
        .await?;
    if !gone {
        return Err(Problem::not_found("collect session", &id));
    }
    Ok(json(StatusCode::OK, &Deleted { id, deleted: true }))
}

pub async fn keys(State(app): State<App>, Path(id): Path<String>) -> Result<Response, Problem> {
    let s = load(&app, id).await?;
    let keys: Vec<CollectedKey> = s.connections.into_iter().flat_map(|c| c.keys).collect();
    Ok(json(StatusCode::OK, &keys))
}

pub async fn deliveries(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let s = load(&app, id).await?;
    let all: Vec<Delivery> = app
        .current
        .get()
        .db
        .call(move |j| j.webhook_deliveries(&s.id))
        .await?;
    Ok(json(StatusCode::OK, &all))
}

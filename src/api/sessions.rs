//! `/api/v1/sessions`, `/api/v1/events`, `/api/v1/drains`, `/api/v1/nodes`:
//! the same objects as `session …`, `events`, `drain status` and
//! `node list` print with `--output json`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::guard::{body, query};
use super::problem::{Kind, Problem};
use super::{admin, created, json, App};
use crate::admin::IssueRequest;
use crate::journal::{
    CancelOutcome, DrainStatus, EndReason, Event, NodeRow, SessionRow, SessionState,
};

/// A page of a list, newest first; pass `next_cursor` as `cursor` for the next.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Items on a page unless `limit` says otherwise.
pub const PAGE: u32 = 100;

/// `limit` checked: 1 to 1000.
pub fn page_limit(limit: Option<u32>) -> Result<usize, Problem> {
    match limit {
        None => Ok(PAGE as usize),
        Some(n @ 1..=1000) => Ok(n as usize),
        Some(n) => Err(Problem::field(
            Kind::InvalidField,
            "limit",
            format!("{n} is not between 1 and 1000"),
        )),
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only sessions in this state.
    #[schemars(with = "Option<SessionState>")]
    pub state: Option<String>,
    /// Items per page (1-1000, default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
}

/// A session with its history (`session show --output json`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionRow,
    pub history: Vec<Event>,
}

/// What a cancel did (`session cancel --output json`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Canceled {
    pub id: String,
    pub state: SessionState,
    pub end_reason: Option<EndReason>,
    /// `voided` (a pending token), `requested` (a live session, ended
    /// within a second), `already_over`.
    pub result: String,
}

pub async fn issue(
    State(app): State<App>,
    headers: HeaderMap,
    b: Body,
) -> Result<Response, Problem> {
    let req: IssueRequest = body(&app, &headers, b).await?;
    let shared = app.current.get();
    let config = shared.config.clone();
    let issued = shared
        .db
        .call(move |j| admin(crate::admin::issue(&config, j, &req)))
        .await??;
    let location = format!("/api/v1/sessions/{}", issued.row.id);
    Ok(created(&location, &issued.view()))
}

pub async fn list(State(app): State<App>, RawQuery(q): RawQuery) -> Result<Response, Problem> {
    let q: SessionQuery = query(q.as_deref())?;
    let state = match &q.state {
        None => None,
        Some(s) => Some(SessionState::parse(s).ok_or_else(|| {
            Problem::field(
                Kind::InvalidField,
                "state",
                format!("unknown state \"{s}\""),
            )
        })?),
    };
    let limit = page_limit(q.limit)?;
    let cursor = q.cursor.clone();
    let mut items = app
        .current
        .get()
        .db
        .call(move |j| j.list_page(state, cursor.as_deref(), limit + 1))
        .await?;
    let next_cursor = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|s| s.id.clone()).unwrap_or_default()
    });
    Ok(json(StatusCode::OK, &Page { items, next_cursor }))
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> Result<Response, Problem> {
    let key = id.clone();
    let found = app
        .current
        .get()
        .db
        .call(move |j| match j.get(&key)? {
            None => Ok(None),
            Some(s) => Ok(Some((s, j.events(Some(&key), 0, None)?))),
        })
        .await?;
    let (session, history) = found.ok_or_else(|| Problem::not_found("session", &id))?;
    Ok(json(StatusCode::OK, &SessionDetail { session, history }))
}

pub async fn cancel(State(app): State<App>, Path(id): Path<String>) -> Result<Response, Problem> {
    let key = id.clone();
    let done = app
        .current
        .get()
        .db
        .call(move |j| match j.cancel(&key)? {
            None => Ok(None),
            Some(o) => Ok(j.get(&key)?.map(|row| (o, row))),
        })
        .await?;
    let (outcome, row) = done.ok_or_else(|| Problem::not_found("session", &id))?;
    let result = match outcome {
        CancelOutcome::Voided => "voided",
        CancelOutcome::Requested => "requested",
        CancelOutcome::AlreadyOver => "already_over",
    };
    Ok(json(
        StatusCode::OK,
        &Canceled {
            id,
            state: row.state,
            end_reason: row.end_reason,
            result: result.into(),
        },
    ))
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Events after this sequence number (default 0: from the first).
    #[schemars(range(min = 0))]
    pub after: Option<i64>,
    /// Only this session's events.
    pub session: Option<String>,
    /// Events per page (1-1000, default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
}

/// Events oldest first; ask again with `after` = `next_after`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct EventPage {
    pub items: Vec<Event>,
    /// The last sequence number on this page (or `after` when it is empty).
    pub next_after: i64,
}

fn after(a: Option<i64>) -> Result<i64, Problem> {
    match a {
        Some(n) if n < 0 => Err(Problem::field(
            Kind::InvalidField,
            "after",
            "must be 0 or more",
        )),
        a => Ok(a.unwrap_or(0)),
    }
}

pub async fn events(State(app): State<App>, RawQuery(q): RawQuery) -> Result<Response, Problem> {
    let q: EventQuery = query(q.as_deref())?;
    let from = after(q.after)?;
    let limit = page_limit(q.limit)? as i64;
    let session = q.session.clone();
    let items = app
        .current
        .get()
        .db
        .call(move |j| j.events(session.as_deref(), from, Some(limit)))
        .await?;
    let next_after = items.last().map_or(from, |e| e.seq);
    Ok(json(StatusCode::OK, &EventPage { items, next_after }))
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Events after this sequence number (default: only new ones;
    /// `Last-Event-ID` on a reconnect takes precedence).
    #[schemars(range(min = 0))]
    pub after: Option<i64>,
    /// Only this session's events.
    pub session: Option<String>,
}

/// How often a stream asks the journal for new events.
const STREAM_POLL: Duration = Duration::from_millis(200);

/// Server-Sent Events: each journal event as `id: SEQ`, `event: KIND`,
/// `data: {the event}`, from `after` (or `Last-Event-ID`) on, as they
/// happen; a comment every 15 s keeps proxies from closing it.
pub async fn stream(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let q: StreamQuery = query(q.as_deref())?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let db = app.current.get().db.clone();
    let from = match (resume, q.after) {
        (Some(n), _) => after(Some(n))?,
        (None, Some(n)) => after(Some(n))?,
        (None, None) => db.call(|j| j.last_event_seq()).await?,
    };
    let session = q.session.clone();
    let state = (db, from, std::collections::VecDeque::<Event>::new());
    let events = futures_util::stream::unfold(state, move |(db, mut last, mut queue)| {
        let session = session.clone();
        async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    last = e.seq;
                    let sse = SseEvent::default()
                        .id(e.seq.to_string())
                        .event(e.kind.clone())
                        .data(serde_json::to_string(&e).unwrap_or_default());
                    return Some((Ok::<_, Infallible>(sse), (db, last, queue)));
                }
                let s = session.clone();
                match db
                    .call(move |j| j.events(s.as_deref(), last, Some(500)))
                    .await
                {
                    Ok(found) if !found.is_empty() => queue.extend(found),
                    Ok(_) => tokio::time::sleep(STREAM_POLL).await,
                    // The journal out of reach: the stream ends, the
                    // client reconnects with Last-Event-ID.
                    Err(_) => return None,
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

pub async fn drains(State(app): State<App>) -> Result<Response, Problem> {
    let shared = app.current.get();
    let configured: Vec<(String, String)> = shared
        .config
        .drains
        .iter()
        .map(|d| (d.spec.name.clone(), d.url.to_string()))
        .collect();
    let rows = shared.db.call(|j| j.drains()).await?;
    let out: Vec<DrainStatus> = crate::journal::drain_status(&configured, rows);
    Ok(json(StatusCode::OK, &out))
}

pub async fn nodes(State(app): State<App>) -> Result<Response, Problem> {
    let out: Vec<NodeRow> = app.current.get().db.call(|j| j.nodes()).await?;
    Ok(json(StatusCode::OK, &out))
}

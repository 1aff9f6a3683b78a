//! Every route in one table: the router is built from it and so is the
//! OpenAPI document (`openapi.rs`), so the two cannot drift apart.

use axum::routing::{on, MethodFilter, MethodRouter};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::{collect, sessions, App};

/// A schema, generated where it is needed.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T` (a `$ref` to a component, or inline).
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// What a route answers with when it succeeds.
pub enum Reply {
    /// `application/json` with this schema.
    Json(SchemaFn),
    /// `text/event-stream`.
    Events,
}

/// One route.
pub struct Route {
    pub method: &'static str,
    /// axum's and OpenAPI's syntax alike: `/api/v1/sessions/{id}`.
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    /// The scope a token needs; `None`: no token needed.
    pub scope: Option<&'static str>,
    /// The query parameters: an object's properties.
    pub query: Option<fn() -> Schema>,
    pub body: Option<SchemaFn>,
    pub status: u16,
    pub reply: Reply,
    pub handler: MethodRouter<App>,
}

/// Every scope a token may hold.
pub const SCOPES: &[&str] = &[
    "sessions:read",
    "sessions:write",
    "collect:read",
    "collect:write",
    "events:read",
    "drains:read",
    "nodes:read",
];

fn query_of<T: JsonSchema>() -> Schema {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// The table.
pub fn routes() -> Vec<Route> {
    use crate::admin::collect::{CollectCreate, CollectUpdate};
    use crate::admin::{IssueRequest, IssuedView};
    use crate::journal::collect::CollectedKey;
    use crate::journal::webhooks::Delivery;
    use crate::journal::{DrainStatus, NodeRow, SessionRow};
    use collect::{CollectQuery, CollectView, Deleted};
    use sessions::{
        Canceled, EventPage, EventQuery, Page, SessionDetail, SessionQuery, StreamQuery,
    };
    let (get, post, patch, delete) = (
        MethodFilter::GET,
        MethodFilter::POST,
        MethodFilter::PATCH,
        MethodFilter::DELETE,
    );
    const COLLECT: &str = "/api/v1/ssh/collect/sessions";
    const COLLECT_ONE: &str = "/api/v1/ssh/collect/sessions/{session}";
    vec![
        Route {
            method: "post",
            path: "/api/v1/sessions",
            id: "issueSession",
            summary: "Issue a one-time token (shown in this response only)",
            scope: Some("sessions:write"),
            query: None,
            body: Some(schema::<IssueRequest>),
            status: 201,
            reply: Reply::Json(schema::<IssuedView>),
            handler: on(post, sessions::issue),
        },
        Route {
            method: "get",
            path: "/api/v1/sessions",
            id: "listSessions",
            summary: "Sessions, newest first",
            scope: Some("sessions:read"),
            query: Some(query_of::<SessionQuery>),
            body: None,
            status: 200,
            reply: Reply::Json(schema::<Page<SessionRow>>),
            handler: on(get, sessions::list),
        },
        Route {
            method: "get",
            path: "/api/v1/sessions/{id}",
            id: "getSession",
            summary: "A session and its history",
            scope: Some("sessions:read"),
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(schema::<SessionDetail>),
            handler: on(get, sessions::get),
        },
        Route {
            method: "post",
            path: "/api/v1/sessions/{id}/cancel",
            id: "cancelSession",
            summary: "Void a pending token or end a live session within a second (idempotent)",
            scope: Some("sessions:write"),
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(schema::<Canceled>),
            handler: on(post, sessions::cancel),
        },
        Route {
            method: "post",
            path: COLLECT,
            id: "createCollectSession",
            summary: "Create a collect session",
            scope: Some("collect:write"),
            query: None,
            body: Some(schema::<CollectCreate>),
            status: 201,
            reply: Reply::Json(schema::<CollectView>),
            handler: on(post, collect::create),
        },
        Route {
            method: "get",
            path: COLLECT,
            id: "listCollectSessions",
            summary: "Collect sessions, newest first",
            scope: Some("collect:read"),
            query: Some(query_of::<CollectQuery>),
            body: None,
            status: 200,
            reply: Reply::Json(schema::<Page<CollectView>>),
            handler: on(get, collect::list),
        },
        Route {
            method: "get",
            path: COLLECT_ONE,
            id: "getCollectSession",
            summary: "A collect session, by id or connection identifier",
            scope: Some("collect:read"),
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(schema::<CollectView>),
            handler: on(get, collect::get),
        },
        Route {
            method: "patch",
            path: COLLECT_ONE,
            id: "updateCollectSession",
            summary: "Change only the fields given (null clears one)",
            scope: Some("collect:write"),
            query: None,
            body: Some(schema::<CollectUpdate>),
            status: 200,
            reply: Reply::Json(schema::<CollectView>),
            handler: on(patch, collect::update),
        },
        Route {
            method: "delete",
            path: COLLECT_ONE,
            id: "deleteCollectSession",
            summary: "Delete a collect session: its identifier is refused from then on",
            scope: Some("collect:write"),
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(schema::<Deleted>),
            handler: on(delete, collect::delete),
        },
        Route {
            method: "get",
            path: "/api/v1/ssh/collect/sessions/{session}/keys",
            id: "listCollectedKeys",
            summary: "The keys a collect session kept, in every format",
            scope: Some("collect:read"),
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(schema::<Vec<CollectedKey>>),
            handler: on(get, collect::keys),
        },
        Route {
            method: "get",
            path: "/api/v1/ssh/collect/sessions/{session}/deliveries",
            id: "listWebhookDeliveries",
            summary: "A collect session's webhook deliveries and their attempts",
            scope: Some("collect:read"),
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(schema::<Vec<Delivery>>),
            handler: on(get, collect::deliveries),
        },
        Route {
            method: "get",
            path: "/api/v1/events",
            id: "listEvents",
            summary: "Journal events after a sequence number, oldest first",
            scope: Some("events:read"),
            query: Some(query_of::<EventQuery>),
            body: None,
            status: 200,
            reply: Reply::Json(schema::<EventPage>),
            handler: on(get, sessions::events),
        },
        Route {
            method: "get",
            path: "/api/v1/events/stream",
            id: "streamEvents",
            summary: "Journal events as they happen (Server-Sent Events; Last-Event-ID resumes)",
            scope: Some("events:read"),
            query: Some(query_of::<StreamQuery>),
            body: None,
            status: 200,
            reply: Reply::Events,
            handler: on(get, sessions::stream),
        },
        Route {
            method: "get",
            path: "/api/v1/drains",
            id: "listDrains",
            summary: "Each drain as `drain status` shows it",
            scope: Some("drains:read"),
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(schema::<Vec<DrainStatus>>),
            handler: on(get, sessions::drains),
        },
        Route {
            method: "get",
            path: "/api/v1/nodes",
            id: "listNodes",
            summary: "The bastions sharing this journal",
            scope: Some("nodes:read"),
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(schema::<Vec<NodeRow>>),
            handler: on(get, sessions::nodes),
        },
        Route {
            method: "get",
            path: "/api/v1/schemas/{name}",
            id: "getSchema",
            summary: "The JSON Schema that objects' `$schema` points at",
            scope: None,
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(|_| schemars::json_schema!({"type": "object"})),
            handler: on(get, super::openapi::schema_doc),
        },
        Route {
            method: "get",
            path: "/api/v1/openapi.json",
            id: "getOpenApi",
            summary: "This document",
            scope: None,
            query: None,
            body: None,
            status: 200,
            reply: Reply::Json(|_| schemars::json_schema!({"type": "object"})),
            handler: on(get, super::openapi::document),
        },
    ]
}

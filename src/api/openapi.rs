//! The OpenAPI 3.1 document, made from the route table and the types the
//! handlers take and return (their JSON Schemas derived by schemars), and
//! the standalone JSON Schemas that objects' `$schema` points at.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

use super::json;
use super::problem::{Details, Problem, PROBLEM_JSON};
use super::routes::{routes, Reply};

/// The document, made once.
pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut g = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let problem = g.subschema_for::<Details>();
    let mut paths = Map::new();
    for r in routes() {
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if let Some(q) = r.query {
            let q = q();
            if let Some(props) = q.get("properties").and_then(Value::as_object) {
                for (name, s) in props {
                    let mut s = s.clone();
                    let description = s
                        .as_object_mut()
                        .and_then(|o| o.remove("description"))
                        .unwrap_or(Value::Null);
                    let mut p =
                        json!({"name": name, "in": "query", "required": false, "schema": s});
                    if !description.is_null() {
                        p["description"] = description;
                    }
                    params.push(p);
                }
            }
        }
        let ok = match &r.reply {
            Reply::Json(f) => {
                json!({"description": "OK", "content": {"application/json": {"schema": f(&mut g)}}})
            }
            Reply::Events => {
                json!({"description": "One SSE event per journal event: id = seq, event = kind, data = the event as JSON",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}})
            }
        };
        let mut op = json!({
            "operationId": r.id,
            "summary": r.summary,
            "parameters": params,
            "responses": {
                r.status.to_string(): ok,
                "default": {"description": "A problem (RFC 9457)", "content": {PROBLEM_JSON: {"schema": problem}}},
            },
        });
        match r.scope {
            Some(scope) => {
                op["security"] = json!([{"bearer": []}]);
                op["x-scope"] = json!(scope);
            }
            None => op["security"] = json!([]),
        }
        if let Some(b) = r.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": b(&mut g)}}});
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    let schemas: Map<String, Value> = g.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tollgate",
            "version": crate::version::current(),
            "description": "The HTTP API of tollgate, an SSH bastion for one-time access. \
                Objects carry the same fields as the CLI's --output json; every error is \
                application/problem+json.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "An API token from `tollgate api-token create`"}},
        },
        "security": [{"bearer": []}],
    })
}

pub async fn document() -> Response {
    json(StatusCode::OK, openapi())
}

fn root<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// The standalone schemas, by the name in their URL.
pub fn named(name: &str) -> Option<Schema> {
    use super::collect::CollectView;
    use super::sessions::SessionDetail;
    Some(match name {
        "CollectSession" => root::<CollectView>(),
        "Session" => root::<SessionDetail>(),
        "Event" => root::<crate::journal::Event>(),
        "Problem" => root::<Details>(),
        _ => return None,
    })
}

pub async fn schema_doc(Path(name): Path<String>) -> Result<Response, Problem> {
    let mut s = named(&name).ok_or_else(|| Problem::not_found("schema", &name))?;
    s.insert("$id".into(), json!(format!("/api/v1/schemas/{name}")));
    Ok(json(StatusCode::OK, &s))
}

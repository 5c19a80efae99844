//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of every route, generated once from
//! the code. Operations come from the handlers' `#[utoipa::path]` annotations (the
//! handlers of the route table); what every route shares is added from the same table:
//! the bearer security scheme and `401`/`403` answers according to each route's access,
//! and `problem+json` as the shape of every other error. The workflow definition's schema
//! is the bundled JSON Schema the server validates with (OpenAPI 3.1 speaks JSON Schema
//! 2020-12), its `$ref`s rewritten to point into the document.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::{Access, ROUTES, schemas};
use crate::definition::schema::{STEPS_SCHEMA, WORKFLOW_SCHEMA};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orchestrator",
        description = "A declarative workflow runtime: workflows, runs, approvals, run logs, \
                       schedules, webhook triggers and the events feed."
    ),
    components(schemas(
        schemas::Problem,
        schemas::Violation,
        schemas::StatusEvent,
        schemas::EndEvent,
        crate::model::LogEntry
    )),
    tags(
        (name = "workflows", description = "Workflow definitions and their versions"),
        (name = "templates", description = "The template pack and stored templates"),
        (name = "runs", description = "Runs and decisions about them"),
        (name = "logs", description = "Run logs, live over Server-Sent Events"),
        (name = "schedules", description = "Cron schedules that start runs"),
        (name = "triggers", description = "Webhook triggers and their inbound endpoint"),
        (name = "events", description = "The events feed: every run and step event, live"),
        (name = "tasks", description = "Task queues: the worker API, queues and workers"),
        (name = "operations", description = "Health, readiness, metrics and this document")
    )
)]
struct Base;

/// The document, built on first use.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub(super) async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

fn build() -> Value {
    let mut api = Base::openapi();
    api.merge(super::Operations::openapi());
    // Serialising the document's plain data cannot fail.
    let mut doc = serde_json::to_value(&api).unwrap_or_default();
    add_route_rules(&mut doc);
    embed_definition_schemas(&mut doc);
    describe_server(&mut doc);
    describe_log_events(&mut doc);
    doc
}

/// `servers` (this server, or one at a host and port) and `license` (the package's).
fn describe_server(doc: &mut Value) {
    doc["servers"] = json!([
        {"url": "/", "description": "The server that serves this document"},
        {
            "url": "http://{host}:{port}",
            "description": "A server at server.host and server.port",
            "variables": {
                "host": {"default": "127.0.0.1"},
                "port": {"default": "8100"}
            }
        }
    ]);
    let license = option_env!("CARGO_PKG_LICENSE")
        .filter(|l| !l.is_empty())
        .unwrap_or("Proprietary");
    doc["info"]["license"] = json!({"name": license});
}

/// The events of `GET /v1/runs/{id}/logs/stream`, each `{event, id?, data}` with its data
/// schema (JSON in `data`), as the schema of its `text/event-stream` answer.
fn describe_log_events(doc: &mut Value) {
    let event = |name: &str, data: &str, id: bool| {
        let mut properties = json!({
            "event": {"const": name},
            "data": {"$ref": format!("#/components/schemas/{data}")}
        });
        if id {
            properties["id"] = json!({"type": "string", "description": "The entry's seq"});
        }
        json!({"type": "object", "required": ["event", "data"], "properties": properties})
    };
    let pointer =
        "/paths/~1v1~1runs~1{id}~1logs~1stream/get/responses/200/content/text~1event-stream";
    if let Some(content) = doc.pointer_mut(pointer) {
        content["schema"] = json!({
            "description": "One Server-Sent Event per item; `data` holds the JSON shown. \
                            Keep-alive comments come between events.",
            "oneOf": [
                event("log", "LogEntry", true),
                event("status", "StatusEvent", false),
                event("end", "EndEvent", false),
                event("shutdown", "EndEvent", false)
            ]
        });
    }
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

/// Security and error answers of every operation, from the route table.
fn add_route_rules(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token of `auth.tokens`; required by every route but /health and \
                            /ready when tokens are configured. Readers may only read; \
                            workers may only use /v1/tasks/* and read queues and workers."
        }
    });
    for route in ROUTES {
        let pointer = format!(
            "/paths/{}/{}",
            route.path.replace('~', "~0").replace('/', "~1"),
            route.method
        );
        let Some(Value::Object(op)) = doc.pointer_mut(&pointer) else {
            continue;
        };
        match route.access {
            Access::Open => {}
            // Open when the trigger has a secret (the signature proves the caller).
            Access::Signed => {
                op.insert("security".into(), json!([{}, {"bearer": []}]));
            }
            _ => {
                op.insert("security".into(), json!([{"bearer": []}]));
            }
        }
        let responses = op
            .entry("responses")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(responses) = responses else {
            continue;
        };
        if route.access != Access::Open {
            let mut unauthorized = problem("No valid bearer token (when auth is on)");
            unauthorized["headers"] = json!({"WWW-Authenticate": {"schema": {"type": "string"}}});
            responses.entry("401").or_insert(unauthorized);
        }
        let refused = match route.access {
            Access::Write | Access::Signed => {
                Some("The token's role (reader or worker) may not do this")
            }
            Access::Work => Some("The token's role (reader) may not do this"),
            Access::Read => Some("The token's role (worker) may not do this"),
            Access::Open | Access::Any => None,
        };
        if let Some(why) = refused {
            responses.entry("403").or_insert_with(|| problem(why));
        }
        // The query check (`api/params.rs`) runs on every route.
        responses.entry("400").or_insert_with(|| {
            problem(
                "A query parameter the route does not take, or a NUL (%00) in the path or query",
            )
        });
        responses
            .entry("default")
            .or_insert_with(|| problem("Any other error"));
    }
}

/// Puts the bundled workflow and step schemas in `components.schemas` as `Workflow`,
/// `Step` and `Step_<def>`.
fn embed_definition_schemas(doc: &mut Value) {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_default();
    let mut workflow = parse(WORKFLOW_SCHEMA);
    let mut steps = parse(STEPS_SCHEMA);
    let defs = steps
        .as_object_mut()
        .and_then(|s| s.remove("$defs"))
        .unwrap_or_default();
    let schemas = &mut doc["components"]["schemas"];
    for (mut schema, name) in [(workflow.take(), "Workflow"), (steps.take(), "Step")] {
        clean(&mut schema);
        schemas[name] = schema;
    }
    if let Value::Object(defs) = defs {
        for (name, mut schema) in defs {
            clean(&mut schema);
            schemas[format!("Step_{name}")] = schema;
        }
    }
}

/// Drops the standalone-file keywords and rewrites `$ref`s into the document.
fn clean(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("$schema");
            map.remove("$id");
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                *target = reference(target);
            }
            map.values_mut().for_each(clean);
        }
        Value::Array(items) => items.iter_mut().for_each(clean),
        _ => {}
    }
}

fn reference(target: &str) -> String {
    let local = target.strip_prefix("steps.schema.json").unwrap_or(target);
    match local.strip_prefix("#/$defs/") {
        Some(def) => format!("#/components/schemas/Step_{def}"),
        None if local.is_empty() || local == "#" => "#/components/schemas/Step".into(),
        None => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_inside_the_document() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(all.iter().any(|r| r == "#/components/schemas/Step"));
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn statuses_are_described_by_their_wire_names() {
        let schemas = &document()["components"]["schemas"];
        assert_eq!(
            schemas["RunStatus"]["enum"],
            json!([
                "PENDING",
                "RUNNING",
                "WAITING_APPROVAL",
                "WAITING",
                "SUCCEEDED",
                "FAILED",
                "CANCELED"
            ])
        );
        assert_eq!(schemas["LogSource"]["enum"], json!(["engine", "client"]));
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut ids: Vec<&str> = document()["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
        assert_eq!(n, ROUTES.iter().filter(|r| r.documented).count());
    }
}

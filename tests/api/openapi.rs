//! `GET /v1/openapi.json` describes exactly what the server serves. The served routes come
//! from the server's own route table (`orchestrator::api::ROUTES`, which also registers
//! them); the test checks the table against the live server (each route answers, every
//! other method on its path is 405) and against the document, both ways.

use std::collections::BTreeSet;

use orchestrator::api::{Access, ROUTES};
use serde_json::{Value, json};

use crate::auth::{concrete, fixtures, secured};
use crate::helpers::{TestApp, spawn_app};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    let response = app.get("/v1/openapi.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

fn served() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect()
}

/// The served routes the document describes (the console's pages and assets are not API).
fn served_api() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .filter(|r| r.documented)
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_document_lists_every_served_route_and_nothing_else() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = documented(&doc);
    let served = served_api();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
}

#[tokio::test]
async fn every_route_in_the_table_is_served_and_no_other_method_on_its_paths() {
    let app = spawn_app().await;
    let ids = fixtures(&app).await;
    let served = served();
    for (method, path) in &served {
        let url = app.url(&concrete(path, &ids));
        for other in METHODS {
            let request = app.client.request(
                reqwest::Method::from_bytes(other.to_uppercase().as_bytes()).unwrap(),
                &url,
            );
            let request = match other {
                "post" | "put" | "patch" => request.json(&json!({})),
                _ => request,
            };
            let status = request.send().await.unwrap().status();
            if other == "delete" {
                crate::auth::restore(&app, &ids).await;
            }
            if served.contains(&(other.to_owned(), path.clone())) {
                assert!(
                    status != 404 && status != 405,
                    "{other} {path} is in the table but answers {status}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{other} {path} (next to {method}) is not served"
                );
            }
        }
    }
    let unknown = app.get("/v1/unknown").await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn every_operation_has_its_bodies_answers_and_security() {
    let app = secured().await;
    let doc = document(&app).await;
    let schemes = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["type"], "http");
    assert_eq!(schemes["scheme"], "bearer");
    for schema in [
        "Problem",
        "Violation",
        "Workflow",
        "Step",
        "Run",
        "LogEntry",
        "Task",
        "TaskList",
        "Queue",
        "Worker",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    for route in ROUTES.iter().filter(|r| r.documented) {
        let op = &doc["paths"][route.path][route.method];
        let what = format!("{} {}", route.method, route.path);
        let responses = op["responses"].as_object().unwrap();
        let success: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
        assert!(!success.is_empty(), "{what} has no success answer");
        for status in success.into_iter().filter(|s| *s != "204") {
            assert!(
                responses[status]["content"].is_object(),
                "{what} {status} has no content"
            );
        }
        let default = &responses["default"]["content"]["application/problem+json"]["schema"];
        assert_eq!(default["$ref"], "#/components/schemas/Problem", "{what}");
        match route.access {
            Access::Open => assert!(op.get("security").is_none(), "{what}"),
            Access::Signed => {
                assert_eq!(op["security"], json!([{}, {"bearer": []}]), "{what}");
                assert!(responses.contains_key("401"), "{what}");
                assert!(responses.contains_key("403"), "{what}");
            }
            access => {
                assert_eq!(op["security"], json!([{"bearer": []}]), "{what}");
                assert!(responses.contains_key("401"), "{what}");
                assert_eq!(
                    responses.contains_key("403"),
                    access != Access::Any,
                    "{what}: a role may be refused"
                );
            }
        }
        let takes_body = matches!(route.method, "post" | "put")
            && !["/cancel", "/pause", "/resume", "/trigger"]
                .iter()
                .any(|end| route.path.ends_with(end));
        assert_eq!(op["requestBody"].is_object(), takes_body, "{what}");
    }
    let create = &doc["paths"]["/v1/workflows"]["post"]["requestBody"]["content"];
    assert!(create["application/json"].is_object());
    assert!(create["application/yaml"].is_object());
}

#[tokio::test]
async fn the_document_describes_this_waves_additions() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["servers"][0]["url"], "/");
    assert!(doc["info"]["license"]["name"].is_string());

    let schemas = &doc["components"]["schemas"];
    let start = &schemas["StartRun"];
    let required: Vec<&str> = start["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["workflow_id"], "context is optional: {start}");
    for schema in [
        "RetryBody",
        "RunSummary",
        "RunCounts",
        "StatusEvent",
        "EndEvent",
    ] {
        assert!(schemas[schema].is_object(), "schema {schema}");
    }
    let retry = &doc["paths"]["/v1/runs/{id}/retry"]["post"];
    let body = &retry["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/RetryBody");
    for member in ["from_step", "context", "version", "reason"] {
        assert!(
            schemas["RetryBody"]["properties"][member].is_object(),
            "{member}"
        );
    }

    let params = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let runs = params("/v1/runs", "get");
    for name in [
        "workflow_id",
        "status",
        "workflow_version",
        "created_after",
        "created_before",
        "trigger",
        "context.{key}",
        "view",
        "limit",
        "cursor",
    ] {
        assert!(runs.contains(&name.to_owned()), "{name} in {runs:?}");
    }
    let workflows = params("/v1/workflows", "get");
    assert!(workflows.contains(&"name_prefix".to_owned()));
    assert!(workflows.contains(&"archived".to_owned()));
    assert_eq!(
        doc["paths"]["/v1/runs/{id}"]["delete"]["responses"]["409"]["description"]
            .as_str()
            .map(|d| d.contains("not finished")),
        Some(true)
    );
    assert!(doc["paths"]["/v1/workflows/{id}"]["delete"]["responses"]["204"].is_object());

    let stream = &doc["paths"]["/v1/runs/{id}/logs/stream"]["get"]["responses"];
    assert!(stream["204"].is_object());
    let events = stream["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
        .as_array()
        .unwrap();
    let named: Vec<&str> = events
        .iter()
        .map(|e| e["properties"]["event"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(named, ["log", "status", "end", "shutdown"]);
    for event in events {
        let data = event["properties"]["data"]["$ref"].as_str().unwrap();
        let name = data.rsplit('/').next().unwrap();
        assert!(schemas[name].is_object(), "{data}");
    }
}

//! `apply FILE…`: make the stored workflows match definition files.
//!
//! A file matches a stored workflow by its `id`, else by its `name` (one workflow of that
//! name; several is an error asking for an `id`). A missing workflow is created; an
//! existing one gets a new version only when its latest definition differs from the file.
//! The server stores a definition as submitted minus the fields it owns
//! ([`SERVER_FIELDS`]) and serves it back with them, so the two compare equal as JSON
//! values once those are removed from both (key order does not matter).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::http::ClientError;
use super::listing;
use super::output::{self, Cell, Color, Format, Table};

/// Members of a served workflow that are not part of its definition.
const SERVER_FIELDS: [&str; 8] = [
    "id",
    "version",
    "created_at",
    "updated_at",
    "created_by",
    "restored_from",
    "archived_at",
    "archived_by",
];

/// What applying one file did.
#[derive(Debug)]
struct Applied {
    result: &'static str,
    id: String,
    version: u64,
}

/// `apply`: one line per file; exit 1 when any file could not be applied.
pub async fn apply(ctx: &Ctx, paths: &[PathBuf]) -> Result<ExitCode, ClientError> {
    let files = expand(paths)?;
    let mut stored: Option<Vec<Value>> = None;
    let mut outcomes = Vec::new();
    for file in files {
        let outcome = match read(&file) {
            Ok(doc) => apply_one(ctx, doc, &mut stored).await,
            Err(e) => Err(e),
        };
        match outcome {
            Err(e) if fatal(&e) => {
                report(ctx, &outcomes)?;
                return Err(e);
            }
            outcome => outcomes.push((file, outcome)),
        }
    }
    report(ctx, &outcomes)?;
    let failed = outcomes.iter().any(|(_, o)| o.is_err());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Errors that would repeat for every file: stop at the first.
fn fatal(error: &ClientError) -> bool {
    match error {
        ClientError::Refused(p) => p.status == 401,
        ClientError::Usage(_) => false,
        _ => true,
    }
}

/// The files named, with each directory replaced by its `*.json|*.yaml|*.yml` files.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ClientError> {
    let mut files = Vec::new();
    for path in paths {
        let usage = |e: std::io::Error| ClientError::Usage(format!("{}: {e}", path.display()));
        if !path.is_dir() {
            std::fs::metadata(path).map_err(usage)?;
            files.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(usage)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && matches!(extension(p), Some("json" | "yaml" | "yml")))
            .collect();
        if found.is_empty() {
            return Err(ClientError::Usage(format!(
                "{}: no *.json, *.yaml or *.yml files",
                path.display()
            )));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

/// A definition file: JSON when it ends in `.json`, else YAML (which also reads JSON).
fn read(file: &Path) -> Result<Value, ClientError> {
    let usage = |what: String| ClientError::Usage(format!("{}: {what}", file.display()));
    let text = std::fs::read_to_string(file).map_err(|e| usage(e.to_string()))?;
    let doc: Value = if extension(file) == Some("json") {
        serde_json::from_str(&text).map_err(|e| usage(format!("invalid JSON: {e}")))?
    } else {
        serde_yaml::from_str(&text).map_err(|e| usage(format!("invalid YAML: {e}")))?
    };
    if !doc.is_object() {
        return Err(usage("a workflow must be an object".into()));
    }
    Ok(doc)
}

async fn apply_one(
    ctx: &Ctx,
    doc: Value,
    stored: &mut Option<Vec<Value>>,
) -> Result<Applied, ClientError> {
    let current = match doc["id"].as_str() {
        Some(id) => ctx.api.get_optional(&["v1", "workflows", id]).await?,
        None => by_name(ctx, &doc, stored).await?,
    };
    let Some(current) = current else {
        let created = ctx
            .api
            .send(Method::POST, &["v1", "workflows"], &doc)
            .await?;
        if let Some(all) = stored {
            all.push(created.clone());
        }
        return Ok(applied("created", &created));
    };
    let id = current["id"].as_str().unwrap_or_default().to_owned();
    if unchanged(&current, &doc)? {
        return Ok(applied("unchanged", &current));
    }
    let updated = ctx
        .api
        .send(Method::PUT, &["v1", "workflows", &id], &definition(&doc))
        .await?;
    if let Some(all) = stored {
        all.retain(|w| w["id"] != updated["id"]);
        all.push(updated.clone());
    }
    Ok(applied("updated", &updated))
}

/// The stored workflow named like `doc` (listing every workflow once per `apply`).
async fn by_name(
    ctx: &Ctx,
    doc: &Value,
    stored: &mut Option<Vec<Value>>,
) -> Result<Option<Value>, ClientError> {
    let Some(name) = doc["name"].as_str() else {
        return Ok(None);
    };
    if stored.is_none() {
        *stored = Some(listing::fetch(&ctx.api, &["v1", "workflows"], &[], None).await?);
    }
    let matches: Vec<&Value> = stored
        .iter()
        .flatten()
        .filter(|w| w["name"].as_str() == Some(name))
        .collect();
    match matches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        many => {
            let ids: Vec<String> = many.iter().map(|w| listing::text(Some(&w["id"]))).collect();
            Err(ClientError::Usage(format!(
                "{} workflows are named {name:?} ({}); add an `id` to the file to pick one",
                many.len(),
                ids.join(", ")
            )))
        }
    }
}

/// True when the stored workflow's latest version has the definition of `doc`.
fn unchanged(current: &Value, doc: &Value) -> Result<bool, ClientError> {
    let Some(template) = doc.get("template") else {
        return Ok(definition(current) == definition(doc));
    };
    // A workflow made from a template stores the instantiated definition and its origin.
    let origin =
        json!({"name": template, "params": doc.get("params").cloned().unwrap_or(json!({}))});
    if current.get("x-template") == Some(&origin) {
        return Ok(true);
    }
    Err(ClientError::Usage(format!(
        "workflow {} exists and was not made from this template with these params; \
         apply cannot re-instantiate a template",
        listing::text(Some(&current["id"]))
    )))
}

/// A workflow document without the members the server owns.
fn definition(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Value::Object(map) = &mut doc {
        for field in SERVER_FIELDS {
            map.shift_remove(field);
        }
    }
    doc
}

fn applied(result: &'static str, workflow: &Value) -> Applied {
    Applied {
        result,
        id: listing::text(Some(&workflow["id"])),
        version: workflow["version"].as_u64().unwrap_or(0),
    }
}

/// Prints what happened to each file: a table (errors after it, on standard error), or
/// `{"items": [{"file", "result", "id", "version"} | {"file", "result": "error", "error"}]}`.
fn report(
    ctx: &Ctx,
    outcomes: &[(PathBuf, Result<Applied, ClientError>)],
) -> Result<(), ClientError> {
    if ctx.format == Format::Json {
        let items: Vec<Value> = outcomes
            .iter()
            .map(|(file, outcome)| match outcome {
                Ok(a) => {
                    json!({"file": file, "result": a.result, "id": a.id, "version": a.version})
                }
                Err(e) => json!({"file": file, "result": "error", "error": e.to_string()}),
            })
            .collect();
        return output::print_json(&json!({ "items": items })).map_err(ClientError::from);
    }
    let mut table = Table::new(["FILE", "RESULT", "WORKFLOW", "VERSION"]);
    for (file, outcome) in outcomes {
        let file = Cell::new(file.display().to_string());
        table.row(match outcome {
            Ok(a) => vec![
                file,
                Cell {
                    text: a.result.into(),
                    color: Some(result_color(a.result)),
                },
                Cell::new(&a.id),
                Cell::new(a.version.to_string()),
            ],
            Err(_) => vec![
                file,
                Cell {
                    text: "error".into(),
                    color: Some(Color::Red),
                },
            ],
        });
    }
    if !table.is_empty() {
        output::print(&table.render(ctx.style))?;
    }
    for (file, outcome) in outcomes {
        if let Err(e) = outcome {
            eprintln!("orchestrator: {}: {e}", file.display());
        }
    }
    Ok(())
}

fn result_color(result: &str) -> Color {
    match result {
        "created" => Color::Green,
        "updated" => Color::Blue,
        _ => Color::Dim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_owned_fields_are_the_servers_read_only_fields() {
        assert_eq!(SERVER_FIELDS, crate::definition::READ_ONLY_FIELDS);
    }

    #[test]
    fn a_served_workflow_equals_the_file_it_was_made_from_in_any_key_order() {
        let file = json!({"name": "greet", "steps": [{"name": "a", "action": "transform", "input": {"set": {"x": 1}}}]});
        let served = json!({"id": "wf_1", "steps": [{"input": {"set": {"x": 1}}, "action": "transform", "name": "a"}],
            "name": "greet", "version": 3, "created_at": "2024-05-01T12:00:00Z", "created_by": "ci"});
        assert!(unchanged(&served, &file).unwrap());
        let changed = json!({"name": "greet", "description": "new", "steps": file["steps"]});
        assert!(!unchanged(&served, &changed).unwrap());
    }

    #[test]
    fn directories_expand_to_their_definition_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.yaml", "a.json", "c.yml", "notes.txt"] {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        let files = expand(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.json", "b.yaml", "c.yml"]);
        assert!(matches!(
            expand(&[dir.path().join("nope.json")]),
            Err(ClientError::Usage(_))
        ));
    }
}

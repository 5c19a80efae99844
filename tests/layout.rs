//! The source tree keeps its shape: modules import only from lower floors (so data flows
//! api → engine → actions / store and nothing circles back), every module has a floor,
//! and the Layout sections of `src/lib.rs` and `README.md` name every module there is.
//!
//! Code under `#[cfg(test)]` is not read: a test beside the code may use a higher floor to
//! build what it needs (the real action registry, say).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and its floor; a module may import only from lower floors.
const FLOORS: &[(&str, u8)] = &[
    // The ground floor: plain data and pure helpers, importing nothing of ours (or only
    // other ground-floor modules of a lower number).
    ("model", 0),
    ("ids", 0),
    ("problems", 0),
    ("secret", 0),
    ("size", 0),
    ("probe", 0),
    ("clock", 1),
    ("expr", 1),
    ("metrics", 1),
    // The command-line client speaks HTTP to a server; it shares only plain data.
    ("client", 1),
    // Outbound calls, definitions, persistence.
    ("outbound", 2),
    ("sandbox", 2),
    ("definition", 2),
    ("store", 2),
    // The checked configuration (its outbound policy is built from `outbound`).
    ("config", 3),
    // What steps do, hook delivery, live logs, the template pack, tracing set-up.
    ("actions", 4),
    ("hooks", 4),
    ("feed", 4),
    ("logs", 4),
    ("templates", 4),
    ("telemetry", 4),
    ("engine", 5),
    // What starts runs besides the API: schedules and webhook deliveries.
    ("triggers", 6),
    ("api", 7),
    ("app", 8),
    ("cli", 9),
    ("main", 10),
    ("bin", 10),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/engine/state/rules.rs` → `engine`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file without comments and without what follows `#[cfg(test)]`.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names through `crate::` (or `orchestrator::`
/// from the binaries), including inside `use crate::{a, b::c}` groups.
fn imports(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// Every module → the modules it imports, read from the tree.
fn import_graph() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for file in files {
        let module = module_of(&file);
        if module == "lib" {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&file).unwrap());
        let prefix = if matches!(module.as_str(), "main" | "bin") {
            "orchestrator::"
        } else {
            "crate::"
        };
        let edges = graph.entry(module.clone()).or_default();
        for target in imports(&code, prefix) {
            if target != module {
                let shown = file.strip_prefix(src()).unwrap().display().to_string();
                edges.entry(target).or_default().push(shown);
            }
        }
    }
    graph
}

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

#[test]
fn every_import_goes_to_a_lower_floor() {
    let mut wrong = Vec::new();
    for (module, edges) in import_graph() {
        let Some(from) = floor(&module) else {
            wrong.push(format!("{module} has no floor in FLOORS"));
            continue;
        };
        for (target, files) in edges {
            match floor(&target) {
                None => wrong.push(format!("{module} imports {target}, which has no floor")),
                Some(to) if to >= from => wrong.push(format!(
                    "{module} (floor {from}) imports {target} (floor {to}) in {}",
                    files.join(", ")
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_import_reader_sees_groups_paths_and_ignores_lookalikes() {
    let code = "use crate::{model::Run, ids};\nlet x = crate::store::Store;\nmy_crate::nope();";
    let found = imports(code, "crate::");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["ids", "model", "store"]
    );
    assert_eq!(
        production_code("a\n// crate::x\n#[cfg(test)]\nuse crate::y;"),
        "a\n"
    );
}

#[test]
fn the_layout_docs_name_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let layout = readme
        .split("## Layout")
        .nth(1)
        .expect("README.md has a Layout section");
    let layout = layout.split("\n## ").next().unwrap_or_default();
    let declared: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();
    let mut missing = Vec::new();
    for module in &declared {
        if !lib.contains(&format!("[`{module}`]")) {
            missing.push(format!("src/lib.rs Layout does not name [`{module}`]"));
        }
        if !layout.contains(&format!("`{module}`")) {
            missing.push(format!("README.md Layout does not name `{module}`"));
        }
        if floor(module).is_none() {
            missing.push(format!("{module} has no floor in tests/layout.rs"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Migrations are applied by position (SQLite's `user_version`, PostgreSQL's
/// `schema_migrations` count), so file `NNNN_` must be the `NNNN`th entry of its runner,
/// and both stores must have the same migrations.
#[test]
fn migrations_are_numbered_in_the_order_they_are_applied_on_both_stores() {
    let mut names = Vec::new();
    for (store, runner) in [
        ("sqlite", "store/sqlite/mod.rs"),
        ("postgres", "store/postgres/migrations.rs"),
    ] {
        let dir = src().join("store").join(store).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        for (i, file) in files.iter().enumerate() {
            assert!(
                file.starts_with(&format!("{:04}_", i + 1)),
                "{store}: {file} is migration {} by position",
                i + 1
            );
        }
        let code = std::fs::read_to_string(src().join(runner)).unwrap();
        let included: Vec<&str> = code
            .match_indices("include_str!(\"migrations/")
            .map(|(at, m)| {
                let rest = &code[at + m.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        assert_eq!(
            included, files,
            "{runner} applies its migrations in file order"
        );
        names.push(files);
    }
    assert_eq!(names[0], names[1], "both stores have the same migrations");
}

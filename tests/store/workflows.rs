//! Workflows, versions, rollback provenance and templates.

use std::collections::BTreeSet;

use orchestrator::model::{PageRequest, TemplateRecord, now};
use orchestrator::store::{DynStore, NewWorkflowVersion, StoreError};
use serde_json::json;

use crate::fixtures::{stored_workflow, workflow};

pub async fn created_workflows_start_at_version_one_and_refuse_a_taken_id(store: DynStore) {
    let id = orchestrator::ids::new("wf_");
    let created = store.create_workflow(workflow(&id, "first")).await.unwrap();
    assert_eq!(created.version, 1);
    let read = store.get_workflow(&id, None).await.unwrap();
    assert_eq!(read.name, "first");
    assert_eq!(read.definition, created.definition);
    assert_eq!(read.created_by.as_deref(), Some("tester"));
    let again = store.create_workflow(workflow(&id, "second")).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.get_workflow(&id, None).await.unwrap().name, "first");
}

pub async fn versions_are_appended_newest_first_with_rollback_provenance(store: DynStore) {
    let id = stored_workflow(&store).await;
    let mut v2 = workflow(&id, "renamed");
    v2.definition = json!({"name": "renamed", "steps": [], "z": 1, "a": 2});
    assert_eq!(store.add_workflow_version(v2).await.unwrap().version, 2);
    let v1 = store.get_workflow(&id, Some(1)).await.unwrap();
    let rollback = NewWorkflowVersion {
        restored_from: Some(1),
        ..workflow(&id, &v1.name)
    };
    let v3 = store.add_workflow_version(rollback).await.unwrap();
    assert_eq!((v3.version, v3.restored_from), (3, Some(1)));
    let versions = store.list_workflow_versions(&id).await.unwrap();
    let numbers: Vec<u32> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, vec![3, 2, 1]);
    assert_eq!(versions[2].definition, v1.definition);
    // Key order of stored JSON is kept as written.
    let v2 = store.get_workflow(&id, Some(2)).await.unwrap();
    assert_eq!(
        serde_json::to_string(&v2.definition).unwrap(),
        r#"{"name":"renamed","steps":[],"z":1,"a":2}"#
    );
    assert_eq!(store.get_workflow(&id, None).await.unwrap().version, 3);
}

pub async fn concurrent_new_versions_never_share_a_number(store: DynStore) {
    let id = stored_workflow(&store).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                store
                    .add_workflow_version(workflow(&id, &format!("v{i}")))
                    .await
                    .unwrap()
                    .version
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        assert!(
            numbers.insert(task.await.unwrap()),
            "a number was handed out twice"
        );
    }
    assert_eq!(numbers, (2..=21).collect());
    assert_eq!(store.list_workflow_versions(&id).await.unwrap().len(), 21);
}

pub async fn workflow_lists_page_newest_first(store: DynStore) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(stored_workflow(&store).await);
    }
    store
        .add_workflow_version(workflow(&ids[0], "latest"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_workflows(&PageRequest { limit: 2, cursor })
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|w| (w.id.clone(), w.version)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<(String, u32)> = ids
        .iter()
        .rev()
        .map(|id| (id.clone(), if *id == ids[0] { 2 } else { 1 }))
        .collect();
    assert_eq!(seen, expected);
    let bad = store
        .list_workflows(&PageRequest {
            limit: 2,
            cursor: Some("garbage".into()),
        })
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
}

pub async fn unknown_workflows_and_versions_are_not_found(store: DynStore) {
    let id = stored_workflow(&store).await;
    for result in [
        store.get_workflow("wf_missing", None).await,
        store.get_workflow(&id, Some(9)).await,
    ] {
        assert!(matches!(result, Err(StoreError::NotFound(_))), "{result:?}");
    }
    let versions = store.list_workflow_versions("wf_missing").await;
    assert!(matches!(versions, Err(StoreError::NotFound(_))));
    let added = store
        .add_workflow_version(workflow("wf_missing", "x"))
        .await;
    assert!(matches!(added, Err(StoreError::NotFound(_))), "{added:?}");
}

pub async fn templates_are_stored_once_by_name(store: DynStore) {
    let record = |name: &str| TemplateRecord {
        name: name.to_owned(),
        body: json!({"name": name, "params": {}}),
        created_at: now(),
        created_by: None,
    };
    store.create_template(record("b")).await.unwrap();
    store.create_template(record("a")).await.unwrap();
    let again = store.create_template(record("a")).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let names: Vec<String> = store
        .list_templates()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    assert_eq!(store.get_template("b").await.unwrap().body["name"], "b");
    let missing = store.get_template("zzz").await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

pub async fn workflow_heads_agree_with_entries_latest_asked_and_archived(store: DynStore) {
    let id = stored_workflow(&store).await;
    store
        .add_workflow_version(workflow(&id, "second"))
        .await
        .unwrap();
    for asked in [None, Some(1), Some(2)] {
        let head = store.workflow_head(&id, asked).await.unwrap();
        let entry = store.workflow_entry(&id, asked).await.unwrap();
        assert_eq!(head.version, entry.version.version, "{asked:?}");
        assert_eq!(head.version, asked.unwrap_or(2));
        assert_eq!(head.archived, None);
    }
    let archived = store.archive_workflow(&id, "ops").await.unwrap();
    let head = store.workflow_head(&id, None).await.unwrap();
    assert_eq!(head.archived.as_ref(), Some(&archived));
    assert_eq!(
        head.archived,
        store.workflow_entry(&id, None).await.unwrap().archived
    );
    for (wf, asked) in [
        (id.as_str(), Some(3)),
        ("wf_unknown", None),
        ("wf_unknown", Some(1)),
    ] {
        let head = store.workflow_head(wf, asked).await;
        let entry = store.workflow_entry(wf, asked).await;
        match (&head, &entry) {
            (Err(StoreError::NotFound(h)), Err(StoreError::NotFound(e))) => assert_eq!(h, e),
            _ => panic!("{wf} {asked:?}: {head:?} / {entry:?}"),
        }
    }
}

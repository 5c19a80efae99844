//! Records the conformance tests write: workflows, runs and transitions.

use std::time::Duration;

use orchestrator::model::{LogLevel, NewEvent, NewLogEntry, StepRun, now};
use orchestrator::store::{
    DynStore, Guard, IdempotencyClaim, Lease, NewRun, NewWorkflowVersion, Transition,
};
use serde_json::{Map, Value, json};

pub fn workflow(id: &str, name: &str) -> NewWorkflowVersion {
    NewWorkflowVersion {
        id: id.to_owned(),
        name: name.to_owned(),
        definition: json!({"name": name, "steps": [{"name": "a", "action": "transform"}]}),
        created_by: Some("tester".into()),
        restored_from: None,
    }
}

/// Stores a workflow with a fresh id and returns the id.
pub async fn stored_workflow(store: &DynStore) -> String {
    let id = orchestrator::ids::new(orchestrator::ids::WORKFLOW);
    store.create_workflow(workflow(&id, "wf")).await.unwrap();
    id
}

pub fn steps(n: usize) -> Vec<StepRun> {
    (0..n)
        .map(|i| StepRun::pending(format!("s{i}"), format!("step{i}"), "transform".into()))
        .collect()
}

pub fn context(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

pub fn new_run(workflow_id: &str) -> NewRun {
    NewRun {
        id: orchestrator::ids::new(orchestrator::ids::RUN),
        workflow_id: workflow_id.to_owned(),
        workflow_version: 1,
        context: context(json!({"k": "v", "n": 1})),
        steps: steps(3),
        parent: None,
        owner: None,
        idempotency: None,
        logs: vec![NewLogEntry::engine(LogLevel::Info, None, "created")],
        events: Vec::new(),
    }
}

pub fn lease(owner: &str, ttl: Duration) -> Lease {
    Lease {
        owner: owner.to_owned(),
        ttl,
    }
}

pub fn claim(key: &str, hash: &str, ttl: chrono::Duration) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key.to_owned(),
        body_hash: hash.to_owned(),
        expires_at: now() + ttl,
    }
}

/// Creates a run (queued, no owner) and returns its id.
pub async fn stored_run(store: &DynStore, workflow_id: &str) -> String {
    store.create_run(new_run(workflow_id)).await.unwrap().run.id
}

/// A transition that writes only `n` log lines, unguarded.
pub fn logs_only(run_id: &str, n: usize) -> Transition {
    let mut tx = Transition::new(run_id, Guard::default());
    tx.logs = (0..n)
        .map(|i| NewLogEntry::engine(LogLevel::Info, None, format!("line {i}")))
        .collect();
    tx
}

pub fn event(kind: &str) -> NewEvent {
    NewEvent {
        kind: kind.to_owned(),
        step: None,
        status: "RUNNING".into(),
        ts: now(),
    }
}

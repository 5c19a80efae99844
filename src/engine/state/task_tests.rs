//! `task` steps in the run state machine: parking with the task in the same commit, claims
//! applied as attempts by the retry policy, and a task canceled with its step.

use std::time::Duration;

use serde_json::{Value, json};

use super::RunState;
use super::tests::{attempt, run_of, status};
use crate::actions::{Effect, Outcome, Parking};
use crate::clock::Clock;
use crate::engine::decide::Intervention;
use crate::model::{RunStatus, StepStatus, Waiting};
use crate::store::tasks::{TaskOp, TaskRecord, TaskStatus};
use crate::store::{Guard, OwnerChange};

fn workflow(step: Value) -> Value {
    json!({"name": "t", "steps": [step, {"name": "next", "action": "transform", "input": {"value": 1}}]})
}

fn task_step(extra: Value) -> Value {
    let mut step =
        json!({"name": "work", "action": "task", "input": {"queue": "q", "payload": {"n": 1}}});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        step[k] = v;
    }
    step
}

/// Starts the run and parks its task step as the runner would; the task's id.
fn parked(state: &mut RunState, clock: &Clock) -> String {
    state.begin("node");
    let starts = state.schedule();
    let start = &starts[0];
    let outcome = Outcome {
        effect: Effect::Park(Parking::Task {
            queue: "q".into(),
            payload: json!({"n": 1}),
        }),
        ..Outcome::output(Value::Null)
    };
    state.on_done(
        start.index,
        attempt(clock, start.first_attempt),
        Ok(outcome),
    );
    state.park();
    match &state.run.steps[0].waiting {
        Some(Waiting::Task { task_id, .. }) => task_id.clone(),
        other => panic!("not waiting for a task: {other:?}"),
    }
}

fn ops(state: &RunState) -> Vec<TaskOp> {
    state
        .pending(Guard::default(), OwnerChange::Keep)
        .map(|tx| tx.tasks)
        .unwrap_or_default()
}

fn ended(state: &RunState, id: &str, attempt: u32, status: TaskStatus) -> TaskRecord {
    let at = state.now();
    TaskRecord {
        id: id.into(),
        queue: "q".into(),
        run_id: state.run.id.clone(),
        workflow_id: "wf".into(),
        step: "work".into(),
        attempt,
        status,
        payload: json!({"n": 1}),
        heartbeat_ms: 30_000,
        timeout_ms: None,
        created_at: at,
        available_at: at,
        worker: Some("w1".into()),
        claimed_at: Some(at),
        lease_expires_at: None,
        progress: None,
        ended_at: Some(at),
        output: (status == TaskStatus::Completed).then(|| json!({"done": true})),
        error: (status != TaskStatus::Completed).then(|| "it broke".to_owned()),
        retryable: true,
        settled: false,
    }
}

#[test]
fn a_task_step_parks_with_its_task_in_the_same_commit() {
    let (mut state, clock) = run_of(workflow(task_step(
        json!({"heartbeat_ms": 500, "timeout_ms": 900}),
    )));
    let id = parked(&mut state, &clock);
    assert_eq!(status(&state, "work"), StepStatus::Waiting);
    assert_eq!(state.run.status, RunStatus::Waiting);
    assert!(
        state.run.steps[0].attempts.is_empty(),
        "the attempts are the claims"
    );
    match &ops(&state)[..] {
        [TaskOp::Enqueue(task)] => {
            assert_eq!(
                (task.id.as_str(), task.queue.as_str(), task.attempt),
                (id.as_str(), "q", 1)
            );
            assert_eq!((task.heartbeat_ms, task.timeout_ms), (500, Some(900)));
            assert_eq!(task.payload, json!({"n": 1}));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_completed_claim_succeeds_the_step_and_resumes_the_run() {
    let (mut state, clock) = run_of(workflow(task_step(json!({}))));
    let id = parked(&mut state, &clock);
    state.committed(1, crate::model::now());
    state
        .decide(Intervention::TaskEnded(Box::new(ended(
            &state,
            &id,
            1,
            TaskStatus::Completed,
        ))))
        .unwrap();
    assert_eq!(status(&state, "work"), StepStatus::Succeeded);
    assert_eq!(state.run.steps[0].output, Some(json!({"done": true})));
    assert_eq!(state.run.status, RunStatus::Running);
    assert_eq!(ops(&state), vec![TaskOp::Settle { id: id.clone() }]);
    // A second delivery of the same end finds no step waiting for it.
    let again = state.decide(Intervention::TaskEnded(Box::new(ended(
        &state,
        &id,
        1,
        TaskStatus::Completed,
    ))));
    assert!(again.is_err());
}

#[test]
fn failed_claims_go_back_on_the_queue_while_the_retry_policy_allows() {
    let retry = json!({"retry": {"max": 1, "backoff_ms": 250}});
    let (mut state, clock) = run_of(workflow(task_step(retry)));
    let id = parked(&mut state, &clock);
    state.committed(1, crate::model::now());
    state
        .decide(Intervention::TaskEnded(Box::new(ended(
            &state,
            &id,
            1,
            TaskStatus::Failed,
        ))))
        .unwrap();
    assert_eq!(status(&state, "work"), StepStatus::Waiting);
    assert_eq!(
        state.run.status,
        RunStatus::Waiting,
        "a retry leaves the run parked"
    );
    let attempts = &state.run.steps[0].attempts;
    assert_eq!((attempts.len(), attempts[0].retry_in_ms), (1, Some(250)));
    assert!(attempts[0].error.as_deref().unwrap().contains("it broke"));
    match &ops(&state)[..] {
        [
            TaskOp::Retry {
                id: r,
                attempt: 2,
                available_at,
                ..
            },
        ] => {
            assert_eq!(r, &id);
            assert_eq!((*available_at - clock.now()).num_milliseconds(), 250);
        }
        other => panic!("{other:?}"),
    }
    state.committed(2, crate::model::now());
    // The first claim's end cannot be applied twice.
    assert!(
        state
            .decide(Intervention::TaskEnded(Box::new(ended(
                &state,
                &id,
                1,
                TaskStatus::Failed
            ))))
            .is_err()
    );
    clock.advance(Duration::from_millis(300));
    state
        .decide(Intervention::TaskEnded(Box::new(ended(
            &state,
            &id,
            2,
            TaskStatus::Expired,
        ))))
        .unwrap();
    assert_eq!(status(&state, "work"), StepStatus::Failed);
    assert_eq!(state.run.steps[0].attempts.len(), 2);
    assert!(
        state.run.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("gave up after 2 attempts")
    );
    assert_eq!(ops(&state), vec![TaskOp::Settle { id }]);
}

#[test]
fn not_retryable_failures_and_timeouts_left_out_of_retry_on_fail_at_once() {
    let retry = json!({"retry": {"max": 3, "retry_on": ["5xx"]}});
    let (mut state, clock) = run_of(workflow(task_step(retry.clone())));
    let id = parked(&mut state, &clock);
    state
        .decide(Intervention::TaskEnded(Box::new(ended(
            &state,
            &id,
            1,
            TaskStatus::Expired,
        ))))
        .unwrap();
    assert_eq!(
        status(&state, "work"),
        StepStatus::Failed,
        "an expiry is a timeout"
    );

    let (mut state, clock) = run_of(workflow(task_step(retry)));
    let id = parked(&mut state, &clock);
    let mut failed = ended(&state, &id, 1, TaskStatus::Failed);
    state
        .decide(Intervention::TaskEnded(Box::new(failed.clone())))
        .unwrap();
    assert_eq!(
        status(&state, "work"),
        StepStatus::Waiting,
        "a worker's failure is retried"
    );
    failed.attempt = 2;
    failed.retryable = false;
    state
        .decide(Intervention::TaskEnded(Box::new(failed)))
        .unwrap();
    assert_eq!(status(&state, "work"), StepStatus::Failed);
}

#[test]
fn canceling_the_run_cancels_its_task_in_the_same_commit() {
    let (mut state, clock) = run_of(workflow(task_step(json!({}))));
    let id = parked(&mut state, &clock);
    state.committed(1, crate::model::now());
    state
        .decide(Intervention::Cancel { by: "ops".into() })
        .unwrap();
    assert_eq!(status(&state, "work"), StepStatus::Canceled);
    assert_eq!(
        ops(&state),
        vec![TaskOp::Cancel {
            id,
            queue: "q".into()
        }]
    );
}

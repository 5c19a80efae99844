//! The run state machine on its own: no store, no server, no network. Each test builds a
//! workflow, feeds the state the results a runner would, and checks what it decides and
//! records. Time is a manual clock.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Phase, RunState, Start};
use crate::actions::{Effect, Failure, Outcome, Registry};
use crate::clock::Clock;
use crate::definition::{Limits, Validator, WorkflowSchema};
use crate::engine::decide::Intervention;
use crate::engine::{RunLimits, Settings};
use crate::model::{Attempt, Run, RunControl, RunStatus, StepRun, StepStatus, Timestamp};
use crate::outbound::HttpClient;
use crate::store::{Guard, OwnerChange};

pub(super) fn start_time() -> Timestamp {
    chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
}

pub(super) fn settings(clock: &Clock) -> Settings {
    Settings {
        max_active_runs: 10,
        lease_ttl: Duration::from_secs(30),
        poll_interval: Duration::from_secs(1),
        idempotency_ttl: Duration::from_secs(60),
        secrets: Arc::new(BTreeMap::new()),
        redactor: crate::expr::Redactor::default(),
        max_log_entries: 1000,
        limits: RunLimits {
            max_input_bytes: 64 * 1024,
            max_context_bytes: 64 * 1024,
            max_output_bytes: 64 * 1024,
            run_tokens: None,
            foreach_items: 100,
        },
        shutdown_grace: Duration::from_secs(5),
        clock: clock.clone(),
        run_retention: None,
        retention_interval: Duration::from_secs(60),
    }
}

/// One validator for all tests: building the schema and the HTTP client is the slow part.
pub(super) fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let config =
            crate::config::Config::from_raw(std::path::Path::new("t"), Default::default()).unwrap();
        let actions = Registry::new(&config.services, HttpClient::new().unwrap());
        Validator::new(
            WorkflowSchema::bundled().unwrap(),
            Arc::new(actions),
            Limits {
                max_steps: 100,
                max_retries: 10,
                max_input_bytes: 64 * 1024,
            },
            false,
        )
    })
}

/// A fresh run of `definition` and the manual clock it runs on.
pub(super) fn run_of(definition: Value) -> (RunState, Clock) {
    let wf = Arc::new(validator().validate(&definition).unwrap());
    let clock = Clock::manual(start_time());
    let run = Run {
        id: "run_1".into(),
        workflow_id: "wf".into(),
        workflow_version: 1,
        status: RunStatus::Pending,
        current_step: 0,
        parent_run_id: None,
        context: serde_json::Map::new(),
        steps: wf
            .steps
            .iter()
            .map(|s| StepRun::pending(s.id.clone(), s.name.clone(), s.action_name.clone()))
            .collect(),
        error: None,
        approvals: Vec::new(),
        usage: serde_json::Map::new(),
        budget: None,
        retries: Vec::new(),
        created_at: start_time(),
        updated_at: start_time(),
        started_at: None,
        finished_at: None,
        trigger: None,
        control: RunControl::default(),
    };
    (RunState::new(run, wf, &settings(&clock)), clock)
}

pub(super) fn step(name: &str, depends_on: &[&str]) -> Value {
    json!({"name": name, "action": "transform", "depends_on": depends_on, "input": {"value": name}})
}

pub(super) fn names(starts: &[Start]) -> Vec<String> {
    starts.iter().map(|s| s.call.step.clone()).collect()
}

pub(super) fn status(state: &RunState, name: &str) -> StepStatus {
    state
        .run
        .steps
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.status)
        .unwrap()
}

pub(super) fn attempt(clock: &Clock, n: u32) -> Attempt {
    Attempt {
        attempt: n,
        started_at: clock.now(),
        finished_at: Some(clock.now()),
        error: None,
        http_code: None,
        retry_in_ms: None,
    }
}

pub(super) fn succeed(state: &mut RunState, clock: &Clock, start: &Start) {
    let output = Outcome::output(json!(start.call.step));
    state.on_done(start.index, attempt(clock, start.first_attempt), Ok(output));
}

pub(super) fn fail(state: &mut RunState, clock: &Clock, start: &Start) {
    let failure = Failure::rejected("boom");
    state.on_done(
        start.index,
        attempt(clock, start.first_attempt),
        Err(failure),
    );
}

#[test]
fn steps_without_depends_on_run_one_after_the_other() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "a", "action": "transform", "input": {"value": 1}},
        {"name": "b", "action": "transform", "input": {"value": 2}}
    ]}));
    state.begin("node_1");
    let first = state.schedule();
    assert_eq!(names(&first), ["a"]);
    assert_eq!(state.phase(first.len()), Phase::Busy);
    succeed(&mut state, &clock, &first[0]);
    let second = state.schedule();
    assert_eq!(names(&second), ["b"]);
    succeed(&mut state, &clock, &second[0]);
    assert!(state.schedule().is_empty());
    assert_eq!(state.phase(0), Phase::Done(RunStatus::Succeeded, None));
}

#[test]
fn independent_branches_start_together_and_a_join_waits_for_both() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        step("a", &[]), step("b", &[]), step("join", &["a", "b"])
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    assert_eq!(names(&starts), ["a", "b"]);
    succeed(&mut state, &clock, &starts[0]);
    assert!(state.schedule().is_empty(), "the join waits for b");
    succeed(&mut state, &clock, &starts[1]);
    assert_eq!(names(&state.schedule()), ["join"]);
}

#[test]
fn a_failed_parent_fails_the_run_and_its_children_are_skipped() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        step("a", &[]), step("b", &["a"])
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    fail(&mut state, &clock, &starts[0]);
    assert!(state.schedule().is_empty());
    let Phase::Done(RunStatus::Failed, Some(error)) = state.phase(0) else {
        panic!("the run should fail: {:?}", state.phase(0));
    };
    assert!(error.contains("\"a\" failed"), "{error}");
    state.finish(RunStatus::Failed, Some(error));
    assert_eq!(status(&state, "a"), StepStatus::Failed);
    assert_eq!(status(&state, "b"), StepStatus::Skipped);
    assert_eq!(state.run.status, RunStatus::Failed);
}

#[test]
fn a_parent_failing_with_on_failure_continue_counts_as_done() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "a", "action": "transform", "input": {"value": 1}, "on_failure": "continue"},
        step("b", &["a"])
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    fail(&mut state, &clock, &starts[0]);
    let next = state.schedule();
    assert_eq!(names(&next), ["b"]);
    succeed(&mut state, &clock, &next[0]);
    assert_eq!(state.phase(0), Phase::Done(RunStatus::Succeeded, None));
    assert_eq!(status(&state, "a"), StepStatus::Failed);
}

#[test]
fn a_step_whose_parents_were_all_skipped_is_skipped_but_one_succeeded_parent_runs_it() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "a", "action": "transform", "depends_on": [], "when": "false", "input": {"value": 1}},
        {"name": "b", "action": "transform", "depends_on": [], "when": "false", "input": {"value": 1}},
        {"name": "c", "action": "transform", "depends_on": [], "input": {"value": 1}},
        step("after_skips", &["a", "b"]),
        step("after_mixed", &["a", "c"])
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    assert_eq!(names(&starts), ["c"]);
    assert_eq!(status(&state, "a"), StepStatus::Skipped);
    assert_eq!(status(&state, "after_skips"), StepStatus::Skipped);
    succeed(&mut state, &clock, &starts[0]);
    assert_eq!(names(&state.schedule()), ["after_mixed"]);
}

#[test]
fn a_condition_stop_ends_the_run_succeeded_and_skips_what_was_not_reached() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        step("a", &[]), step("b", &["a"])
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    let stop = Outcome {
        effect: Effect::StopRun,
        ..Outcome::output(json!({"result": false}))
    };
    state.on_done(0, attempt(&clock, 1), Ok(stop));
    assert!(state.schedule().is_empty());
    assert_eq!(state.phase(0), Phase::Done(RunStatus::Succeeded, None));
    state.finish(RunStatus::Succeeded, None);
    assert_eq!(status(&state, "b"), StepStatus::Skipped);
    assert_eq!(names(&starts), ["a"]);
}

#[test]
fn a_retry_is_recorded_and_a_resumed_step_waits_out_its_delay() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "a", "action": "transform", "input": {"value": 1}, "retry": {"max": 2}}
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    let mut first = attempt(&clock, 1);
    first.error = Some("HTTP 503".into());
    first.retry_in_ms = Some(1500);
    state.on_retry(starts[0].index, first, Some("busy".into()));
    assert_eq!(state.run.steps[0].attempts.len(), 1);
    let logged = state.recorded_logs().last().unwrap();
    assert!(
        logged.message.contains("attempt 1 of 3 failed") && logged.message.contains("1500 ms"),
        "{}",
        logged.message
    );
    // As after a restart: the step is still running; it starts again no sooner than the
    // delay chosen, with the next attempt number.
    let resumed = state.begin("node_2");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].first_attempt, 2);
    let wait = resumed[0].not_before.unwrap() - clock.now();
    assert_eq!(wait.num_milliseconds(), 1500);
}

#[test]
fn an_approval_gate_parks_the_run_until_approved() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}}
    ]}));
    state.begin("node_1");
    assert!(state.schedule().is_empty());
    assert_eq!(status(&state, "gate"), StepStatus::WaitingApproval);
    assert_eq!(state.phase(0), Phase::Park);
    state.park();
    assert_eq!(state.run.status, RunStatus::WaitingApproval);
    clock.advance(Duration::from_secs(5));
    state
        .decide(Intervention::Approve {
            step: None,
            by: "ada".into(),
            comment: Some("ok".into()),
            input: Some(json!({"ticket": 7})),
        })
        .unwrap();
    assert_eq!(state.run.status, RunStatus::Running);
    assert_eq!(state.run.context["ticket"], 7);
    assert_eq!(state.run.approvals[0].at, clock.now());
    assert_eq!(names(&state.schedule()), ["gate"]);
}

#[test]
fn an_approval_times_out_only_when_due_and_then_applies_on_timeout() {
    let definition = |on_timeout: &str| {
        json!({"name": "w", "steps": [{"name": "gate", "action": "transform", "input": {"value": 1},
            "approval": {"timeout_ms": 60000, "on_timeout": on_timeout}}]})
    };
    let (mut state, clock) = run_of(definition("reject"));
    state.begin("node_1");
    state.schedule();
    state.park();
    let deadline = state.run.control.wake_at.unwrap();
    assert_eq!((deadline - clock.now()).num_milliseconds(), 60_000);
    clock.advance(Duration::from_secs(59));
    assert!(state.decide(Intervention::Tick).is_err(), "not due yet");
    clock.advance(Duration::from_secs(1));
    state.decide(Intervention::Tick).unwrap();
    assert_eq!(state.run.status, RunStatus::Failed);
    assert_eq!(status(&state, "gate"), StepStatus::Failed);

    let (mut state, clock) = run_of(definition("approve"));
    state.begin("node_1");
    state.schedule();
    state.park();
    clock.advance(Duration::from_secs(61));
    state.decide(Intervention::Tick).unwrap();
    assert_eq!(state.run.status, RunStatus::Running);
    assert_eq!(state.run.approvals[0].by, "system");
    assert_eq!(names(&state.schedule()), ["gate"]);
}

#[test]
fn cancel_cancels_steps_in_flight_and_those_not_reached_and_only_once() {
    let (mut state, _clock) = run_of(json!({"name": "w", "steps": [
        step("a", &[]), step("b", &["a"])
    ]}));
    state.begin("node_1");
    state.schedule();
    state
        .decide(Intervention::Cancel { by: "ops".into() })
        .unwrap();
    assert_eq!(state.run.status, RunStatus::Canceled);
    assert_eq!(status(&state, "a"), StepStatus::Canceled);
    assert_eq!(status(&state, "b"), StepStatus::Canceled);
    assert_eq!(state.run.error.as_deref(), Some("canceled by ops"));
    assert!(
        state
            .decide(Intervention::Cancel { by: "ops".into() })
            .is_err()
    );
}

#[test]
fn the_run_timeout_counts_active_time_and_fails_the_run_with_steps_in_flight_canceled() {
    let (mut state, _clock) = run_of(json!({"name": "w", "timeout_ms": 1000, "steps": [
        step("a", &[])
    ]}));
    state.begin("node_1");
    state.schedule();
    assert_eq!(state.time_left(), Some(Duration::from_millis(1000)));
    state.add_active(400);
    assert_eq!(state.time_left(), Some(Duration::from_millis(600)));
    state.add_active(700);
    assert_eq!(state.time_left(), Some(Duration::ZERO));
    state.time_out_run();
    assert_eq!(status(&state, "a"), StepStatus::Canceled);
    let Phase::Done(RunStatus::Failed, Some(error)) = state.phase(0) else {
        panic!("the run should fail");
    };
    assert!(error.contains("timeout_ms 1000"), "{error}");
}

#[test]
fn changes_are_committed_as_one_transition_and_then_forgotten() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [step("a", &[])]}));
    state.begin("node_1");
    let starts = state.schedule();
    let guard = Guard::default();
    let tx = state.pending(guard.clone(), OwnerChange::Keep).unwrap();
    assert_eq!(tx.head.as_ref().unwrap().status, RunStatus::Running);
    assert_eq!(tx.steps.len(), 1);
    let changes: Vec<_> = tx.logs.iter().filter_map(|e| e.status.clone()).collect();
    assert_eq!(
        changes.len(),
        2,
        "run started and step started: {changes:?}"
    );
    assert!(tx.events.iter().any(|e| e.kind == "step.started"));
    assert!(tx.logs.iter().all(|e| e.ts == clock.now()));
    state.committed(7, crate::model::now());
    assert_eq!(state.run.control.rev, 7);
    assert!(state.pending(guard.clone(), OwnerChange::Keep).is_none());
    succeed(&mut state, &clock, &starts[0]);
    let tx = state.pending(guard, OwnerChange::Keep).unwrap();
    assert_eq!(tx.steps[0].1.status, StepStatus::Succeeded);
    assert_eq!(tx.steps[0].1.output, Some(json!("a")));
}

#[test]
fn a_set_that_would_outgrow_the_context_limit_fails_the_step_and_keeps_the_context() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [step("a", &[])]}));
    state.begin("node_1");
    let starts = state.schedule();
    let big = serde_json::Map::from_iter([("blob".to_owned(), json!("x".repeat(70 * 1024)))]);
    let outcome = Outcome {
        effect: Effect::MergeContext(big),
        ..Outcome::output(json!(null))
    };
    state.on_done(starts[0].index, attempt(&clock, 1), Ok(outcome));
    assert_eq!(status(&state, "a"), StepStatus::Failed);
    assert!(state.run.context.is_empty());
}

#[test]
fn later_templates_read_the_outputs_of_finished_steps() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        step("a", &[]),
        {"name": "b", "action": "transform", "input": {"value": "{{ steps.a.output }}!"}}
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    succeed(&mut state, &clock, &starts[0]);
    let next = state.schedule();
    assert_eq!(next[0].call.input, json!({"value": "a!"}));
}

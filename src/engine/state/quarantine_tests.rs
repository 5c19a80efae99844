//! The poison-run quarantine on the state machine alone: a run read back as the next
//! process would after a crash (or a graceful stop), with the step it had in flight.

use serde_json::json;

use super::tests::{attempt, names, run_of, status, step, succeed};
use super::{Phase, RunState};
use crate::clock::Clock;
use crate::model::{RunStatus, StepStatus};
use crate::store::{Guard, OwnerChange};

/// The run as the next process reads it after this one stopped: the store's copy of it.
fn restarted(state: &RunState, clock: &Clock, left_cleanly: bool) -> RunState {
    let mut run = state.run.clone();
    run.control.left_cleanly = left_cleanly;
    RunState::new(run, state.wf.clone(), &super::tests::settings(clock))
}

#[test]
fn a_step_in_flight_at_two_crashes_in_a_row_fails_instead_of_starting_a_third_time() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "bomb", "action": "transform", "input": {"value": 1}, "on_failure": "continue"},
        step("after", &["bomb"])
    ]}));
    state.begin("node_1");
    assert_eq!(names(&state.schedule()), ["bomb"]);

    let mut second = restarted(&state, &clock, false);
    let resumed = second.begin("node_2");
    assert_eq!(names(&resumed), ["bomb"], "the first crash is forgiven");
    assert_eq!(second.run.steps[0].interruptions, 1);
    let tx = second.pending(Guard::default(), OwnerChange::Keep).unwrap();
    assert_eq!(tx.steps[0].1.interruptions, 1, "the count is committed");

    let mut third = restarted(&second, &clock, false);
    assert!(third.begin("node_3").is_empty(), "not started a third time");
    assert_eq!(status(&third, "bomb"), StepStatus::Failed);
    let error = third.run.steps[0].error.clone().unwrap();
    assert!(
        error.contains("the server stopped while running this step 2 times"),
        "{error}"
    );
    // on_failure: continue, so the run goes on by its rules.
    let next = third.schedule();
    assert_eq!(names(&next), ["after"]);
    succeed(&mut third, &clock, &next[0]);
    assert_eq!(third.phase(0), Phase::Done(RunStatus::Succeeded, None));
}

#[test]
fn a_graceful_shutdown_is_not_counted_as_a_crash_and_breaks_the_row() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [step("slow", &[])]}));
    state.begin("node_1");
    state.schedule();
    let mut crashed = restarted(&state, &clock, false);
    assert_eq!(names(&crashed.begin("node_2")), ["slow"]);
    assert_eq!(crashed.run.steps[0].interruptions, 1);
    for n in 3..6 {
        let mut drained = restarted(&crashed, &clock, true);
        assert_eq!(names(&drained.begin(&format!("node_{n}"))), ["slow"]);
        assert_eq!(drained.run.steps[0].interruptions, 0);
        crashed = drained;
    }
    let mut again = restarted(&crashed, &clock, false);
    assert_eq!(
        names(&again.begin("node_9")),
        ["slow"],
        "one crash after a clean stop"
    );
}

#[test]
fn a_step_that_was_only_waiting_for_its_next_attempt_is_not_counted() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "a", "action": "transform", "input": {"value": 1}, "retry": {"max": 5}}
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    for n in 1..4 {
        let mut failed = attempt(&clock, n);
        failed.error = Some("HTTP 503".into());
        failed.retry_in_ms = Some(60_000);
        state.on_retry(starts[0].index, failed, None);
        state = restarted(&state, &clock, false);
        assert_eq!(names(&state.begin("node_2")), ["a"]);
        assert_eq!(state.run.steps[0].interruptions, 0);
    }
}

#[test]
fn an_attempt_that_finished_between_two_crashes_breaks_the_row() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "a", "action": "transform", "input": {"value": 1}, "retry": {"max": 5}}
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    let mut state = restarted(&state, &clock, false);
    assert_eq!(names(&state.begin("node_2")), ["a"]);
    assert_eq!(state.run.steps[0].interruptions, 1);
    // The attempt started again finishes (it fails and retries at once): the server lived.
    let mut failed = attempt(&clock, 1);
    failed.error = Some("HTTP 503".into());
    failed.retry_in_ms = Some(0);
    state.on_retry(starts[0].index, failed, None);
    assert_eq!(state.run.steps[0].interruptions, 0);
    let mut state = restarted(&state, &clock, false);
    assert_eq!(
        names(&state.begin("node_3")),
        ["a"],
        "one crash since the last attempt finished"
    );
    assert_eq!(state.run.steps[0].interruptions, 1);
}

#[test]
fn a_foreach_step_with_items_in_flight_at_two_crashes_in_a_row_fails() {
    let (mut state, clock) = run_of(json!({"name": "w", "steps": [
        {"name": "each", "action": "transform", "foreach": "{{ [1, 2, 3] }}",
         "input": {"value": "{{ item }}"}}
    ]}));
    state.begin("node_1");
    let starts = state.schedule();
    assert!(!starts.is_empty(), "items start");
    let mut second = restarted(&state, &clock, false);
    second.begin("node_2");
    assert_eq!(second.run.steps[0].interruptions, 1);
    assert_eq!(status(&second, "each"), StepStatus::Running);
    second.schedule();
    let mut third = restarted(&second, &clock, false);
    third.begin("node_3");
    assert_eq!(status(&third, "each"), StepStatus::Failed);
    let error = third.run.steps[0].error.clone().unwrap();
    assert!(error.contains("2 times"), "{error}");
}

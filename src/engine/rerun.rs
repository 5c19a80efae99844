//! Re-running a finished run (`POST /v1/runs/{id}/retry`), Temporal's *reset*: from any
//! step of a `FAILED`, `CANCELED` or `SUCCEEDED` run, optionally with context members
//! set and on another version of the workflow.
//!
//! What runs again: `from_step` (by default the first step that failed or was canceled),
//! every step after it in the definition, every step downstream of one that runs again,
//! and every step that had not succeeded. The steps before `from_step` that succeeded keep
//! their outputs, so on another version they must be the same steps: the new version's
//! steps before `from_step` must have the run's names, in order.
//!
//! Nothing is lost: the run records each re-run (who, when, why, from where, on which
//! version) with the steps it reset as they were, attempts and outputs included. The
//! history is bounded: at most [`MAX_RERUNS`] re-runs per run, and a record larger than
//! `limits.max_output_bytes` keeps its steps' attempts and errors but not their outputs.

use serde_json::{Map, Value};

use super::EngineError;
use super::shared::Shared;
use super::state::{RunState, effective_budget};
use crate::definition::Workflow;
use crate::model::{RetryRecord, Run, StepRun, StepStatus};
use crate::problems::Violation;
use crate::size::json_len;

/// How many times one run may be re-run; past this, start a new run.
pub const MAX_RERUNS: usize = 50;

/// A request to run a finished run again.
#[derive(Debug, Clone, Default)]
pub struct RetryRequest {
    /// The first step to run again; the first failed (or canceled) step when absent.
    pub from_step: Option<String>,
    /// Members set in the context (merged at the top level).
    pub context: Option<Map<String, Value>>,
    /// Run this version of the workflow from now on.
    pub version: Option<u32>,
    /// Why, for the record.
    pub reason: Option<String>,
    /// Who asked (the token name).
    pub by: String,
}

/// Which steps of the new version run again.
#[derive(Debug, PartialEq)]
struct Plan {
    from_step: String,
    /// Indexes in the new version's steps.
    reset: Vec<usize>,
}

fn invalid(pointer: &str, message: String) -> EngineError {
    EngineError::Invalid {
        violations: vec![Violation::new(pointer, message.clone())],
        message,
    }
}

/// The default `from_step`: the first step that failed or was canceled.
fn first_failed(run: &Run) -> Result<String, EngineError> {
    run.steps
        .iter()
        .find(|s| matches!(s.status, StepStatus::Failed | StepStatus::Canceled))
        .map(|s| s.name.clone())
        .ok_or_else(|| {
            EngineError::Conflict(format!(
                "run {} has no failed or canceled step; name from_step to re-run it from a step",
                run.id
            ))
        })
}

/// What runs again when `run` is re-run on `wf` from `from_step`.
fn plan(run: &Run, wf: &Workflow, from_step: Option<&str>) -> Result<Plan, EngineError> {
    let from_step = match from_step {
        Some(name) => name.to_owned(),
        None => first_failed(run)?,
    };
    let from = wf.step_index(&from_step).ok_or_else(|| {
        invalid(
            "/from_step",
            format!("version {} has no step {from_step:?}", run.workflow_version),
        )
    })?;
    let kept_names: Vec<&str> = run
        .steps
        .iter()
        .take(from)
        .map(|s| s.name.as_str())
        .collect();
    let new_names: Vec<&str> = wf
        .steps
        .iter()
        .take(from)
        .map(|s| s.name.as_str())
        .collect();
    if kept_names != new_names {
        return Err(invalid(
            "/version",
            format!(
                "the steps before {from_step:?} differ between the run ({}) and this version ({}); \
                 they keep their outputs, so they must be the same",
                kept_names.join(", "),
                new_names.join(", ")
            ),
        ));
    }
    let mut again: Vec<bool> = (0..wf.steps.len())
        .map(|i| i >= from || run.steps[i].status != StepStatus::Succeeded)
        .collect();
    // Downstream of a step that runs again, a step runs again too (its inputs change).
    loop {
        let mut changed = false;
        for i in 0..again.len() {
            if !again[i] && (0..again.len()).any(|a| again[a] && wf.dag.is_upstream(a, i)) {
                again[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let reset = (0..again.len()).filter(|&i| again[i]).collect();
    Ok(Plan { from_step, reset })
}

/// Leaves out the steps' outputs, then their foreach items, then the context members,
/// until `record` takes at most `max_bytes` as JSON (attempts, errors and statuses stay).
fn fit(record: &mut RetryRecord, max_bytes: usize) {
    if json_len(record) <= max_bytes {
        return;
    }
    for step in &mut record.steps {
        step.output = None;
        step.output_truncated = false;
    }
    record.trimmed.push("outputs".into());
    if json_len(record) > max_bytes && record.steps.iter().any(|s| s.items.is_some()) {
        for step in &mut record.steps {
            step.items = None;
        }
        record.trimmed.push("items".into());
    }
    if json_len(record) > max_bytes && record.context.take().is_some() {
        record.trimmed.push("context".into());
    }
}

/// Re-runs `run_id` as `request` asks; answers the run as committed, running again.
pub(super) async fn retry_run(
    shared: &std::sync::Arc<Shared>,
    run_id: &str,
    request: RetryRequest,
) -> Result<Run, EngineError> {
    let mut run = shared.store.get_run(run_id).await?;
    if !run.status.is_terminal() {
        return Err(EngineError::Conflict(format!(
            "run {run_id} is {}; only a finished run (FAILED, CANCELED or SUCCEEDED) can be re-run",
            run.status
        )));
    }
    if run.retries.len() >= MAX_RERUNS {
        return Err(EngineError::Conflict(format!(
            "run {run_id} was re-run {MAX_RERUNS} times, the most a run keeps a history of; \
             start a new run"
        )));
    }
    let version = request.version.unwrap_or(run.workflow_version);
    let entry = match shared
        .store
        .workflow_entry(&run.workflow_id, Some(version))
        .await
    {
        Err(crate::store::StoreError::NotFound(what)) if request.version.is_some() => {
            return Err(invalid("/version", format!("{what} not found")));
        }
        other => other?,
    };
    if let Some(archived) = &entry.archived {
        return Err(EngineError::Conflict(format!(
            "workflow {} was archived by {}; its runs are not started again",
            run.workflow_id, archived.by
        )));
    }
    let wf = shared.workflow(&run.workflow_id, version).await?;
    let plan = plan(&run, &wf, request.from_step.as_deref())?;
    let from_version = run.workflow_version;
    let previous: Vec<StepRun> = run
        .steps
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            (plan.reset.contains(i) || *i >= wf.steps.len()) && s.status != StepStatus::Pending
        })
        .map(|(_, s)| s.clone())
        .collect();
    run.steps = wf
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| match run.steps.get(i) {
            Some(kept) if !plan.reset.contains(&i) => kept.clone(),
            _ => StepRun::pending(step.id.clone(), step.name.clone(), step.action_name.clone()),
        })
        .collect();
    if version != from_version {
        run.workflow_version = version;
        run.budget = effective_budget(wf.budget, shared.settings.limits.run_tokens);
    }
    let mut record = RetryRecord {
        n: run.retries.len() as u32 + 1,
        at: shared.settings.clock.now(),
        by: request.by,
        from_step: plan.from_step,
        reason: request.reason,
        from_version,
        version,
        context: request.context.clone(),
        previous_status: run.status,
        previous_error: run.error.clone(),
        previous_started_at: run.started_at,
        previous_finished_at: run.finished_at,
        steps: previous,
        trimmed: Vec::new(),
    };
    fit(&mut record, shared.settings.limits.max_output_bytes);
    let rev = run.control.rev;
    let mut state = RunState::new(run, wf, &shared.settings);
    if let Some(patch) = request.context {
        let patch_size = json_len(&patch);
        state.merge_context(patch).map_err(|size| {
            invalid(
                "/context",
                format!(
                    "the context would grow to {size} bytes (the patch is {patch_size}), over \
                     limits.max_context_bytes ({})",
                    state.context_limit()
                ),
            )
        })?;
    }
    state.rerun(&plan.reset, record);
    let run = shared.resume_decided(state, rev).await?;
    shared.metrics.run_started();
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunControl, RunStatus};
    use serde_json::json;

    fn workflow(steps: Value) -> Workflow {
        let config =
            crate::config::Config::from_raw(std::path::Path::new("t"), Default::default()).unwrap();
        let actions = crate::actions::Registry::new(
            &config.services,
            crate::outbound::HttpClient::with_options(Default::default()).unwrap(),
        );
        let validator = crate::app::validator(&config, &actions).unwrap();
        validator
            .validate(&json!({"name": "w", "steps": steps}))
            .unwrap()
    }

    fn step(name: &str, depends_on: Option<&[&str]>) -> Value {
        let mut s = json!({"name": name, "action": "transform", "input": {"value": 1}});
        if let Some(d) = depends_on {
            s["depends_on"] = json!(d);
        }
        s
    }

    fn run_with(statuses: &[(&str, StepStatus)]) -> Run {
        Run {
            id: "run_1".into(),
            workflow_id: "wf".into(),
            workflow_version: 1,
            status: RunStatus::Failed,
            current_step: 0,
            parent_run_id: None,
            context: Map::new(),
            steps: statuses
                .iter()
                .map(|(name, status)| {
                    let mut s =
                        StepRun::pending((*name).into(), (*name).into(), "transform".into());
                    s.status = *status;
                    s
                })
                .collect(),
            error: None,
            approvals: Vec::new(),
            usage: Map::new(),
            budget: None,
            retries: Vec::new(),
            created_at: crate::model::now(),
            updated_at: crate::model::now(),
            started_at: None,
            finished_at: None,
            control: RunControl::default(),
        }
    }

    use StepStatus::{Canceled, Failed, Skipped, Succeeded};

    #[test]
    fn by_default_a_run_goes_again_from_its_first_failed_step_keeping_what_succeeded_before() {
        let wf = workflow(json!([step("a", None), step("b", None), step("c", None)]));
        let run = run_with(&[("a", Succeeded), ("b", Failed), ("c", Skipped)]);
        let plan = plan(&run, &wf, None).unwrap();
        assert_eq!(plan.from_step, "b");
        assert_eq!(plan.reset, vec![1, 2]);
    }

    #[test]
    fn a_run_without_a_failed_step_needs_from_step() {
        let wf = workflow(json!([step("a", None), step("b", None)]));
        let run = run_with(&[("a", Succeeded), ("b", Succeeded)]);
        assert!(matches!(
            plan(&run, &wf, None),
            Err(EngineError::Conflict(_))
        ));
        assert_eq!(plan(&run, &wf, Some("b")).unwrap().reset, vec![1]);
        let canceled = run_with(&[("a", Succeeded), ("b", Canceled)]);
        assert_eq!(plan(&canceled, &wf, None).unwrap().from_step, "b");
    }

    #[test]
    fn independent_branches_that_succeeded_keep_their_outputs_and_downstream_steps_run_again() {
        // a → c, b (independent), d depends on a; re-run from a.
        let wf = workflow(json!([
            step("b", Some(&[])),
            step("a", Some(&[])),
            step("c", Some(&["a"])),
            step("d", Some(&["b"])),
        ]));
        let run = run_with(&[
            ("b", Succeeded),
            ("a", Succeeded),
            ("c", Succeeded),
            ("d", Succeeded),
        ]);
        // b is before a and succeeded: kept. Everything from a on runs again.
        assert_eq!(plan(&run, &wf, Some("a")).unwrap().reset, vec![1, 2, 3]);
        // From c: a and b keep their outputs, c and d (after it) run again.
        assert_eq!(plan(&run, &wf, Some("c")).unwrap().reset, vec![2, 3]);
    }

    #[test]
    fn a_step_listed_earlier_that_depends_on_a_reset_step_runs_again() {
        let wf = workflow(json!([
            step("late", Some(&["first"])),
            step("first", Some(&[]))
        ]));
        let run = run_with(&[("late", Succeeded), ("first", Succeeded)]);
        // Re-running from "first" (index 1) resets "late" (index 0), which reads it.
        assert_eq!(plan(&run, &wf, Some("first")).unwrap().reset, vec![0, 1]);
    }

    #[test]
    fn another_version_must_keep_the_steps_before_from_step() {
        let run = run_with(&[("a", Succeeded), ("b", Failed)]);
        let renamed = workflow(json!([step("x", None), step("b", None)]));
        match plan(&run, &renamed, Some("b")) {
            Err(EngineError::Invalid { violations, .. }) => {
                assert_eq!(violations[0].pointer, "/version")
            }
            other => panic!("{other:?}"),
        }
        let longer = workflow(json!([step("a", None), step("b", None), step("c", None)]));
        assert_eq!(plan(&run, &longer, None).unwrap().reset, vec![1, 2]);
        let missing = workflow(json!([step("a", None)]));
        assert!(matches!(
            plan(&run, &missing, None),
            Err(EngineError::Invalid { .. })
        ));
    }
}

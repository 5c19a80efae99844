//! `GET /v1/runs?view=summary`: runs as light lists show them, serialised straight from the
//! runs (no intermediate JSON tree: building one and deleting members from it was a third
//! of a summary page's CPU). The members are exactly those documented by
//! [`super::schemas::RunSummary`] and [`super::schemas::StepSummary`]; a test keeps them so.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{Run, RunBudget, RunStatus, RunTrigger, StepRun, StepStatus, Timestamp};

/// A page of summaries, as `Page<Run>` serialises a page of full runs.
#[derive(Serialize)]
pub struct SummaryPage<'a> {
    items: Vec<RunSummary<'a>>,
    next_cursor: Option<&'a str>,
}

impl<'a> SummaryPage<'a> {
    pub fn of(runs: &'a [Run], next_cursor: Option<&'a str>) -> Self {
        Self {
            items: runs.iter().map(RunSummary::of).collect(),
            next_cursor,
        }
    }
}

/// A run without its context, approvals, re-run history, and without its steps' outputs,
/// attempts, foreach items and waits. Members in the order a full run has them.
#[derive(Serialize)]
struct RunSummary<'a> {
    id: &'a str,
    workflow_id: &'a str,
    workflow_version: u32,
    status: RunStatus,
    current_step: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_run_id: Option<&'a str>,
    steps: Vec<StepSummary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    usage: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<&'a RunBudget>,
    created_at: &'a Timestamp,
    updated_at: &'a Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<&'a Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<&'a Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<&'a RunTrigger>,
}

impl<'a> RunSummary<'a> {
    fn of(run: &'a Run) -> Self {
        Self {
            id: &run.id,
            workflow_id: &run.workflow_id,
            workflow_version: run.workflow_version,
            status: run.status,
            current_step: run.current_step,
            parent_run_id: run.parent_run_id.as_deref(),
            steps: run.steps.iter().map(StepSummary::of).collect(),
            error: run.error.as_deref(),
            usage: &run.usage,
            budget: run.budget.as_ref(),
            created_at: &run.created_at,
            updated_at: &run.updated_at,
            started_at: run.started_at.as_ref(),
            finished_at: run.finished_at.as_ref(),
            trigger: run.trigger.as_ref(),
        }
    }
}

#[derive(Serialize)]
struct StepSummary<'a> {
    step_id: &'a str,
    name: &'a str,
    action: &'a str,
    status: StepStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<&'a Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<&'a Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_since: Option<&'a Timestamp>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    output_truncated: bool,
}

impl<'a> StepSummary<'a> {
    fn of(step: &'a StepRun) -> Self {
        Self {
            step_id: &step.step_id,
            name: &step.name,
            action: &step.action,
            status: step.status,
            error: step.error.as_deref(),
            http_code: step.http_code,
            started_at: step.started_at.as_ref(),
            finished_at: step.finished_at.as_ref(),
            waiting_since: step.waiting_since.as_ref(),
            output_truncated: step.output_truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;
    use utoipa::{PartialSchema, openapi::RefOr};

    use super::*;
    use crate::api::schemas;
    use crate::model::{BudgetMode, RunControl, now};

    /// A run with every member a summary can show set, and the ones it leaves out too.
    fn full_run() -> Run {
        let mut step = StepRun::pending("s1".into(), "fetch".into(), "http".into());
        step.status = StepStatus::Failed;
        step.error = Some("boom".into());
        step.output = Some(json!({"big": "x"}));
        step.http_code = Some(500);
        step.started_at = Some(now());
        step.finished_at = Some(now());
        step.waiting_since = Some(now());
        step.output_truncated = true;
        Run {
            id: "run_1".into(),
            workflow_id: "wf_1".into(),
            workflow_version: 2,
            status: RunStatus::Failed,
            current_step: 0,
            parent_run_id: Some("run_0".into()),
            context: Map::from_iter([("secretish".to_owned(), json!(1))]),
            steps: vec![step],
            error: Some("boom".into()),
            approvals: Vec::new(),
            usage: Map::from_iter([("total_tokens".to_owned(), json!(3))]),
            budget: Some(RunBudget {
                tokens: 10,
                mode: BudgetMode::Strict,
            }),
            retries: Vec::new(),
            trigger: Some(RunTrigger::Schedule {
                id: "nightly".into(),
                fire_time: now(),
            }),
            created_at: now(),
            updated_at: now(),
            started_at: Some(now()),
            finished_at: Some(now()),
            control: RunControl::default(),
        }
    }

    fn documented(schema: RefOr<utoipa::openapi::schema::Schema>) -> BTreeSet<String> {
        let schema = serde_json::to_value(schema).unwrap();
        schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    fn served(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn a_summary_serves_exactly_the_documented_members() {
        let runs = [full_run()];
        let page = serde_json::to_value(SummaryPage::of(&runs, Some("c"))).unwrap();
        assert_eq!(page["next_cursor"], "c");
        let run = &page["items"][0];
        assert_eq!(served(run), documented(schemas::RunSummary::schema()));
        assert_eq!(
            served(&run["steps"][0]),
            documented(schemas::StepSummary::schema())
        );
    }

    #[test]
    fn a_summary_is_the_full_run_without_what_lists_leave_out() {
        let runs = [full_run()];
        let mut full = serde_json::to_value(&runs[0]).unwrap();
        let map = full.as_object_mut().unwrap();
        for member in ["context", "approvals", "retries"] {
            map.shift_remove(member);
        }
        for step in map["steps"].as_array_mut().unwrap() {
            for member in ["attempts", "output", "items", "waiting"] {
                step.as_object_mut().unwrap().shift_remove(member);
            }
        }
        let page = serde_json::to_string(&SummaryPage::of(&runs, None)).unwrap();
        let summary: Value = serde_json::from_str(&page).unwrap();
        assert_eq!(summary["items"][0], full);
        assert!(summary["next_cursor"].is_null());
        assert!(!page.contains("secretish") && !page.contains("big"));
    }
}

//! A run's JSON written with some members already serialised: the engine keeps each step
//! of a run it serves as JSON and rewrites only the steps a commit changed, instead of
//! copying and serialising the whole run at every commit.
//!
//! Invariant: [`Run::served_with`] writes exactly the bytes `serde_json::to_vec(&run)`
//! writes, given the run's own context and steps as JSON. The shape below repeats
//! [`Run`]'s serde attributes; it takes the run apart without `..`, so a member added to
//! `Run` does not compile until it is added here, and a test compares the two forms with
//! every member present and with every optional member absent.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Approval, RetryRecord, Run, RunBudget, RunStatus, RunTrigger, Timestamp, rfc3339};

/// [`Run`] as serialised, with its context and steps given as JSON.
#[derive(Serialize)]
pub struct ServedRun<'a, T> {
    id: &'a str,
    workflow_id: &'a str,
    workflow_version: u32,
    status: RunStatus,
    current_step: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_run_id: Option<&'a str>,
    context: &'a RawValue,
    steps: &'a [T],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    approvals: &'a [Approval],
    #[serde(skip_serializing_if = "no_usage")]
    usage: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<RunBudget>,
    #[serde(skip_serializing_if = "no_retries")]
    retries: &'a [RetryRecord],
    #[serde(serialize_with = "rfc3339::serialize")]
    created_at: Timestamp,
    #[serde(serialize_with = "rfc3339::serialize")]
    updated_at: Timestamp,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option::serialize"
    )]
    started_at: Option<Timestamp>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option::serialize"
    )]
    finished_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<&'a RunTrigger>,
}

fn no_usage(usage: &&Map<String, Value>) -> bool {
    usage.is_empty()
}

fn no_retries(retries: &&[RetryRecord]) -> bool {
    retries.is_empty()
}

impl Run {
    /// This run as served, with `context` the JSON of its context and `steps` what
    /// serialises as each of its steps, in order (their JSON).
    pub fn served_with<'a, T: Serialize>(
        &'a self,
        context: &'a RawValue,
        steps: &'a [T],
    ) -> ServedRun<'a, T> {
        let Run {
            id,
            workflow_id,
            workflow_version,
            status,
            current_step,
            parent_run_id,
            context: _,
            steps: _,
            error,
            approvals,
            usage,
            budget,
            retries,
            created_at,
            updated_at,
            started_at,
            finished_at,
            trigger,
            control: _,
        } = self;
        ServedRun {
            id,
            workflow_id,
            workflow_version: *workflow_version,
            status: *status,
            current_step: *current_step,
            parent_run_id: parent_run_id.as_deref(),
            context,
            steps,
            error: error.as_deref(),
            approvals,
            usage,
            budget: *budget,
            retries,
            created_at: *created_at,
            updated_at: *updated_at,
            started_at: *started_at,
            finished_at: *finished_at,
            trigger: trigger.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunControl, StepRun, StepStatus};
    use serde_json::json;
    use serde_json::value::to_raw_value;

    fn served(run: &Run) -> Vec<u8> {
        let context = to_raw_value(&run.context).unwrap();
        let steps: Vec<_> = run.steps.iter().map(|s| to_raw_value(s).unwrap()).collect();
        serde_json::to_vec(&run.served_with(&context, &steps)).unwrap()
    }

    fn bare() -> Run {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-02T01:02:03.456Z")
            .unwrap()
            .to_utc();
        Run {
            id: "run_1".into(),
            workflow_id: "wf_1".into(),
            workflow_version: 3,
            status: RunStatus::Running,
            current_step: 1,
            parent_run_id: None,
            context: Map::new(),
            steps: Vec::new(),
            error: None,
            approvals: Vec::new(),
            usage: Map::new(),
            budget: None,
            retries: Vec::new(),
            created_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            trigger: None,
            control: RunControl::default(),
        }
    }

    #[test]
    fn a_run_without_its_optional_members_is_written_as_serde_writes_it() {
        let run = bare();
        assert_eq!(served(&run), serde_json::to_vec(&run).unwrap());
    }

    #[test]
    fn a_run_with_every_member_is_written_as_serde_writes_it() {
        let mut run = bare();
        let at = run.created_at;
        run.parent_run_id = Some("run_0".into());
        run.context = json!({"tag": "a \"quoted\" ✓", "n": [1, 2.5, null]})
            .as_object()
            .cloned()
            .unwrap();
        let mut step = StepRun::pending("s1".into(), "first".into(), "http".into());
        step.status = StepStatus::Succeeded;
        step.output = Some(json!({"ok": true}));
        step.started_at = Some(at);
        step.finished_at = Some(at);
        run.steps = vec![
            step.clone(),
            StepRun::pending("s2".into(), "second".into(), "transform".into()),
        ];
        run.error = Some("it broke".into());
        let at_text = "2026-12-02T01:02:03.456Z";
        run.approvals = vec![
            serde_json::from_value(json!({"step": "first", "decision": "approved", "by": "ada",
                "at": at_text, "comment": "fine", "input": {"k": 1}}))
            .unwrap(),
        ];
        run.usage = json!({"total_tokens": 12}).as_object().cloned().unwrap();
        run.budget = Some(serde_json::from_value(json!({"tokens": 100, "mode": "warn"})).unwrap());
        let mut retry: RetryRecord = serde_json::from_value(json!({"n": 1, "at": at_text,
            "by": "ada", "from_step": "first", "reason": "flaky", "from_version": 2,
            "version": 3, "context": {"k": 2}, "previous_status": "FAILED",
            "previous_error": "boom", "steps": [], "trimmed": ["outputs"]}))
        .unwrap();
        retry.steps = vec![step];
        run.retries = vec![retry];
        run.started_at = Some(at);
        run.finished_at = Some(at);
        run.trigger = Some(RunTrigger::Webhook {
            name: "ci".into(),
            delivery: Some("d1".into()),
            request: Some(json!({"body": {}})),
        });
        assert_eq!(
            String::from_utf8(served(&run)).unwrap(),
            serde_json::to_string(&run).unwrap()
        );
    }
}

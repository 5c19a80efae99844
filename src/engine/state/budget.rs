//! Token budgets (DESIGN §15): a run's `ai_router.chat` steps share a budget of tokens,
//! compared with `usage.total_tokens` summed over the run. In `strict` mode a step that
//! would start once the budget is spent fails at once (no attempt, so no retry); in
//! `warn` mode the run goes on and the moment it crosses the budget is logged, once (a
//! crossing happens once, so a restart cannot log it twice).
//!
//! The budget is fixed on the run when it starts: the workflow's `budget`, else the
//! server's `limits.run_tokens`.

use serde_json::{Map, Value};

use super::RunState;
use crate::actions::{Failure, Outcome};
use crate::definition::WorkflowBudget;
use crate::metrics::Metrics;
use crate::model::{BudgetMode, LogLevel, RunBudget};

/// The action budgets apply to.
pub const AI_ACTION: &str = "ai_router.chat";

/// The budget a run of a workflow with `own` is held to, given the server's `default`.
pub fn effective(own: Option<WorkflowBudget>, default: Option<RunBudget>) -> Option<RunBudget> {
    match own {
        None => default,
        Some(WorkflowBudget {
            mode: BudgetMode::Off,
            ..
        }) => None,
        Some(WorkflowBudget { tokens, mode }) => Some(RunBudget {
            tokens: tokens.or(default.map(|d| d.tokens))?,
            mode,
        }),
    }
}

/// Tokens a usage record counts: `total_tokens`, else prompt plus completion tokens.
pub fn tokens_used(usage: &Map<String, Value>) -> u64 {
    let field = |name: &str| usage.get(name).and_then(Value::as_u64);
    field("total_tokens").unwrap_or_else(|| {
        field("prompt_tokens").unwrap_or(0) + field("completion_tokens").unwrap_or(0)
    })
}

/// Counts the tokens of a finished `ai_router.chat` attempt into
/// `orchestrator_ai_tokens_total{workflow, model}` (the model as the provider named it).
pub fn count_tokens(metrics: &Metrics, workflow: &str, result: &Result<Outcome, Failure>) {
    let Ok(outcome) = result else { return };
    let Some(usage) = &outcome.usage else { return };
    let tokens = tokens_used(usage);
    if tokens == 0 {
        return;
    }
    let model = outcome.output["body"]["model"]
        .as_str()
        .unwrap_or("unknown");
    metrics.ai_tokens(&label(workflow), &label(model), tokens);
}

/// The longest label value kept: a model name comes from the router's answer, and a
/// workflow's name from whoever created it.
const MAX_LABEL_CHARS: usize = 64;

fn label(text: &str) -> String {
    text.chars().take(MAX_LABEL_CHARS).collect()
}

impl RunState {
    /// Why step `idx` may not start: a strict budget is spent. `None` for other actions.
    pub(super) fn budget_refusal(&self, idx: usize) -> Option<String> {
        let budget = self.run.budget?;
        if budget.mode != BudgetMode::Strict || self.wf.steps[idx].action_name != AI_ACTION {
            return None;
        }
        let used = tokens_used(&self.run.usage);
        (used >= budget.tokens).then(|| {
            format!(
                "the run has used {used} tokens of its budget of {} (budget.tokens, strict): \
                 no more ai_router.chat steps start",
                budget.tokens
            )
        })
    }

    /// Logs when the usage just added (from `before` tokens) crossed the run's budget.
    pub(super) fn note_budget(&mut self, idx: usize, before: u64) {
        let Some(budget) = self.run.budget else {
            return;
        };
        let used = tokens_used(&self.run.usage);
        if before >= budget.tokens || used < budget.tokens {
            return;
        }
        let (level, next) = match budget.mode {
            BudgetMode::Warn => (LogLevel::Warn, "mode warn: the run goes on"),
            _ => (
                LogLevel::Warn,
                "mode strict: later ai_router.chat steps fail",
            ),
        };
        let message = format!(
            "token budget spent: the run has used {used} tokens of {} (budget.tokens); {next}",
            budget.tokens
        );
        self.log(level, Some(idx), message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn budget(tokens: Option<u64>, mode: BudgetMode) -> Option<WorkflowBudget> {
        Some(WorkflowBudget { tokens, mode })
    }

    #[test]
    fn a_workflow_budget_overrides_the_default_and_off_removes_it() {
        let default = Some(RunBudget {
            tokens: 1000,
            mode: BudgetMode::Strict,
        });
        assert_eq!(effective(None, default), default);
        assert_eq!(effective(budget(Some(5), BudgetMode::Off), default), None);
        assert_eq!(
            effective(budget(None, BudgetMode::Warn), default),
            Some(RunBudget {
                tokens: 1000,
                mode: BudgetMode::Warn
            })
        );
        assert_eq!(
            effective(budget(Some(50), BudgetMode::Strict), None).map(|b| b.tokens),
            Some(50)
        );
        assert_eq!(effective(budget(None, BudgetMode::Warn), None), None);
    }

    #[test]
    fn usage_counts_total_tokens_or_prompt_plus_completion() {
        let usage = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            tokens_used(&usage(json!({"total_tokens": 30, "prompt_tokens": 1}))),
            30
        );
        assert_eq!(
            tokens_used(&usage(json!({"prompt_tokens": 10, "completion_tokens": 5}))),
            15
        );
        assert_eq!(tokens_used(&Map::new()), 0);
    }
}

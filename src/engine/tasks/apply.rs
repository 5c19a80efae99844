//! Applying an ended claim to its run, like any decision: through the run's own task when
//! it executes here, else on the stored run under a revision guard (see
//! [`Shared::decide`]). The run's commit settles the task, so a claim is applied once.

use std::sync::Arc;

use super::super::EngineError;
use super::super::decide::Intervention;
use super::super::shared::Shared;
use super::super::state::RunState;
use crate::store::tasks::TaskRecord;

/// Applies `task`'s ended claim to its run: the step succeeds, fails, or its task goes
/// back on the queue. When no step waits for the claim any more (the run was canceled or
/// ended meanwhile, or the claim was applied already), the task is only marked settled.
/// A failure leaves the claim unsettled, for the sweeper to apply again.
pub async fn apply(shared: &Arc<Shared>, task: TaskRecord) {
    let ended = Intervention::TaskEnded(Box::new(task.clone()));
    match shared.decide(&task.run_id, ended).await {
        Ok(_) => {}
        Err(EngineError::NotFound(_)) => settle(shared, &task).await,
        Err(EngineError::Conflict(why)) => {
            if waited_for(shared, &task).await == Some(false) {
                settle(shared, &task).await;
            } else {
                tracing::warn!(task = %task.id, run_id = %task.run_id, %why, "applying an ended task failed; trying again later");
            }
        }
        Err(e) => {
            tracing::warn!(task = %task.id, run_id = %task.run_id, error = %e, "applying an ended task failed; trying again later")
        }
    }
}

/// Whether a step of the task's run still waits for this claim (`None`: cannot tell).
async fn waited_for(shared: &Arc<Shared>, task: &TaskRecord) -> Option<bool> {
    let run = match shared.store.get_run(&task.run_id).await {
        Ok(run) => run,
        Err(crate::store::StoreError::NotFound(_)) => return Some(false),
        Err(_) => return None,
    };
    let wf = shared
        .workflow(&run.workflow_id, run.workflow_version)
        .await
        .ok()?;
    Some(RunState::new(run, wf, &shared.settings).waits_for_task(task))
}

async fn settle(shared: &Arc<Shared>, task: &TaskRecord) {
    if let Err(e) = shared.store.settle_task(&task.id, task.attempt).await {
        tracing::warn!(task = %task.id, error = %e, "settling a task failed");
    }
}

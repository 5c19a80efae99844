//! What API users do to what the store holds, beyond running it: find workflows by name
//! and runs by status counts, archive a workflow, delete a finished run.
//!
//! Archiving keeps a workflow and every version readable (runs keep pointing at them) but
//! takes it off lists and stops new runs; deletion removes a run with everything it owns
//! and remembers who deleted it, so that a later read can say so instead of a bare `404`.

use async_trait::async_trait;

use super::StoreError;
use crate::model::{Page, PageRequest, RunFilter, RunStatus, Timestamp, WorkflowVersion};

/// Who archived a workflow, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub at: Timestamp,
    pub by: String,
}

/// A workflow version with the state of its workflow.
#[derive(Debug, Clone)]
pub struct WorkflowEntry {
    pub version: WorkflowVersion,
    /// Set once the workflow is archived.
    pub archived: Option<Archived>,
}

/// Which version of a workflow a run starts, and whether the workflow is archived: a
/// [`WorkflowEntry`] without the definition, for callers that have it compiled already.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowHead {
    pub version: u32,
    pub archived: Option<Archived>,
}

/// Filters of `GET /v1/workflows`.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// Only workflows whose name starts with this (case-sensitive).
    pub name_prefix: Option<String>,
    /// Archived workflows too (they are left out otherwise).
    pub archived: bool,
}

/// A run that was deleted: what it was and who deleted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub workflow_id: String,
    pub status: RunStatus,
    pub at: Timestamp,
    pub by: String,
}

/// Search, archiving and deletion, provided by every [`super::Store`].
#[async_trait]
pub trait Curation: Send + Sync {
    /// Latest versions of the workflows matching `filter`, newest workflow first.
    async fn search_workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<Page<WorkflowEntry>, StoreError>;

    /// A version of a workflow (the latest when `version` is `None`) and whether the
    /// workflow is archived; `NotFound` for an unknown workflow or version.
    async fn workflow_entry(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowEntry, StoreError>;

    /// What [`Curation::workflow_entry`] answers but the definition, which is neither read
    /// nor parsed; the same `NotFound`s.
    async fn workflow_head(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowHead, StoreError>;

    /// Archives a workflow (once: archiving it again answers the first archiving);
    /// `NotFound` for an unknown workflow.
    async fn archive_workflow(&self, id: &str, by: &str) -> Result<Archived, StoreError>;

    /// How many runs matching `filter` (its statuses, paging and view aside) have each
    /// status; statuses without runs are left out.
    async fn count_runs_by_status(
        &self,
        filter: &RunFilter,
    ) -> Result<Vec<(RunStatus, u64)>, StoreError>;

    /// Deletes a finished run with its steps, approvals, logs, hook events and
    /// idempotency keys, and records the deletion; `Conflict` while the run is not
    /// finished, `NotFound` for an unknown (or already deleted) run.
    async fn delete_run(&self, id: &str, by: &str) -> Result<Deletion, StoreError>;

    /// The deletion of run `id`, when it was deleted.
    async fn deleted_run(&self, id: &str) -> Result<Option<Deletion>, StoreError>;
}

/// The statuses a run may be deleted in, as an SQL list.
pub(crate) const TERMINAL_SQL: &str = "('SUCCEEDED', 'FAILED', 'CANCELED')";

/// Why a run that is not finished cannot be deleted.
pub(crate) fn still_active(id: &str, status: &str) -> StoreError {
    StoreError::Conflict(format!(
        "run {id} is {status}; only a finished run can be deleted (cancel it first)"
    ))
}

/// The SQL JSON path of a context filter (`$."a"."b"`), or why the key cannot be one.
pub(crate) fn json_path(path: &[String]) -> Result<String, StoreError> {
    let mut out = String::from("$");
    for key in path {
        if key.is_empty() || key.contains('"') || key.contains('\\') {
            return Err(StoreError::Invalid(format!(
                "context key {key:?} cannot be searched (empty, or holding a quote or backslash)"
            )));
        }
        out.push_str(&format!(".\"{key}\""));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_paths_are_quoted_key_by_key_and_odd_keys_refused() {
        let path =
            |keys: &[&str]| json_path(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        assert_eq!(path(&["customer"]).unwrap(), "$.\"customer\"");
        assert_eq!(path(&["a", "b c"]).unwrap(), "$.\"a\".\"b c\"");
        assert!(matches!(path(&["a\"b"]), Err(StoreError::Invalid(_))));
        assert!(matches!(path(&[""]), Err(StoreError::Invalid(_))));
    }
}

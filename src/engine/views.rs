//! Served forms of the runs executing here, so that reading a running run — clients poll
//! `GET /v1/runs/{id}` — costs no store round trip and no serialisation per read.
//!
//! A run's slot lives beside its task in the engine's table of active runs and goes with
//! it. Invariants: a view is only ever of committed state (the run task offers its run
//! right after a commit, a reader offers what it read from the store), and a view older
//! than a revision known to be committed is never served: every commit through the engine,
//! and every change another server announces, raises the slot's known revision and drops
//! an older view. Runs are only published while someone reads them (the first read of a
//! run marks it watched), so runs nobody polls pay nothing.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::model::Run;

/// A run's JSON as served, at one revision.
pub struct RunDocument {
    pub rev: u64,
    pub body: Bytes,
}

/// A committed run at one revision, serialised on first read.
pub(super) struct RunView {
    rev: u64,
    run: Run,
    body: OnceLock<Bytes>,
}

impl RunView {
    pub(super) fn new(run: Run) -> Self {
        Self {
            rev: run.control.rev,
            run,
            body: OnceLock::new(),
        }
    }

    pub(super) fn document(&self) -> RunDocument {
        let body = self.body.get_or_init(|| {
            // A `Run` holds only JSON values and plain fields: it always serialises.
            Bytes::from(serde_json::to_vec(&self.run).unwrap_or_default())
        });
        RunDocument {
            rev: self.rev,
            body: body.clone(),
        }
    }
}

/// The view of one active run.
#[derive(Default)]
pub(super) struct ViewSlot {
    /// A reader asked for the run since it started executing here: its task offers every
    /// commit.
    watched: bool,
    /// The highest revision known to be committed.
    known: u64,
    view: Option<Arc<RunView>>,
}

impl ViewSlot {
    /// The view to serve, if there is a current one; otherwise marks the run watched, so
    /// that its task offers the next commit.
    pub(super) fn read(&mut self) -> Option<Arc<RunView>> {
        match &self.view {
            Some(view) => Some(view.clone()),
            None => {
                self.watched = true;
                None
            }
        }
    }

    /// True when the run task should offer its run at `rev`.
    pub(super) fn wants(&self, rev: u64) -> bool {
        self.watched && rev >= self.known && self.view.as_ref().is_none_or(|v| v.rev < rev)
    }

    /// Revision `rev` is committed: an older view is no longer served.
    pub(super) fn committed(&mut self, rev: u64) {
        self.known = self.known.max(rev);
        if self.view.as_ref().is_some_and(|v| v.rev < rev) {
            self.view = None;
        }
    }

    /// Keeps `view` unless a newer revision is known or held.
    pub(super) fn offer(&mut self, view: Arc<RunView>) {
        if view.rev >= self.known && self.view.as_ref().is_none_or(|v| v.rev < view.rev) {
            self.known = view.rev;
            self.view = Some(view);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(rev: u64) -> Arc<RunView> {
        let run = Run {
            id: "run-test".into(),
            workflow_id: "wf".into(),
            workflow_version: 1,
            status: crate::model::RunStatus::Running,
            current_step: 0,
            parent_run_id: None,
            context: serde_json::Map::new(),
            steps: Vec::new(),
            error: None,
            approvals: Vec::new(),
            usage: serde_json::Map::new(),
            budget: None,
            retries: Vec::new(),
            trigger: None,
            created_at: crate::model::now(),
            updated_at: crate::model::now(),
            started_at: None,
            finished_at: None,
            control: crate::model::RunControl {
                rev,
                ..Default::default()
            },
        };
        Arc::new(RunView::new(run))
    }

    #[test]
    fn an_unread_run_is_not_published() {
        let slot = ViewSlot::default();
        assert!(!slot.wants(1));
    }

    #[test]
    fn the_first_read_misses_and_asks_for_the_next_commit() {
        let mut slot = ViewSlot::default();
        assert!(slot.read().is_none());
        assert!(slot.wants(3));
        slot.offer(view(3));
        assert_eq!(slot.read().map(|v| v.rev), Some(3));
        assert!(!slot.wants(3), "a revision is published once");
    }

    #[test]
    fn a_commit_elsewhere_drops_an_older_view_and_refuses_older_offers() {
        let mut slot = ViewSlot::default();
        slot.read();
        slot.offer(view(3));
        slot.committed(5);
        assert!(
            slot.read().is_none(),
            "revision 3 is stale once 5 is committed"
        );
        slot.offer(view(4));
        assert!(
            slot.read().is_none(),
            "a store read older than a known commit"
        );
        assert!(!slot.wants(4));
        slot.offer(view(5));
        assert_eq!(slot.read().map(|v| v.rev), Some(5));
    }

    #[test]
    fn a_late_offer_never_replaces_a_newer_view() {
        let mut slot = ViewSlot::default();
        slot.read();
        slot.offer(view(7));
        slot.offer(view(6));
        assert_eq!(slot.read().map(|v| v.rev), Some(7));
    }

    #[test]
    fn the_body_is_the_runs_json() {
        let v = view(2);
        let doc = v.document();
        assert_eq!(doc.rev, 2);
        let parsed: serde_json::Value = serde_json::from_slice(&doc.body).unwrap();
        assert_eq!(parsed["id"], "run-test");
    }
}

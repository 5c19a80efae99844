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

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::{RawValue, to_raw_value};

use crate::model::Run;

/// A run's JSON as served, at one revision.
#[derive(Clone)]
pub struct RunDocument {
    pub rev: u64,
    pub body: Bytes,
}

/// A committed run at one revision, serialised.
pub(super) struct RunView {
    doc: RunDocument,
}

impl RunView {
    /// The view of a run read from the store.
    pub(super) fn new(run: &Run) -> Self {
        Self {
            doc: RunDocument {
                rev: run.control.rev,
                // A `Run` holds only JSON values and plain fields: it always serialises.
                body: Bytes::from(serde_json::to_vec(run).unwrap_or_default()),
            },
        }
    }

    pub(super) fn rev(&self) -> u64 {
        self.doc.rev
    }

    pub(super) fn document(&self) -> RunDocument {
        self.doc.clone()
    }
}

/// The JSON of a run's context and of each of its steps, kept by the run's task while
/// the run is watched, so that a commit rewrites only what it changed.
///
/// Invariant: a piece that is present is the JSON of the committed member. Every commit
/// reports the steps and whether the context it wrote changed ([`Self::changed`]), the
/// same record the store writes from, before [`Self::view`] is asked for.
#[derive(Default)]
pub(super) struct RunPieces {
    context: Option<Box<RawValue>>,
    steps: Vec<Option<Box<RawValue>>>,
}

impl RunPieces {
    /// Forgets the pieces a commit changed: the steps `steps`, the context when
    /// `context`, everything when `all` (a re-run replaced the steps).
    pub(super) fn changed(
        &mut self,
        steps: impl IntoIterator<Item = usize>,
        context: bool,
        all: bool,
    ) {
        if all {
            self.context = None;
            self.steps.clear();
            return;
        }
        if context {
            self.context = None;
        }
        for i in steps {
            if let Some(piece) = self.steps.get_mut(i) {
                *piece = None;
            }
        }
    }

    /// The view of `run` as committed, writing only the pieces that are missing.
    pub(super) fn view(&mut self, run: &Run) -> RunView {
        if self.steps.len() != run.steps.len() {
            self.steps.clear();
            self.steps.resize_with(run.steps.len(), || None);
        }
        // A run holds only JSON values and plain fields: its members always serialise.
        let context = self
            .context
            .get_or_insert_with(|| to_raw_value(&run.context).unwrap_or_default());
        for (piece, step) in self.steps.iter_mut().zip(&run.steps) {
            if piece.is_none() {
                *piece = to_raw_value(step).ok();
            }
        }
        let body = serde_json::to_vec(&run.served_with(context, &self.steps)).unwrap_or_default();
        RunView {
            doc: RunDocument {
                rev: run.control.rev,
                body: Bytes::from(body),
            },
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
        self.watched && rev >= self.known && self.view.as_ref().is_none_or(|v| v.rev() < rev)
    }

    /// Revision `rev` is committed: an older view is no longer served.
    pub(super) fn committed(&mut self, rev: u64) {
        self.known = self.known.max(rev);
        if self.view.as_ref().is_some_and(|v| v.rev() < rev) {
            self.view = None;
        }
    }

    /// Keeps `view` unless a newer revision is known or held; true when the slot holds
    /// a view at `view`'s revision afterwards.
    pub(super) fn offer(&mut self, view: Arc<RunView>) -> bool {
        let rev = view.rev();
        if rev >= self.known && self.view.as_ref().is_none_or(|v| v.rev() < rev) {
            self.known = rev;
            self.view = Some(view);
        }
        self.view.as_ref().is_some_and(|v| v.rev() == rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StepRun, StepStatus};
    use serde_json::json;

    fn run(rev: u64) -> Run {
        Run {
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
        }
    }

    fn view(rev: u64) -> Arc<RunView> {
        Arc::new(RunView::new(&run(rev)))
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
        assert_eq!(slot.read().map(|v| v.rev()), Some(3));
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
        assert_eq!(slot.read().map(|v| v.rev()), Some(5));
    }

    #[test]
    fn a_late_offer_never_replaces_a_newer_view() {
        let mut slot = ViewSlot::default();
        slot.read();
        slot.offer(view(7));
        slot.offer(view(6));
        assert_eq!(slot.read().map(|v| v.rev()), Some(7));
    }

    #[test]
    fn the_body_is_the_runs_json() {
        let v = view(2);
        let doc = v.document();
        assert_eq!(doc.rev, 2);
        let parsed: serde_json::Value = serde_json::from_slice(&doc.body).unwrap();
        assert_eq!(parsed["id"], "run-test");
    }

    fn body(view: &RunView) -> String {
        String::from_utf8(view.document().body.to_vec()).unwrap()
    }

    fn step(name: &str) -> StepRun {
        StepRun::pending(name.into(), name.into(), "http".into())
    }

    #[test]
    fn pieces_rewrite_what_a_commit_changed_and_serve_the_runs_json() {
        let mut run = run(1);
        run.steps = vec![step("a"), step("b"), step("c")];
        let mut pieces = RunPieces::default();
        assert_eq!(
            body(&pieces.view(&run)),
            serde_json::to_string(&run).unwrap()
        );

        run.steps[1].status = StepStatus::Succeeded;
        run.steps[1].output = Some(json!({"n": 1}));
        run.control.rev = 2;
        pieces.changed([1], false, false);
        let view = pieces.view(&run);
        assert_eq!(view.rev(), 2);
        assert_eq!(body(&view), serde_json::to_string(&run).unwrap());

        run.context.insert("k".into(), json!("v"));
        pieces.changed([], true, false);
        assert_eq!(
            body(&pieces.view(&run)),
            serde_json::to_string(&run).unwrap()
        );

        run.steps = vec![step("x"), step("y"), step("z")];
        pieces.changed([], false, true);
        assert_eq!(
            body(&pieces.view(&run)),
            serde_json::to_string(&run).unwrap()
        );

        run.steps.push(step("w"));
        pieces.changed([3], false, false);
        assert_eq!(
            body(&pieces.view(&run)),
            serde_json::to_string(&run).unwrap()
        );
    }

    #[test]
    fn pieces_a_commit_did_not_change_are_not_written_again() {
        let mut run = run(1);
        run.steps = vec![step("a"), step("b")];
        let mut pieces = RunPieces::default();
        pieces.view(&run);
        // Not reported by a commit: the step's piece stays as it was.
        run.steps[0].status = StepStatus::Failed;
        pieces.changed([1], false, false);
        let served: serde_json::Value = serde_json::from_str(&body(&pieces.view(&run))).unwrap();
        assert_eq!(served["steps"][0]["status"], "PENDING");
    }
}

//! Reading one run's log from a position onwards: the backlog from the store, then live
//! entries from the hub, until the run is over.
//!
//! Invariant: entries come out in `seq` order, each exactly once, with no gap. The store
//! is the source of truth; the live feed only saves reads. That holds because
//! - the tail of a run not yet over subscribes *before* it reads the store, so an entry
//!   committed after that read is published after the subscription exists and reaches
//!   the feed;
//! - it delivers a live entry only when its `seq` is the next one, drops repeats, and goes
//!   back to the store on a gap or when the feed says entries were dropped for it;
//! - it ends only when it has read the store up to its current end and the run, as the
//!   entries it delivered (or the run record it started from) say, is terminal; or, when
//!   the server stops, after one last read of the store, with [`TailItem::Shutdown`].
//!
//! A finished run is served from the store alone: no subscription is ever made for it.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::Stream;
use tokio_util::sync::CancellationToken;

use super::{Feed, LogHub, SharedEntry, Subscription, entry_bytes};
use crate::model::{LogEntry, RunStatus};
use crate::store::{DynStore, StoreError};

/// Entries read from the store at once while catching up.
const PAGE: usize = 500;

/// About the most bytes of entries a tail holds from one store read (at least one entry):
/// a stream whose reader stops reading keeps no more than this waiting, however large the
/// run's lines (500 client lines of 8 KiB held ~2 MiB per stalled stream before).
const PAGE_BYTES: usize = 32 * 1024;

/// What a tail yields.
#[derive(Debug, Clone)]
pub enum TailItem {
    /// The next entry of the log.
    Entry(Arc<SharedEntry>),
    /// The run is over and every entry up to `last_seq` was delivered; nothing follows.
    End { status: RunStatus, last_seq: u64 },
    /// The server is stopping; every entry committed up to `last_seq` was delivered. The
    /// run goes on after the server's next start: resume after `last_seq`.
    Shutdown { status: RunStatus, last_seq: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the store.
    CatchUp,
    /// Waiting for published entries.
    Live,
    /// `End` was yielded.
    Done,
}

/// A reader of one run's log; see the module documentation.
pub struct LogTail {
    store: DynStore,
    hub: Arc<LogHub>,
    run_id: String,
    /// The `seq` of the last entry yielded (or the position asked to start after).
    cursor: u64,
    /// The run's status as of the last entry yielded that announced one.
    status: RunStatus,
    sub: Option<Subscription>,
    ready: VecDeque<Arc<SharedEntry>>,
    phase: Phase,
    /// The last store read returned everything committed at the time.
    caught_up: bool,
    /// Entries the next store read asks for: fewer after a read whose entries were large.
    page: usize,
    /// Cancelled when the server stops: the tail reads the store once more and ends with
    /// `Shutdown`.
    stop: CancellationToken,
    stopping: bool,
}

impl LogTail {
    /// A tail of `run_id` starting after entry `after` (0: from the beginning), for a run
    /// whose status was read as `status`.
    pub fn new(
        store: DynStore,
        hub: Arc<LogHub>,
        run_id: impl Into<String>,
        after: u64,
        status: RunStatus,
    ) -> Self {
        Self {
            store,
            hub,
            run_id: run_id.into(),
            cursor: after,
            status,
            sub: None,
            ready: VecDeque::new(),
            phase: Phase::CatchUp,
            caught_up: false,
            page: PAGE,
            stop: CancellationToken::new(),
            stopping: false,
        }
    }

    /// Ends the tail with [`TailItem::Shutdown`] when `stop` is cancelled, so that open
    /// streams do not hold up a shutdown; their clients resume with `Last-Event-ID`.
    pub fn stop_on(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// The next item, waiting for the run to log more when it has nothing yet; `None`
    /// after [`TailItem::End`].
    pub async fn next(&mut self) -> Result<Option<TailItem>, StoreError> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                self.cursor = entry.seq;
                if let Some(change) = &entry.status {
                    self.status = change.run_status;
                }
                return Ok(Some(TailItem::Entry(entry)));
            }
            match self.phase {
                Phase::Done => return Ok(None),
                Phase::Live if self.stopping => {
                    self.phase = Phase::Done;
                    return Ok(Some(TailItem::Shutdown {
                        status: self.status,
                        last_seq: self.cursor,
                    }));
                }
                Phase::Live => {
                    let stop = self.stop.clone();
                    tokio::select! {
                        () = self.listen() => {}
                        () = stop.cancelled() => {
                            // Deliver what was committed up to now, then say goodbye.
                            self.stopping = true;
                            self.phase = Phase::CatchUp;
                        }
                    }
                }
                Phase::CatchUp => {
                    if self.catch_up().await? {
                        self.phase = Phase::Done;
                        return Ok(Some(TailItem::End {
                            status: self.status,
                            last_seq: self.cursor,
                        }));
                    }
                }
            }
        }
    }

    /// One step of reading the store; true when the log is complete.
    async fn catch_up(&mut self) -> Result<bool, StoreError> {
        if !self.caught_up {
            if self.sub.is_none() && !self.status.is_terminal() {
                // Subscribed before the read: what the read misses reaches the feed, so a
                // live run's tail reads the store once before it goes live, not twice.
                self.sub = Some(self.hub.subscribe(&self.run_id));
            }
            let page = self
                .store
                .read_logs(&self.run_id, self.cursor, self.page)
                .await?;
            let asked = self.page;
            let (kept, cut) = keep_bounded(page, PAGE_BYTES);
            self.caught_up = kept.len() < asked && !cut;
            // Ask for about what fitted next time, so that large entries are not read twice;
            // grow back while they fit.
            self.page = if cut { kept.len() * 2 } else { asked * 2 }.min(PAGE);
            self.ready
                .extend(kept.into_iter().map(|e| Arc::new(SharedEntry::new(e))));
            return Ok(false);
        }
        // Everything the store held at the last read has been yielded.
        self.caught_up = false;
        if self.status.is_terminal() {
            return Ok(true);
        }
        if self.sub.is_none() {
            // Subscribe, then read once more: what was committed before the subscription
            // is in the store, what is committed after it reaches the feed.
            self.sub = Some(self.hub.subscribe(&self.run_id));
            return Ok(false);
        }
        self.phase = Phase::Live;
        Ok(false)
    }

    /// Waits for the next published entry and decides what to do with it.
    async fn listen(&mut self) {
        let Some(sub) = self.sub.as_mut() else {
            self.phase = Phase::CatchUp;
            return;
        };
        match sub.recv().await {
            Feed::Entry(entry) if entry.seq <= self.cursor => {}
            Feed::Entry(entry) if entry.seq == self.cursor + 1 => {
                let ends = entry
                    .status
                    .as_ref()
                    .is_some_and(|s| s.run_status.is_terminal());
                self.ready.push_back(entry);
                if ends {
                    // Entries committed with the last one may follow it: drain the store,
                    // then end.
                    self.phase = Phase::CatchUp;
                }
            }
            // A gap (another publisher was faster) or dropped entries: the store has them.
            Feed::Entry(_) | Feed::Missed => self.phase = Phase::CatchUp,
        }
    }

    /// The tail as a stream; it ends after [`TailItem::End`] or the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<TailItem, StoreError>> + Send {
        futures::stream::unfold(Some(self), |tail| async move {
            let mut tail = tail?;
            match tail.next().await {
                Ok(Some(item)) => Some((Ok(item), Some(tail))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

/// The first entries of `page` whose sizes add up to at most `budget` bytes (at least one),
/// and whether any were left out.
fn keep_bounded(mut page: Vec<LogEntry>, budget: usize) -> (Vec<LogEntry>, bool) {
    let mut used = 0;
    let fits = page
        .iter()
        .position(|e| {
            used += entry_bytes(e);
            used > budget
        })
        .map_or(page.len(), |at| at.max(1));
    let cut = fits < page.len();
    page.truncate(fits);
    (page, cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LogLevel, NewLogEntry, StatusChange, StepRun};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{LogLimits, NewRun};
    use std::time::Duration;

    const LIMITS: LogLimits = LogLimits { max_entries: 1000 };

    async fn store_with_run() -> (tempfile::TempDir, DynStore) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore =
            Arc::new(SqliteStore::open(&dir.path().join("t.db"), false, 2).unwrap());
        store
            .create_run(NewRun {
                id: "run_1".into(),
                workflow_id: "wf_1".into(),
                workflow_version: 1,
                context: Default::default(),
                steps: vec![StepRun::pending(
                    "s1".into(),
                    "a".into(),
                    "transform".into(),
                )],
                parent: None,
                owner: None,
                idempotency: None,
                logs: vec![NewLogEntry::engine(LogLevel::Info, None, "created")],
                events: Vec::new(),
                budget: None,
                trigger: None,
                schedule: None,
            })
            .await
            .unwrap();
        (dir, store)
    }

    fn line(text: &str) -> NewLogEntry {
        NewLogEntry::engine(LogLevel::Info, None, text)
    }

    fn finished() -> NewLogEntry {
        line("run succeeded").with_status(StatusChange {
            run_status: RunStatus::Succeeded,
            step: None,
            step_status: None,
        })
    }

    async fn append(store: &DynStore, hub: &LogHub, entries: Vec<NewLogEntry>) -> Vec<u64> {
        let written = store.append_logs("run_1", entries, LIMITS).await.unwrap();
        hub.publish("run_1", &written);
        written.iter().map(|e| e.seq).collect()
    }

    async fn collect(tail: &mut LogTail) -> (Vec<u64>, Option<RunStatus>) {
        let mut seqs = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), tail.next()).await;
            match next.expect("the tail ends").unwrap() {
                Some(TailItem::Entry(e)) => seqs.push(e.seq),
                Some(TailItem::End { status, .. }) => return (seqs, Some(status)),
                Some(TailItem::Shutdown { .. }) => return (seqs, None),
                None => return (seqs, None),
            }
        }
    }

    #[tokio::test]
    async fn a_finished_run_is_read_from_the_store_alone_and_ends() {
        let (_dir, store) = store_with_run().await;
        let hub = Arc::new(LogHub::new());
        append(&store, &hub, vec![line("a"), finished()]).await;
        let mut tail = LogTail::new(store, hub.clone(), "run_1", 1, RunStatus::Succeeded);
        assert_eq!(
            collect(&mut tail).await,
            (vec![2, 3], Some(RunStatus::Succeeded))
        );
        assert_eq!(hub.feeds(), 0);
        assert!(tail.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn large_entries_are_held_a_few_at_a_time_and_all_delivered_once_in_order() {
        let (_dir, store) = store_with_run().await;
        let hub = Arc::new(LogHub::new());
        let big = "x".repeat(8000);
        let lines = (0..60).map(|i| line(&format!("{i} {big}"))).collect();
        append(&store, &hub, lines).await;
        let last = append(&store, &hub, vec![finished()]).await[0];
        let mut tail = LogTail::new(store, hub, "run_1", 0, RunStatus::Succeeded);
        let mut seqs = Vec::new();
        loop {
            match tail.next().await.unwrap() {
                Some(TailItem::Entry(e)) => {
                    seqs.push(e.seq);
                    let held: usize = tail.ready.iter().map(|e| entry_bytes(e)).sum();
                    assert!(
                        held <= PAGE_BYTES,
                        "{held} bytes held after entry {}",
                        e.seq
                    );
                }
                Some(TailItem::End { status, last_seq }) => {
                    assert_eq!((status, last_seq), (RunStatus::Succeeded, last));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    }

    #[test]
    fn a_page_is_cut_at_its_byte_budget_but_keeps_at_least_one_entry() {
        let entry = |seq: u64, len: usize| LogEntry {
            seq,
            ts: crate::model::now(),
            level: LogLevel::Info,
            source: crate::model::LogSource::Engine,
            step: None,
            message: "m".repeat(len),
            status: None,
        };
        let page = || (1..=5).map(|i| entry(i, 1000)).collect::<Vec<_>>();
        let (kept, cut) = keep_bounded(page(), 3 * 1160);
        assert_eq!((kept.len(), cut), (3, true));
        let (kept, cut) = keep_bounded(page(), 100);
        assert_eq!((kept.len(), cut), (1, true));
        let (kept, cut) = keep_bounded(page(), 1 << 20);
        assert_eq!((kept.len(), cut), (5, false));
        assert_eq!(keep_bounded(Vec::new(), 100), (Vec::new(), false));
    }

    #[tokio::test]
    async fn a_running_runs_tail_subscribes_before_it_reads_the_backlog() {
        let (_dir, store) = store_with_run().await;
        let hub = Arc::new(LogHub::new());
        append(&store, &hub, vec![line("a")]).await;
        let mut tail = LogTail::new(store.clone(), hub.clone(), "run_1", 0, RunStatus::Running);
        assert!(matches!(tail.next().await.unwrap(), Some(TailItem::Entry(e)) if e.seq == 1));
        assert_eq!(hub.subscribers(), 1, "subscribed with the first read");
        append(&store, &hub, vec![line("b")]).await;
        let last = append(&store, &hub, vec![finished()]).await[0];
        let (seqs, end) = collect(&mut tail).await;
        assert_eq!(seqs, (2..=last).collect::<Vec<_>>());
        assert_eq!(end, Some(RunStatus::Succeeded));
    }

    #[tokio::test]
    async fn live_entries_follow_the_backlog_without_gaps_or_repeats() {
        let (_dir, store) = store_with_run().await;
        let hub = Arc::new(LogHub::with_capacity(4));
        append(&store, &hub, vec![line("a"), line("b")]).await;
        let tail = LogTail::new(store.clone(), hub.clone(), "run_1", 0, RunStatus::Running);
        let reader = tokio::spawn(async move {
            let mut tail = tail;
            collect(&mut tail).await
        });
        // Enough appends, in bursts larger than the feed, to force lag and gap handling.
        for burst in 0..20 {
            let lines = (0..7).map(|i| line(&format!("{burst}.{i}"))).collect();
            append(&store, &hub, lines).await;
            tokio::task::yield_now().await;
        }
        // A repeat of an old entry must not be delivered twice.
        let old = store.read_logs("run_1", 0, 1).await.unwrap();
        hub.publish("run_1", &old);
        let last = append(&store, &hub, vec![finished()]).await[0];
        let (seqs, end) = reader.await.unwrap();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
        assert_eq!(end, Some(RunStatus::Succeeded));
    }
}

//! Run logs beyond the store: live fan-out of committed entries ([`LogHub`]), reading a
//! log from a position onwards across store and live feed ([`LogTail`]), and the text
//! forms of entries ([`text`]).
//!
//! One feed per run, shared by all its subscribers, created on first subscribe and dropped
//! when the last subscriber leaves; publishing to a run nobody watches costs one map
//! lookup. Entries are published only after the store committed them, so a subscriber that
//! falls behind (the feed is bounded) or sees a gap in `seq` can always catch up from the
//! store: the feed is a wake-up with data attached, never the source of truth. Whoever
//! learns of committed entries publishes them: the engine after its own commits, and a
//! store that hears of other replicas' commits (e.g. PostgreSQL `LISTEN/NOTIFY`).

mod tail;
pub mod text;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::broadcast;

use crate::config::raw::DEFAULT_FEED_CAPACITY;
use crate::model::LogEntry;

pub use tail::{LogTail, TailItem};

/// About what a log entry takes in memory and on the wire (its text and fixed fields).
pub fn entry_bytes(entry: &LogEntry) -> usize {
    const FIXED: usize = 160;
    FIXED + entry.message.len() + entry.step.as_ref().map_or(0, String::len)
}

type Feeds = HashMap<String, broadcast::Sender<Arc<SharedEntry>>>;

/// A committed entry as handed to readers: shared by every subscriber of a feed, with its
/// JSON form computed once, on first use, so a thousand subscribers serialise it once.
#[derive(Debug)]
pub struct SharedEntry {
    entry: LogEntry,
    json: OnceLock<String>,
}

impl SharedEntry {
    pub fn new(entry: LogEntry) -> Self {
        Self {
            entry,
            json: OnceLock::new(),
        }
    }

    /// The entry's JSON (the wire shape of [`LogEntry`]).
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            // A LogEntry is plain data with string keys: serialising it cannot fail.
            serde_json::to_string(&self.entry).unwrap_or_default()
        })
    }
}

impl std::ops::Deref for SharedEntry {
    type Target = LogEntry;
    fn deref(&self) -> &LogEntry {
        &self.entry
    }
}

/// The live feeds of all runs.
#[derive(Debug)]
pub struct LogHub {
    feeds: Mutex<Feeds>,
    capacity: usize,
    subscribers: AtomicUsize,
}

impl Default for LogHub {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_FEED_CAPACITY)
    }
}

/// What a subscriber receives next.
#[derive(Debug, Clone)]
pub enum Feed {
    /// The next entry published for the run (publish order is `seq` order per publisher;
    /// a subscriber must still check `seq` for gaps and repeats).
    Entry(Arc<SharedEntry>),
    /// The subscriber fell behind and entries were dropped for it: read the store.
    Missed,
}

impl LogHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub whose feeds buffer `capacity` entries per run.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            feeds: Mutex::default(),
            capacity: capacity.max(1),
            subscribers: AtomicUsize::new(0),
        }
    }

    /// The map is always consistent (no code panics while holding it), so a poisoned
    /// lock is still safe to use.
    fn lock(&self) -> MutexGuard<'_, Feeds> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers committed entries of `run_id` to its subscribers, in order. Never blocks:
    /// a subscriber that cannot keep up loses entries from its buffer and is told so.
    pub fn publish(&self, run_id: &str, entries: &[LogEntry]) {
        if entries.is_empty() {
            return;
        }
        let feed = {
            let mut feeds = self.lock();
            let Some(feed) = feeds.get(run_id) else {
                return;
            };
            if feed.receiver_count() == 0 {
                feeds.remove(run_id);
                return;
            }
            feed.clone()
        };
        // Outside the map's lock: waking a run's subscribers never delays other runs.
        for entry in entries {
            let _ = feed.send(Arc::new(SharedEntry::new(entry.clone())));
        }
    }

    /// Subscribes to entries of `run_id` published from now on.
    pub fn subscribe(self: &Arc<Self>, run_id: &str) -> Subscription {
        let rx = self.receiver(run_id);
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: self.clone(),
            run_id: run_id.to_owned(),
            rx: Some(rx),
        }
    }

    fn receiver(&self, run_id: &str) -> broadcast::Receiver<Arc<SharedEntry>> {
        self.lock()
            .entry(run_id.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// True when someone subscribes to `run_id` now (entries committed elsewhere are then
    /// worth reading from the store and publishing here).
    pub fn is_watched(&self, run_id: &str) -> bool {
        self.lock()
            .get(run_id)
            .is_some_and(|feed| feed.receiver_count() > 0)
    }

    /// Number of runs with a live feed.
    pub fn feeds(&self) -> usize {
        self.lock().len()
    }

    /// Number of live subscriptions, over all runs.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }
}

/// A subscription to one run's feed; leaving drops the feed when it was the last one.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<LogHub>,
    run_id: String,
    /// Always `Some` outside `drop`.
    rx: Option<broadcast::Receiver<Arc<SharedEntry>>>,
}

impl Subscription {
    /// The next published entry, or [`Feed::Missed`] when entries were dropped for this
    /// subscriber. Waits while nothing is published.
    pub async fn recv(&mut self) -> Feed {
        let Some(rx) = self.rx.as_mut() else {
            return Feed::Missed;
        };
        match rx.recv().await {
            Ok(entry) => Feed::Entry(entry),
            Err(broadcast::error::RecvError::Lagged(_)) => Feed::Missed,
            Err(broadcast::error::RecvError::Closed) => {
                // The hub never drops a feed that has receivers; should it happen anyway,
                // join a fresh feed and let the caller read what it missed from the store.
                self.rx = Some(self.hub.receiver(&self.run_id));
                Feed::Missed
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
        // Under the lock, so a concurrent subscribe is either counted here or creates a
        // fresh feed after the removal.
        let mut feeds = self.hub.lock();
        if feeds
            .get(&self.run_id)
            .is_some_and(|f| f.receiver_count() == 0)
        {
            feeds.remove(&self.run_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LogLevel, NewLogEntry};

    fn entry(seq: u64) -> LogEntry {
        NewLogEntry::engine(LogLevel::Info, None, format!("entry {seq}")).into_entry(seq)
    }

    #[tokio::test]
    async fn subscribers_share_one_feed_that_goes_away_with_the_last_of_them() {
        let hub = Arc::new(LogHub::new());
        let mut a = hub.subscribe("run_1");
        let mut b = hub.subscribe("run_1");
        assert_eq!((hub.feeds(), hub.subscribers()), (1, 2));
        hub.publish("run_1", &[entry(1), entry(2)]);
        for sub in [&mut a, &mut b] {
            for seq in [1, 2] {
                match sub.recv().await {
                    Feed::Entry(e) => assert_eq!(e.seq, seq),
                    Feed::Missed => panic!("nothing was dropped"),
                }
            }
        }
        drop(a);
        assert_eq!(hub.feeds(), 1);
        drop(b);
        assert_eq!((hub.feeds(), hub.subscribers()), (0, 0));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_it_missed_entries() {
        let hub = Arc::new(LogHub::with_capacity(2));
        let mut slow = hub.subscribe("run_1");
        hub.publish("run_1", &[entry(1), entry(2), entry(3)]);
        assert!(matches!(slow.recv().await, Feed::Missed));
        assert!(matches!(slow.recv().await, Feed::Entry(e) if e.seq == 2));
    }

    #[test]
    fn publishing_to_a_run_nobody_watches_creates_no_feed() {
        let hub = LogHub::new();
        hub.publish("run_1", &[entry(1)]);
        assert_eq!(hub.feeds(), 0);
    }
}

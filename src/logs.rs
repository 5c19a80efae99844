//! Live fan-out of committed run log entries.
//!
//! One feed per run, shared by all its subscribers, created on first subscribe and dropped
//! when the last subscriber leaves; publishing to a run nobody watches costs one map
//! lookup. Entries are published only after the store committed them, so a subscriber that
//! falls behind (the feed is bounded) or sees a gap in `seq` can always catch up from the
//! store: the feed is a wake-up with data attached, never the source of truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::LogEntry;

/// Entries buffered per run before a slow subscriber lags and must read the store.
pub const FEED_CAPACITY: usize = 1024;

/// The live feeds of all runs.
#[derive(Debug, Default)]
pub struct LogHub {
    feeds: Mutex<HashMap<String, broadcast::Sender<Arc<LogEntry>>>>,
}

impl LogHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Delivers committed entries of `run_id` to its subscribers, in order.
    pub fn publish(&self, run_id: &str, entries: &[LogEntry]) {
        if entries.is_empty() {
            return;
        }
        let Ok(mut feeds) = self.feeds.lock() else {
            return;
        };
        let Some(feed) = feeds.get(run_id) else {
            return;
        };
        if feed.receiver_count() == 0 {
            feeds.remove(run_id);
            return;
        }
        for entry in entries {
            let _ = feed.send(Arc::new(entry.clone()));
        }
    }

    /// A receiver of entries of `run_id` published from now on.
    pub fn subscribe(&self, run_id: &str) -> broadcast::Receiver<Arc<LogEntry>> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds
            .entry(run_id.to_owned())
            .or_insert_with(|| broadcast::channel(FEED_CAPACITY).0)
            .subscribe()
    }

    /// True when someone subscribes to `run_id` now (entries committed elsewhere are then
    /// worth reading from the store and publishing here).
    pub fn is_watched(&self, run_id: &str) -> bool {
        self.feeds
            .lock()
            .map(|f| f.get(run_id).is_some_and(|feed| feed.receiver_count() > 0))
            .unwrap_or(false)
    }

    /// Number of runs with a live feed.
    pub fn feeds(&self) -> usize {
        self.feeds.lock().map(|f| f.len()).unwrap_or(0)
    }
}

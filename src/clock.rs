//! Wall-clock time for the engine's rules: the system clock in the server, a clock that
//! moves only when told to in tests, so that timeouts and timestamps can be checked
//! without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::model::{Timestamp, now};

/// Where the current time comes from; cheap to clone (clones of a manual clock share it).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds since the epoch, for a manual clock; `None`: the system clock.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock standing at `at` until [`Clock::advance`] moves it.
    pub fn manual(at: Timestamp) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(at.timestamp_millis()))),
        }
    }

    /// The current time, in milliseconds (what the store keeps).
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            None => now(),
            Some(ms) => chrono::DateTime::from_timestamp_millis(ms.load(Ordering::SeqCst))
                .unwrap_or_default(),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved.
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(ms) = &self.manual {
            ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let start = chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let clock = Clock::manual(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(std::time::Duration::from_secs(2));
        assert_eq!((clock.now() - start).num_milliseconds(), 2000);
    }
}

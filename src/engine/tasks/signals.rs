//! Wake-ups of parked polls: a poll registers one [`Notify`] under each queue it polls, and
//! a task put on a queue (by a commit here, or announced by another replica) notifies every
//! poll registered under it.
//!
//! `Notify` keeps a permit when nobody is waiting yet, so a task that arrives between a
//! poll's empty claim and its wait is not missed: the poll registers before it claims.
//! Every poll on the queue is woken (not just one): a woken poll that finds the task
//! taken simply waits again, while waking only one could pick a poll that is just leaving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The registry of parked polls, by queue.
#[derive(Default)]
pub struct QueueSignals {
    polls: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
}

/// A poll's registration; it leaves the registry when dropped.
pub struct Registration {
    notify: Arc<Notify>,
    queues: Vec<String>,
    signals: Arc<QueueSignals>,
}

impl Registration {
    /// Completes once a task was put on one of the poll's queues since it registered (or
    /// since the last wake-up it saw).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Ok(mut polls) = self.signals.polls.lock() else {
            return;
        };
        for queue in &self.queues {
            if let Some(list) = polls.get_mut(queue) {
                list.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), &*self.notify));
                if list.is_empty() {
                    polls.remove(queue);
                }
            }
        }
    }
}

impl QueueSignals {
    /// Registers a poll of `queues`.
    pub fn register(self: &Arc<Self>, queues: &[String]) -> Registration {
        let notify = Arc::new(Notify::new());
        if let Ok(mut polls) = self.polls.lock() {
            for queue in queues {
                polls
                    .entry(queue.clone())
                    .or_default()
                    .push(Arc::downgrade(&notify));
            }
        }
        Registration {
            notify,
            queues: queues.to_vec(),
            signals: self.clone(),
        }
    }

    /// A task was put on `queue`: wakes every poll of it.
    pub fn wake(&self, queue: &str) {
        let waiting: Vec<Arc<Notify>> = match self.polls.lock() {
            Ok(polls) => polls
                .get(queue)
                .map(|list| list.iter().filter_map(Weak::upgrade).collect())
                .unwrap_or_default(),
            Err(_) => return,
        };
        for notify in waiting {
            notify.notify_one();
        }
    }

    /// Wake-ups may have been lost (another replica's notices): wakes every poll.
    pub fn wake_all(&self) {
        let waiting: Vec<Arc<Notify>> = match self.polls.lock() {
            Ok(polls) => polls.values().flatten().filter_map(Weak::upgrade).collect(),
            Err(_) => return,
        };
        for notify in waiting {
            notify.notify_one();
        }
    }

    /// How many polls are registered (for tests).
    pub fn parked(&self) -> usize {
        self.polls
            .lock()
            .map(|p| p.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_other_queues_stay_asleep() {
        let signals = Arc::new(QueueSignals::default());
        let a = signals.register(&["a".into(), "b".into()]);
        let c = signals.register(&["c".into()]);
        signals.wake("b");
        tokio::time::timeout(Duration::from_secs(1), a.notified())
            .await
            .expect("the permit was kept");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), c.notified())
                .await
                .is_err()
        );
        assert_eq!(signals.parked(), 3);
        drop(a);
        drop(c);
        assert_eq!(signals.parked(), 0);
    }
}

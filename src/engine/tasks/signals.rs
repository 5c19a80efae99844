//! Wake-ups of parked polls: a poll registers under each queue it polls, and a task put on
//! a queue (by a commit here, or announced by another replica) wakes one poll of it, the
//! longest parked that has no wake-up pending.
//!
//! `Notify` keeps a permit when nobody is waiting yet, so a task that arrives between a
//! poll's empty claim and its wait is not missed: the poll registers before it claims.
//! A wake-up is never lost with the poll it went to: a poll that leaves with a wake-up it
//! did not wait for (it was claiming, or answering), or with a full claim (more tasks may be
//! waiting), passes one wake-up on to another poll of its queues as it leaves. Waking one
//! poll per task instead of all of them spares the others an empty claim each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The registry of parked polls, by queue, oldest first.
#[derive(Default)]
pub struct QueueSignals {
    polls: Mutex<HashMap<String, Vec<Weak<Parked>>>>,
}

/// One poll's wake-up: set `pending` before notifying, cleared when the poll sees it.
#[derive(Default)]
struct Parked {
    notify: Notify,
    pending: AtomicBool,
    pass_on: AtomicBool,
}

/// A poll's registration; it leaves the registry when dropped.
pub struct Registration {
    parked: Arc<Parked>,
    queues: Vec<String>,
    signals: Arc<QueueSignals>,
}

impl Registration {
    /// Completes once a task was put on one of the poll's queues since it registered (or
    /// since the last wake-up it saw).
    pub async fn notified(&self) {
        self.parked.notify.notified().await;
        self.parked.pending.store(false, Ordering::Release);
    }

    /// The poll leaves with as many tasks as it could take: others may be waiting, so a
    /// wake-up goes on to another poll when it leaves.
    pub fn leaves_full(&self) {
        self.parked.pass_on.store(true, Ordering::Release);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Out of the registry first: a wake-up chosen for this poll after that is impossible,
        // and one chosen before is seen below.
        if let Ok(mut polls) = self.signals.polls.lock() {
            for queue in &self.queues {
                if let Some(list) = polls.get_mut(queue) {
                    list.retain(|w| {
                        w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), &*self.parked)
                    });
                    if list.is_empty() {
                        polls.remove(queue);
                    }
                }
            }
        }
        let pass_on = self.parked.pending.load(Ordering::Acquire)
            || self.parked.pass_on.load(Ordering::Acquire);
        if pass_on {
            for queue in &self.queues {
                self.signals.wake(queue);
            }
        }
    }
}

impl QueueSignals {
    /// Registers a poll of `queues`.
    pub fn register(self: &Arc<Self>, queues: &[String]) -> Registration {
        let parked = Arc::new(Parked::default());
        if let Ok(mut polls) = self.polls.lock() {
            for queue in queues {
                polls
                    .entry(queue.clone())
                    .or_default()
                    .push(Arc::downgrade(&parked));
            }
        }
        Registration {
            parked,
            queues: queues.to_vec(),
            signals: self.clone(),
        }
    }

    /// A task was put on `queue`: wakes the longest-parked poll of it that has no wake-up
    /// pending (when every poll has one, each will claim, and pass a wake-up on if it
    /// leaves full).
    pub fn wake(&self, queue: &str) {
        let chosen = match self.polls.lock() {
            Ok(polls) => polls.get(queue).and_then(|list| {
                list.iter().filter_map(Weak::upgrade).find(|p| {
                    p.pending
                        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
            }),
            Err(_) => return,
        };
        if let Some(parked) = chosen {
            parked.notify.notify_one();
        }
    }

    /// Wake-ups may have been lost (another replica's notices): wakes every poll.
    pub fn wake_all(&self) {
        let waiting: Vec<Arc<Parked>> = match self.polls.lock() {
            Ok(polls) => polls.values().flatten().filter_map(Weak::upgrade).collect(),
            Err(_) => return,
        };
        for parked in waiting {
            parked.pending.store(true, Ordering::Release);
            parked.notify.notify_one();
        }
    }

    /// How many registrations there are, one per queue of each poll (for tests).
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

    async fn woken(r: &Registration) -> bool {
        tokio::time::timeout(Duration::from_millis(50), r.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_other_queues_stay_asleep() {
        let signals = Arc::new(QueueSignals::default());
        let a = signals.register(&["a".into(), "b".into()]);
        let c = signals.register(&["c".into()]);
        signals.wake("b");
        tokio::time::timeout(Duration::from_secs(1), a.notified())
            .await
            .expect("the permit was kept");
        assert!(!woken(&c).await);
        assert_eq!(signals.parked(), 3);
        drop(a);
        drop(c);
        assert_eq!(signals.parked(), 0);
    }

    #[tokio::test]
    async fn one_task_wakes_one_poll_the_longest_parked() {
        let signals = Arc::new(QueueSignals::default());
        let first = signals.register(&["q".into()]);
        let second = signals.register(&["q".into()]);
        signals.wake("q");
        assert!(woken(&first).await);
        assert!(!woken(&second).await);
        signals.wake("q");
        signals.wake("q");
        assert!(
            woken(&first).await,
            "the first poll saw its wake-up: it can take another"
        );
        assert!(woken(&second).await);
    }

    #[tokio::test]
    async fn a_poll_leaving_with_a_wake_up_it_did_not_see_passes_it_on() {
        let signals = Arc::new(QueueSignals::default());
        let leaving = signals.register(&["q".into()]);
        let next = signals.register(&["q".into()]);
        signals.wake("q");
        drop(leaving);
        assert!(woken(&next).await);
    }

    #[tokio::test]
    async fn a_poll_leaving_full_wakes_another() {
        let signals = Arc::new(QueueSignals::default());
        let full = signals.register(&["q".into()]);
        let next = signals.register(&["q".into()]);
        signals.wake("q");
        assert!(woken(&full).await);
        full.leaves_full();
        drop(full);
        assert!(woken(&next).await);
        drop(next);
        let alone = signals.register(&["q".into()]);
        let emptied = signals.register(&["q".into()]);
        signals.wake("q");
        assert!(woken(&alone).await);
        drop(alone);
        assert!(
            !woken(&emptied).await,
            "a poll that took less than it could wakes nobody"
        );
    }
}

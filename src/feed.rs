//! The events feed (DESIGN §11): the run and step events of the outbox, in outbox order,
//! to any number of live readers.
//!
//! One task per server watches the outbox head (its newest id), polling only while someone
//! follows the feed, and announces when it moved. Each reader keeps its own position and
//! reads the store after it, with its own filter, whenever the head moves. The store never
//! returns an event while a smaller id can still appear (`Store::read_events`), so reading
//! `id > position` never skips an event that commits later and never repeats one: a reader
//! that resumes after the last id it was sent sees every later event exactly once, here or
//! on any other replica of the same database.

use std::collections::VecDeque;
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{DynStore, EventFilter, StoreError, StoredEvent};

/// Events read from the store at a time by one reader.
const PAGE: usize = 500;

/// What a reader of the feed receives.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    Event(StoredEvent),
    /// The server is stopping; resume after the last event received.
    Shutdown,
}

/// The feed of one server; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    store: DynStore,
    head: watch::Sender<u64>,
    closed: CancellationToken,
}

impl Feed {
    /// Starts watching the outbox every `poll`. Must be called within a Tokio runtime.
    pub fn start(store: DynStore, poll: Duration) -> Self {
        let feed = Self {
            store,
            head: watch::Sender::new(0),
            closed: CancellationToken::new(),
        };
        tokio::spawn(feed.clone().watch(poll));
        feed
    }

    async fn watch(self, poll: Duration) {
        loop {
            if self.head.receiver_count() > 0 {
                match self.store.outbox_head().await {
                    Ok(id) => {
                        self.head.send_if_modified(|head| {
                            let moved = *head != id;
                            *head = id;
                            moved
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the outbox head failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = self.closed.cancelled() => return,
            }
        }
    }

    /// Ends every reader with [`FeedItem::Shutdown`] and stops watching.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// The events after outbox position `after` that pass `filter`: those stored, then
    /// live ones, until the feed is closed.
    pub fn follow(
        &self,
        filter: EventFilter,
        after: u64,
    ) -> impl Stream<Item = Result<FeedItem, StoreError>> + use<> {
        let reader = Reader {
            store: self.store.clone(),
            filter,
            after,
            head: self.head.subscribe(),
            closed: self.closed.clone(),
            buffer: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        })
    }
}

struct Reader {
    store: DynStore,
    filter: EventFilter,
    after: u64,
    head: watch::Receiver<u64>,
    closed: CancellationToken,
    buffer: VecDeque<StoredEvent>,
    done: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<FeedItem, StoreError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(FeedItem::Event(event)));
            }
            if self.closed.is_cancelled() {
                self.done = true;
                return Some(Ok(FeedItem::Shutdown));
            }
            // Marked before reading: a move of the head after this wakes the wait below.
            self.head.borrow_and_update();
            let page = match self.store.list_events(&self.filter, self.after, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if let Some(last) = page.last() {
                self.after = last.id;
                self.buffer.extend(page);
                continue;
            }
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        self.done = true;
                        return Some(Ok(FeedItem::Shutdown));
                    }
                }
                _ = self.closed.cancelled() => {}
            }
        }
    }
}

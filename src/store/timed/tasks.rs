//! The task queue operations of [`TimedStore`], timed like the others.

use async_trait::async_trait;
use serde_json::Value;

use super::TimedStore;
use crate::metrics::timed;
use crate::model::Timestamp;
use crate::store::StoreError;
use crate::store::tasks::{
    ClaimedTask, Heartbeat, QueueStats, TaskClaim, TaskEnd, TaskKey, TaskRecord, TaskStore,
    TaskTimes, WorkerSeen,
};

#[async_trait]
impl TaskStore for TimedStore {
    async fn claim_tasks(&self, claim: TaskClaim) -> Result<Vec<ClaimedTask>, StoreError> {
        timed(&self.timers.claim_tasks, self.inner.claim_tasks(claim)).await
    }

    async fn heartbeat_task(
        &self,
        key: TaskKey,
        progress: Option<Value>,
    ) -> Result<Heartbeat, StoreError> {
        let work = self.inner.heartbeat_task(key, progress);
        timed(&self.timers.heartbeat_task, work).await
    }

    async fn end_task(&self, key: TaskKey, end: TaskEnd) -> Result<TaskRecord, StoreError> {
        timed(&self.timers.end_task, self.inner.end_task(key, end)).await
    }

    async fn expire_tasks(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let work = self.inner.expire_tasks(now, limit);
        timed(&self.timers.expire_tasks, work).await
    }

    async fn unsettled_tasks(
        &self,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let work = self.inner.unsettled_tasks(ended_before, limit);
        timed(&self.timers.unsettled_tasks, work).await
    }

    async fn settle_task(&self, id: &str, attempt: u32) -> Result<(), StoreError> {
        let work = self.inner.settle_task(id, attempt);
        timed(&self.timers.settle_task, work).await
    }

    async fn get_task(&self, id: &str) -> Result<TaskRecord, StoreError> {
        timed(&self.timers.get_task, self.inner.get_task(id)).await
    }

    async fn task_times(&self, queues: &[String]) -> Result<TaskTimes, StoreError> {
        timed(&self.timers.task_times, self.inner.task_times(queues)).await
    }

    async fn list_queues(&self, workers_since: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        let work = self.inner.list_queues(workers_since);
        timed(&self.timers.list_queues, work).await
    }

    async fn record_worker(
        &self,
        name: &str,
        queues: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let work = self.inner.record_worker(name, queues, at);
        timed(&self.timers.record_worker, work).await
    }

    async fn list_workers(&self, since: Timestamp) -> Result<Vec<WorkerSeen>, StoreError> {
        timed(&self.timers.list_workers, self.inner.list_workers(since)).await
    }

    async fn prune_workers(&self, before: Timestamp) -> Result<u64, StoreError> {
        timed(&self.timers.prune_workers, self.inner.prune_workers(before)).await
    }
}

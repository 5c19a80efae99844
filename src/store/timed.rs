//! A [`Store`] that times every call of the store it wraps into
//! `orchestrator_store_operation_duration_seconds{operation}`, whatever the backend.
//!
//! It must forward every trait method, provided ones included: a provided method left
//! out here would silently answer with its default instead of the wrapped store's.

mod tasks;

use std::time::Duration;

use async_trait::async_trait;
use prometheus::Histogram;

use tokio::sync::broadcast;

use super::{
    Archived, Committed, CreatedRun, Curation, Deletion, DynStore, EventFilter, Lifecycle,
    LogLimits, NewRun, NewWorkflowVersion, Notice, Schedule, ScheduleUpdate, Store, StoreError,
    StoredEvent, Transition, WebhookTrigger, WorkflowEntry, WorkflowFilter, WorkflowHead,
    WriteStats,
};
use crate::metrics::{Metrics, timed};
use crate::model::{
    LogEntry, NewLogEntry, Page, PageRequest, Run, RunFilter, RunStatus, TemplateRecord, Timestamp,
    WorkflowVersion,
};

macro_rules! operations {
    ($($op:ident),+ $(,)?) => {
        /// One latency histogram per operation, resolved once.
        struct Timers {
            $($op: Histogram,)+
        }

        impl Timers {
            fn new(metrics: &Metrics) -> Self {
                Self { $($op: metrics.store_operation(stringify!($op)),)+ }
            }
        }
    };
}

operations!(
    ping,
    create_workflow,
    add_workflow_version,
    get_workflow,
    list_workflows,
    list_workflow_versions,
    create_template,
    get_template,
    list_templates,
    create_run,
    get_run,
    list_runs,
    commit,
    claim_runs,
    renew_leases,
    due_approvals,
    append_logs,
    read_logs,
    read_events,
    event_cursor,
    set_event_cursor,
    purge_expired,
    count_runs,
    outbox_head,
    writable,
    hold_identity,
    expire_leases,
    delete_finished_runs,
    prune_events,
    hold_hook_lease,
    release_hook_lease,
    search_workflows,
    workflow_entry,
    workflow_head,
    archive_workflow,
    count_runs_by_status,
    delete_run,
    deleted_run,
    create_schedule,
    get_schedule,
    list_schedules,
    update_schedule,
    delete_schedule,
    due_schedules,
    next_schedule_tick,
    advance_schedule,
    create_webhook,
    get_webhook,
    list_webhooks,
    delete_webhook,
    list_events,
    claim_tasks,
    heartbeat_task,
    end_task,
    expire_tasks,
    unsettled_tasks,
    settle_task,
    get_task,
    task_times,
    list_queues,
    record_worker,
    list_workers,
    prune_workers,
);

/// The wrapped store, timed.
pub struct TimedStore {
    inner: DynStore,
    timers: Timers,
}

impl TimedStore {
    pub fn new(inner: DynStore, metrics: &Metrics) -> Self {
        Self {
            inner,
            timers: Timers::new(metrics),
        }
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        timed(&self.timers.ping, self.inner.ping()).await
    }

    async fn create_workflow(
        &self,
        new: NewWorkflowVersion,
    ) -> Result<WorkflowVersion, StoreError> {
        timed(
            &self.timers.create_workflow,
            self.inner.create_workflow(new),
        )
        .await
    }

    async fn add_workflow_version(
        &self,
        new: NewWorkflowVersion,
    ) -> Result<WorkflowVersion, StoreError> {
        let work = self.inner.add_workflow_version(new);
        timed(&self.timers.add_workflow_version, work).await
    }

    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowVersion, StoreError> {
        timed(
            &self.timers.get_workflow,
            self.inner.get_workflow(id, version),
        )
        .await
    }

    async fn list_workflows(
        &self,
        page: &PageRequest,
    ) -> Result<Page<WorkflowVersion>, StoreError> {
        timed(&self.timers.list_workflows, self.inner.list_workflows(page)).await
    }

    async fn list_workflow_versions(&self, id: &str) -> Result<Vec<WorkflowVersion>, StoreError> {
        let work = self.inner.list_workflow_versions(id);
        timed(&self.timers.list_workflow_versions, work).await
    }

    async fn create_template(
        &self,
        template: TemplateRecord,
    ) -> Result<TemplateRecord, StoreError> {
        timed(
            &self.timers.create_template,
            self.inner.create_template(template),
        )
        .await
    }

    async fn get_template(&self, name: &str) -> Result<TemplateRecord, StoreError> {
        timed(&self.timers.get_template, self.inner.get_template(name)).await
    }

    async fn list_templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        timed(&self.timers.list_templates, self.inner.list_templates()).await
    }

    async fn create_run(&self, new: NewRun) -> Result<CreatedRun, StoreError> {
        timed(&self.timers.create_run, self.inner.create_run(new)).await
    }

    async fn get_run(&self, id: &str) -> Result<Run, StoreError> {
        timed(&self.timers.get_run, self.inner.get_run(id)).await
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<Run>, StoreError> {
        timed(&self.timers.list_runs, self.inner.list_runs(filter, page)).await
    }

    async fn commit(&self, transition: Transition) -> Result<Committed, StoreError> {
        timed(&self.timers.commit, self.inner.commit(transition)).await
    }

    async fn claim_runs(
        &self,
        owner: &str,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let work = self.inner.claim_runs(owner, ttl, limit);
        timed(&self.timers.claim_runs, work).await
    }

    async fn renew_leases(&self, owner: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        timed(
            &self.timers.renew_leases,
            self.inner.renew_leases(owner, ttl),
        )
        .await
    }

    async fn due_approvals(&self, now: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        let work = self.inner.due_approvals(now, limit);
        timed(&self.timers.due_approvals, work).await
    }

    async fn append_logs(
        &self,
        run_id: &str,
        entries: Vec<NewLogEntry>,
        limits: LogLimits,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let work = self.inner.append_logs(run_id, entries, limits);
        timed(&self.timers.append_logs, work).await
    }

    async fn read_logs(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let work = self.inner.read_logs(run_id, after, limit);
        timed(&self.timers.read_logs, work).await
    }

    async fn read_events(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let work = self.inner.read_events(after_id, limit);
        timed(&self.timers.read_events, work).await
    }

    async fn event_cursor(&self, target: &str) -> Result<u64, StoreError> {
        timed(&self.timers.event_cursor, self.inner.event_cursor(target)).await
    }

    async fn set_event_cursor(&self, target: &str, id: u64) -> Result<(), StoreError> {
        let work = self.inner.set_event_cursor(target, id);
        timed(&self.timers.set_event_cursor, work).await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        timed(&self.timers.purge_expired, self.inner.purge_expired(now)).await
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64, StoreError> {
        timed(&self.timers.count_runs, self.inner.count_runs(status)).await
    }

    async fn outbox_head(&self) -> Result<u64, StoreError> {
        timed(&self.timers.outbox_head, self.inner.outbox_head()).await
    }

    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule, StoreError> {
        let work = self.inner.create_schedule(schedule);
        timed(&self.timers.create_schedule, work).await
    }

    async fn get_schedule(&self, id: &str) -> Result<Schedule, StoreError> {
        timed(&self.timers.get_schedule, self.inner.get_schedule(id)).await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        timed(&self.timers.list_schedules, self.inner.list_schedules()).await
    }

    async fn update_schedule(&self, update: ScheduleUpdate) -> Result<Schedule, StoreError> {
        let work = self.inner.update_schedule(update);
        timed(&self.timers.update_schedule, work).await
    }

    async fn delete_schedule(&self, id: &str) -> Result<(), StoreError> {
        timed(&self.timers.delete_schedule, self.inner.delete_schedule(id)).await
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        let work = self.inner.due_schedules(now, limit);
        timed(&self.timers.due_schedules, work).await
    }

    async fn next_schedule_tick(&self) -> Result<Option<Timestamp>, StoreError> {
        let work = self.inner.next_schedule_tick();
        timed(&self.timers.next_schedule_tick, work).await
    }

    async fn advance_schedule(
        &self,
        id: &str,
        expect: Timestamp,
        next: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let work = self.inner.advance_schedule(id, expect, next);
        timed(&self.timers.advance_schedule, work).await
    }

    async fn create_webhook(&self, trigger: WebhookTrigger) -> Result<WebhookTrigger, StoreError> {
        let work = self.inner.create_webhook(trigger);
        timed(&self.timers.create_webhook, work).await
    }

    async fn get_webhook(&self, name: &str) -> Result<WebhookTrigger, StoreError> {
        timed(&self.timers.get_webhook, self.inner.get_webhook(name)).await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookTrigger>, StoreError> {
        timed(&self.timers.list_webhooks, self.inner.list_webhooks()).await
    }

    async fn delete_webhook(&self, name: &str) -> Result<(), StoreError> {
        timed(&self.timers.delete_webhook, self.inner.delete_webhook(name)).await
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let work = self.inner.list_events(filter, after_id, limit);
        timed(&self.timers.list_events, work).await
    }

    fn notices(&self) -> Option<broadcast::Receiver<Notice>> {
        self.inner.notices()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

#[async_trait]
impl Lifecycle for TimedStore {
    async fn writable(&self) -> Result<(), StoreError> {
        timed(&self.timers.writable, self.inner.writable()).await
    }

    async fn hold_identity(&self, id: &str) -> Result<(), StoreError> {
        timed(&self.timers.hold_identity, self.inner.hold_identity(id)).await
    }

    async fn expire_leases(&self, owner: &str) -> Result<u64, StoreError> {
        timed(&self.timers.expire_leases, self.inner.expire_leases(owner)).await
    }

    async fn delete_finished_runs(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let work = self.inner.delete_finished_runs(before, limit);
        timed(&self.timers.delete_finished_runs, work).await
    }

    async fn prune_events(
        &self,
        acked: u64,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let work = self.inner.prune_events(acked, before, limit);
        timed(&self.timers.prune_events, work).await
    }

    async fn hold_hook_lease(
        &self,
        target: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let work = self.inner.hold_hook_lease(target, holder, ttl);
        timed(&self.timers.hold_hook_lease, work).await
    }

    async fn release_hook_lease(&self, target: &str, holder: &str) -> Result<(), StoreError> {
        let work = self.inner.release_hook_lease(target, holder);
        timed(&self.timers.release_hook_lease, work).await
    }

    fn write_stats(&self) -> Option<WriteStats> {
        self.inner.write_stats()
    }
}

#[async_trait]
impl Curation for TimedStore {
    async fn search_workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<Page<WorkflowEntry>, StoreError> {
        let work = self.inner.search_workflows(filter, page);
        timed(&self.timers.search_workflows, work).await
    }

    async fn workflow_entry(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowEntry, StoreError> {
        let work = self.inner.workflow_entry(id, version);
        timed(&self.timers.workflow_entry, work).await
    }

    async fn workflow_head(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowHead, StoreError> {
        let work = self.inner.workflow_head(id, version);
        timed(&self.timers.workflow_head, work).await
    }

    async fn archive_workflow(&self, id: &str, by: &str) -> Result<Archived, StoreError> {
        let work = self.inner.archive_workflow(id, by);
        timed(&self.timers.archive_workflow, work).await
    }

    async fn count_runs_by_status(
        &self,
        filter: &RunFilter,
    ) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        let work = self.inner.count_runs_by_status(filter);
        timed(&self.timers.count_runs_by_status, work).await
    }

    async fn delete_run(&self, id: &str, by: &str) -> Result<Deletion, StoreError> {
        timed(&self.timers.delete_run, self.inner.delete_run(id, by)).await
    }

    async fn deleted_run(&self, id: &str) -> Result<Option<Deletion>, StoreError> {
        timed(&self.timers.deleted_run, self.inner.deleted_run(id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn calls_reach_the_wrapped_store_and_are_timed() {
        let dir = tempfile::tempdir().unwrap();
        let inner: DynStore =
            Arc::new(SqliteStore::open(&dir.path().join("t.db"), false, 1).unwrap());
        let metrics = Metrics::new().unwrap();
        let store = TimedStore::new(inner.clone(), &metrics);
        store.ping().await.unwrap();
        assert_eq!(store.count_runs(RunStatus::Running).await.unwrap(), 0);
        assert_eq!(store.outbox_head().await.unwrap(), 0);
        assert_eq!(store.notices().is_some(), inner.notices().is_some());
        let text = metrics.render(&Default::default());
        assert!(
            text.contains(
                "orchestrator_store_operation_duration_seconds_count{operation=\"ping\"} 1"
            )
        );
    }
}

//! The store conformance suite: every test body is written once, against a `DynStore`,
//! and runs against both implementations (a fresh SQLite file, a fresh PostgreSQL
//! database per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/pg.rs"]
mod pg;

mod fixtures;
mod leases;
mod lifecycle;
mod logs;
mod notices;
mod outbox;
mod runs;
mod tasks;
mod triggers;
mod wal;
mod workflows;

use orchestrator::store::DynStore;
use orchestrator::store::postgres::{PgOptions, PostgresStore};
use orchestrator::store::sqlite::SqliteStore;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// A store under test and whatever must live as long as it.
pub struct Subject {
    pub store: DynStore,
    _dir: Option<TempDir>,
}

pub async fn sqlite() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db"), false, 2).unwrap();
    Subject {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

pub async fn postgres() -> Subject {
    let dsn = pg::fresh_database().await;
    Subject {
        store: Arc::new(open_postgres(&dsn).await),
        _dir: None,
    }
}

/// Opens a PostgreSQL store on `dsn` (a second store on the same database is a replica).
pub async fn open_postgres(dsn: &str) -> PostgresStore {
    PostgresStore::open(&PgOptions {
        dsn: dsn.to_owned(),
        pool_size: 8,
        statement_timeout: Duration::from_secs(30),
    })
    .await
    .unwrap()
}

/// Declares each conformance test once per store: `sqlite::name` and `postgres::name`.
macro_rules! conformance {
    ($($module:ident :: $name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let subject = crate::sqlite().await;
                    crate::$module::$name(subject.store.clone()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let subject = crate::postgres().await;
                    crate::$module::$name(subject.store.clone()).await;
                }
            )+
        }
    };
}

conformance!(
    workflows::created_workflows_start_at_version_one_and_refuse_a_taken_id,
    workflows::versions_are_appended_newest_first_with_rollback_provenance,
    workflows::concurrent_new_versions_never_share_a_number,
    workflows::workflow_lists_page_newest_first,
    workflows::unknown_workflows_and_versions_are_not_found,
    workflows::templates_are_stored_once_by_name,
    workflows::workflow_heads_agree_with_entries_latest_asked_and_archived,
    runs::created_runs_read_back_with_their_steps,
    runs::transitions_update_head_context_steps_and_approvals,
    runs::guards_refuse_stale_revisions_other_owners_and_wrong_statuses,
    runs::run_lists_filter_by_workflow_and_status_and_page,
    runs::a_page_of_runs_with_large_outputs_ends_at_its_byte_bound_and_its_cursor_goes_on,
    runs::idempotency_keys_return_the_first_run_for_the_same_body,
    runs::idempotency_keys_conflict_on_a_different_body,
    runs::expired_idempotency_keys_are_free_again_and_purged,
    runs::concurrent_creates_with_one_key_make_one_run,
    runs::runs_are_counted_by_status,
    logs::log_entries_are_numbered_in_commit_order,
    logs::client_appends_respect_the_log_limit,
    logs::log_reads_page_after_a_sequence_number,
    logs::events_go_to_the_outbox_with_per_run_sequence_numbers,
    logs::event_cursors_only_move_forward,
    leases::claims_take_unowned_runs_once,
    leases::expired_leases_are_taken_over_and_renewed_ones_are_not,
    leases::commits_that_renew_keep_a_busy_run_owned,
    leases::parked_runs_with_passed_deadlines_are_due,
    triggers::schedules_are_stored_replaced_and_deleted_by_id,
    triggers::a_tick_is_claimed_once_with_the_run_it_starts,
    triggers::ticks_are_due_earliest_first_and_advanced_by_compare_and_set,
    triggers::webhook_triggers_keep_their_secret_and_are_unique_by_name,
    triggers::event_reads_filter_by_run_workflow_and_type_in_outbox_order,
    triggers::a_reader_following_the_outbox_misses_nothing_under_concurrent_commits,
    lifecycle::renewals_name_the_runs_they_renewed,
    lifecycle::a_graceful_leave_marks_the_run_and_the_next_owner_clears_the_mark,
    lifecycle::an_owners_leases_expire_at_once_for_its_restart,
    lifecycle::finished_runs_past_the_cutoff_are_deleted_with_all_that_is_theirs,
    lifecycle::a_finished_child_is_kept_while_its_parent_goes_on,
    lifecycle::only_acknowledged_events_past_the_cutoff_are_pruned,
    lifecycle::a_hook_lease_has_one_holder_until_it_expires_or_is_released,
    lifecycle::a_store_taking_writes_is_writable,
    tasks::tasks_are_claimed_once_oldest_first_each_with_its_token,
    tasks::concurrent_claimers_take_every_task_exactly_once,
    tasks::only_the_live_claim_heartbeats_and_ends_it,
    tasks::expired_claims_end_once_and_go_back_with_the_next_attempt,
    tasks::the_attempt_timeout_caps_the_lease,
    tasks::canceled_tasks_leave_the_queue_and_tell_their_claim,
    tasks::retries_become_claimable_at_their_time,
    tasks::task_changes_commit_only_with_their_runs_guard,
    tasks::queues_and_workers_are_listed_with_what_they_hold,
    tasks::ended_claims_stay_unsettled_until_applied,
);

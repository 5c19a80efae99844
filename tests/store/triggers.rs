//! Schedules and their tick claims, webhook triggers, and filtered reads of the outbox.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Duration;
use orchestrator::model::{RunTrigger, now};
use orchestrator::secret::Secret;
use orchestrator::store::{
    DynStore, EventFilter, Guard, Overlap, Schedule, ScheduleFire, ScheduleUpdate, SecretHeader,
    StoreError, Transition, WebhookTrigger,
};
use serde_json::json;

use crate::fixtures::{context, event, new_run, stored_run, stored_workflow};

fn schedule(id: &str, workflow_id: &str) -> Schedule {
    let at = now();
    Schedule {
        id: id.to_owned(),
        workflow_id: workflow_id.to_owned(),
        cron: "*/5 * * * * *".into(),
        timezone: "Europe/Berlin".into(),
        context: context(json!({"nightly": true})),
        overlap: Overlap::CancelPrevious,
        paused: false,
        next_fire_at: Some(at + Duration::seconds(5)),
        last_fire_time: None,
        last_run_id: None,
        created_at: at,
        updated_at: at,
        created_by: Some("ops".into()),
    }
}

pub async fn schedules_are_stored_replaced_and_deleted_by_id(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let s = schedule("nightly", &wf);
    assert_eq!(store.create_schedule(s.clone()).await.unwrap(), s);
    let again = store.create_schedule(s.clone()).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    store
        .create_schedule(schedule("a-first", &wf))
        .await
        .unwrap();
    let ids: Vec<String> = store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["a-first", "nightly"]);
    let updated = store
        .update_schedule(ScheduleUpdate {
            id: "nightly".into(),
            workflow_id: wf.clone(),
            cron: "@hourly".into(),
            timezone: "UTC".into(),
            context: context(json!({})),
            overlap: Overlap::Skip,
            paused: true,
            next_fire_at: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (updated.cron.as_str(), updated.paused, updated.next_fire_at),
        ("@hourly", true, None)
    );
    assert_eq!(updated.created_at, s.created_at);
    assert_eq!(store.get_schedule("nightly").await.unwrap(), updated);
    store.delete_schedule("nightly").await.unwrap();
    for missing in [
        store.get_schedule("nightly").await.map(|_| ()),
        store.delete_schedule("nightly").await,
    ] {
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{missing:?}"
        );
    }
}

pub async fn a_tick_is_claimed_once_with_the_run_it_starts(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let s = schedule("tick", &wf);
    store.create_schedule(s.clone()).await.unwrap();
    let tick = s.next_fire_at.unwrap();
    let next = tick + Duration::seconds(5);
    let fire = |store: DynStore| {
        let mut new = new_run(&wf);
        new.trigger = Some(RunTrigger::Schedule {
            id: "tick".into(),
            fire_time: tick,
        });
        new.schedule = Some(ScheduleFire {
            schedule_id: "tick".into(),
            claim: Some((tick, Some(next))),
            fire_time: tick,
        });
        async move { store.create_run(new).await }
    };
    let results = futures::future::join_all((0..8).map(|_| fire(store.clone()))).await;
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(StoreError::Conflict(_))))
    );
    let run = store.get_run(&won[0].run.id).await.unwrap();
    assert_eq!(
        run.trigger,
        Some(RunTrigger::Schedule {
            id: "tick".into(),
            fire_time: tick
        })
    );
    let after = store.get_schedule("tick").await.unwrap();
    assert_eq!(after.next_fire_at, Some(next));
    assert_eq!(after.last_run_id.as_deref(), Some(run.id.as_str()));
    assert_eq!(after.last_fire_time, Some(tick));
    // A manual trigger claims no tick but becomes the last run.
    let mut manual = new_run(&wf);
    manual.schedule = Some(ScheduleFire {
        schedule_id: "tick".into(),
        claim: None,
        fire_time: now(),
    });
    let manual = store.create_run(manual).await.unwrap().run;
    let after = store.get_schedule("tick").await.unwrap();
    assert_eq!(after.next_fire_at, Some(next));
    assert_eq!(after.last_run_id, Some(manual.id));
    // No run of a deleted schedule.
    store.delete_schedule("tick").await.unwrap();
    let gone = fire(store.clone()).await;
    assert!(matches!(gone, Err(StoreError::Conflict(_))), "{gone:?}");
}

pub async fn ticks_are_due_earliest_first_and_advanced_by_compare_and_set(store: DynStore) {
    let wf = stored_workflow(&store).await;
    assert_eq!(store.next_schedule_tick().await.unwrap(), None);
    let at = now();
    for (id, offset, paused) in [("late", 60, false), ("soon", -2, false), ("off", -5, true)] {
        let mut s = schedule(id, &wf);
        s.next_fire_at = (!paused).then(|| at + Duration::seconds(offset));
        s.paused = paused;
        store.create_schedule(s).await.unwrap();
    }
    assert_eq!(
        store.next_schedule_tick().await.unwrap(),
        Some(at - Duration::seconds(2))
    );
    let due = store.due_schedules(at, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["soon"]
    );
    let tick = due[0].next_fire_at.unwrap();
    let next = Some(at + Duration::seconds(3));
    assert!(store.advance_schedule("soon", tick, next).await.unwrap());
    assert!(!store.advance_schedule("soon", tick, next).await.unwrap());
    assert!(store.due_schedules(at, 10).await.unwrap().is_empty());
    assert_eq!(store.get_schedule("soon").await.unwrap().next_fire_at, next);
}

pub async fn webhook_triggers_keep_their_secret_and_are_unique_by_name(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let trigger = WebhookTrigger {
        name: "github-push".into(),
        workflow_id: wf.clone(),
        secret: Some(Secret::new("s3cret-s3cret")),
        secret_header: SecretHeader::GitlabToken,
        context: Some(json!({"sha": "{{ request.body.after }}"})),
        filter: Some("request.headers['x-github-event'] == 'push'".into()),
        created_at: now(),
        created_by: None,
    };
    store.create_webhook(trigger.clone()).await.unwrap();
    let again = store.create_webhook(trigger.clone()).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let plain = WebhookTrigger {
        name: "a-plain".into(),
        secret: None,
        secret_header: SecretHeader::HubSignature,
        context: None,
        filter: None,
        ..trigger.clone()
    };
    store.create_webhook(plain.clone()).await.unwrap();
    assert_eq!(store.get_webhook("github-push").await.unwrap(), trigger);
    assert_eq!(store.list_webhooks().await.unwrap(), vec![plain, trigger]);
    store.delete_webhook("github-push").await.unwrap();
    let gone = store.get_webhook("github-push").await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");
    let gone = store.delete_webhook("github-push").await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");
}

pub async fn event_reads_filter_by_run_workflow_and_type_in_outbox_order(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let other_wf = stored_workflow(&store).await;
    let a = stored_run(&store, &wf).await;
    let b = stored_run(&store, &other_wf).await;
    for (run, kinds) in [
        (&a, vec!["run.started", "step.started"]),
        (&b, vec!["run.started"]),
        (&a, vec!["step.succeeded", "run.succeeded"]),
    ] {
        let mut tx = Transition::new(run.as_str(), Guard::default());
        tx.events = kinds.into_iter().map(event).collect();
        store.commit(tx).await.unwrap();
    }
    let read = |filter: EventFilter, after: u64| {
        let store = store.clone();
        async move {
            store
                .list_events(&filter, after, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.id, e.run_id, e.event.kind))
                .collect::<Vec<_>>()
        }
    };
    let all = read(EventFilter::default(), 0).await;
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    let of_a = read(
        EventFilter {
            run_id: Some(a.clone()),
            ..EventFilter::default()
        },
        0,
    )
    .await;
    assert_eq!(of_a.len(), 4);
    let of_other = read(
        EventFilter {
            workflow_id: Some(other_wf.clone()),
            ..EventFilter::default()
        },
        0,
    )
    .await;
    assert_eq!(of_other, vec![all[2].clone()]);
    let starts = read(
        EventFilter {
            types: vec!["run.started".into(), "run.succeeded".into()],
            ..EventFilter::default()
        },
        all[0].0,
    )
    .await;
    let kinds: Vec<&str> = starts.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(kinds, ["run.started", "run.succeeded"]);
    let none = read(
        EventFilter {
            run_id: Some(b),
            types: vec!["step.started".into()],
            ..EventFilter::default()
        },
        0,
    )
    .await;
    assert!(none.is_empty());
}

/// Concurrent commits (several group-commit writers on PostgreSQL) while a reader follows
/// the outbox with a cursor: it never skips an id that becomes visible later, and never
/// sees one twice.
pub async fn a_reader_following_the_outbox_misses_nothing_under_concurrent_commits(
    store: DynStore,
) {
    let wf = stored_workflow(&store).await;
    let runs: Vec<String> =
        futures::future::join_all((0..8).map(|_| stored_run(&store, &wf))).await;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let (mut after, mut seen) = (0u64, Vec::new());
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = store.read_events(after, 50).await.unwrap();
                if let Some(last) = batch.last() {
                    after = last.id;
                }
                seen.extend(batch.into_iter().map(|e| e.id));
                if finished {
                    let rest = store.read_events(after, 10_000).await.unwrap();
                    seen.extend(rest.into_iter().map(|e| e.id));
                    return seen;
                }
            }
        })
    };
    let writers = runs.iter().map(|run| {
        let (store, run) = (store.clone(), run.clone());
        async move {
            for _ in 0..25 {
                let mut tx = Transition::new(run.as_str(), Guard::default());
                tx.events = vec![event("step.started"), event("step.succeeded")];
                store.commit(tx).await.unwrap();
            }
        }
    });
    futures::future::join_all(writers).await;
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let all: Vec<u64> = store
        .read_events(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all.len(), 8 * 25 * 2);
    assert_eq!(
        seen.len(),
        all.len(),
        "the follower missed or repeated events"
    );
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>(),
        all.iter().collect::<BTreeSet<_>>()
    );
}

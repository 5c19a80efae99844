//! Guarded transitions of the PostgreSQL store in one statement each.
//!
//! The guarded `UPDATE … RETURNING` of the run head and the inserts of its step rows,
//! approvals, log entries and hook events are data-modifying CTEs of one statement: the
//! children are joined to the update's result, so when the guard refuses, nothing at all
//! is written, and a commit costs one round trip whatever it changes. Sequence numbers
//! come from the updated counters (`log_seq`, `event_seq`) within the statement. A
//! statement's text depends only on which parts the transition has (its [`Shape`]): it is
//! written once per shape and reused, and only the parameters are gathered per commit.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex};

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::model::{StepExtra, StepRun, Timestamp, now};
use crate::store::encoding::{guard_conflict, status_condition};
use crate::store::{Committed, Guard, OwnerChange, StoreError, Transition};

use super::notify::Outgoing;
use super::rows::{get, ms, to_json};
use super::writer::{Done, Fault, Sent, sending};

type Args = Vec<Box<dyn ToSql + Sync + Send>>;

/// What decides a commit statement's text: which parts a transition has, not what they
/// hold. Each decision [`statement`] takes while writing the statement is a member here, so
/// two transitions of one shape get the same text with their parameters in the same order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    /// One bit per part present (see [`Shape::of`]).
    parts: u16,
    /// The owner change's kind.
    owner: u8,
    /// The statuses the guard accepts, one bit each; `None`: any.
    statuses: Option<u8>,
}

impl Shape {
    fn of(tx: &Transition) -> Self {
        let parts = [
            tx.head.is_some(),
            tx.context.is_some(),
            tx.rerun.is_some(),
            tx.guard.rev.is_some(),
            tx.guard.owner.is_some(),
            !tx.steps.is_empty(),
            !tx.approvals.is_empty(),
            !tx.logs.is_empty(),
            !tx.events.is_empty(),
        ]
        .iter()
        .enumerate()
        .fold(0u16, |bits, (i, on)| bits | (u16::from(*on) << i));
        let owner = match tx.owner {
            OwnerChange::Keep => 0,
            OwnerChange::Renew(_) => 1,
            OwnerChange::Take(_) => 2,
            OwnerChange::Release => 3,
            OwnerChange::Leave => 4,
        };
        let statuses = tx.guard.status_in.as_ref().map(|statuses| {
            statuses
                .iter()
                .fold(0u8, |bits, status| bits | (1 << *status as u8))
        });
        Self {
            parts,
            owner,
            statuses,
        }
    }
}

/// Statement texts by shape (with their parameter counts), written once each: a handful
/// of shapes occur, and writing the text for every commit (~1.5 KB through `format!`) was
/// about a third of a commit's instructions in this process.
static TEXTS: LazyLock<Mutex<HashMap<Shape, Text>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// A statement's text and how many parameters it takes.
type Text = (Arc<str>, usize);

/// A statement's parameters, and its text while it is being written (`None` when the
/// shape's text is known).
struct Statement {
    args: Args,
    text: Option<String>,
}

impl Statement {
    fn push(&mut self, sql: &str) {
        if let Some(text) = &mut self.text {
            text.push_str(sql);
        }
    }

    /// Adds the text `sql` makes, when the text is being written.
    fn push_with(&mut self, sql: impl FnOnce() -> String) {
        if let Some(text) = &mut self.text {
            text.push_str(&sql());
        }
    }

    /// Adds `value` as the next parameter, its placeholder to the text.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) {
        self.args.push(Box::new(value));
        if let Some(text) = &mut self.text {
            let _ = write!(text, "${}", self.args.len());
        }
    }

    /// `sql`, then `value` as the next parameter.
    fn set(&mut self, sql: &str, value: impl ToSql + Sync + Send + 'static) {
        self.push(sql);
        self.param(value);
    }

    /// What `f` takes from each of `items`, as the next parameter: an array cast to `cast`
    /// (a typed array for `UNNEST`).
    fn column<I, T>(&mut self, items: I, cast: &str, f: impl FnMut(I::Item) -> T)
    where
        I: Iterator,
        T: ToSql + Sync + Send + 'static,
    {
        self.param(items.map(f).collect::<Vec<T>>());
        self.push(cast);
    }
}

/// Applies a guarded transition, marking `sent` once its last write is on the wire.
pub async fn commit<C: GenericClient>(
    c: &C,
    tx: &Transition,
    sent: &Sent,
) -> Result<Done<Committed>, Fault> {
    let at = now();
    let shape = Shape::of(tx);
    let known = TEXTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&shape)
        .cloned();
    let mut st = statement(tx, at, known.is_none());
    let sql = match (known, st.text.take()) {
        (Some((sql, n)), _) if n == st.args.len() => sql,
        (Some(_), _) => {
            return Err(StoreError::unavailable(
                "a commit statement's parameters do not match its shape",
            )
            .into());
        }
        (None, text) => {
            let sql: Arc<str> = text.unwrap_or_default().into();
            TEXTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(shape, (sql.clone(), st.args.len()));
            sql
        }
    };
    let n_logs = tx.logs.len() as i64;
    let params: Vec<&(dyn ToSql + Sync)> = st
        .args
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stmt = c.prepare_cached(&sql).await?;
    let request = c.query_opt(&stmt, &params);
    // Its task operations are written after the statement, when there are any.
    let row = if tx.tasks.is_empty() {
        sending(request, sent).await
    } else {
        request.await
    };
    let Some(row) = row? else {
        return Err(guard_failure(c, &tx.run_id, &tx.guard).await.into());
    };
    super::tasks::apply_ops(c, &tx.tasks).await?;
    let queues = tx
        .tasks
        .iter()
        .filter_map(|op| op.fills().map(str::to_owned))
        .collect();
    let (rev, log_seq, status, unowned): (i64, i64, String, bool) =
        (get(&row, 0)?, get(&row, 1)?, get(&row, 3)?, get(&row, 4)?);
    let first_log = (log_seq - n_logs + 1) as u64;
    let logs = tx
        .logs
        .iter()
        .enumerate()
        .map(|(i, e)| e.clone().into_entry(first_log + i as u64))
        .collect();
    let claimable = unowned && matches!(status.as_str(), "PENDING" | "RUNNING");
    Ok(Done {
        value: Committed {
            rev: rev as u64,
            at,
            logs,
        },
        notices: vec![Outgoing {
            run_id: tx.run_id.clone(),
            rev: Some(rev as u64),
            logs: (n_logs > 0).then_some((first_log, log_seq as u64)),
            claimable,
            queues,
        }],
    })
}

/// The statement applying `tx` at `at`: its parameters, and its text when `write_text`.
fn statement(tx: &Transition, at: Timestamp, write_text: bool) -> Statement {
    let mut st = Statement {
        args: Vec::with_capacity(48),
        text: write_text.then(|| String::with_capacity(2048)),
    };
    let (n_logs, n_events) = (tx.logs.len() as i64, tx.events.len() as i64);
    // The run id is `$1` throughout.
    st.args.push(Box::new(tx.run_id.clone()));
    st.push("WITH upd AS (UPDATE runs SET rev = rev + 1");
    st.set(", updated_at = ", ms(at));
    st.set(", log_seq = log_seq + ", n_logs);
    st.set(", event_seq = event_seq + ", n_events);
    if let Some(head) = &tx.head {
        st.set(", status = ", head.status.as_str());
        st.set(", current_step = ", head.current_step as i64);
        st.set(", error = ", head.error.clone());
        st.set(", usage = ", to_json(&head.usage));
        st.set(", started_at = ", head.started_at.map(ms));
        st.set(", finished_at = ", head.finished_at.map(ms));
        st.set(", active_ms = ", head.active_ms as i64);
        st.set(", approval_deadline = ", head.wake_at.map(ms));
        let extra = (!head.extra.is_empty()).then(|| to_json(&head.extra));
        st.set(", extra = ", extra);
    }
    if let Some(context) = &tx.context {
        st.set(", context = ", to_json(context));
    }
    if let Some(rerun) = &tx.rerun {
        st.set(", retries = ", to_json(&rerun.retries));
        st.set(", workflow_version = ", i64::from(rerun.workflow_version));
        st.set(", budget = ", rerun.budget.as_ref().map(to_json));
    }
    match &tx.owner {
        OwnerChange::Keep => {}
        OwnerChange::Renew(ttl) => {
            st.set(", lease_expires_at = ", ms(at) + ttl.as_millis() as i64);
            st.push(", left_cleanly = FALSE");
        }
        OwnerChange::Take(lease) => {
            st.set(", owner = ", lease.owner.clone());
            st.set(
                ", lease_expires_at = ",
                ms(at) + lease.ttl.as_millis() as i64,
            );
            st.push(", left_cleanly = FALSE");
        }
        OwnerChange::Release => st.push(", owner = NULL, lease_expires_at = NULL"),
        OwnerChange::Leave => {
            st.push(", owner = NULL, lease_expires_at = NULL, left_cleanly = TRUE")
        }
    }
    st.push(" WHERE id = $1");
    guard(&mut st, &tx.guard);
    st.push(" RETURNING rev, log_seq, event_seq, workflow_id, status, owner IS NULL AS unowned)");
    children(&mut st, tx);
    st.push(" SELECT rev, log_seq, workflow_id, status, unowned FROM upd");
    st
}

/// The CTEs that write a transition's child rows, each joined to `upd`.
fn children(st: &mut Statement, tx: &Transition) {
    if let Some(rerun) = &tx.rerun {
        // A re-run on a version with fewer steps: the rows past them go.
        st.set(
            ", trimmed AS (DELETE FROM step_runs WHERE run_id = $1 AND idx >= ",
            rerun.steps as i64,
        );
        st.push(" AND EXISTS (SELECT 1 FROM upd))");
    }
    if !tx.steps.is_empty() {
        // One row per index (the last one given), as ON CONFLICT may touch a row once.
        let steps: BTreeMap<usize, &StepRun> = tx.steps.iter().map(|(i, s)| (*i, s)).collect();
        st.push(
            ", steps AS (INSERT INTO step_runs (run_id, idx, step_id, name, action, status, \
               error, output, http_code, attempts, started_at, finished_at, waiting_since, \
               truncated, extra, interruptions) \
             SELECT $1, u.* FROM upd, UNNEST(",
        );
        step_arrays(st, &steps);
        st.push(
            ") AS u \
             ON CONFLICT (run_id, idx) DO UPDATE SET step_id = excluded.step_id, \
               name = excluded.name, action = excluded.action, status = excluded.status, \
               error = excluded.error, output = excluded.output, http_code = excluded.http_code, \
               attempts = excluded.attempts, started_at = excluded.started_at, \
               finished_at = excluded.finished_at, waiting_since = excluded.waiting_since, \
               truncated = excluded.truncated, extra = excluded.extra, \
               interruptions = excluded.interruptions)",
        );
    }
    if !tx.approvals.is_empty() {
        let a = &tx.approvals;
        st.push(
            ", approvals AS (INSERT INTO approvals (run_id, n, step, decision, by_name, at, comment, input) \
             SELECT $1, (SELECT COALESCE(MAX(n), 0) FROM approvals WHERE run_id = $1) + u.o, \
               u.s, u.d, u.b, u.a, u.cm, u.i \
             FROM upd, UNNEST(",
        );
        st.column(a.iter(), "::text[], ", |a| a.step.clone());
        st.column(a.iter(), "::text[], ", |a| a.decision.as_str());
        st.column(a.iter(), "::text[], ", |a| a.by.clone());
        st.column(a.iter(), "::bigint[], ", |a| ms(a.at));
        st.column(a.iter(), "::text[], ", |a| a.comment.clone());
        st.column(a.iter(), "::text[]", |a| a.input.as_ref().map(to_json));
        st.push(") WITH ORDINALITY AS u(s, d, b, a, cm, i, o))");
    }
    if !tx.logs.is_empty() {
        let l = &tx.logs;
        st.set(
            ", logs AS (INSERT INTO run_logs (run_id, seq, ts, level, source, step, message, status) \
             SELECT $1, upd.log_seq - ",
            l.len() as i64,
        );
        st.push(
            " + u.o, u.ts, u.level, u.source, u.step, u.message, u.status \
             FROM upd, UNNEST(",
        );
        st.column(l.iter(), "::bigint[], ", |e| ms(e.ts));
        st.column(l.iter(), "::text[], ", |e| e.level.as_str());
        st.column(l.iter(), "::text[], ", |e| e.source.as_str());
        st.column(l.iter(), "::text[], ", |e| e.step.clone());
        st.column(l.iter(), "::text[], ", |e| e.message.clone());
        st.column(l.iter(), "::text[]", |e| e.status.as_ref().map(to_json));
        st.push(") WITH ORDINALITY AS u(ts, level, source, step, message, status, o))");
    }
    if !tx.events.is_empty() {
        st.set(
            ", events AS (INSERT INTO events (run_id, workflow_id, seq, body, created_at) \
             SELECT $1, upd.workflow_id, upd.event_seq - ",
            tx.events.len() as i64,
        );
        st.push(" + u.o, u.body, u.at FROM upd, UNNEST(");
        st.column(tx.events.iter(), "::text[], ", to_json);
        st.column(tx.events.iter(), "::bigint[]", |e| ms(e.ts));
        st.push(") WITH ORDINALITY AS u(body, at, o))");
    }
}

/// Parameters of step rows as typed arrays, in column order after `run_id`.
fn step_arrays(st: &mut Statement, steps: &BTreeMap<usize, &StepRun>) {
    let s = || steps.iter();
    st.column(s(), "::bigint[], ", |(i, _)| *i as i64);
    st.column(s(), "::text[], ", |(_, s)| s.step_id.clone());
    st.column(s(), "::text[], ", |(_, s)| s.name.clone());
    st.column(s(), "::text[], ", |(_, s)| s.action.clone());
    st.column(s(), "::text[], ", |(_, s)| s.status.as_str());
    st.column(s(), "::text[], ", |(_, s)| s.error.clone());
    st.column(s(), "::text[], ", |(_, s)| s.output.as_ref().map(to_json));
    st.column(s(), "::bigint[], ", |(_, s)| s.http_code.map(i64::from));
    st.column(s(), "::text[], ", |(_, s)| to_json(&s.attempts));
    st.column(s(), "::bigint[], ", |(_, s)| s.started_at.map(ms));
    st.column(s(), "::bigint[], ", |(_, s)| s.finished_at.map(ms));
    st.column(s(), "::bigint[], ", |(_, s)| s.waiting_since.map(ms));
    st.column(s(), "::bool[], ", |(_, s)| s.output_truncated);
    st.column(s(), "::text[], ", |(_, s)| {
        StepExtra::of(s).as_ref().map(to_json)
    });
    st.column(s(), "::bigint[]", |(_, s)| i64::from(s.interruptions));
}

fn guard(st: &mut Statement, guard: &Guard) {
    if let Some(rev) = guard.rev {
        st.set(" AND rev = ", rev as i64);
    }
    if let Some(owner) = &guard.owner {
        st.set(" AND owner = ", owner.clone());
    }
    st.push_with(|| status_condition(guard));
}

/// Explains why a guarded update matched no row.
async fn guard_failure<C: GenericClient>(c: &C, run_id: &str, guard: &Guard) -> StoreError {
    let found = c
        .query_opt(
            "SELECT status, rev, owner FROM runs WHERE id = $1",
            &[&run_id],
        )
        .await;
    match found {
        Err(e) => super::db_error(e),
        Ok(None) => StoreError::NotFound(format!("run {run_id}")),
        Ok(Some(row)) => {
            let read = || -> Result<(String, i64, Option<String>), StoreError> {
                Ok((get(&row, 0)?, get(&row, 1)?, get(&row, 2)?))
            };
            let (status, rev, owner) = match read() {
                Ok(found) => found,
                Err(e) => return e,
            };
            guard_conflict(run_id, guard, &status, rev, owner.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use serde_json::{Map, json};

    use super::*;
    use crate::model::{LogLevel, NewLogEntry, RunStatus};
    use crate::store::{Lease, Rerun, RunHead};

    /// A transition with the parts `bits` names (in [`Shape::of`]'s order); `rich` fills
    /// them with more rows and other values.
    fn transition(
        bits: u16,
        owner: u8,
        statuses: Option<Vec<RunStatus>>,
        rich: bool,
    ) -> Transition {
        let on = |i: u16| bits & (1 << i) != 0;
        let rows = if rich { 3 } else { 1 };
        let mut tx = Transition::new(
            "run_1",
            Guard {
                rev: on(3).then_some(if rich { 9 } else { 1 }),
                owner: on(4).then(|| "me".to_owned()),
                status_in: statuses,
            },
        );
        if on(0) {
            tx.head = Some(RunHead {
                status: if rich {
                    RunStatus::Failed
                } else {
                    RunStatus::Running
                },
                current_step: rows,
                error: rich.then(|| "boom".to_owned()),
                usage: Map::new(),
                started_at: Some(now()),
                finished_at: rich.then(now),
                active_ms: 5,
                wake_at: None,
                extra: Default::default(),
            });
        }
        if on(1) {
            tx.context = Some(Map::from_iter([("k".to_owned(), json!(rows))]));
        }
        if on(2) {
            tx.rerun = Some(Rerun {
                retries: Vec::new(),
                workflow_version: 2,
                budget: None,
                steps: rows,
            });
        }
        if on(5) {
            tx.steps = (0..rows)
                .map(|i| {
                    let step = json!({"step_id": format!("s{i}"), "name": "s", "action": "http",
                        "status": "SUCCEEDED", "attempts": [], "output": {"n": i}});
                    (i, serde_json::from_value(step).unwrap())
                })
                .collect();
        }
        if on(6) {
            tx.approvals = (0..rows)
                .map(|_| {
                    serde_json::from_value(json!({"step": "s", "decision": "approved",
                        "by": "ann", "at": "2026-12-02T00:00:00Z"}))
                    .unwrap()
                })
                .collect();
        }
        if on(7) {
            tx.logs = (0..rows)
                .map(|i| NewLogEntry::engine(LogLevel::Info, None, format!("line {i}")))
                .collect();
        }
        if on(8) {
            tx.events = (0..rows)
                .map(|_| {
                    serde_json::from_value(json!({"type": "run.started", "status": "RUNNING",
                        "ts": "2026-12-02T00:00:00Z"}))
                    .unwrap()
                })
                .collect();
        }
        let lease = || Lease {
            owner: "me".into(),
            ttl: Duration::from_secs(30),
        };
        tx.owner = match owner {
            0 => OwnerChange::Keep,
            1 => OwnerChange::Renew(Duration::from_secs(30)),
            2 => OwnerChange::Take(lease()),
            3 => OwnerChange::Release,
            _ => OwnerChange::Leave,
        };
        tx
    }

    #[test]
    fn transitions_of_one_shape_get_one_text_with_every_parameter_in_it() {
        let statuses = [
            None,
            Some(vec![RunStatus::Running]),
            Some(vec![RunStatus::Pending, RunStatus::Running]),
        ];
        let mut texts = HashSet::new();
        let mut shapes = HashSet::new();
        for bits in 0..(1 << 9) {
            for owner in 0..5 {
                for status_in in &statuses {
                    let plain = transition(bits, owner, status_in.clone(), false);
                    let rich = transition(bits, owner, status_in.clone(), true);
                    assert!(Shape::of(&plain) == Shape::of(&rich));
                    let a = statement(&plain, now(), true);
                    let b = statement(&rich, now(), true);
                    assert_eq!(a.text, b.text, "parts {bits:#b}, owner {owner}");
                    assert_eq!(a.args.len(), b.args.len());
                    let text = a.text.unwrap();
                    for n in 1..=a.args.len() {
                        let placeholder = format!("${n}");
                        assert!(
                            text.match_indices(&placeholder)
                                .any(|(at, _)| !text[at + placeholder.len()..]
                                    .starts_with(|c: char| c.is_ascii_digit())),
                            "{placeholder} missing in {text}"
                        );
                    }
                    assert!(!text.contains(&format!("${}", a.args.len() + 1)));
                    assert!(text.starts_with("WITH upd AS (UPDATE runs SET "), "{text}");
                    assert!(statement(&plain, now(), false).text.is_none());
                    shapes.insert(Shape::of(&plain));
                    texts.insert(text);
                }
            }
        }
        assert_eq!(texts.len(), shapes.len());
        assert_eq!(shapes.len(), (1 << 9) * 5 * statuses.len());
    }
}

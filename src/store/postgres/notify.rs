//! Change notices between replicas: `pg_notify` after commit, `LISTEN` on a dedicated
//! connection.
//!
//! Every group commit hands what it changed (run heads, log ranges, runs that became
//! claimable) to the announcer, which merges whatever has accumulated and sends it on one
//! channel, tagged with the store's origin id so a store ignores its own echo. The listener reconnects with backoff after the database goes
//! away and then sends [`Notice::Resync`], because notices sent meanwhile are lost;
//! receivers treat notices as wake-ups and fall back to polling the store.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::store::Notice;

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "orchestrator_changes";
/// PostgreSQL refuses payloads of 8000 bytes or more; stay well below.
const MAX_PAYLOAD: usize = 7000;

/// A change of one run, as announced by a committing job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outgoing {
    #[serde(rename = "r")]
    pub run_id: String,
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<(u64, u64)>,
    #[serde(rename = "c", default, skip_serializing_if = "std::ops::Not::not")]
    pub claimable: bool,
    /// Task queues the change put a task on.
    #[serde(rename = "q", default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(rename = "o")]
    origin: String,
    #[serde(rename = "n")]
    notices: Vec<Outgoing>,
}

/// Merges a batch's notices per run and packs them into payloads below the size limit.
pub fn payloads(origin: &str, notices: Vec<Outgoing>) -> Vec<String> {
    let mut merged: BTreeMap<String, Outgoing> = BTreeMap::new();
    for n in notices {
        let entry = merged.entry(n.run_id.clone()).or_insert_with(|| Outgoing {
            run_id: n.run_id.clone(),
            ..Outgoing::default()
        });
        entry.rev = entry.rev.max(n.rev);
        entry.logs = match (entry.logs, n.logs) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
        entry.claimable |= n.claimable;
        for q in n.queues {
            if !entry.queues.contains(&q) {
                entry.queues.push(q);
            }
        }
    }
    let mut out = Vec::new();
    let mut chunk: Vec<Outgoing> = Vec::new();
    let mut size = 0;
    for n in merged.into_values() {
        let len = n.run_id.len() + 64 + n.queues.iter().map(|q| q.len() + 3).sum::<usize>();
        if size + len > MAX_PAYLOAD && !chunk.is_empty() {
            out.push(encode(origin, std::mem::take(&mut chunk)));
            size = 0;
        }
        size += len;
        chunk.push(n);
    }
    if !chunk.is_empty() {
        out.push(encode(origin, chunk));
    }
    out
}

fn encode(origin: &str, notices: Vec<Outgoing>) -> String {
    let payload = Payload {
        origin: origin.to_owned(),
        notices,
    };
    // A struct of strings and numbers always serialises.
    serde_json::to_string(&payload).unwrap_or_default()
}

/// Decodes a payload from another store into notices; `None` for our own or a foreign one.
fn decode(origin: &str, text: &str) -> Option<Vec<Notice>> {
    let payload: Payload = serde_json::from_str(text).ok()?;
    if payload.origin == origin {
        return None;
    }
    let mut out = Vec::new();
    for n in payload.notices {
        out.extend(n.queues.into_iter().map(|queue| Notice::Queue { queue }));
        out.push(Notice::Run {
            run_id: n.run_id,
            rev: n.rev,
            logs: n.logs,
            claimable: n.claimable,
        });
    }
    Some(out)
}

/// Sends the notices of committed batches, merged, until every writer is gone. A failed
/// send is dropped: receivers also poll, and a reconnecting listener re-checks.
pub async fn announce(
    pool: deadpool_postgres::Pool,
    origin: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Outgoing>>,
) {
    while let Some(mut notices) = rx.recv().await {
        while let Ok(mut more) = rx.try_recv() {
            notices.append(&mut more);
        }
        let texts = payloads(&origin, notices);
        let sent = match pool.get().await {
            Ok(conn) => notify(&conn, &texts).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "announcing changes failed");
        }
    }
}

/// Sends `texts` on the channel, by a statement prepared once per connection (one round
/// trip, not a parse and an execution).
async fn notify(
    conn: &deadpool_postgres::Object,
    texts: &[String],
) -> Result<(), tokio_postgres::Error> {
    let statement = conn
        .prepare_cached("SELECT pg_notify($1, t) FROM UNNEST($2::text[]) AS t")
        .await?;
    conn.execute(&statement, &[&CHANNEL, &texts]).await?;
    Ok(())
}

/// Listens for notices until the store (the owner of `sender`) is dropped.
pub async fn listen(
    config: tokio_postgres::Config,
    origin: String,
    sender: Weak<broadcast::Sender<Notice>>,
) {
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    while sender.strong_count() > 0 {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures::stream::poll_fn(move |cx| connection.poll_message(cx)).fuse();
                let sql = format!("LISTEN {CHANNEL}");
                let listen = client.batch_execute(&sql);
                tokio::pin!(listen);
                // The connection must be polled for LISTEN to complete.
                let ready = loop {
                    tokio::select! {
                        r = &mut listen => break r.is_ok(),
                        m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                    }
                };
                if ready {
                    delay = Duration::from_millis(100);
                    if !first && let Some(tx) = sender.upgrade() {
                        let _ = tx.send(Notice::Resync);
                    }
                    first = false;
                    pump(&mut messages, &origin, &sender).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "notice listener cannot connect"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Forwards notifications until the connection ends or the store is dropped.
async fn pump<S>(messages: &mut S, origin: &str, sender: &Weak<broadcast::Sender<Notice>>)
where
    S: futures::Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Unpin,
{
    loop {
        let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
        let Some(tx) = sender.upgrade() else { return };
        match next {
            Err(_) => continue,
            Ok(Some(Ok(AsyncMessage::Notification(n)))) => {
                for notice in decode(origin, n.payload()).into_iter().flatten() {
                    let _ = tx.send(notice);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "notice listener lost its connection");
                return;
            }
            Ok(None) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_merge_notices_per_run_and_skip_their_own_origin() {
        let notices = vec![
            Outgoing {
                run_id: "run_a".into(),
                rev: Some(3),
                logs: Some((4, 5)),
                claimable: false,
                queues: vec!["q1".into()],
            },
            Outgoing {
                run_id: "run_a".into(),
                rev: Some(4),
                logs: Some((6, 6)),
                claimable: true,
                queues: vec!["q1".into(), "q2".into()],
            },
        ];
        let texts = payloads("me", notices);
        assert_eq!(texts.len(), 1);
        assert!(decode("me", &texts[0]).is_none());
        let got = decode("other", &texts[0]).unwrap();
        assert_eq!(
            got,
            vec![
                Notice::Queue { queue: "q1".into() },
                Notice::Queue { queue: "q2".into() },
                Notice::Run {
                    run_id: "run_a".into(),
                    rev: Some(4),
                    logs: Some((4, 6)),
                    claimable: true
                }
            ]
        );
    }

    #[test]
    fn payloads_stay_below_the_notify_size_limit() {
        let notices = (0..1000)
            .map(|i| Outgoing {
                run_id: format!("run_{i:026}"),
                rev: Some(i),
                logs: Some((i, i + 10)),
                claimable: true,
                queues: vec![format!("queue-{i}")],
            })
            .collect();
        let texts = payloads("me", notices);
        assert!(texts.len() > 1);
        assert!(texts.iter().all(|t| t.len() < 8000));
    }
}

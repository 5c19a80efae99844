//! Following a run's log live over `GET /v1/runs/{id}/logs/stream` until the run ends.
//!
//! The stream is resumed after a dropped connection, a server `shutdown` event or a busy
//! server, with `Last-Event-ID` set to the last `seq` handed on and a growing delay between
//! attempts. Each entry is handed on once and in order: an entry at or below the last
//! `seq` (a replay the server should not send, but might after a proxy re-sent a request)
//! is skipped. A `204` answer to a resume means the run is over and everything was handed
//! on. Following gives up when the server stays out of reach for [`GIVE_UP`].

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use super::http::{Api, ClientError};

/// The first delay before reconnecting; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// How long the server may stay unreachable before following stops with exit code 2.
const GIVE_UP: Duration = Duration::from_secs(120);

/// Why one connection's stream stopped.
#[derive(Debug)]
enum Stopped {
    /// `event: end`: the run is over; its final status.
    End(String),
    /// The connection closed or broke before `end`, or the server is stopping.
    Dropped,
}

/// Follows the log of `run` from its first entry, calling `on_entry` with each entry once,
/// in `seq` order; returns the run's final status.
pub async fn follow(
    api: &Api,
    run: &str,
    mut on_entry: impl FnMut(&Value) -> Result<(), ClientError>,
) -> Result<String, ClientError> {
    let mut last_seq: Option<u64> = None;
    let mut delay = FIRST_DELAY;
    let mut connected_once = false;
    let mut out_of_reach_since: Option<Instant> = None;
    loop {
        match api.log_stream(run, last_seq).await {
            // Nothing more will come: the run is over and everything was handed on.
            Ok(response) if response.status() == reqwest::StatusCode::NO_CONTENT => {
                let run = api.get(&["v1", "runs", run], &[]).await?;
                return Ok(run["status"].as_str().unwrap_or_default().to_owned());
            }
            Ok(response) => {
                connected_once = true;
                out_of_reach_since = None;
                let before = last_seq;
                let bytes = response.bytes_stream();
                match read(bytes, &mut last_seq, &mut on_entry).await? {
                    Stopped::End(status) => return Ok(status),
                    Stopped::Dropped if last_seq != before => delay = FIRST_DELAY,
                    Stopped::Dropped => {}
                }
            }
            // A server that cannot be reached at first is not there at all (exit 2 at
            // once); a busy one, or one lost after the stream began, is tried again.
            Err(e) if e.is_transient() && (connected_once || !e.is_unreachable()) => {
                let since = *out_of_reach_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GIVE_UP {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

/// Reads one connection's events until `end`, or until the stream stops.
async fn read<B, E>(
    bytes: impl Stream<Item = Result<B, E>> + Unpin,
    last_seq: &mut Option<u64>,
    on_entry: &mut impl FnMut(&Value) -> Result<(), ClientError>,
) -> Result<Stopped, ClientError>
where
    B: AsRef<[u8]>,
{
    let mut events = bytes.eventsource();
    while let Some(event) = events.next().await {
        let Ok(event) = event else {
            return Ok(Stopped::Dropped);
        };
        match event.event.as_str() {
            "log" => {
                let entry: Value = serde_json::from_str(&event.data)
                    .map_err(|e| ClientError::Protocol(format!("a log event is not JSON: {e}")))?;
                let seq = entry["seq"]
                    .as_u64()
                    .ok_or_else(|| ClientError::Protocol("a log event has no seq".into()))?;
                if last_seq.is_some_and(|last| seq <= last) {
                    continue;
                }
                on_entry(&entry)?;
                *last_seq = Some(seq);
            }
            "end" => {
                let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
                let status = data["run_status"].as_str().unwrap_or_default().to_owned();
                return Ok(Stopped::End(status));
            }
            "shutdown" => return Ok(Stopped::Dropped),
            _ => {}
        }
    }
    Ok(Stopped::Dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<&'static [u8], String>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(p.as_bytes())).collect::<Vec<_>>())
    }

    fn log(seq: u64) -> String {
        format!("event: log\nid: {seq}\ndata: {{\"seq\":{seq},\"message\":\"m{seq}\"}}\n\n")
    }

    #[tokio::test]
    async fn entries_are_handed_on_once_in_order_until_end() {
        let text: &'static str = Box::leak(
            format!(
                "{}{}event: status\ndata: {{}}\n\n{}{}: keep-alive\n\nevent: end\ndata: {{\"run_status\":\"SUCCEEDED\"}}\n\n",
                log(3),
                log(4),
                log(4),
                log(5)
            )
            .into_boxed_str(),
        );
        // Split mid-event, as a network would.
        let (a, b) = text.split_at(17);
        let mut last = Some(2);
        let mut seen = Vec::new();
        let stopped = read(chunks(&[a, b]), &mut last, &mut |e: &Value| {
            seen.push(e["seq"].as_u64().unwrap());
            Ok(())
        })
        .await
        .unwrap();
        assert!(matches!(stopped, Stopped::End(s) if s == "SUCCEEDED"));
        assert_eq!(seen, [3, 4, 5]);
        assert_eq!(last, Some(5));
    }

    #[tokio::test]
    async fn a_cut_stream_or_a_shutdown_is_a_drop_that_keeps_the_last_seq() {
        let whole: &'static str = Box::leak(log(1).into_boxed_str());
        let partial: &'static str = Box::leak(log(2)[..20].to_owned().into_boxed_str());
        let mut last = None;
        let stopped = read(
            chunks(&[whole, partial]),
            &mut last,
            &mut |_: &Value| Ok(()),
        )
        .await
        .unwrap();
        assert!(matches!(stopped, Stopped::Dropped));
        assert_eq!(last, Some(1), "a half-received event is not handed on");
        let shutdown = "event: shutdown\ndata: {\"run_status\":\"RUNNING\",\"last_seq\":1}\n\n";
        let stopped = read(chunks(&[shutdown]), &mut last, &mut |_: &Value| Ok(()))
            .await
            .unwrap();
        assert!(matches!(stopped, Stopped::Dropped));
    }
}

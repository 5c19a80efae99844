//! `events [-f]`: the events feed (every run and step event, in one global order), like
//! `tail`: the newest `--limit` events (or every event after `--after`), then with `-f`
//! the live stream from there.
//!
//! Following resumes after a dropped connection, a server `shutdown` or a busy server with
//! `Last-Event-ID` set to the last id printed, so no event is printed twice or skipped
//! (the server guarantees the order; an id at or below the last one is dropped here too).

use std::time::Duration;

use clap::Args;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use super::Ctx;
use super::http::{Api, ClientError};
use super::output::{self, Color, Format, Style};

/// Events asked for per page with `--after`.
const PAGE: usize = 100;
/// The first delay before reconnecting; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// How long the server may stay unreachable before following stops with exit code 2.
const GIVE_UP: Duration = Duration::from_secs(120);

/// `events [--workflow ID] [--run RUN] [--type T,..] [--limit N | --after ID] [-f]`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of this workflow's runs.
    #[arg(long, value_name = "ID")]
    workflow: Option<String>,
    /// Only events of this run.
    #[arg(long, value_name = "RUN")]
    run: Option<String>,
    /// Only these types, comma-separated (run.failed,step.failed).
    #[arg(long = "type", value_name = "TYPES")]
    kind: Option<String>,
    /// How many of the newest events to print first.
    #[arg(long, default_value_t = 20, conflicts_with = "after")]
    limit: usize,
    /// Print every event after this id instead (an id printed earlier, or 0 for all).
    #[arg(long, value_name = "ID")]
    after: Option<u64>,
    /// Keep printing events as they happen (until interrupted).
    #[arg(short = 'f', long)]
    follow: bool,
}

impl EventsArgs {
    fn filters(&self) -> Vec<(&'static str, String)> {
        [
            ("workflow_id", &self.workflow),
            ("run_id", &self.run),
            ("type", &self.kind),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.clone()?)))
        .collect()
    }
}

/// `events`: one line per event (one JSON object per line with `-o json`).
pub async fn show(ctx: &Ctx, args: EventsArgs) -> Result<(), ClientError> {
    let filters = args.filters();
    let print = |event: &Value| -> Result<(), ClientError> {
        match ctx.format {
            Format::Json => output::print_json_line(event),
            Format::Table => output::print(&line(event, ctx.style)),
        }
        .map_err(ClientError::from)
    };
    let mut last = match args.after {
        Some(after) => page_forward(&ctx.api, &filters, after, &print).await?,
        None => newest(&ctx.api, &filters, args.limit.max(1), &print).await?,
    };
    if !args.follow {
        return Ok(());
    }
    follow(&ctx.api, &filters, &mut last, &print).await
}

/// Prints every event after `after`; the last id printed (or `after`).
async fn page_forward(
    api: &Api,
    filters: &[(&str, String)],
    mut after: u64,
    print: &impl Fn(&Value) -> Result<(), ClientError>,
) -> Result<Option<u64>, ClientError> {
    loop {
        let mut query = filters.to_vec();
        query.push(("after", after.to_string()));
        query.push(("limit", PAGE.to_string()));
        let page = api.get(&["v1", "events"], &query).await?;
        for event in items(&page)? {
            print(event)?;
            after = event["id"].as_u64().unwrap_or(after);
        }
        if page["next_after"].as_u64().is_none() {
            return Ok(Some(after));
        }
    }
}

/// Prints the newest `limit` events, oldest of them first; the newest id, when any.
async fn newest(
    api: &Api,
    filters: &[(&str, String)],
    limit: usize,
    print: &impl Fn(&Value) -> Result<(), ClientError>,
) -> Result<Option<u64>, ClientError> {
    let mut query = filters.to_vec();
    query.push(("order", "desc".into()));
    query.push(("limit", limit.min(PAGE * 10).to_string()));
    let page = api.get(&["v1", "events"], &query).await?;
    let events = items(&page)?;
    for event in events.iter().rev() {
        print(event)?;
    }
    Ok(events.first().and_then(|e| e["id"].as_u64()))
}

fn items(page: &Value) -> Result<&Vec<Value>, ClientError> {
    page["items"]
        .as_array()
        .ok_or_else(|| ClientError::Protocol("an events page has no items".into()))
}

/// Follows `GET /v1/events/stream` after `last` (from the start when `None`: nothing
/// matched before), reconnecting until the server stays out of reach for [`GIVE_UP`].
async fn follow(
    api: &Api,
    filters: &[(&str, String)],
    last: &mut Option<u64>,
    print: &impl Fn(&Value) -> Result<(), ClientError>,
) -> Result<(), ClientError> {
    let mut delay = FIRST_DELAY;
    let mut out_of_reach_since: Option<Instant> = None;
    loop {
        match api
            .stream(&["v1", "events", "stream"], filters, *last)
            .await
        {
            Ok(response) => {
                out_of_reach_since = None;
                let before = *last;
                read(response.bytes_stream(), last, print).await?;
                if *last != before {
                    delay = FIRST_DELAY;
                }
            }
            Err(e) if e.is_transient() => {
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

/// Prints one connection's events until it stops (closed, cut, or `shutdown`).
async fn read<B, E>(
    bytes: impl Stream<Item = Result<B, E>> + Unpin,
    last: &mut Option<u64>,
    print: &impl Fn(&Value) -> Result<(), ClientError>,
) -> Result<(), ClientError>
where
    B: AsRef<[u8]>,
{
    let mut events = bytes.eventsource();
    while let Some(Ok(event)) = events.next().await {
        match event.event.as_str() {
            "event" => {
                let data: Value = serde_json::from_str(&event.data)
                    .map_err(|e| ClientError::Protocol(format!("an event is not JSON: {e}")))?;
                let id = data["id"]
                    .as_u64()
                    .ok_or_else(|| ClientError::Protocol("an event has no id".into()))?;
                if last.is_some_and(|l| id <= l) {
                    continue;
                }
                print(&data)?;
                *last = Some(id);
            }
            "shutdown" => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// An event as one line: id (for `--after`), time, type, status, run, workflow and step.
fn line(event: &Value, style: Style) -> String {
    let text = |k: &str| event[k].as_str().unwrap_or("-");
    let status = text("status");
    let id = event["id"]
        .as_u64()
        .map_or_else(|| "-".into(), |i| i.to_string());
    let mut out = format!(
        "{id:>6} {} {:<21} {} {} {}",
        text("ts"),
        text("type"),
        style.paint(&format!("{status:<16}"), Color::of_status(status)),
        text("run_id"),
        text("workflow_id"),
    );
    if let Some(step) = event["step"].as_str() {
        out.push_str(&format!(" [{step}]"));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunks(parts: Vec<String>) -> impl Stream<Item = Result<Vec<u8>, String>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(p.into_bytes())))
    }

    fn event(id: u64) -> String {
        format!("event: event\nid: {id}\ndata: {{\"id\":{id},\"type\":\"run.started\"}}\n\n")
    }

    #[tokio::test]
    async fn events_are_printed_once_in_order_and_a_shutdown_ends_the_connection() {
        let text = format!(
            "{}: keep-alive\n\n{}{}{}event: shutdown\ndata: {{\"last_id\":5}}\n\n{}",
            event(4),
            event(5),
            event(3),
            event(5),
            event(6)
        );
        let (a, b) = text.split_at(30);
        let seen = std::cell::RefCell::new(Vec::new());
        let mut last = Some(3);
        read(chunks(vec![a.into(), b.into()]), &mut last, &|e: &Value| {
            seen.borrow_mut().push(e["id"].as_u64().unwrap());
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(*seen.borrow(), [4, 5], "nothing after shutdown");
        assert_eq!(last, Some(5));
    }

    #[test]
    fn a_line_shows_id_time_type_status_run_workflow_and_step() {
        let e = json!({"id": 7, "type": "step.failed", "status": "FAILED", "run_id": "run_1",
                       "workflow_id": "deploy", "step": "push", "ts": "2025-01-01T00:00:00Z"});
        assert_eq!(
            line(&e, Style::plain()),
            "     7 2025-01-01T00:00:00Z step.failed           FAILED           run_1 deploy [push]\n"
        );
    }
}

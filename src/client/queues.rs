//! `queues` and `workers`: the task queues and the workers polling them.

use serde_json::Value;

use super::Ctx;
use super::http::ClientError;
use super::listing::{self, Column, Listing};
use super::output::Cell;

const QUEUES: Listing = Listing {
    path: &["v1", "queues"],
    columns: &[
        Column::text("QUEUE", "/queue"),
        Column::text("WAITING", "/waiting"),
        Column::text("IN FLIGHT", "/in_flight"),
        Column::with("OLDEST", |q, _| Cell::new(oldest(q))),
        Column::text("WORKERS", "/workers"),
    ],
    empty: "No queues.",
    paged: false,
};

const WORKERS: Listing = Listing {
    path: &["v1", "workers"],
    columns: &[
        Column::text("WORKER", "/name"),
        Column::text("QUEUES", "/queues"),
        Column::text("IN FLIGHT", "/in_flight"),
        Column::ago("SEEN", "/last_seen"),
    ],
    empty: "No workers seen in the last five minutes.",
    paged: false,
};

/// How long the oldest waiting task has waited, e.g. `1m 5s`.
fn oldest(queue: &Value) -> String {
    let Some(ms) = queue["oldest_waiting_ms"].as_u64() else {
        return "-".into();
    };
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

pub async fn queues(ctx: &Ctx) -> Result<(), ClientError> {
    listing::show(&ctx.api, &QUEUES, &[], None, ctx.format, ctx.style).await
}

pub async fn workers(ctx: &Ctx) -> Result<(), ClientError> {
    listing::show(&ctx.api, &WORKERS, &[], None, ctx.format, ctx.style).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_oldest_wait_reads_in_units_people_use() {
        assert_eq!(oldest(&json!({"oldest_waiting_ms": 250})), "250ms");
        assert_eq!(oldest(&json!({"oldest_waiting_ms": 65_000})), "1m 5s");
        assert_eq!(oldest(&json!({"oldest_waiting_ms": 7_500_000})), "2h 5m");
        assert_eq!(oldest(&json!({"oldest_waiting_ms": null})), "-");
    }
}

//! `logs RUN [-f]`: the run's log so far, paged through `GET /v1/runs/{id}/logs`, or
//! followed live until the run ends.

use serde_json::Value;

use super::Ctx;
use super::follow::follow;
use super::http::ClientError;
use super::output::{self, Format};

/// Entries asked for per page.
const PAGE: usize = 1000;

/// Prints the log of `run`: one line per entry, or one JSON entry per line with `-o json`.
pub async fn show(ctx: &Ctx, run: &str, live: bool) -> Result<(), ClientError> {
    let print = |entry: &Value| -> Result<(), ClientError> {
        match ctx.format {
            Format::Json => output::print_json_line(entry),
            Format::Table => output::print(&output::log_line(entry, ctx.style)),
        }
        .map_err(ClientError::from)
    };
    if live {
        follow(&ctx.api, run, print).await?;
        return Ok(());
    }
    let mut after = 0;
    loop {
        let query = [("after", after.to_string()), ("limit", PAGE.to_string())];
        let page = ctx.api.get(&["v1", "runs", run, "logs"], &query).await?;
        for entry in page["items"].as_array().into_iter().flatten() {
            print(entry)?;
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return Ok(()),
        }
    }
}

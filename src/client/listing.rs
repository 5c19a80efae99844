//! Listings: a list endpoint (`{"items", "next_cursor"?}`) shown as a table of columns.
//!
//! A listing is data: the path and its columns. Adding one (queues, workers, schedules) is
//! a `const` [`Listing`] and a subcommand that calls [`show`], e.g.
//! `Listing { path: &["v1", "queues"], columns: &[Column::text("QUEUE", "/queue"),
//! Column::text("WAITING", "/waiting")], empty: "No queues." }`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::http::{Api, ClientError};
use super::output::{self, Cell, Format, Style, Table};

/// What a column shows of an item.
#[derive(Clone, Copy)]
pub enum Show {
    /// The member at a JSON pointer, as text (`-` when absent).
    Text(&'static str),
    /// A status at a JSON pointer, in its color.
    Status(&'static str),
    /// A time at a JSON pointer, relative to now (`3m ago`).
    Ago(&'static str),
    /// Anything computed from the item (and the current time).
    With(fn(&Value, DateTime<Utc>) -> Cell),
}

/// One column: its header and what it shows.
#[derive(Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub show: Show,
}

impl Column {
    /// The member at `pointer`, as text.
    pub const fn text(header: &'static str, pointer: &'static str) -> Self {
        Self {
            header,
            show: Show::Text(pointer),
        }
    }

    /// A status at `pointer`, in its color.
    pub const fn status(header: &'static str, pointer: &'static str) -> Self {
        Self {
            header,
            show: Show::Status(pointer),
        }
    }

    /// A time at `pointer`, relative to now.
    pub const fn ago(header: &'static str, pointer: &'static str) -> Self {
        Self {
            header,
            show: Show::Ago(pointer),
        }
    }

    /// Anything computed from the item.
    pub const fn with(header: &'static str, f: fn(&Value, DateTime<Utc>) -> Cell) -> Self {
        Self {
            header,
            show: Show::With(f),
        }
    }
}

/// A list endpoint and how to show its items.
pub struct Listing {
    /// The path's segments, e.g. `["v1", "runs"]`.
    pub path: &'static [&'static str],
    pub columns: &'static [Column],
    /// Printed instead of an empty table.
    pub empty: &'static str,
    /// Whether the endpoint pages (takes `limit` and `cursor`); one that does not answers
    /// every item at once and refuses those parameters.
    pub paged: bool,
}

/// Pages through the listing (following `next_cursor`) until `limit` items, then prints
/// them as a table, or as `{"items": [...]}` with `-o json`.
pub async fn show(
    api: &Api,
    listing: &Listing,
    query: &[(&str, String)],
    limit: Option<usize>,
    format: Format,
    style: Style,
) -> Result<(), ClientError> {
    let items = if listing.paged {
        fetch(api, listing.path, query, limit).await?
    } else {
        let answer = api.get(listing.path, query).await?;
        let Some(items) = answer["items"].as_array() else {
            return Err(ClientError::Protocol("a list answer has no items".into()));
        };
        items.clone()
    };
    match format {
        Format::Json => output::print_json(&json!({ "items": items }))?,
        Format::Table if items.is_empty() => output::print(&format!("{}\n", listing.empty))?,
        Format::Table => output::print(&table(listing.columns, &items, Utc::now()).render(style))?,
    }
    Ok(())
}

/// Every item of a list endpoint, following `next_cursor`, at most `limit`.
pub async fn fetch(
    api: &Api,
    path: &[&str],
    query: &[(&str, String)],
    limit: Option<usize>,
) -> Result<Vec<Value>, ClientError> {
    /// Items asked for per page; under the server's default `limits.max_page`.
    const PAGE: usize = 100;
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let want = limit.map_or(PAGE, |l| (l - items.len()).min(PAGE));
        let mut q = query.to_vec();
        q.push(("limit", want.to_string()));
        if let Some(c) = cursor.take() {
            q.push(("cursor", c));
        }
        let page = api.get(path, &q).await?;
        let Some(page_items) = page["items"].as_array() else {
            return Err(ClientError::Protocol("a list answer has no items".into()));
        };
        items.extend(page_items.iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        let full = limit.is_some_and(|l| items.len() >= l);
        if full || cursor.is_none() || page_items.is_empty() {
            return Ok(items);
        }
    }
}

/// The items as a table of `columns`.
pub fn table(columns: &[Column], items: &[Value], now: DateTime<Utc>) -> Table {
    let mut table = Table::new(columns.iter().map(|c| c.header));
    for item in items {
        table.row(columns.iter().map(|c| cell(c.show, item, now)).collect());
    }
    table
}

fn cell(show: Show, item: &Value, now: DateTime<Utc>) -> Cell {
    match show {
        Show::Text(pointer) => Cell::new(text(item.pointer(pointer))),
        Show::Status(pointer) => {
            Cell::status(item.pointer(pointer).and_then(Value::as_str).unwrap_or("-"))
        }
        Show::Ago(pointer) => Cell::new(
            item.pointer(pointer)
                .and_then(output::parse_time)
                .map_or_else(|| "-".to_owned(), |t| output::relative(t, now)),
        ),
        Show::With(f) => f(item, now),
    }
}

/// A JSON value as table text: strings bare, lists comma-separated, absent as `-`.
pub fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| text(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        Column::text("QUEUE", "/queue"),
        Column::text("WORKERS", "/workers"),
        Column::ago("SEEN", "/last_seen"),
        Column::with("DOUBLE", |item, _| {
            Cell::new((item["waiting"].as_u64().unwrap_or(0) * 2).to_string())
        }),
    ];

    #[test]
    fn columns_read_pointers_lists_times_and_computed_values() {
        let now = output::parse_time(&json!("2024-05-01T12:00:00Z")).unwrap();
        let items = [
            json!({"queue": "build", "workers": ["a", "b"], "last_seen": "2024-05-01T11:58:00Z", "waiting": 3}),
            json!({"queue": "deploy", "workers": []}),
        ];
        let rendered = table(COLUMNS, &items, now).render(Style::plain());
        assert_eq!(
            rendered,
            "QUEUE   WORKERS  SEEN    DOUBLE\nbuild   a,b      2m ago  6\ndeploy           -       0\n"
        );
    }
}

//! What the client prints: aligned tables, relative times and durations for people,
//! JSON for scripts (`-o json`: one document, or one per line for streams).
//!
//! Colors are used only when standard output is a terminal and `NO_COLOR` is unset or
//! empty; widths are measured on the text without color codes, so columns stay aligned.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables and sentences for people.
    Table,
    /// JSON for scripts: one document, or one per line for streams.
    Json,
}

/// An ANSI color (SGR code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Blue,
    Magenta,
    Dim,
    Bold,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Self::Red => "31",
            Self::Green => "32",
            Self::Yellow => "33",
            Self::Blue => "34",
            Self::Magenta => "35",
            Self::Dim => "2",
            Self::Bold => "1",
        }
    }

    /// The color of a run or step status.
    pub fn of_status(status: &str) -> Option<Self> {
        match status {
            "SUCCEEDED" => Some(Self::Green),
            "FAILED" => Some(Self::Red),
            "CANCELED" => Some(Self::Yellow),
            "RUNNING" => Some(Self::Blue),
            "WAITING_APPROVAL" | "WAITING" => Some(Self::Magenta),
            "PENDING" | "SKIPPED" => Some(Self::Dim),
            _ => None,
        }
    }

    /// The color of a log level.
    pub fn of_level(level: &str) -> Option<Self> {
        match level {
            "error" => Some(Self::Red),
            "warn" => Some(Self::Yellow),
            "debug" => Some(Self::Dim),
            _ => None,
        }
    }
}

/// Whether to color: decided once per invocation.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colors on a terminal, unless `NO_COLOR` is set to anything but the empty string.
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if no_color || !std::io::stdout().is_terminal() {
            return Self::plain();
        }
        Self { color: true }
    }

    /// Plain text, always.
    pub fn plain() -> Self {
        Self { color: false }
    }

    /// `text` in `color` when coloring.
    pub fn paint(&self, text: &str, color: Option<Color>) -> String {
        match color {
            Some(c) if self.color => format!("\x1b[{}m{text}\x1b[0m", c.code()),
            _ => text.to_owned(),
        }
    }
}

/// A table cell: its text and an optional color.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub text: String,
    pub color: Option<Color>,
}

impl Cell {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            color: None,
        }
    }

    /// A status, in its color.
    pub fn status(status: &str) -> Self {
        Self {
            text: status.to_owned(),
            color: Color::of_status(status),
        }
    }
}

/// Rows under a header, each column as wide as its widest cell.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, two spaces between columns, no trailing blanks.
    pub fn render(&self, style: Style) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.text.chars().count();
                match widths.get_mut(i) {
                    Some(width) => *width = (*width).max(w),
                    None => widths.push(w),
                }
            }
        }
        let header: Vec<Cell> = self
            .headers
            .iter()
            .map(|h| Cell {
                text: h.clone(),
                color: Some(Color::Bold),
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&style.paint(&cell.text, cell.color));
                if i + 1 < row.len() {
                    let pad = widths[i].saturating_sub(cell.text.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Parses an RFC 3339 time as served.
pub fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `3m ago`, `just now`, `in 2h`: how far `time` is from `now`, in its largest unit.
pub fn relative(time: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - time).num_seconds();
    if seconds.abs() < 5 {
        return "just now".into();
    }
    let span = compact(seconds.unsigned_abs());
    if seconds > 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

fn compact(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `850ms`, `4.2s`, `3m 05s`, `2h 10m`: a duration for people.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m < 60_000 => format!("{:.1}s", m as f64 / 1000.0),
        m if m < 3_600_000 => format!("{}m {:02}s", m / 60_000, (m / 1000) % 60),
        m => format!("{}h {:02}m", m / 3_600_000, (m / 60_000) % 60),
    }
}

/// How long something with these `started_at` / `finished_at` members took (so far).
pub fn elapsed(item: &Value, now: DateTime<Utc>) -> Option<String> {
    let start = parse_time(&item["started_at"])?;
    let end = parse_time(&item["finished_at"]).unwrap_or(now);
    Some(duration((end - start).num_milliseconds()))
}

/// Prints `value` as one pretty JSON document.
pub fn print_json(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)
}

/// Prints `value` as one compact JSON line (streams).
pub fn print_json_line(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)
}

/// Prints text as it is.
pub fn print(text: &str) -> std::io::Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes())
}

/// A log entry as one line, like the server's `text/plain` log: time, level, step, message.
pub fn log_line(entry: &Value, style: Style) -> String {
    let ts = entry["ts"].as_str().unwrap_or_default();
    let level = entry["level"].as_str().unwrap_or("info");
    let message = entry["message"]
        .as_str()
        .unwrap_or_default()
        .replace('\r', "\\r")
        .replace('\n', "\\n");
    let level = style.paint(&format!("{level:<5}"), Color::of_level(level));
    match entry["step"].as_str() {
        Some(step) => format!("{ts} {level} [{step}] {message}\n"),
        None => format!("{ts} {level} {message}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(&json!(text)).unwrap()
    }

    #[test]
    fn tables_align_columns_on_the_text_without_colors() {
        let mut table = Table::new(["RUN", "STATUS", "AGE"]);
        table.row(vec![
            Cell::new("run_1"),
            Cell::status("SUCCEEDED"),
            Cell::new("3m ago"),
        ]);
        table.row(vec![
            Cell::new("run_22"),
            Cell::status("FAILED"),
            Cell::new(""),
        ]);
        let plain = table.render(Style::plain());
        assert_eq!(
            plain,
            "RUN     STATUS     AGE\nrun_1   SUCCEEDED  3m ago\nrun_22  FAILED\n"
        );
        let colored = table.render(Style { color: true });
        assert!(
            colored.contains("\x1b[32mSUCCEEDED\x1b[0m  3m ago"),
            "{colored:?}"
        );
        let stripped = colored.replace("\x1b[32m", "").replace("\x1b[31m", "");
        let stripped = stripped.replace("\x1b[1m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn relative_times_use_the_largest_whole_unit() {
        let now = at("2024-05-01T12:00:00Z");
        assert_eq!(relative(at("2024-05-01T11:59:58Z"), now), "just now");
        assert_eq!(relative(at("2024-05-01T11:59:30Z"), now), "30s ago");
        assert_eq!(relative(at("2024-05-01T11:57:00Z"), now), "3m ago");
        assert_eq!(relative(at("2024-05-01T09:00:00Z"), now), "3h ago");
        assert_eq!(relative(at("2024-04-28T12:00:00Z"), now), "3d ago");
        assert_eq!(relative(at("2024-05-01T12:02:00Z"), now), "in 2m");
    }

    #[test]
    fn durations_read_naturally_at_every_scale() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(4_200), "4.2s");
        assert_eq!(duration(185_000), "3m 05s");
        assert_eq!(duration(7_800_000), "2h 10m");
        assert_eq!(duration(-5), "0ms");
    }

    #[test]
    fn log_lines_show_time_level_step_and_message() {
        let entry = json!({"seq": 3, "ts": "2024-05-01T12:00:00.123Z", "level": "warn",
            "source": "engine", "step": "fetch", "message": "retrying\nsoon"});
        assert_eq!(
            log_line(&entry, Style::plain()),
            "2024-05-01T12:00:00.123Z warn  [fetch] retrying\\nsoon\n"
        );
    }
}

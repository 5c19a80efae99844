//! The text forms of a run log: lines posted by clients become entries, and entries
//! become lines (`ts level [step] message`) for `Accept: text/plain`.

use chrono::SecondsFormat;

use crate::model::{LogEntry, LogLevel, NewLogEntry};

/// Client lines turned into entries.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLines {
    pub entries: Vec<NewLogEntry>,
    /// How many lines were longer than the limit and were cut.
    pub truncated: usize,
}

/// One entry per non-blank line of `text` (`\n` or `\r\n` separated), at `level`. A line
/// longer than `max_line_bytes` is cut at a character boundary and marked with
/// `[truncated from N bytes]`, so a reader knows it is not the whole line.
pub fn client_lines(text: &str, level: LogLevel, max_line_bytes: usize) -> ClientLines {
    let mut truncated = 0;
    let entries = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let message = if line.len() > max_line_bytes {
                truncated += 1;
                let cut = line.floor_char_boundary(max_line_bytes);
                format!("{} [truncated from {} bytes]", &line[..cut], line.len())
            } else {
                line.to_owned()
            };
            NewLogEntry::client(level, message)
        })
        .collect();
    ClientLines { entries, truncated }
}

/// An entry as one line of text, newline included: `ts level [step] message`, or
/// `ts level message` when the entry is about the run as a whole. Line breaks inside the
/// message are escaped (`\n`), so every entry is exactly one line.
pub fn text_line(entry: &LogEntry) -> String {
    let ts = entry.ts.to_rfc3339_opts(SecondsFormat::Millis, true);
    let message = entry.message.replace('\r', "\\r").replace('\n', "\\n");
    match &entry.step {
        Some(step) => format!("{ts} {} [{step}] {message}\n", entry.level),
        None => format!("{ts} {} {message}\n", entry.level),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogSource;

    #[test]
    fn each_non_blank_line_becomes_one_client_entry() {
        let lines = client_lines("first\r\n\n  \nsecond\nthird", LogLevel::Warn, 100);
        let messages: Vec<&str> = lines.entries.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["first", "second", "third"]);
        assert!(lines.entries.iter().all(|e| e.source == LogSource::Client));
        assert!(lines.entries.iter().all(|e| e.level == LogLevel::Warn));
        assert_eq!(lines.truncated, 0);
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary_and_marked() {
        let lines = client_lines("ééééé\nok", LogLevel::Info, 5);
        assert_eq!(lines.entries[0].message, "éé [truncated from 10 bytes]");
        assert_eq!(lines.entries[1].message, "ok");
        assert_eq!(lines.truncated, 1);
    }

    #[test]
    fn text_lines_show_time_level_step_and_message_on_one_line() {
        let ts = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let mut entry = NewLogEntry::engine(LogLevel::Error, Some("fetch"), "failed:\nHTTP 500");
        entry.ts = ts;
        let line = text_line(&entry.clone().into_entry(7));
        assert_eq!(
            line,
            "2023-11-14T22:13:20.123Z error [fetch] failed:\\nHTTP 500\n"
        );
        entry.step = None;
        let line = text_line(&entry.into_entry(8));
        assert!(line.starts_with("2023-11-14T22:13:20.123Z error failed:"));
    }
}

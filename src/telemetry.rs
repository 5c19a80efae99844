//! Process-wide tracing: human-readable lines by default, JSON with `log.format: json`.
//! `RUST_LOG`, when set, overrides `log.level`. Installed once, by `main`.
//!
//! Context lives in spans: each request's span carries `request_id`, `method` and `route`,
//! each run task's span `run_id`, each step task's span `run_id`, `step` and `action` (a
//! debug span: made only where debug lines are kept; the one line above debug a step's
//! attempts write, a denied outbound call, names its `call`, `<run id>/<step>`, itself).
//! Text lines show them as span prefixes. JSON lines carry them as top-level members,
//! merged from every span in scope (outermost first, the event's own fields last), so a
//! log pipeline can filter on `run_id` or `request_id` directly.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogConfig;

/// Installs the global subscriber; a second call is a no-op.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = if config.json {
        tracing::subscriber::set_global_default(json_subscriber(filter, std::io::stderr))
    } else {
        let text = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .finish();
        tracing::subscriber::set_global_default(text)
    };
}

/// The JSON-lines subscriber writing to `writer`.
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .finish()
}

/// One JSON object per event: `timestamp`, `level`, `target`, the fields of every span in
/// scope, then the event's fields (`message` among them).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("timestamp".into(), ts.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields as JSON members.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// A log sink for tests: what a subscriber writes, read back as JSON lines.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

#[cfg(test)]
pub(crate) fn lines(buffer: &Buffer) -> Vec<Value> {
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_fields_of_their_spans_at_the_top_level() {
        let buffer = Buffer::default();
        let subscriber = json_subscriber(EnvFilter::new("info"), buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", run_id = "run_1");
            let _run = run.enter();
            tracing::info!("run started");
            let step =
                tracing::info_span!("step", run_id = "run_1", step = "fetch", action = "http");
            let _step = step.enter();
            tracing::warn!(attempt = 2_u64, "retrying");
        });
        let lines = lines(&buffer);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["run_id"], "run_1");
        assert_eq!(lines[0]["message"], "run started");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[1]["run_id"], "run_1");
        assert_eq!(lines[1]["step"], "fetch");
        assert_eq!(lines[1]["action"], "http");
        assert_eq!(lines[1]["attempt"], 2);
        assert!(lines[1]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn request_ids_reach_every_line_logged_while_handling_the_request() {
        let buffer = Buffer::default();
        let subscriber = json_subscriber(EnvFilter::new("debug"), buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "abc", route = "/v1/runs");
            let _entered = span.enter();
            tracing::error!(reason = "disk full", "internal error");
        });
        let lines = lines(&buffer);
        assert_eq!(lines[0]["request_id"], "abc");
        assert_eq!(lines[0]["route"], "/v1/runs");
        assert_eq!(lines[0]["reason"], "disk full");
    }
}

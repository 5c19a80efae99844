//! `status`: the server as `GET /v1/server` describes it — its id, whether it is ready
//! (and why not), its lease, its retention and its hook targets — and how long a finished
//! run is kept.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Ctx;
use super::http::ClientError;
use super::output::{self, Color, Format};

/// Prints the server's status; exits 1 when it is not ready.
pub async fn status(ctx: &Ctx) -> Result<ExitCode, ClientError> {
    let server = ctx.api.get(&["v1", "server"], &[]).await?;
    match ctx.format {
        Format::Json => output::print_json(&server)?,
        Format::Table => output::print(&describe(&server, ctx))?,
    }
    Ok(if server["ready"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe(server: &Value, ctx: &Ctx) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let ready = if server["ready"] == true {
        ctx.style.paint("yes", Some(Color::Green))
    } else {
        let reason = server["reason"].as_str().unwrap_or("no reason given");
        format!("{}: {reason}", ctx.style.paint("no", Some(Color::Red)))
    };
    let retention = &server["retention"];
    let kept = |key: &str| retention[key].as_u64().map_or("kept".into(), period);
    let pairs = [
        (
            "Server",
            format!(
                "{} (orchestrator {}, {} store)",
                text(&server["id"]),
                text(&server["version"]),
                text(&server["store"])
            ),
        ),
        ("Ready", ready),
        (
            "Lease",
            server["lease_ttl_ms"].as_u64().map_or("-".into(), period),
        ),
        (
            "Retention",
            format!(
                "finished runs {}, hook events {}; checked every {}",
                kept("runs_ms"),
                kept("hook_events_ms"),
                retention["interval_ms"].as_u64().map_or("-".into(), period)
            ),
        ),
        ("Hooks", hooks(server)),
        (
            "Deleted",
            format!(
                "{} run(s), {} hook event(s) since the server started",
                retention["deleted"]["runs"], retention["deleted"]["hook_events"]
            ),
        ),
    ];
    pairs
        .iter()
        .map(|(k, v)| format!("{:<11}{v}\n", format!("{k}:")))
        .collect()
}

/// Each hook target and whether this server is the replica delivering it.
fn hooks(server: &Value) -> String {
    let targets: Vec<String> = server["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let target = h["target"].as_str().unwrap_or("-");
            if h["delivering"] == true {
                format!("{target} delivered here ({} since start)", h["delivered"])
            } else {
                format!("{target} delivered by another replica")
            }
        })
        .collect();
    if targets.is_empty() {
        "none configured".into()
    } else {
        targets.join(", ")
    }
}

/// `30d`, `36h`, `90s`, `250ms`: a configured duration in the largest unit that divides it,
/// as it would be written in the config.
pub fn period(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// When retention deletes a run that finished at `finished_at`, given `retention.runs` in
/// milliseconds; `None` for a run not finished or runs kept forever.
pub fn deleted_after(finished_at: &Value, runs_ms: Option<u64>) -> Option<DateTime<Utc>> {
    let finished = output::parse_time(finished_at)?;
    Some(finished + chrono::Duration::milliseconds(i64::try_from(runs_ms?).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn periods_read_as_they_would_be_configured() {
        assert_eq!(period(30 * 86_400_000), "30d");
        assert_eq!(period(36 * 3_600_000), "36h");
        assert_eq!(period(90_000), "90s");
        assert_eq!(period(60_000), "1m");
        assert_eq!(period(250), "250ms");
    }

    #[test]
    fn a_finished_run_is_deleted_its_retention_after_it_finished() {
        let at = deleted_after(&json!("2026-11-01T10:00:00Z"), Some(86_400_000)).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-02T10:00:00+00:00");
        assert!(deleted_after(&json!("2026-11-01T10:00:00Z"), None).is_none());
        assert!(deleted_after(&Value::Null, Some(1)).is_none());
    }
}

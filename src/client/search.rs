//! The run filters of `runs` (and of any listing of runs): each option is one query
//! parameter of `GET /v1/runs`, checked here only as far as the command line needs (times
//! and `KEY=VALUE`); the server checks the rest and names what it refuses.

use chrono::{DateTime, Utc};
use clap::Args;

use super::http::ClientError;

/// `[--workflow ID] [--status S]… [--since WHEN] [--until WHEN] [--version N]
/// [--trigger T] [--context KEY=VALUE]…`.
#[derive(Debug, Default, Args)]
pub struct RunFilters {
    /// Only runs of this workflow (its id).
    #[arg(long, value_name = "ID")]
    workflow: Option<String>,
    /// Only runs with one of these statuses: repeat it or separate with commas
    /// (failed,waiting_approval).
    #[arg(long, value_name = "STATUS")]
    status: Vec<String>,
    /// Only runs created at or after WHEN: an RFC 3339 time, or a duration ago (90m, 2d).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only runs created before WHEN: an RFC 3339 time, or a duration ago.
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Only runs of this workflow version.
    #[arg(long, value_name = "N")]
    version: Option<u32>,
    /// Only runs started by a `schedule`, a `webhook`, or through the API (`api`).
    #[arg(long, value_name = "TYPE")]
    trigger: Option<String>,
    /// Only runs whose context member KEY (dotted for nested members) equals VALUE;
    /// repeat it for several.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
}

impl RunFilters {
    /// The query parameters of these filters, as of `now`.
    pub fn query(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>, ClientError> {
        let mut query = Vec::new();
        if let Some(w) = &self.workflow {
            query.push(("workflow_id".to_owned(), w.clone()));
        }
        if !self.status.is_empty() {
            query.push(("status".to_owned(), self.status.join(",")));
        }
        if let Some(since) = &self.since {
            query.push(("created_after".to_owned(), time("--since", since, now)?));
        }
        if let Some(until) = &self.until {
            query.push(("created_before".to_owned(), time("--until", until, now)?));
        }
        if let Some(v) = self.version {
            query.push(("workflow_version".to_owned(), v.to_string()));
        }
        if let Some(t) = &self.trigger {
            query.push(("trigger".to_owned(), t.clone()));
        }
        for pair in &self.context {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    ClientError::Usage(format!("--context {pair:?} is not KEY=VALUE"))
                })?;
            query.push((format!("context.{key}"), value.to_owned()));
        }
        Ok(query)
    }
}

/// An RFC 3339 time as given, or `now` minus a duration (`90m`, `2h 30m`, `7d`).
fn time(option: &str, text: &str, now: DateTime<Utc>) -> Result<String, ClientError> {
    if DateTime::parse_from_rfc3339(text).is_ok() {
        return Ok(text.to_owned());
    }
    let ago = humantime_serde::re::humantime::parse_duration(text)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "{option} {text:?} is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a \
                 duration ago (90m, 2d)"
            ))
        })?;
    Ok(ago.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_becomes_its_query_parameter() {
        let now = DateTime::parse_from_rfc3339("2024-05-02T12:00:00Z")
            .unwrap()
            .to_utc();
        let filters = RunFilters {
            workflow: Some("deploy".into()),
            status: vec!["failed".into(), "WAITING_APPROVAL,canceled".into()],
            since: Some("36h".into()),
            until: Some("2024-05-02T11:00:00+02:00".into()),
            version: Some(3),
            trigger: Some("schedule".into()),
            context: vec!["customer=acme".into(), "order.id=a=b".into()],
        };
        let query = filters.query(now).unwrap();
        let pairs: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("workflow_id", "deploy"),
                ("status", "failed,WAITING_APPROVAL,canceled"),
                ("created_after", "2024-05-01T00:00:00.000Z"),
                ("created_before", "2024-05-02T11:00:00+02:00"),
                ("workflow_version", "3"),
                ("trigger", "schedule"),
                ("context.customer", "acme"),
                ("context.order.id", "a=b"),
            ]
        );
    }

    #[test]
    fn bad_times_and_pairs_are_usage_errors() {
        let now = Utc::now();
        let bad_time = RunFilters {
            since: Some("yesterday".into()),
            ..RunFilters::default()
        };
        assert!(matches!(bad_time.query(now), Err(ClientError::Usage(m)) if m.contains("--since")));
        let bad_pair = RunFilters {
            context: vec!["=x".into()],
            ..RunFilters::default()
        };
        assert!(matches!(bad_pair.query(now), Err(ClientError::Usage(_))));
        let no_value = RunFilters {
            context: vec!["customer".into()],
            ..RunFilters::default()
        };
        assert!(matches!(no_value.query(now), Err(ClientError::Usage(_))));
    }
}

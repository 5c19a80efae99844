//! Cron arithmetic: an expression (five fields, six with seconds first, or a name such as
//! `@hourly`; parsed by `croner`) in an IANA time zone (`chrono-tz`), and its ticks as UTC
//! instants.
//!
//! Daylight saving follows croner's rules (the Open Cron Pattern Specification): a
//! fixed-time tick (`30 2 * * *`) that falls in a skipped hour fires once, at the first
//! instant after the gap; one that falls in a repeated hour fires once, at the first of
//! the two instants. Interval patterns (`*/15 * * * *`, `0 * * * *`) keep their cadence in
//! real time, so a repeated hour has its ticks twice, an hour apart.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::model::Timestamp;

/// Why a schedule's expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CronError {
    #[error("invalid cron expression {expression:?}: {reason}")]
    Expression { expression: String, reason: String },
    #[error("unknown time zone {0:?}; use an IANA name such as UTC or Europe/Berlin")]
    TimeZone(String),
    #[error("cron expression {0:?} never fires")]
    Never(String),
}

/// A checked cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

/// Ticks counted at most when telling how many a late tick stands for (the `missed`
/// metric): counting walks tick by tick, and a one-second schedule down for a day has
/// 86 400 of them, so the walk is bounded to keep a pass of the loop short.
pub const COUNT_LIMIT: u64 = 1_000;

impl CronSchedule {
    /// Parses `expression` in time zone `timezone`; it must fire at least once from now.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, CronError> {
        let tz: Tz = timezone
            .parse()
            .map_err(|_| CronError::TimeZone(timezone.to_owned()))?;
        let fields = expression.split_whitespace().count();
        if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(CronError::Expression {
                expression: expression.to_owned(),
                reason: format!("expected 5 fields, or 6 with seconds first; found {fields}"),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| CronError::Expression {
                expression: expression.to_owned(),
                reason: e.to_string(),
            })?;
        let schedule = Self { cron, tz };
        if schedule.next_after(crate::model::now()).is_none() {
            return Err(CronError::Never(expression.to_owned()));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `t` (ticks fall on whole seconds).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let local = self.tz.from_utc_datetime(&whole_second(t).naive_utc());
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// The latest tick in `[from, now]`, and how many ticks in that range it stands for
    /// (itself included; counted up to a bound). `None` when no tick is in the range.
    pub fn latest_due(&self, from: Timestamp, now: Timestamp) -> Option<(Timestamp, u64)> {
        let local = self.tz.from_utc_datetime(&whole_second(now).naive_utc());
        let latest = self
            .cron
            .find_previous_occurrence(&local, true)
            .ok()?
            .with_timezone(&Utc);
        if latest < from {
            return None;
        }
        let mut count = 1;
        let mut at = self.tz.from_utc_datetime(&whole_second(from).naive_utc());
        if self.cron.is_time_matching(&at).unwrap_or(false) {
            at -= chrono::Duration::seconds(1);
        }
        for tick in self.cron.iter_after(at) {
            if tick.with_timezone(&Utc) >= latest || count >= COUNT_LIMIT {
                break;
            }
            count += 1;
        }
        Some((latest, count))
    }
}

fn whole_second(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ticks(s: &CronSchedule, from: &str, n: usize) -> Vec<String> {
        let mut at = utc(from);
        (0..n)
            .map(|_| {
                at = s.next_after(at).unwrap();
                at.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn five_and_six_fields_and_names_are_accepted() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            ticks(&every_second, "2025-01-01T00:00:00.400Z", 2),
            ["2025-01-01T00:00:01+00:00", "2025-01-01T00:00:02+00:00"]
        );
        let five = CronSchedule::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            ticks(&five, "2025-01-01T00:07:00Z", 2),
            ["2025-01-01T00:15:00+00:00", "2025-01-01T00:30:00+00:00"]
        );
        let hourly = CronSchedule::parse("@hourly", "UTC").unwrap();
        assert_eq!(
            ticks(&hourly, "2025-01-01T00:00:00Z", 1),
            ["2025-01-01T01:00:00+00:00"]
        );
        let weekdays = CronSchedule::parse("0 9 * * MON-FRI", "UTC").unwrap();
        assert_eq!(
            ticks(&weekdays, "2025-01-03T10:00:00Z", 1), // a Friday
            ["2025-01-06T09:00:00+00:00"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * *",
            "@sometimes",
            "0 0 31 2 *",
        ] {
            assert!(CronSchedule::parse(bad, "UTC").is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err(),
            CronError::TimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn a_daily_tick_in_a_skipped_hour_fires_once_after_the_gap() {
        // Berlin springs forward on 2025-03-30: 02:00 CET becomes 03:00 CEST (01:00 UTC).
        let s = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            ticks(&s, "2025-03-29T12:00:00Z", 3),
            [
                "2025-03-30T01:00:00+00:00", // 03:00 CEST, the first instant after the gap
                "2025-03-31T00:30:00+00:00", // 02:30 CEST
                "2025-04-01T00:30:00+00:00",
            ]
        );
    }

    #[test]
    fn a_daily_tick_in_a_repeated_hour_fires_once() {
        // New York falls back on 2025-11-02: 01:00–02:00 EDT repeats as EST.
        let s = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        assert_eq!(
            ticks(&s, "2025-11-01T12:00:00Z", 2),
            [
                "2025-11-02T05:30:00+00:00", // 01:30 EDT, the first of the two
                "2025-11-03T06:30:00+00:00", // 01:30 EST
            ]
        );
        let berlin = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            ticks(&berlin, "2025-10-25T12:00:00Z", 2),
            ["2025-10-26T00:30:00+00:00", "2025-10-27T01:30:00+00:00"]
        );
    }

    #[test]
    fn an_hourly_schedule_keeps_real_hours_across_both_transitions() {
        let s = CronSchedule::parse("0 * * * *", "America/New_York").unwrap();
        let spring = ticks(&s, "2025-03-09T05:30:00Z", 3); // 00:30 EST
        assert_eq!(
            spring,
            [
                "2025-03-09T06:00:00+00:00", // 01:00 EST
                "2025-03-09T07:00:00+00:00", // 03:00 EDT: 02:00 does not exist
                "2025-03-09T08:00:00+00:00",
            ]
        );
        let fall = ticks(&s, "2025-11-02T04:30:00Z", 3); // 00:30 EDT
        assert_eq!(
            fall,
            [
                "2025-11-02T05:00:00+00:00", // 01:00 EDT
                "2025-11-02T06:00:00+00:00", // 01:00 EST
                "2025-11-02T07:00:00+00:00", // 02:00 EST
            ]
        );
    }

    #[test]
    fn the_latest_due_tick_stands_for_every_missed_one() {
        let s = CronSchedule::parse("*/10 * * * * *", "UTC").unwrap();
        let from = utc("2025-01-01T00:00:00Z");
        assert_eq!(
            s.latest_due(from, utc("2025-01-01T00:00:35.500Z")),
            Some((utc("2025-01-01T00:00:30Z"), 4))
        );
        assert_eq!(s.latest_due(from, from), Some((from, 1)));
        assert_eq!(
            s.latest_due(utc("2025-01-01T00:00:01Z"), utc("2025-01-01T00:00:09Z")),
            None
        );
    }
}

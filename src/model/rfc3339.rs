//! Timestamps as the API and the stores' JSON write them: RFC 3339 in UTC with `Z` and as
//! many fraction digits as the value needs (none, 3, 6 or 9) — chrono's own form, byte for
//! byte, written and read without `core::fmt` and chrono's general parser, which were more
//! than half the cost of serialising a run (a W10 run's view holds ~45 timestamps).
//! Values chrono writes differently (years outside 0–9999, leap seconds) and text in any
//! other RFC 3339 form go through chrono.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Room for `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LEN: usize = 30;

/// Writes `value` as `width` decimal digits at `at`, then `then`; the position after it.
#[inline(always)]
fn digits(buf: &mut [u8; LEN], at: usize, value: u32, width: u32, then: u8) -> usize {
    for i in 0..width {
        buf[at + i as usize] = b'0' + (value / 10u32.pow(width - 1 - i) % 10) as u8;
    }
    buf[at + width as usize] = then;
    at + width as usize + 1
}

/// Writes `t` as chrono would into `buf`; the length, or `None` where chrono must write it.
fn write(t: &DateTime<Utc>, buf: &mut [u8; LEN]) -> Option<usize> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut at = digits(buf, 0, year as u32, 4, b'-');
    at = digits(buf, at, t.month(), 2, b'-');
    at = digits(buf, at, t.day(), 2, b'T');
    at = digits(buf, at, t.hour(), 2, b':');
    at = digits(buf, at, t.minute(), 2, b':');
    Some(match nanos {
        0 => digits(buf, at, t.second(), 2, b'Z'),
        n => {
            at = digits(buf, at, t.second(), 2, b'.');
            match n {
                n if n % 1_000_000 == 0 => digits(buf, at, n / 1_000_000, 3, b'Z'),
                n if n % 1_000 == 0 => digits(buf, at, n / 1_000, 6, b'Z'),
                n => digits(buf, at, n, 9, b'Z'),
            }
        }
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, the form [`write`] produces; `None` for anything else.
fn read(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(20, b.len() - 1)? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    let time = date.and_hms_nano_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, nanos)?;
    Some(time.and_utc())
}

/// Serialises a timestamp (for `#[serde(with = "rfc3339")]`).
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0; LEN];
    match write(t, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
        Some(text) => s.serialize_str(text),
        None => serde::Serialize::serialize(t, s),
    }
}

/// Reads a timestamp in any RFC 3339 form chrono accepts, converted to UTC.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(TimeVisitor)
}

struct TimeVisitor;

impl Visitor<'_> for TimeVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an RFC 3339 date and time")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        if let Some(t) = read(text) {
            return Ok(t);
        }
        text.parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc))
            .map_err(E::custom)
    }
}

/// The same for `Option` fields (`#[serde(default, with = "rfc3339::option")]`).
pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Time(DateTime<Utc>);

    impl Serialize for Time {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(&self.0, s)
        }
    }

    impl<'de> Deserialize<'de> for Time {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::deserialize(d).map(Time)
        }
    }

    /// Serialises `Some` as a timestamp and `None` as null.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&Time(*t)),
            None => s.serialize_none(),
        }
    }

    /// Reads a timestamp or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Time>::deserialize(d)?.map(|t| t.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ours(t: &DateTime<Utc>) -> String {
        serialize(t, serde_json::value::Serializer)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn theirs(t: &DateTime<Utc>) -> String {
        serde_json::to_value(t)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn samples() -> Vec<DateTime<Utc>> {
        let mut out = vec![
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 1, 20, 30, 5).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 1_000).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 1).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 120_000_000).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 999_999_999).unwrap(),
            // A leap second, as chrono represents it.
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        // Milliseconds across several decades, from a fixed LCG.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let ms = (x >> 20) as i64 % 4_000_000_000_000;
            out.push(DateTime::from_timestamp_millis(ms).unwrap());
        }
        out
    }

    #[test]
    fn timestamps_are_written_byte_for_byte_as_chrono_writes_them() {
        for t in samples() {
            assert_eq!(ours(&t), theirs(&t), "{t:?}");
            // The fast path itself, not chrono behind it, writes every ordinary time.
            let ordinary = (0..=9999).contains(&t.year()) && t.nanosecond() < 1_000_000_000;
            let mut buf = [0; LEN];
            let written = write(&t, &mut buf).map(|n| buf[..n].to_vec());
            assert_eq!(written.is_some(), ordinary, "{t:?}");
            if let Some(bytes) = written {
                assert_eq!(bytes, theirs(&t).into_bytes(), "{t:?}");
            }
        }
    }

    #[test]
    fn what_is_written_reads_back_equal_and_other_forms_read_as_chrono_reads_them() {
        for t in samples() {
            let text = theirs(&t);
            let back: DateTime<Utc> = deserialize(serde_json::Value::String(text.clone())).unwrap();
            assert_eq!(back, t, "{text}");
            if (0..=9999).contains(&t.year()) && t.nanosecond() < 1_000_000_000 {
                assert_eq!(read(&text), Some(t), "the fast path reads {text}");
            }
        }
        for text in [
            "2026-12-01T20:30:05+02:00",
            "2026-12-01t20:30:05z",
            "2026-12-01T20:30:05.5Z",
            "2026-12-01T20:30:05.123456789123Z",
            "2026-12-01 20:30:05Z",
            "2026-02-30T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T20:30:05",
            "2026-12-01T20:30:60Z",
            "+2026-12-01T20:30:05Z",
            "２０２６-12-01T20:30:05Z",
            "",
        ] {
            let value = serde_json::Value::String(text.into());
            let ours = deserialize(value.clone()).map_err(|e| e.to_string());
            let theirs = serde_json::from_value::<DateTime<Utc>>(value).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    #[test]
    fn optional_timestamps_are_null_or_the_same_text() {
        let t = Utc.timestamp_opt(1_700_000_000, 5_000_000).unwrap();
        let some = option::serialize(&Some(t), serde_json::value::Serializer).unwrap();
        assert_eq!(some, serde_json::to_value(t).unwrap());
        let none = option::serialize(&None, serde_json::value::Serializer).unwrap();
        assert_eq!(none, serde_json::Value::Null);
        assert_eq!(option::deserialize(some).unwrap(), Some(t));
        assert_eq!(option::deserialize(none).unwrap(), None);
    }
}

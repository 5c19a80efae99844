//! The `triggers:` section: the schedule loop and what webhook deliveries keep.

use std::time::Duration;

use super::BadValue;
use super::raw::RawTriggers;

/// Cron schedules and webhook triggers (`triggers:`).
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSettings {
    /// The longest the schedule loop sleeps between looks at the store.
    pub poll_interval: Duration,
    /// A tick later than this is coalesced with later ones (only the latest fires).
    pub misfire_grace: Duration,
    /// Bytes of a webhook request's body kept with its run (cut and flagged beyond).
    pub request_bytes: usize,
}

impl TriggerSettings {
    pub(super) fn from_raw(raw: &RawTriggers) -> Result<Self, BadValue> {
        if raw.poll_interval < Duration::from_millis(10) {
            return Err(BadValue::new(
                "triggers.poll_interval",
                "must be at least 10ms",
            ));
        }
        if raw.misfire_grace < raw.poll_interval {
            return Err(BadValue::new(
                "triggers.misfire_grace",
                "must be at least triggers.poll_interval",
            ));
        }
        if raw.request_bytes < 1024 {
            return Err(BadValue::new(
                "triggers.request_bytes",
                "must be at least 1024",
            ));
        }
        Ok(Self {
            poll_interval: raw.poll_interval,
            misfire_grace: raw.misfire_grace,
            request_bytes: raw.request_bytes,
        })
    }
}

//! Retry decisions: whether a failed attempt is tried again, and after how long.
//!
//! Delays grow as `backoff_ms × multiplier^(n-1)` for the n-th retry, capped by
//! `max_backoff_ms`; full jitter draws uniformly from `[0, delay]`. A downstream's
//! `Retry-After` raises the delay to at least what it asked for, still capped by
//! `max_backoff_ms`. `deadline_ms` bounds the whole step: no retry starts past it.

use std::time::Duration;

use crate::definition::{RetryClass, RetryPolicy};
use crate::outbound::{Backoff, Failure, FailureKind, Jitter};

/// True when `policy` retries failures of this kind.
pub fn is_retryable(policy: &RetryPolicy, kind: FailureKind) -> bool {
    let default = [
        RetryClass::Status(408),
        RetryClass::Status(429),
        RetryClass::Server,
        RetryClass::Timeout,
        RetryClass::Network,
    ];
    let classes = policy.retry_on.as_deref().unwrap_or(&default);
    classes.iter().any(|class| match (class, kind) {
        (RetryClass::Server, FailureKind::Status(s)) => (500..600).contains(&s),
        (RetryClass::Client, FailureKind::Status(s)) => (400..500).contains(&s),
        (RetryClass::Status(c), FailureKind::Status(s)) => *c == s,
        (RetryClass::Timeout, FailureKind::Timeout) => true,
        (RetryClass::Network, FailureKind::Network) => true,
        _ => false,
    })
}

/// The backoff schedule of a step's `retry`.
pub fn schedule(policy: &RetryPolicy) -> Backoff {
    Backoff {
        initial: Duration::from_millis(policy.backoff_ms),
        multiplier: policy.multiplier,
        max: Duration::from_millis(policy.max_backoff_ms),
    }
}

/// Why a failed attempt is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The failure's class is not retried by the policy.
    NotRetryable,
    /// `max` retries are used up.
    Exhausted,
    /// The next attempt would start after `deadline_ms`.
    Deadline,
}

/// The delay before the next attempt after `attempts` attempts, the last of which failed
/// with `failure`, `elapsed` after the first attempt started; or why not to retry.
/// `jitter_unit` is a uniform draw from `[0, 1)`, used only with `jitter: true`.
pub fn next_delay(
    policy: &RetryPolicy,
    attempts: u32,
    failure: &Failure,
    elapsed: Duration,
    jitter_unit: f64,
) -> Result<Duration, GiveUp> {
    if !is_retryable(policy, failure.kind) {
        return Err(GiveUp::NotRetryable);
    }
    if attempts > policy.max {
        return Err(GiveUp::Exhausted);
    }
    let jitter = if policy.jitter {
        Jitter::Full
    } else {
        Jitter::None
    };
    let mut delay = schedule(policy).jittered(attempts, jitter, jitter_unit);
    if let Some(asked) = failure.retry_after {
        delay = delay
            .max(asked)
            .min(Duration::from_millis(policy.max_backoff_ms));
    }
    if let Some(deadline) = policy.deadline_ms
        && elapsed + delay >= Duration::from_millis(deadline)
    {
        return Err(GiveUp::Deadline);
    }
    Ok(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> RetryPolicy {
        RetryPolicy {
            max,
            backoff_ms: 100,
            multiplier: 2.0,
            max_backoff_ms: 1000,
            ..RetryPolicy::default()
        }
    }

    fn failure(kind: FailureKind) -> Failure {
        Failure {
            kind,
            message: "x".into(),
            http_code: None,
            retry_after: None,
            output: None,
        }
    }

    #[test]
    fn delays_grow_geometrically_up_to_the_cap() {
        let p = policy(10);
        let delays: Vec<u64> = (1..=6)
            .map(|n| schedule(&p).delay(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn max_counts_retries_after_the_first_attempt() {
        let p = policy(2);
        let f = failure(FailureKind::Status(503));
        assert!(next_delay(&p, 1, &f, Duration::ZERO, 0.0).is_ok());
        assert!(next_delay(&p, 2, &f, Duration::ZERO, 0.0).is_ok());
        assert_eq!(
            next_delay(&p, 3, &f, Duration::ZERO, 0.0),
            Err(GiveUp::Exhausted)
        );
    }

    #[test]
    fn client_errors_fail_at_once_but_408_and_429_retry() {
        let p = policy(3);
        for (code, retried) in [
            (400, false),
            (404, false),
            (408, true),
            (429, true),
            (500, true),
            (503, true),
        ] {
            let r = next_delay(
                &p,
                1,
                &failure(FailureKind::Status(code)),
                Duration::ZERO,
                0.0,
            );
            assert_eq!(r.is_ok(), retried, "{code}");
        }
        assert!(next_delay(&p, 1, &failure(FailureKind::Timeout), Duration::ZERO, 0.0).is_ok());
        assert!(next_delay(&p, 1, &failure(FailureKind::Network), Duration::ZERO, 0.0).is_ok());
        assert_eq!(
            next_delay(&p, 1, &failure(FailureKind::Rejected), Duration::ZERO, 0.0),
            Err(GiveUp::NotRetryable)
        );
    }

    #[test]
    fn retry_on_replaces_the_default_classes() {
        let mut p = policy(3);
        p.retry_on = Some(vec![RetryClass::Status(404), RetryClass::Timeout]);
        assert!(is_retryable(&p, FailureKind::Status(404)));
        assert!(!is_retryable(&p, FailureKind::Status(503)));
        assert!(!is_retryable(&p, FailureKind::Network));
    }

    #[test]
    fn retry_after_raises_the_delay_but_never_past_the_cap() {
        let p = policy(3);
        let mut f = failure(FailureKind::Status(429));
        f.retry_after = Some(Duration::from_millis(700));
        assert_eq!(
            next_delay(&p, 1, &f, Duration::ZERO, 0.0),
            Ok(Duration::from_millis(700))
        );
        f.retry_after = Some(Duration::from_secs(30));
        assert_eq!(
            next_delay(&p, 1, &f, Duration::ZERO, 0.0),
            Ok(Duration::from_millis(1000))
        );
    }

    #[test]
    fn full_jitter_scales_the_delay() {
        let mut p = policy(3);
        p.jitter = true;
        let f = failure(FailureKind::Timeout);
        assert_eq!(
            next_delay(&p, 2, &f, Duration::ZERO, 0.5),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(
            next_delay(&p, 2, &f, Duration::ZERO, 0.0),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn no_retry_starts_past_the_deadline() {
        let mut p = policy(10);
        p.deadline_ms = Some(250);
        let f = failure(FailureKind::Status(500));
        assert!(next_delay(&p, 1, &f, Duration::from_millis(100), 0.0).is_ok());
        assert_eq!(
            next_delay(&p, 2, &f, Duration::from_millis(100), 0.0),
            Err(GiveUp::Deadline)
        );
    }
}

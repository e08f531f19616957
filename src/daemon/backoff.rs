//! Exponential back-off with one log line per distinct error: what the
//! controller (reconcile, saving) and the runner (sockets) do with a failure
//! that may last. Pure: `now` is passed in.

use std::time::{Duration, Instant};

/// First retry after a failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Retries never wait longer than this.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// The failure state of one repeated operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive failures.
    pub failures: u32,
    /// The last error, as logged.
    pub error: Option<String>,
    /// When to try again (`None` while healthy).
    pub retry_at: Option<Instant>,
}

/// What the caller should log after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A different error from the last one: log it (at error level).
    New,
    /// The same error again: log it at debug level only.
    Repeated,
}

/// Delay before the retry that follows `failures` consecutive failures:
/// 1 s, 2 s, 4 s, ... up to 60 s.
pub fn delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << exp).min(MAX_RETRY)
}

impl Backoff {
    /// Record a failure at `now`; the next try is due after the back-off.
    pub fn failed(&mut self, now: Instant, error: String) -> Report {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + delay(self.failures));
        let report = if self.error.as_deref() == Some(error.as_str()) {
            Report::Repeated
        } else {
            Report::New
        };
        self.error = Some(error);
        report
    }

    /// Record a success; returns the failures it ends (0 if it was healthy).
    pub fn succeeded(&mut self) -> u32 {
        let n = self.failures;
        *self = Backoff::default();
        n
    }

    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }

    /// The current delay, for logs and status.
    pub fn current_delay(&self) -> Duration {
        delay(self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_to_a_minute() {
        let got: Vec<u64> = (1..=9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(delay(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn reports_each_distinct_error_once() {
        let t = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.failed(t, "a".into()), Report::New);
        assert_eq!(b.failed(t, "a".into()), Report::Repeated);
        assert_eq!(b.failed(t, "b".into()), Report::New);
        assert_eq!(b.retry_at, Some(t + Duration::from_secs(4)));
        assert_eq!(b.succeeded(), 3);
        assert!(!b.is_failing());
        assert_eq!(b.failed(t, "b".into()), Report::New);
    }
}

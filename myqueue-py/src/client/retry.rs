//! The client's one retry policy: exponential backoff with jitter (backon's), for every loop
//! that retries a request (delivery of a batch, prefetching). The jitter spreads out the
//! clients that lost the same broker, so they do not all come back in the same millisecond.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// The first wait, before jitter.
const FIRST_WAIT: Duration = Duration::from_millis(50);
/// The longest wait before jitter. Jitter adds up to as much again, so no wait is longer than
/// 2 s: a broker that is back is noticed within about 2 s.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

const POLICY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(FIRST_WAIT)
    .with_max_delay(LONGEST_WAIT)
    .with_factor(2.0)
    .with_jitter()
    // Callers stop on their own deadline (or never: a consumer waits for its broker).
    .without_max_times();

/// The waits between the attempts of one operation: 50 ms, 100 ms, 200 ms, … up to 1 s, each
/// plus up to as much again of jitter. Start a new one when the operation succeeded.
pub struct Backoff(ExponentialBackoff);

impl Backoff {
    pub fn new() -> Self {
        Backoff(POLICY.build())
    }

    /// How long to wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        // The policy has no end; the fallback only keeps this total.
        self.0.next().unwrap_or(LONGEST_WAIT * 2)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_from_50_ms_and_never_pass_2_s() {
        let mut backoff = Backoff::new();
        // backon multiplies in f32: allow a microsecond of rounding.
        let about = |wait: Duration, low: Duration| {
            let micro = Duration::from_micros(1);
            wait + micro >= low && wait <= low * 2 + micro
        };
        let first = backoff.next_wait();
        assert!(about(first, FIRST_WAIT), "{first:?}");
        let second = backoff.next_wait();
        assert!(about(second, FIRST_WAIT * 2), "{second:?}");
        // 200 ms, 400 ms, 800 ms, then capped.
        for low in [4, 8, 16].map(|n| FIRST_WAIT * n) {
            let wait = backoff.next_wait();
            assert!(about(wait, low), "{wait:?}");
        }
        for _ in 0..1000 {
            let wait = backoff.next_wait();
            assert!(wait >= LONGEST_WAIT && wait <= LONGEST_WAIT * 2, "{wait:?}");
        }
    }
}

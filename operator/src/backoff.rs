//! Per-object exponential backoff for the operator's controllers.
//!
//! kube's `Controller` calls `error_policy` only on failure and has no per-object backoff of its
//! own (kube-rs/kube#1916), so each controller keeps a [`Backoff`] in its context.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;

/// The first retry delay after a failed reconcile.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// The longest retry delay after repeated failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// Per-object exponential backoff: the delay doubles with each consecutive failure of the same
/// object, from `initial` up to `max`, and a success forgets the object.
///
/// An object that keeps failing is retried at least every `max`, so an entry untouched for
/// twice that belongs to an object nobody retries any more (deleted while failing): entries
/// that old are dropped at the next failure of any object, so the map stays bounded by the
/// objects failing now.
///
/// kube's `Controller` calls `error_policy` only on failure and has no per-object backoff of
/// its own (kube-rs/kube#1916), so the count lives here.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: &str) -> Duration {
        self.failed_at(key, Instant::now())
    }

    fn failed_at(&self, key: &str, now: Instant) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = self.max.saturating_mul(2);
        failures.retain(|_, (_, last)| now.saturating_duration_since(*last) <= stale);
        let entry = failures.entry(key.to_string()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        delay_after(entry.0, self.initial, self.max)
    }

    /// Objects with a failure on record.
    pub fn tracked(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Records a success of `key`: its next failure waits `initial` again.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// A controller's `error_policy`: records a failed reconcile of `key` (an object of
    /// `kind`), logs it with the retry delay, and requeues the object after that delay.
    pub fn requeue_failed(
        &self,
        kind: &'static str,
        key: &str,
        error: &dyn std::fmt::Display,
    ) -> Action {
        let delay = self.failed(key);
        tracing::warn!(
            kind,
            object = %key,
            %error,
            failures = self.failures(key),
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "reconcile failed"
        );
        Action::requeue(delay)
    }

    /// Consecutive failures of `key`.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map_or(0, |(count, _)| *count)
    }
}

/// The delay after the `failures`-th consecutive failure: `initial * 2^(failures - 1)`, at most
/// `max`.
fn delay_after(failures: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    initial.saturating_mul(1u32 << exponent).min(max)
}

/// `namespace/name`: how the controllers key objects in logs and in their backoff.
pub(crate) fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_objects_no_longer_retried_are_dropped() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let start = Instant::now();
        backoff.failed_at("db/deleted", start);
        backoff.failed_at("db/failing", start);
        // The failing object is retried every 300 s at most; the deleted one never again.
        let later = start + Duration::from_secs(400);
        backoff.failed_at("db/failing", later);
        assert_eq!(backoff.tracked(), 2, "within twice the cap both are kept");
        let much_later = later + Duration::from_secs(300);
        backoff.failed_at("db/failing", much_later);
        assert_eq!(backoff.failures("db/deleted"), 0, "stale entry dropped");
        assert_eq!(backoff.failures("db/failing"), 3);
        assert_eq!(backoff.tracked(), 1);
    }

    #[test]
    fn backoff_doubles_per_object_up_to_the_cap_and_resets_on_success() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let delays: Vec<u64> = (0..11).map(|_| backoff.failed("db/a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff.failed("db/b"), Duration::from_secs(1), "per object");
        backoff.succeeded("db/a");
        assert_eq!(backoff.failures("db/a"), 0);
        assert_eq!(backoff.failed("db/a"), Duration::from_secs(1));
        assert_eq!(
            delay_after(u32::MAX, BACKOFF_INITIAL, BACKOFF_MAX),
            BACKOFF_MAX
        );
    }
}

//! Metrics for operators (feature `metrics`), through the [`metrics`](https://docs.rs/metrics)
//! facade: install any recorder (Prometheus, StatsD, ...) and memsem reports to it.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `memsem_acquisitions_total` | counter | | permits taken (`try_acquire`, `wait_acquire`, `lock_or_wait`) |
//! | `memsem_contended_total` | counter | | acquire attempts that found every permit held |
//! | `memsem_wait_seconds` | histogram | `outcome` = `acquired` \| `timeout` | how long `wait_acquire` waited |
//! | `memsem_wait_timeouts_total` | counter | | waits that gave up after `max_wait` |
//! | `memsem_lost_total` | counter | `reason` = `missing` \| `held_by_other` \| `expired` \| `restarted` | permits found lost (refresh, release, keep-alive) |
//!
//! The label sets are bounded. Lock names are not labels unless you opt in with
//! [`label_lock_names`] — do so only when the names are a small fixed set, since every name
//! becomes a time series.
//!
//! # Examples
//!
//! ```
//! // With a recorder installed (e.g. metrics-exporter-prometheus), and a few fixed lock
//! // names worth a series each:
//! # #[cfg(feature = "metrics")]
//! memsem::metrics::label_lock_names(true);
//! ```

#[cfg(feature = "metrics")]
pub use record::label_lock_names;
pub(crate) use record::{acquired, contended, lost, waited};

#[cfg(feature = "metrics")]
mod record {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use crate::error::LostReason;

    static LOCK_NAMES: AtomicBool = AtomicBool::new(false);

    /// Adds a `lock` label (the lock name) to every memsem metric from now on, process-wide.
    /// Off by default: turn it on only for a small, fixed set of names.
    ///
    /// # Examples
    ///
    /// ```
    /// memsem::metrics::label_lock_names(true);
    /// # memsem::metrics::label_lock_names(false);
    /// ```
    pub fn label_lock_names(on: bool) {
        LOCK_NAMES.store(on, Ordering::Relaxed);
    }

    /// The labels of a metric about `lock`, beside `extra`.
    fn labels(lock: &str, extra: Option<(&'static str, &'static str)>) -> Vec<::metrics::Label> {
        let mut labels = Vec::new();
        if let Some((key, value)) = extra {
            labels.push(::metrics::Label::new(key, value));
        }
        if LOCK_NAMES.load(Ordering::Relaxed) {
            labels.push(::metrics::Label::new("lock", lock.to_string()));
        }
        labels
    }

    /// A permit of `lock` was taken.
    pub(crate) fn acquired(lock: &str) {
        ::metrics::counter!("memsem_acquisitions_total", labels(lock, None)).increment(1);
    }

    /// An attempt on `lock` found every permit held.
    pub(crate) fn contended(lock: &str) {
        ::metrics::counter!("memsem_contended_total", labels(lock, None)).increment(1);
    }

    /// A wait on `lock` ended after `waited`: with a permit, or timed out.
    pub(crate) fn waited(lock: &str, waited: Duration, got_it: bool) {
        let outcome = if got_it { "acquired" } else { "timeout" };
        ::metrics::histogram!(
            "memsem_wait_seconds",
            labels(lock, Some(("outcome", outcome)))
        )
        .record(waited.as_secs_f64());
        if !got_it {
            ::metrics::counter!("memsem_wait_timeouts_total", labels(lock, None)).increment(1);
        }
    }

    /// A permit of `lock` was found lost.
    pub(crate) fn lost(lock: &str, reason: LostReason) {
        let reason = match reason {
            LostReason::Missing => "missing",
            LostReason::HeldByOther => "held_by_other",
            LostReason::Expired => "expired",
            LostReason::Restarted => "restarted",
        };
        ::metrics::counter!("memsem_lost_total", labels(lock, Some(("reason", reason))))
            .increment(1);
    }
}

/// Without the `metrics` feature: nothing is recorded.
#[cfg(not(feature = "metrics"))]
mod record {
    use std::time::Duration;

    use crate::error::LostReason;

    pub(crate) fn acquired(_lock: &str) {}
    pub(crate) fn contended(_lock: &str) {}
    pub(crate) fn waited(_lock: &str, _waited: Duration, _got_it: bool) {}
    pub(crate) fn lost(_lock: &str, _reason: LostReason) {}
}

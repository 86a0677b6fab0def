//! [`WaitPolicy`]: how long and how often to retry, and the delays it yields.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// How long and how often to retry a lock that somebody else holds.
///
/// The delay before retry *n* is `poll_time × backoff_factorⁿ`, capped at `max_delay`, then
/// spread by `jitter`: multiplied by a uniform random factor in `[1 − jitter, 1 + jitter]`,
/// so that waiters that started together do not poll together. The last sleep is cut short so
/// that one final attempt happens when `max_wait` runs out.
///
/// # Default
///
/// | setting | default | note |
/// |---|---|---|
/// | `max_wait` | none: wait forever | like the Perl module; set one for anything interactive |
/// | `poll_time` | 100 ms | the Perl module's `poll_time` default (0.1 s) |
/// | `jitter` | 0.5 | delays uniform in 50–150 ms |
/// | `backoff_factor` | 1.0 | no backoff |
/// | `max_delay` | 1 s | the cap when a backoff factor is set |
/// | `steal_after_wait` | false | never take a lock by force |
/// | `seed` | none | jitter from the operating system's randomness |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use memsem::WaitPolicy;
///
/// let policy = WaitPolicy::new()
///     .max_wait(Duration::from_secs(30))
///     .poll_time(Duration::from_millis(50))
///     .backoff(2.0, Duration::from_millis(800))
///     .jitter(0.0);
/// let first: Vec<Duration> = policy.delays().take(6).collect();
/// let ms = |n| Duration::from_millis(n);
/// assert_eq!(first, [ms(50), ms(100), ms(200), ms(400), ms(800), ms(800)]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WaitPolicy {
    pub(super) max_wait: Option<Duration>,
    pub(super) poll_time: Duration,
    jitter: f64,
    backoff_factor: f32,
    max_delay: Duration,
    steal_after_wait: bool,
    seed: Option<u64>,
}

impl Default for WaitPolicy {
    fn default() -> WaitPolicy {
        WaitPolicy {
            max_wait: None,
            poll_time: Duration::from_millis(100),
            jitter: 0.5,
            backoff_factor: 1.0,
            max_delay: Duration::from_secs(1),
            steal_after_wait: false,
            seed: None,
        }
    }
}

impl WaitPolicy {
    /// The default policy (see [`# Default`](WaitPolicy#default)).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::WaitPolicy;
    ///
    /// assert_eq!(WaitPolicy::new(), WaitPolicy::default());
    /// assert_eq!(WaitPolicy::new().wait_limit(), None);
    /// ```
    pub fn new() -> WaitPolicy {
        WaitPolicy::default()
    }

    /// Give up after this long (wall clock), with [`Error::Timeout`](crate::Error::Timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::WaitPolicy;
    ///
    /// let policy = WaitPolicy::new().max_wait(Duration::from_secs(10));
    /// assert_eq!(policy.wait_limit(), Some(Duration::from_secs(10)));
    /// ```
    pub fn max_wait(mut self, max_wait: Duration) -> WaitPolicy {
        self.max_wait = Some(max_wait);
        self
    }

    /// Wait until the lock is acquired, however long that takes (the default).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::WaitPolicy;
    ///
    /// let policy = WaitPolicy::new().max_wait(Duration::from_secs(1)).wait_forever();
    /// assert_eq!(policy.wait_limit(), None);
    /// ```
    pub fn wait_forever(mut self) -> WaitPolicy {
        self.max_wait = None;
        self
    }

    /// The base delay between attempts. Zero makes a tight loop (what the Perl module
    /// effectively does): only for benchmarks.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::WaitPolicy;
    ///
    /// let policy = WaitPolicy::new().poll_time(Duration::from_millis(20)).jitter(0.0);
    /// assert_eq!(policy.delays().next(), Some(Duration::from_millis(20)));
    /// ```
    pub fn poll_time(mut self, poll_time: Duration) -> WaitPolicy {
        self.poll_time = poll_time;
        self
    }

    /// Spread each delay uniformly by ± this fraction (clamped to 0.0–1.0; NaN means 0).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::WaitPolicy;
    ///
    /// let policy = WaitPolicy::new().poll_time(Duration::from_millis(100)).jitter(0.2).seed(7);
    /// for delay in policy.delays().take(100) {
    ///     assert!(delay >= Duration::from_millis(80) && delay <= Duration::from_millis(120));
    /// }
    /// ```
    pub fn jitter(mut self, jitter: f64) -> WaitPolicy {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// Multiply the delay by `factor` after every attempt, up to `max_delay`. A factor at or
    /// below 1.0 (or NaN) means no backoff.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::WaitPolicy;
    ///
    /// let policy = WaitPolicy::new()
    ///     .poll_time(Duration::from_millis(100))
    ///     .backoff(1.5, Duration::from_millis(200))
    ///     .jitter(0.0);
    /// let delays: Vec<u128> = policy.delays().take(4).map(|d| d.as_millis()).collect();
    /// assert_eq!(delays, [100, 150, 200, 200]);
    /// ```
    pub fn backoff(mut self, factor: f32, max_delay: Duration) -> WaitPolicy {
        self.backoff_factor = if factor.is_nan() {
            1.0
        } else {
            factor.max(1.0)
        };
        self.max_delay = max_delay;
        self
    }

    /// Seed the jitter, for reproducible delay sequences (tests, benchmarks).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::WaitPolicy;
    ///
    /// let a: Vec<_> = WaitPolicy::new().seed(1).delays().take(5).collect();
    /// let b: Vec<_> = WaitPolicy::new().seed(1).delays().take(5).collect();
    /// assert_eq!(a, b);
    /// ```
    pub fn seed(mut self, seed: u64) -> WaitPolicy {
        self.seed = Some(seed);
        self
    }

    /// **Unsafe for mutual exclusion.** When `max_wait` runs out, take the lock by force
    /// (overwrite the holder's key with this process's token) instead of failing — the Perl
    /// module's `force_after_timeout`. The previous holder still believes it holds the lock
    /// until its next refresh or release reports [`Error::LockLost`](crate::Error::LockLost); both run at once in the
    /// meantime. Use it only where a stuck lock is worse than two holders. Has no effect
    /// without `max_wait`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::WaitPolicy;
    ///
    /// let policy = WaitPolicy::new().max_wait(Duration::from_secs(60)).steal_after_wait(true);
    /// assert!(policy.steals_after_wait());
    /// ```
    pub fn steal_after_wait(mut self, steal: bool) -> WaitPolicy {
        self.steal_after_wait = steal;
        self
    }

    /// The configured `max_wait` (the longest wait), `None` for forever.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::WaitPolicy;
    ///
    /// assert_eq!(WaitPolicy::default().wait_limit(), None);
    /// ```
    pub fn wait_limit(&self) -> Option<Duration> {
        self.max_wait
    }

    /// Whether the policy steals the lock after `max_wait`.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::WaitPolicy;
    ///
    /// assert!(!WaitPolicy::default().steals_after_wait());
    /// ```
    pub fn steals_after_wait(&self) -> bool {
        self.steal_after_wait
    }

    /// The old name of [`wait_limit`](Self::wait_limit).
    #[deprecated(since = "0.1.0", note = "use `wait_limit` (no `get_` prefix)")]
    pub fn get_max_wait(&self) -> Option<Duration> {
        self.wait_limit()
    }

    /// The old name of [`steals_after_wait`](Self::steals_after_wait).
    #[deprecated(since = "0.1.0", note = "use `steals_after_wait` (no `get_` prefix)")]
    pub fn get_steal_after_wait(&self) -> bool {
        self.steals_after_wait()
    }

    /// The endless sequence of delays between attempts, jitter included.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::WaitPolicy;
    ///
    /// let fixed = WaitPolicy::new().poll_time(Duration::from_millis(250)).jitter(0.0);
    /// assert!(fixed.delays().take(3).all(|d| d == Duration::from_millis(250)));
    /// ```
    pub fn delays(&self) -> Delays {
        let max_delay = self.max_delay.max(self.poll_time);
        let base = ExponentialBuilder::default()
            .with_min_delay(self.poll_time)
            .with_factor(self.backoff_factor)
            .with_max_delay(max_delay)
            .without_max_times()
            .build();
        let rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        Delays {
            base,
            jitter: self.jitter,
            rng,
        }
    }
}

/// The delays of a [`WaitPolicy`], from [`WaitPolicy::delays`]. Never ends.
///
/// # Examples
///
/// ```
/// use memsem::WaitPolicy;
///
/// let mut delays = WaitPolicy::new().delays();
/// assert!(delays.next().is_some());
/// ```
#[derive(Debug)]
pub struct Delays {
    base: backon::ExponentialBackoff,
    jitter: f64,
    rng: StdRng,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // backon computes in f32 seconds; round to whole microseconds so that a
        // 40 ms step is 40 ms, not 39.999999 ms.
        let raw = self.base.next().unwrap_or(Duration::ZERO);
        let base = Duration::from_micros((raw.as_secs_f64() * 1e6).round() as u64);
        if self.jitter == 0.0 {
            return Some(base);
        }
        let spread = 1.0 - self.jitter + 2.0 * self.jitter * self.rng.random::<f64>();
        Some(Duration::try_from_secs_f64(base.as_secs_f64() * spread).unwrap_or(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let policy = WaitPolicy::new()
            .poll_time(ms(10))
            .backoff(2.0, ms(50))
            .jitter(0.0);
        let delays: Vec<_> = policy.delays().take(6).collect();
        assert_eq!(delays, [ms(10), ms(20), ms(40), ms(50), ms(50), ms(50)]);
    }

    #[test]
    fn jitter_stays_in_bounds_and_varies() {
        let policy = WaitPolicy::new().poll_time(ms(100)).jitter(0.5).seed(42);
        let delays: Vec<_> = policy.delays().take(1000).collect();
        assert!(delays.iter().all(|d| *d >= ms(50) && *d <= ms(150)));
        let low = delays.iter().filter(|d| **d < ms(100)).count();
        assert!(
            (350..650).contains(&low),
            "jitter is lopsided: {low} of 1000 below the mean"
        );
        let same_seed: Vec<_> = policy.delays().take(1000).collect();
        assert_eq!(delays, same_seed);
    }

    #[test]
    fn cap_below_poll_time_keeps_poll_time() {
        let policy = WaitPolicy::new()
            .poll_time(ms(100))
            .backoff(2.0, ms(10))
            .jitter(0.0);
        assert!(policy.delays().take(3).all(|d| d == ms(100)));
    }

    #[test]
    fn absurd_inputs_are_tamed() {
        let policy = WaitPolicy::new().jitter(f64::NAN).backoff(f32::NAN, ms(1));
        assert_eq!(policy.jitter, 0.0);
        assert_eq!(policy.backoff_factor, 1.0);
        assert_eq!(WaitPolicy::new().jitter(7.0).jitter, 1.0);
    }
}

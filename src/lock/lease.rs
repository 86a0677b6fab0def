//! The client's view of a lease: when it surely still runs on the server, and how often a
//! keep-alive refreshes it.
//!
//! A lease of `ttl` is counted from just before its request (acquire or refresh) was sent,
//! by this process's monotonic clock, so the server's lease (which starts when the request
//! arrives) never ends before the client's count does — up to two things the client cannot
//! see: memcached's clock ticks in whole seconds (an item can expire up to 1 s early), and
//! the two machines' clocks may run at slightly different rates. [`lease_margin`] covers
//! both: 1 s plus 1% of the lease (far above the drift of an NTP-disciplined clock, at most
//! 500 ppm). The keep-alive reports the lease lost when no refresh has been confirmed by
//! `deadline − margin`.

use std::time::Duration;

/// The longest lease a client grants by default (see
/// [`ClientBuilder::max_lease`](crate::ClientBuilder::max_lease)).
pub const DEFAULT_MAX_LEASE: Duration = Duration::from_secs(300);

pub(crate) use crate::fleet::Leases;

/// A duration from the environment: a whole number with a unit (`500ms`, `30s`, `5m`,
/// `1h`), or bare seconds (`0`, `90`).
pub(crate) fn env_duration(variable: &str, text: &str) -> crate::error::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => Some(Duration::from_millis(1)),
        "" | "s" => Some(Duration::from_secs(1)),
        "m" => Some(Duration::from_secs(60)),
        "h" => Some(Duration::from_secs(3600)),
        _ => None,
    };
    match (number.parse::<u32>(), scale) {
        (Ok(number), Some(scale)) => scale.checked_mul(number).ok_or_else(|| {
            crate::error::Error::InvalidConfig(format!("{variable}={text:?} is too long"))
        }),
        _ => Err(crate::error::Error::InvalidConfig(format!(
            "{variable}={text:?}: expected a duration like 0, 30s, 5m or 500ms"
        ))),
    }
}

/// How long before the client-side end of a lease of `ttl` a holder must consider it lost:
/// 1 s for memcached's whole-second clock, plus 1% of the lease for the rate drift between
/// the client's and the server's clocks.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// assert_eq!(memsem::lease_margin(Duration::from_secs(60)), Duration::from_millis(1600));
/// ```
pub fn lease_margin(ttl: Duration) -> Duration {
    Duration::from_secs(1) + ttl / 100
}

/// How often a keep-alive refreshes a lease of `ttl` whose loss is reported `margin` before
/// its end: every third of the lease, and at least twice before `ttl − margin`.
pub(crate) fn refresh_interval(ttl: Duration, margin: Duration) -> Duration {
    let sure = ttl.saturating_sub(margin);
    (ttl / 3).min(sure / 2).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_environment() {
        let secs = Duration::from_secs;
        assert_eq!(env_duration("X", "0").unwrap(), Duration::ZERO);
        assert_eq!(env_duration("X", "90").unwrap(), secs(90));
        assert_eq!(env_duration("X", " 5m ").unwrap(), secs(300));
        assert_eq!(
            env_duration("X", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(env_duration("X", "1h").unwrap(), secs(3600));
        for bad in ["", "m", "5 m", "-1s", "1.5s", "5d", "99999999999s"] {
            assert!(env_duration("X", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_leases_are_refreshed_twice_before_the_margin() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        assert_eq!(refresh_interval(secs(2), lease_margin(secs(2))), ms(490));
        assert_eq!(
            refresh_interval(secs(60), lease_margin(secs(60))),
            ms(20_000)
        );
        assert_eq!(refresh_interval(secs(1), lease_margin(secs(1))), ms(100));
        // A command that needs 3 s to stop, under a 10 s lease.
        assert_eq!(
            refresh_interval(secs(10), lease_margin(secs(10)) + secs(3)),
            ms(2_950)
        );
    }
}

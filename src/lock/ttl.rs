//! The TTL rule: leases in memcached's whole seconds, within 30 days and `max_lease`.

use std::time::Duration;

use crate::error::{Error, Result};

/// The default lease: a holder that dies without releasing blocks others at most this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// memcached reads an expiry above 30 days as a Unix date.
pub(crate) const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// A lease in whole seconds (rounded up): at least 1 s, at most `max_lease`.
pub(crate) fn lease_seconds(ttl: Duration, max_lease: Duration) -> Result<u32> {
    let secs = whole_seconds(ttl, "the TTL")?;
    if u64::from(secs) > max_lease.as_secs().max(1) {
        return Err(Error::InvalidConfig(format!(
            "a TTL of {secs} s is above the longest lease ({} s, max_lease): keep the lease \
             short and refresh it, or raise max_lease (and the lock-delay with it)",
            max_lease.as_secs()
        )));
    }
    Ok(secs)
}

/// Converts a duration to memcached's whole seconds (rounding up), or says why it cannot be one.
pub(crate) fn whole_seconds(duration: Duration, what: &str) -> Result<u32> {
    if duration.is_zero() {
        return Err(Error::InvalidConfig(format!(
            "{what} must be at least 1 s, not 0"
        )));
    }
    let secs = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    if secs > MAX_TTL_SECS {
        return Err(Error::InvalidConfig(format!(
            "{what} of {secs} s is above 30 days, which memcached would read as a date"
        )));
    }
    Ok(secs as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_rounds_up_and_rejects_what_memcached_would_misread() {
        assert_eq!(
            whole_seconds(Duration::from_millis(1500), "ttl").unwrap(),
            2
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(30 * 24 * 3600), "ttl").unwrap(),
            2_592_000
        );
        for bad in [
            Duration::ZERO,
            Duration::from_secs(30 * 24 * 3600 + 1),
            Duration::MAX,
        ] {
            assert!(
                matches!(whole_seconds(bad, "ttl"), Err(Error::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }
}

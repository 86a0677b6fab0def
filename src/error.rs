//! The one error type of memsem, and what a caller should do about each variant.

use std::time::Duration;

/// A boxed underlying cause (an I/O error, a server reply), kept opaque so that memsem's
/// public API does not expose the memcached client it is built on.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result<T, memsem::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in memsem.
///
/// Each error's message says what happened once; the underlying cause (an I/O error, the last
/// server error of a wait) is not repeated in it but returned by
/// [`source()`](std::error::Error::source), so that printing the chain (as `anyhow`'s
/// `{:#}` or the `memsem` tool do) shows every cause once.
///
/// Contention is not an error: [`Semaphore::try_acquire`](crate::Semaphore::try_acquire)
/// answers `Ok(None)` when somebody else holds the lock. The variants say what to do next:
///
/// | variant | what to do |
/// |---|---|
/// | [`InvalidName`](Error::InvalidName), [`InvalidConfig`](Error::InvalidConfig) | fix the program or its configuration |
/// | [`Unavailable`](Error::Unavailable), [`Timeout`](Error::Timeout) | retry later ([`is_retryable`](Error::is_retryable)) |
/// | [`Ambiguous`](Error::Ambiguous) | a write was sent but never answered; memsem could not find out whether it landed |
/// | [`LockLost`](Error::LockLost) | accept: the lease expired or another holder has it now; stop the protected work |
/// | [`Protocol`](Error::Protocol) | the server sent something memsem does not understand; check what listens there |
/// | [`Refused`](Error::Refused) | the server cannot be used this way (no meta protocol, authentication, TLS, not a memcached): fix the configuration; never retried |
/// | [`LockDelay`](Error::LockDelay) | the server restarted recently and grants no lock yet: retry after `remaining` ([`wait_acquire`](crate::Semaphore::wait_acquire) waits through it) |
///
/// # Examples
///
/// ```
/// use memsem::Error;
///
/// let error = Error::InvalidConfig("no servers given".into());
/// assert!(!error.is_retryable());
/// assert_eq!(error.to_string(), "invalid configuration: no servers given");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock name (or namespace) cannot be used as a memcached key.
    #[error("invalid lock name {name:?}: {reason}")]
    InvalidName {
        /// The name as given (lossily shown as UTF-8).
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The client or a policy was configured with a value memsem cannot use.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The server that owns the lock could not be reached or did not answer in time;
    /// nothing was changed on it.
    #[error("memcached server {server} is unavailable")]
    Unavailable {
        /// The server as configured (`host:port`).
        server: String,
        /// The I/O error or timeout behind it.
        #[source]
        source: Cause,
    },

    /// A write was sent but its reply never came, and reading the key back failed too, so
    /// memsem cannot tell whether it was applied. memsem keeps trying to clean up in the
    /// background (a lock left with this process's token is deleted once the server
    /// answers); at worst the lock's TTL ends it.
    #[error("outcome of {operation} on memcached server {server} is unknown")]
    Ambiguous {
        /// The server as configured (`host:port`).
        server: String,
        /// What was sent: `acquire`, `release`, `refresh` or `cooldown`.
        operation: &'static str,
        /// The failure that cut the exchange short.
        #[source]
        source: Cause,
    },

    /// The permit is no longer held: its lease expired (or was evicted) and the key is gone
    /// or belongs to another holder. Another holder's lock is never touched.
    #[error("lock {name:?} was lost: {reason}")]
    LockLost {
        /// The lock name.
        name: String,
        /// What was found on the server.
        reason: LostReason,
    },

    /// [`wait_acquire`](crate::Semaphore::wait_acquire) gave up after `max_wait`.
    #[error("gave up waiting for lock {name:?} after {} ({attempts} attempts)", Human(*.waited))]
    Timeout {
        /// The lock name.
        name: String,
        /// How long it waited, by the wall clock.
        waited: Duration,
        /// How many acquire attempts it made.
        attempts: u32,
        /// The last server error seen while waiting, if any attempt failed.
        #[source]
        last_error: Option<Box<Error>>,
    },

    /// A [`QuorumLock`](crate::QuorumLock) could not reach enough servers to decide: fewer
    /// than a majority answered. Nothing is held.
    #[error(
        "lock {name:?} needs {needed} of {voters} memcached servers, but only {reachable} answered"
    )]
    NoQuorum {
        /// The lock name.
        name: String,
        /// How many servers answered.
        reachable: usize,
        /// How many are needed (a majority).
        needed: usize,
        /// How many servers vote.
        voters: usize,
    },

    /// The server answered with something that is not a valid reply.
    #[error("unexpected reply from memcached server {server}: {detail}")]
    Protocol {
        /// The server as configured (`host:port`).
        server: String,
        /// What was wrong with the reply.
        detail: String,
    },

    /// The server cannot be used the way memsem was configured to use it: it does not
    /// speak the meta protocol, wants authentication, expects TLS, or is not a memcached.
    /// Nothing was written to it. Not retryable: [`wait_acquire`](crate::Semaphore::wait_acquire)
    /// stops at once.
    #[error("memcached server {server} refused: {reason}")]
    Refused {
        /// The server as configured (`host:port`).
        server: String,
        /// The likely cause.
        reason: Refusal,
    },

    /// The lock's server started (or restarted) less than the client's lock-delay ago
    /// ([`ClientBuilder::lock_delay`](crate::ClientBuilder::lock_delay)): it has forgotten
    /// the locks of its earlier incarnation, whose holders may still run, so it grants no
    /// lock until the delay has passed. Nothing was sent. Retryable;
    /// [`wait_acquire`](crate::Semaphore::wait_acquire) waits through it.
    #[error(
        "memcached server {server} restarted recently: no lock is granted for another {} (lock-delay)", Human(*.remaining)
    )]
    LockDelay {
        /// The server as configured (`host:port`).
        server: String,
        /// How much longer the delay lasts.
        remaining: Duration,
    },
}

/// Why a server was refused ([`Error::Refused`]).
///
/// # Examples
///
/// ```
/// use memsem::Refusal;
///
/// assert!(Refusal::NoMetaProtocol.to_string().contains("meta commands"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server answered ERROR to meta commands (memcached < 1.6, or a proxy).
    NoMetaProtocol,
    /// The server wants authentication (ASCII auth `-Y` or SASL `-S`) and none was given.
    AuthRequired,
    /// The server rejected the credentials given.
    AuthFailed,
    /// The server only authenticates with SASL over the binary protocol (`memcached -S`),
    /// which memsem does not speak: use ASCII auth (`-Y`) or TLS client certificates.
    SaslOnly,
    /// The connection closed or was reset right after connect: probably a TLS-only server
    /// (or TLS configured against a plain server).
    TlsMismatch,
    /// Not a memcached at all (e.g. HTTP, SSH banner).
    NotMemcached,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NoMetaProtocol => {
                "server does not understand meta commands (memcached < 1.6, or a proxy)"
            }
            Refusal::AuthRequired => "server requires authentication",
            Refusal::AuthFailed => "server rejected the credentials",
            Refusal::SaslOnly => {
                "server requires SASL (memcached -S, binary protocol only), which memsem does not support: use ASCII auth (-Y) or TLS client certificates"
            }
            Refusal::TlsMismatch => "connection closed right after connect: TLS?",
            Refusal::NotMemcached => "this is not a memcached server",
        })
    }
}

/// An error and its causes, each said once, joined by `: ` (for log lines, where only one
/// field carries the error).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// A duration as people write it (`1s 250ms`, `3m 20s`), to the millisecond above a
/// millisecond and to the microsecond below.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Human(pub(crate) Duration);

impl std::fmt::Display for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rounded = if self.0 >= Duration::from_millis(1) {
            Duration::from_millis(u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX))
        } else {
            Duration::from_micros(u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX))
        };
        write!(f, "{}", humantime::format_duration(rounded))
    }
}

/// Why a permit was found lost (in [`Error::LockLost`], and from a keep-alive:
/// [`KeepAlive::lost_reason`](crate::KeepAlive::lost_reason)).
///
/// # Examples
///
/// ```
/// use memsem::LostReason;
///
/// assert_eq!(LostReason::Missing.to_string(), "the key is gone (expired, evicted or deleted)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The key no longer exists: the TTL ran out, memcached evicted it or restarted, or
    /// somebody deleted it.
    Missing,
    /// The key exists but holds another holder's token.
    HeldByOther,
    /// A keep-alive got no refresh confirmed before the lease's safe end (the server did
    /// not answer in time): the lock may be free or taken by now.
    Expired,
    /// The server restarted since the lock was granted: it has forgotten the lock (and its
    /// CAS values start again), so nothing was written.
    Restarted,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::Missing => "the key is gone (expired, evicted or deleted)",
            LostReason::HeldByOther => "the key now belongs to another holder",
            LostReason::Expired => {
                "no refresh was confirmed before the lease could end (memcached unreachable or not answering)"
            }
            LostReason::Restarted => "the memcached server restarted since the lock was granted",
        })
    }
}

impl Error {
    /// Whether trying the same call again later may succeed: true for
    /// [`Unavailable`](Error::Unavailable), [`Timeout`](Error::Timeout),
    /// [`NoQuorum`](Error::NoQuorum) and [`LockDelay`](Error::LockDelay); never for
    /// [`Refused`](Error::Refused).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::Error;
    ///
    /// let timeout = Error::Timeout {
    ///     name: "report".into(),
    ///     waited: Duration::from_secs(5),
    ///     attempts: 50,
    ///     last_error: None,
    /// };
    /// assert!(timeout.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::Timeout { .. }
                | Error::NoQuorum { .. }
                | Error::LockDelay { .. }
        )
    }

    /// Whether this is [`Error::LockLost`].
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::{Error, LostReason};
    ///
    /// let lost = Error::LockLost { name: "report".into(), reason: LostReason::Missing };
    /// assert!(lost.is_lock_lost());
    /// ```
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Error::LockLost { .. })
    }

    /// Whether the server could not be reached (directly, or as the last error of a
    /// [`Timeout`](Error::Timeout)).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::Error;
    ///
    /// let down = Error::Unavailable { server: "127.0.0.1:1".into(), source: "refused".into() };
    /// assert!(down.is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::NoQuorum { .. } => true,
            Error::Timeout {
                last_error: Some(last),
                ..
            } => last.is_unavailable(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(error: &Error) -> String {
        Chain(error).to_string()
    }

    fn refused() -> Error {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        Error::Unavailable {
            server: "127.0.0.1:1".into(),
            source: Box::new(io),
        }
    }

    #[test]
    fn each_cause_is_said_once_in_the_chain() {
        let timeout = Error::Timeout {
            name: "report".into(),
            waited: Duration::from_millis(2_345),
            attempts: 7,
            last_error: Some(Box::new(refused())),
        };
        let text = chain(&timeout);
        assert_eq!(
            text,
            "gave up waiting for lock \"report\" after 2s 345ms (7 attempts): \
             memcached server 127.0.0.1:1 is unavailable: connection refused"
        );
        assert_eq!(text.matches("connection refused").count(), 1);
        assert_eq!(text.matches("unavailable").count(), 1);
    }

    #[test]
    fn ambiguous_names_the_operation_and_leaves_the_cause_to_source() {
        let error = Error::Ambiguous {
            server: "10.0.0.1:11211".into(),
            operation: "acquire",
            source: "timed out".into(),
        };
        assert_eq!(
            error.to_string(),
            "outcome of acquire on memcached server 10.0.0.1:11211 is unknown"
        );
        assert_eq!(chain(&error).matches("timed out").count(), 1);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(
            Human(Duration::from_nanos(300_543_708)).to_string(),
            "300ms"
        );
        assert_eq!(Human(Duration::from_secs(3600)).to_string(), "1h");
        assert_eq!(Human(Duration::from_nanos(12_345)).to_string(), "12us");
        assert_eq!(Human(Duration::ZERO).to_string(), "0s");
    }
}

//! Distributed semaphores and mutexes on the memcached fleets you already run: one process
//! in the fleet runs the nightly job, at most N encoders run at once, one caller refills a
//! cold cache key while the others wait.
//!
//! A lock is a memcached key: whoever `add`s it first holds it, and the holder gives it back
//! with an owner-checked delete. Every lock has a lease (TTL), so a crashed holder blocks
//! the others for at most that long. Keys are routed like libmemcached or Perl's
//! Cache::Memcached, in the key format of Perl's Cache::Memcached::Semaphore, so Perl and
//! Rust processes share locks during a migration.
//!
//! ```no_run
//! use std::time::Duration;
//! use memsem::{Client, WaitPolicy};
//!
//! let client = Client::connect("10.0.0.1:11211,10.0.0.2:11211")?; // opens no connection yet
//! let report = client
//!     .semaphore("nightly-report")?
//!     .with_ttl(Duration::from_secs(300))?
//!     .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(30)));
//!
//! // One round trip; `None` means another machine holds it.
//! if let Some(permit) = report.try_acquire()? {
//!     // ... the work only one machine may do at a time ...
//!     permit.release()?; // or just drop it
//! }
//!
//! // Or wait for it (tokio's `acquire`), polling every 100 ms ± 50%, for up to 30 s.
//! let permit = report.wait_acquire()?;
//! drop(permit);
//! # Ok::<(), memsem::Error>(())
//! ```
//!
//! # What is in it
//!
//! - **Mutexes and counting semaphores**: [`Client::semaphore`] gives a [`Semaphore`]; take
//!   a [`Permit`] with [`try_acquire`](Semaphore::try_acquire) or
//!   [`wait_acquire`](Semaphore::wait_acquire) (by a [`WaitPolicy`]). With
//!   [`with_permits(n)`](Semaphore::with_permits), up to N holders at once;
//!   [`holders`](Semaphore::holders) says who.
//! - **Keep-alive**: [`Permit::keep_alive`] refreshes the lease in the background so the
//!   work may outlast the TTL, and tells you when the lock is lost ([`KeepAlive`],
//!   [`LostReason`]). [`Permit::refresh`] does it by hand.
//! - **Keyed mutex** (stampede guard): [`Semaphore::lock_or_wait`] — one caller computes,
//!   the others wait for it and then read the cache ([`LockOrWait`]).
//! - **Quorum locks** (Redlock on memcached): [`Client::quorum_lock`] holds a majority of
//!   the servers, so the lock survives the loss of a minority ([`QuorumLock`]).
//! - **Fencing tokens**: [`Semaphore::with_fencing`] gives each permit a strictly increasing
//!   [`Permit::fence`] number, so the protected resource can reject a stale holder.
//! - **Operators**: [`Semaphore::holder`], [`Semaphore::break_holder`],
//!   [`Semaphore::reap_stale`], [`Client::ping`]; the `memsem` command line tool (package
//!   `memsem-cli`) does all of it from the shell, flock-style.
//!
//! # Guarantees, in short
//!
//! One holder at a time while memcached keeps the key: a key has exactly one server, and
//! memsem never re-routes it when that server is down ([`Error::Unavailable`]). Release,
//! refresh and cooldown are owner-checked, so a permit whose lease ran out gets
//! [`Error::LockLost`] and never touches the next holder's key. A permit knows the
//! incarnation of the server that granted it: after a restart its writes are never sent
//! ([`LostReason::Restarted`]), and a restarted server grants no lock for the client's
//! lock-delay ([`ClientBuilder::lock_delay`], by default the longest lease,
//! [`ClientBuilder::max_lease`], 5 min), so no two holders overlap across a restart. A lease
//! is still only a lease: a holder stalled past its TTL or an eviction can free the lock
//! while its holder still runs — use keep-alive (which reports the loss [`lease_margin`]
//! before the lease ends), check [`Permit::is_held`] before irreversible steps, or fence. A
//! write whose reply was lost is read back; when even that fails memsem says
//! [`Error::Ambiguous`] and cleans up in the background. The README and RELIABILITY.md have
//! the details and the measured fault behaviour.
//!
//! # Cargo features
//!
//! - `tokio`: `ClientBuilder::build_async` gives a `Client<Tokio>` whose semaphores and
//!   permits have the same operations, `async` and cancel-safe (see [`Flavor`]); it pulls
//!   in tokio and tokio-rustls, and opens a few multiplexed connections per server, whatever
//!   the number of tasks.
//! - `metrics`: counters and a wait-time histogram through the `metrics` facade
//!   (`memsem::metrics`).
//!
//! Routing: see [`routing`] — libmemcached's weighted ketama (default) or Cache::Memcached's
//! CRC32 buckets ([`ClientBuilder::routing`]); the namespace is sent but not hashed, as in
//! those clients.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
mod flavor;
mod fleet;
mod lock;
mod mailbox;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
mod wait;
mod wire;

pub use client::{Client, ClientBuilder, ServerStatus};
pub use error::{Cause, Error, LostReason, Refusal, Result};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use flavor::Tokio;
pub use flavor::{Blocking, Flavor};
#[doc(inline)]
pub use fleet::routing;
pub use fleet::routing::{Endpoint, Routing, ServerSpec};
pub use lock::fair::Fairness;
pub use lock::holder::Holder;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use lock::keepalive::AsyncKeepAlive;
pub use lock::keepalive::KeepAlive;
pub use lock::keyed::LockOrWait;
pub use lock::lease::{DEFAULT_MAX_LEASE, lease_margin};
pub use lock::permit::Permit;
pub use lock::quorum::{QuorumLock, QuorumPermit};
pub use lock::semaphore::{MAX_INFO_BYTES, MAX_PERMITS, Semaphore};
pub use lock::ttl::DEFAULT_TTL;
pub use wait::{Delays, WaitPolicy, Waiting};
pub use wire::{Protocol, TlsConfig};

/// The README's code blocks, compiled as doctests.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    /// Everything public can be shared across threads.
    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Client>();
        check::<crate::ClientBuilder>();
        check::<crate::Semaphore>();
        check::<crate::Permit>();
        check::<crate::WaitPolicy>();
        check::<crate::Error>();
        check::<crate::Holder>();
        check::<crate::KeepAlive>();
        check::<crate::QuorumLock>();
        check::<crate::QuorumPermit>();
        #[cfg(feature = "tokio")]
        check::<crate::AsyncKeepAlive>();
        #[cfg(feature = "tokio")]
        check::<crate::Permit<crate::Tokio>>();
        check::<crate::routing::Ring>();
    }
}

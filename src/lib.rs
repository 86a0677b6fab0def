//! Distributed semaphores and mutexes on the memcached fleets you already run.
//!
//! A lock is a memcached key: whoever `add`s it first holds it; the holder gives it back with
//! an owner-checked (CAS) delete, or keeps it closed for a cooldown. Keys are spread over a
//! weighted server list by the same routing as libmemcached or Perl's Cache::Memcached, and
//! the key format is that of Perl's Cache::Memcached::Semaphore, so Perl and Rust processes
//! contend for the same locks.
//!
//! ```no_run
//! use std::time::Duration;
//! use memsem::{Client, WaitPolicy};
//!
//! let client = Client::connect("10.0.0.1:11211,10.0.0.2:11211")?;
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
//! // Or wait for it, polling every 100 ms ± 50%, for up to 30 s.
//! let permit = report.wait_acquire()?;
//! drop(permit);
//! # Ok::<(), memsem::Error>(())
//! ```
//!
//! The main types: [`Client`] (servers, routing, namespace, timeouts; cheap to clone),
//! [`Semaphore`] (a named lock: [`try_acquire`](Semaphore::try_acquire),
//! [`wait_acquire`](Semaphore::wait_acquire)), [`Permit`] (the guard: released on drop,
//! [`release`](Permit::release), [`release_with_cooldown`](Permit::release_with_cooldown),
//! [`refresh`](Permit::refresh), [`forget`](Permit::forget)), [`WaitPolicy`] and [`Error`].
//!
//! # Guarantees
//!
//! What a memcached lease can promise, and what it cannot:
//!
//! - **One holder at a time, while memcached keeps the key.** `add` is atomic on the server
//!   that owns the key, and every key has exactly one server (memsem never re-routes a key
//!   when its server is down; it fails with [`Error::Unavailable`] instead).
//! - **Release only what you own.** Release, refresh and cooldown check the holder's random
//!   128-bit token (and the item's CAS); a permit whose lease ran out gets
//!   [`Error::LockLost`] and never touches the next holder's key.
//! - **Leases end.** Every permit has a TTL (60 s by default), so a crashed holder blocks the
//!   others for at most that long. Extend it with [`Permit::refresh`]. A holder that stalls
//!   longer than its TTL (GC pause, swapped out, suspended VM) can still believe it holds the
//!   lock after somebody else took it: check [`Permit::is_held`] or refresh before
//!   irreversible steps.
//! - **Restarts.** A permit knows the incarnation of the server that granted it; its
//!   release, refresh or cooldown is never sent to a later one (whose CAS values start
//!   again), and reports [`LostReason::Restarted`]. A restarted server grants no lock for the
//!   client's lock-delay ([`ClientBuilder::lock_delay`], default the longest lease,
//!   [`ClientBuilder::max_lease`], 5 min), by which time every lease of its earlier
//!   incarnation has ended: no overlap across a restart, at the cost of that much
//!   unavailability after it.
//! - **memcached forgets.** A `flush_all` or an eviction under memory pressure drops lock
//!   keys like any other item: the lock is then free while its holder still thinks it holds
//!   it. Its next refresh or release reports [`Error::LockLost`]. Give locks a memcached
//!   with room to spare (or its own slab class / instance) if this matters.
//! - **Clocks.** The TTL is counted by the server in whole seconds (an item with TTL 1 can
//!   expire anywhere within its first second); [`Permit::expires_at`] is a conservative
//!   local estimate (counted from before the request was sent), and the keep-alive reports
//!   a lease lost [`lease_margin`] before it (1 s + 1%, assuming clock rates within 1%).
//!   Clocks of different machines are never compared.
//! - **Lost replies.** A write that was sent but not answered may have been applied.
//!   memsem reads the key back and acts on what it finds; when even that fails, it says
//!   [`Error::Ambiguous`] and a background clean-up deletes a lock left with its token once
//!   the server answers again.
//!
//! # Waiting
//!
//! [`Semaphore::wait_acquire`] retries by the semaphore's [`WaitPolicy`]: no `max_wait` by
//! default (wait forever, like the Perl module), 100 ms polls with ±50% jitter, optional
//! exponential backoff, and an explicit, unsafe `steal_after_wait` for Perl's
//! `force_after_timeout`. Time-outs are wall-clock and honoured to within one poll.
//!
//! # Servers and routing
//!
//! See [`routing`]: libmemcached's weighted ketama (default) or Perl Cache::Memcached's
//! CRC32 buckets, chosen with [`ClientBuilder::routing`]. The namespace is sent on the wire
//! but not hashed, as in those clients.
//!
//! # Migrating from Perl
//!
//! The README's table maps every Cache::Memcached::Semaphore option to memsem. The lock key
//! is the same (`namespace . "__lock__" . name`), so both can run side by side during a
//! migration, provided the Rust side uses [`Routing::CacheMemcached`] with the same server
//! list and weights.
//!
//! # Async
//!
//! With the `tokio` feature, `ClientBuilder::build_async` returns a `Client<Tokio>`: its
//! [`Semaphore`]s and [`Permit`]s have the same operations, `async` (see [`Flavor`]). The
//! lock logic is written once for both; acquires are cancel-safe, and dropping an async
//! permit releases it from a background thread without blocking the runtime.
//!
//! # Cargo features
//!
//! - `cli` (default): the `memsem` command-line tool (pulls in clap, humantime,
//!   signal-hook, libc, serde_json and tracing-subscriber). Library users can turn it off with
//!   `default-features = false`.
//! - `tokio`: the async flavour (pulls in tokio and the `memcache` crate's async client).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
mod fair;
mod flavor;
mod holder;
mod janitor;
mod keepalive;
mod key;
mod keyed;
mod lease;
mod memcached;
mod permit;
mod quorum;
pub mod routing;
mod semaphore;
mod token;
mod wait;
mod wire;

pub use client::{Client, ClientBuilder, ServerStatus};
pub use error::{Cause, Error, LostReason, Refusal, Result};
pub use fair::Fairness;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use flavor::Tokio;
pub use flavor::{Blocking, Flavor};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use keepalive::AsyncKeepAlive;
pub use keepalive::KeepAlive;
pub use keyed::LockOrWait;
pub use lease::{DEFAULT_MAX_LEASE, lease_margin};
pub use permit::Permit;
pub use quorum::{QuorumLock, QuorumPermit};
pub use routing::{Endpoint, Routing, ServerSpec};
pub use semaphore::{DEFAULT_TTL, Holder, MAX_INFO_BYTES, MAX_PERMITS, Semaphore};
pub use wait::{Delays, WaitPolicy};
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

//! The lock kinds, over the fleet and the wire: the [`Semaphore`](semaphore::Semaphore)
//! handle and its acquire algorithm, the [`Permit`](permit::Permit) guard, the holder view, the
//! keyed mutex, keep-alive, the quorum lock, leases. Each operation is written once, async,
//! in the `*_core` methods; the blocking and tokio facades are thin wrappers.

pub(crate) mod acquire;
#[cfg(feature = "tokio")]
mod asynchronous;
mod blocking;
pub(crate) mod fair;
pub(crate) mod holder;
pub(crate) mod keepalive;
pub(crate) mod keyed;
pub(crate) mod lease;
pub(crate) mod permit;
pub(crate) mod quorum;
pub(crate) mod semaphore;
#[cfg(test)]
mod tests;
pub(crate) mod ttl;

//! The lock operations on one memcached server, in lock terms: add-if-absent, read,
//! compare-and-delete, compare-and-replace. The lock logic is written once against
//! [`Transport`]; memsem's own transport (`crate::wire`) implements it, blocking and tokio.

use std::future::Future;
use std::time::Duration;

use crate::error::{Cause, Refusal};

/// Why an exchange with a server failed, before it is given the lock's context.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was applied: the server could not be reached, or the command was not sent
    /// in full.
    Unavailable(Cause),
    /// The command was sent in full but no reply came: it may or may not have been applied.
    Ambiguous(Cause),
    /// The server replied with something that is not a valid answer.
    Protocol(String),
    /// The server cannot be used as configured (no meta protocol, authentication, TLS, not
    /// a memcached): retrying will not help. Nothing was sent but the connection's probe.
    Refused(Refusal),
}

pub type Outcome<T> = std::result::Result<T, Failure>;

/// The incarnation of a memcached server, read once per new connection from `stats`:
/// its start time by its own clock (`time - uptime`) and its `pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// Unix time the server started, by its own clock.
    pub started: u64,
    /// The server's process id.
    pub pid: u32,
}

impl Epoch {
    /// Same incarnation: same pid and start times at most 1 s apart (uptime and time are
    /// whole seconds read at slightly different instants).
    pub fn is_same(&self, other: &Epoch) -> bool {
        self.pid == other.pid && self.started.abs_diff(other.started) <= 1
    }
}

/// What an add-if-absent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Stored: the key is ours, with this CAS, granted by this incarnation of the server
    /// (`None` when the server does not tell, e.g. through a proxy).
    Stored { cas: u64, epoch: Option<Epoch> },
    /// The key already exists.
    Exists,
    /// Nothing was sent: the server started less than the lock-delay ago (by its own uptime
    /// read at connect, plus the local time elapsed since); it grants no lock for `remaining`.
    Delayed { remaining: Duration },
}

/// What a CAS-checked write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Applied; the new CAS when the item still exists.
    Applied { cas: Option<u64> },
    /// The item exists with another CAS.
    Mismatch,
    /// The item does not exist.
    Missing,
    /// Nothing was sent: the server is not the incarnation the CAS was read from (it
    /// restarted, and CAS values start again at 1 after a restart).
    Restarted,
}

/// An item read back from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub(crate) value: Vec<u8>,
    pub(crate) cas: u64,
    /// Seconds left, `None` for an item that never expires.
    pub(crate) ttl: Option<u64>,
    /// The incarnation of the server that answered (`None` when it does not tell).
    pub(crate) epoch: Option<Epoch>,
}

/// Connection settings for one server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) io: Duration,
}

/// How long an untouched fencing counter lives (30 days, memcached's longest relative TTL);
/// when it is gone, the next number restarts from the clock.
pub(crate) const FENCE_TTL: u32 = 30 * 24 * 3600;

/// What [`Transport::ping`] learnt about a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// One no-op round trip on a pooled connection.
    pub round_trip: Duration,
    /// The server's version (`1.6.18`).
    pub version: String,
    /// The dialect spoken on the connection: `meta` or `classic`.
    pub dialect: &'static str,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Whether the connection authenticated (ASCII auth).
    pub auth: bool,
}

/// The lock operations on one server. Implemented by the blocking `wire::Backend` (whose
/// futures complete on their first poll) and the tokio `wire::AsyncBackend`; the lock logic is
/// written once, against this trait.
///
/// Every connection is probed once before its first command (authentication, dialect,
/// version, the server's [`Epoch`]); a server that cannot be used answers
/// [`Failure::Refused`] and nothing else is sent to it.
pub trait Transport: Send + Sync + std::fmt::Debug + 'static {
    /// The server as configured, `host:port` or `/path.sock`.
    fn address(&self) -> &str;
    /// `ms <key> T<ttl> ME c`: stores `value` only if the key is absent. `ttl` 0 = never.
    /// With a non-zero `lock_delay`, nothing is sent to a server that started less than
    /// `lock_delay` ago: [`Added::Delayed`].
    fn add(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> impl Future<Output = Outcome<Added>> + Send;
    /// The add, and in the same round trip right after it an increment of the counter
    /// `fence_key` (created at `initial` when missing). Because the increment follows the add
    /// on one connection, a holder's number is drawn before it can release, so the next
    /// holder's number is larger. The add's outcome stands even when the counter failed.
    /// When the add is [`Added::Delayed`], nothing is sent and the counter's outcome is a
    /// [`Failure::Unavailable`].
    fn add_fenced(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        fence_key: &[u8],
        initial: u64,
        lock_delay: Duration,
    ) -> impl Future<Output = Outcome<(Added, Outcome<u64>)>> + Send;
    /// Increments the counter `fence_key` (created at `initial` when missing).
    fn next_fence(
        &self,
        fence_key: &[u8],
        initial: u64,
    ) -> impl Future<Output = Outcome<u64>> + Send;
    /// Adds `delta` to the counter `key` and answers the new value. A missing counter is
    /// created at `initial` with `ttl` (the delta not applied) when `create` is given, else
    /// the answer is `None`. For the FIFO queue (`fair`).
    ///
    /// Meta: `ma <key> v D<delta> [N<ttl> J<initial>]`, one command. Classic has no
    /// auto-create: `incr <key> <delta>`, and when it answers `NOT_FOUND` and `create` is
    /// given, `add <key> <initial>`; an add that finds the counter created meanwhile is
    /// followed by the `incr` again. Each step is atomic on the server and a counter is
    /// created only by an `add`, so the answers are those of one `ma` at the moment of the
    /// step that applied (no delta is lost or applied twice); only the round trips differ.
    fn bump(
        &self,
        key: &[u8],
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> impl Future<Output = Outcome<Option<u64>>> + Send;
    /// `ms <key> T<ttl> c`: stores `value` whatever is there (the unsafe "steal"). Answers
    /// [`Added::Stored`] or, under the lock-delay as [`add`](Self::add), [`Added::Delayed`];
    /// never [`Added::Exists`].
    fn overwrite(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> impl Future<Output = Outcome<Added>> + Send;
    /// `mg <key> v c t`: the item, or `None` when the key is absent.
    fn read(&self, key: &[u8]) -> impl Future<Output = Outcome<Option<Item>>> + Send;
    /// Reads several keys in one round trip (one pipelined batch): one answer per key.
    fn read_many(
        &self,
        keys: &[Vec<u8>],
    ) -> impl Future<Output = Outcome<Vec<Option<Item>>>> + Send;
    /// `md <key> C<cas>`: deletes only the item with this CAS. With `epoch` given, nothing is
    /// sent to another incarnation of the server: [`Checked::Restarted`].
    fn delete_if(
        &self,
        key: &[u8],
        cas: u64,
        epoch: Option<Epoch>,
    ) -> impl Future<Output = Outcome<Checked>> + Send;
    /// `ms <key> T<ttl> C<cas> c`: rewrites the item with this CAS, giving it a new TTL.
    /// With `epoch` given, nothing is sent to another incarnation: [`Checked::Restarted`].
    fn replace_if(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> impl Future<Output = Outcome<Checked>> + Send;
    /// `mn`: one no-op round trip on a pooled connection, timed, with what its probe found.
    fn ping(&self) -> impl Future<Output = Outcome<Pong>> + Send;
}

/// The blocking reads and writes the clean-up thread makes on one server: memsem's pooled
/// transport, or the in-memory fake in unit tests.
pub(crate) trait Sweep: Send + Sync + std::fmt::Debug {
    fn address(&self) -> &str;
    fn read_now(&self, key: &[u8]) -> Outcome<Option<Item>>;
    fn delete_if_now(&self, key: &[u8], cas: u64, epoch: Option<Epoch>) -> Outcome<Checked>;
    fn replace_if_now(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> Outcome<Checked>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_tolerate_one_second_of_rounding_and_no_pid_change() {
        let epoch = Epoch {
            started: 1_000,
            pid: 7,
        };
        assert!(epoch.is_same(&Epoch {
            started: 1_001,
            pid: 7
        }));
        assert!(epoch.is_same(&Epoch {
            started: 999,
            pid: 7
        }));
        assert!(!epoch.is_same(&Epoch {
            started: 1_002,
            pid: 7
        }));
        assert!(!epoch.is_same(&Epoch {
            started: 1_000,
            pid: 8
        }));
    }
}

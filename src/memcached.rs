//! The one place that talks to the `memcache` crate (its experimental meta-protocol `exp`
//! module, pinned to an exact version). Everything above this module speaks in lock terms:
//! add-if-absent, read, compare-and-delete, compare-and-replace.

use std::time::{Duration, Instant};

use memcache::exp::{
    Arithmetic, ArithmeticResult, Delete, Get, GetResult, Meta, MetaClient, MutationResult,
    MutationStatus, Op, Set, SetMode,
};

use crate::error::Cause;
use crate::routing::ServerSpec;

/// Why an exchange with a server failed, before it is given the lock's context.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nothing was applied: the server could not be reached, or the command was not sent
    /// in full.
    Unavailable(Cause),
    /// The command was sent in full but no reply came: it may or may not have been applied.
    Ambiguous(Cause),
    /// The server replied with something that is not a valid answer.
    Protocol(String),
}

pub(crate) type Outcome<T> = std::result::Result<T, Failure>;

/// What an add-if-absent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// Stored: the key is ours, with this CAS.
    Stored { cas: u64 },
    /// The key already exists.
    Exists,
}

/// What a CAS-checked write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Applied; the new CAS when the item still exists.
    Applied { cas: Option<u64> },
    /// The item exists with another CAS.
    Mismatch,
    /// The item does not exist.
    Missing,
}

/// An item read back from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) value: Vec<u8>,
    pub(crate) cas: u64,
    /// Seconds left, `None` for an item that never expires.
    pub(crate) ttl: Option<u64>,
}

/// Connection settings for one server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) io: Duration,
}

/// One memcached server with its own connection pool.
pub(crate) struct Backend {
    address: String,
    client: MetaClient,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("address", &self.address)
            .finish()
    }
}

impl Backend {
    /// Resolves the server's address; connections are dialed on first use.
    pub(crate) fn new(
        spec: &ServerSpec,
        timeouts: Timeouts,
        max_idle: usize,
    ) -> Result<Backend, String> {
        let address = spec.address();
        let client = MetaClient::builder()
            .connect_timeout(Some(timeouts.connect))
            .io_timeout(Some(timeouts.io))
            .max_idle(max_idle)
            .connect((spec.host().to_string(), spec.port()))
            .map_err(|error| format!("cannot use memcached server {address}: {error}"))?;
        Ok(Backend { address, client })
    }

    /// The server as configured, `host:port`.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// `ms <key> T<ttl> ME c`: stores `value` only if the key is absent. `ttl` 0 = never.
    pub(crate) fn add(&self, key: &[u8], value: &[u8], ttl: u32) -> Outcome<Added> {
        let reply = self
            .client
            .run(
                Set::new(key, value)
                    .mode(SetMode::Add)
                    .ttl_raw(ttl)
                    .return_cas(),
            )
            .map_err(classify)?;
        match reply.status {
            MutationStatus::Applied => Ok(Added::Stored {
                cas: cas_of(&reply)?,
            }),
            MutationStatus::AlreadyExists | MutationStatus::CasMismatch => Ok(Added::Exists),
            other => Err(Failure::Protocol(format!("add answered {other:?}"))),
        }
    }

    /// The add of [`add`](Self::add) and, in the same round trip right after it, an
    /// increment of the counter `fence_key` (created at `initial` when missing). Because the
    /// increment follows the add on one connection, a holder's number is drawn before it can
    /// release, so the next holder's number is larger.
    pub(crate) fn add_fenced(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        fence_key: &[u8],
        initial: u64,
    ) -> Outcome<(Added, Outcome<u64>)> {
        let add = Set::new(key, value)
            .mode(SetMode::Add)
            .ttl_raw(ttl)
            .return_cas();
        let fence = Arithmetic::new(fence_key).initial(initial, FENCE_TTL);
        let mut replies = self
            .client
            .run_batch([Op::from(add), Op::from(fence)])
            .map_err(classify)?
            .into_iter();
        let (Some(add), Some(fence)) = (replies.next(), replies.next()) else {
            return Err(Failure::Protocol("batch reply missing".into()));
        };
        let add = add.map_err(classify)?;
        let added = match add.as_mutation() {
            Some(reply) if reply.status == MutationStatus::Applied => Added::Stored {
                cas: cas_of(reply)?,
            },
            Some(reply) if reply.status == MutationStatus::AlreadyExists => Added::Exists,
            _ => return Err(Failure::Protocol(format!("add answered {add:?}"))),
        };
        // The add's outcome stands even when the counter failed: a stored lock must reach
        // the caller, who then releases it.
        let fence = fence.map_err(classify).and_then(|fence| {
            fence
                .as_arithmetic()
                .and_then(counter_of)
                .ok_or_else(|| Failure::Protocol(format!("fence counter answered {fence:?}")))
        });
        Ok((added, fence))
    }

    /// Increments the counter `fence_key` (created at `initial` when missing).
    pub(crate) fn next_fence(&self, fence_key: &[u8], initial: u64) -> Outcome<u64> {
        let reply = self
            .client
            .run(Arithmetic::new(fence_key).initial(initial, FENCE_TTL))
            .map_err(classify)?;
        counter_of(&reply)
            .ok_or_else(|| Failure::Protocol(format!("fence counter answered {reply:?}")))
    }

    /// `ms <key> T<ttl> c`: stores `value` whatever is there (the unsafe "steal").
    pub(crate) fn overwrite(&self, key: &[u8], value: &[u8], ttl: u32) -> Outcome<u64> {
        let reply = self
            .client
            .run(Set::new(key, value).ttl_raw(ttl).return_cas())
            .map_err(classify)?;
        match reply.status {
            MutationStatus::Applied => cas_of(&reply),
            other => Err(Failure::Protocol(format!("set answered {other:?}"))),
        }
    }

    /// `mg <key> v c t`: the item, or `None` when the key is absent.
    pub(crate) fn read(&self, key: &[u8]) -> Outcome<Option<Item>> {
        let reply = self
            .client
            .run(Get::new(key).meta(Meta::NONE.cas().ttl()))
            .map_err(classify)?;
        item_of(reply)
    }

    /// Reads several keys in one round trip (one pipelined batch): one answer per key.
    pub(crate) fn read_many(&self, keys: &[Vec<u8>]) -> Outcome<Vec<Option<Item>>> {
        let replies = self
            .client
            .run_many(
                keys.iter()
                    .map(|key| Get::new(key).meta(Meta::NONE.cas().ttl())),
            )
            .map_err(classify)?;
        replies
            .into_iter()
            .map(|reply| item_of(reply.map_err(classify)?))
            .collect()
    }

    /// `md <key> C<cas>`: deletes only the item with this CAS.
    pub(crate) fn delete_if(&self, key: &[u8], cas: u64) -> Outcome<Checked> {
        let reply = self
            .client
            .run(Delete::new(key).compare_cas(cas))
            .map_err(classify)?;
        checked(&reply, false)
    }

    /// `ms <key> T<ttl> C<cas> c`: rewrites the item with this CAS, giving it a new TTL.
    pub(crate) fn replace_if(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
    ) -> Outcome<Checked> {
        let reply = self
            .client
            .run(
                Set::new(key, value)
                    .ttl_raw(ttl)
                    .compare_cas(cas)
                    .return_cas(),
            )
            .map_err(classify)?;
        checked(&reply, true)
    }

    /// `mn`: one no-op round trip; returns how long it took.
    pub(crate) fn ping(&self) -> Outcome<Duration> {
        let started = Instant::now();
        self.client.noop().map_err(classify)?;
        Ok(started.elapsed())
    }
}

fn cas_of(reply: &MutationResult) -> Outcome<u64> {
    reply
        .cas
        .ok_or_else(|| Failure::Protocol("store reply without the CAS that was asked for".into()))
}

fn checked(reply: &MutationResult, wants_cas: bool) -> Outcome<Checked> {
    match reply.status {
        MutationStatus::Applied if wants_cas => Ok(Checked::Applied {
            cas: Some(cas_of(reply)?),
        }),
        MutationStatus::Applied => Ok(Checked::Applied { cas: None }),
        MutationStatus::CasMismatch | MutationStatus::AlreadyExists => Ok(Checked::Mismatch),
        MutationStatus::NotFound => Ok(Checked::Missing),
        other => Err(Failure::Protocol(format!("unexpected status {other:?}"))),
    }
}

fn classify(error: memcache::exp::Error) -> Failure {
    use memcache::exp::Error as E;
    match error {
        E::Ambiguous { .. } => Failure::Ambiguous(Box::new(error)),
        E::Io(_) | E::Timeout { .. } | E::Server(_) => Failure::Unavailable(Box::new(error)),
        other => Failure::Protocol(other.to_string()),
    }
}

/// How long an untouched fencing counter lives (30 days, memcached's longest relative TTL);
/// when it is gone, the next number restarts from the clock.
const FENCE_TTL: u32 = 30 * 24 * 3600;

fn counter_of(reply: &ArithmeticResult) -> Option<u64> {
    (reply.status == MutationStatus::Applied)
        .then_some(reply.value)
        .flatten()
}

fn item_of(reply: GetResult) -> Outcome<Option<Item>> {
    if !reply.hit() {
        return Ok(None);
    }
    let cas = reply
        .item
        .cas
        .ok_or_else(|| Failure::Protocol("read reply without CAS".into()))?;
    let ttl = match reply.item.ttl {
        Some(ttl) if ttl >= 0 => Some(ttl as u64),
        _ => None,
    };
    Ok(Some(Item {
        value: reply.value.unwrap_or_default(),
        cas,
        ttl,
    }))
}

//! The one place that talks to the `memcache` crate (its experimental meta-protocol `exp`
//! module, pinned to an exact version). Everything above this module speaks in lock terms:
//! add-if-absent, read, compare-and-delete, compare-and-replace.
//!
//! Each operation is built once and its reply interpreted once; only running it differs
//! between the blocking [`Backend`] and the tokio [`AsyncBackend`].

use std::future::Future;
use std::time::{Duration, Instant};

#[cfg(feature = "tokio")]
use memcache::exp::AsyncMetaClient;
use memcache::exp::{
    Arithmetic, ArithmeticResult, Delete, Get, GetResult, Meta, MetaClient, MetaClientBuilder,
    MutationResult, MutationStatus, Op, OpResult, Set, SetMode,
};

use crate::error::Cause;
use crate::routing::ServerSpec;

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
}

pub type Outcome<T> = std::result::Result<T, Failure>;

/// What an add-if-absent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Stored: the key is ours, with this CAS.
    Stored { cas: u64 },
    /// The key already exists.
    Exists,
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
}

/// An item read back from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
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

/// How long an untouched fencing counter lives (30 days, memcached's longest relative TTL);
/// when it is gone, the next number restarts from the clock.
const FENCE_TTL: u32 = 30 * 24 * 3600;

/// The lock operations on one server. Implemented by the blocking [`Backend`] (whose
/// futures complete on their first poll) and the tokio [`AsyncBackend`]; the lock logic is
/// written once, against this trait.
pub trait Transport: Send + Sync + std::fmt::Debug + 'static {
    /// The server as configured, `host:port`.
    fn address(&self) -> &str;
    /// `ms <key> T<ttl> ME c`: stores `value` only if the key is absent. `ttl` 0 = never.
    fn add(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
    ) -> impl Future<Output = Outcome<Added>> + Send;
    /// The add, and in the same round trip right after it an increment of the counter
    /// `fence_key` (created at `initial` when missing). Because the increment follows the add
    /// on one connection, a holder's number is drawn before it can release, so the next
    /// holder's number is larger. The add's outcome stands even when the counter failed.
    fn add_fenced(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        fence_key: &[u8],
        initial: u64,
    ) -> impl Future<Output = Outcome<(Added, Outcome<u64>)>> + Send;
    /// Increments the counter `fence_key` (created at `initial` when missing).
    fn next_fence(
        &self,
        fence_key: &[u8],
        initial: u64,
    ) -> impl Future<Output = Outcome<u64>> + Send;
    /// `ms <key> T<ttl> c`: stores `value` whatever is there (the unsafe "steal").
    fn overwrite(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
    ) -> impl Future<Output = Outcome<u64>> + Send;
    /// `mg <key> v c t`: the item, or `None` when the key is absent.
    fn read(&self, key: &[u8]) -> impl Future<Output = Outcome<Option<Item>>> + Send;
    /// Reads several keys in one round trip (one pipelined batch): one answer per key.
    fn read_many(
        &self,
        keys: &[Vec<u8>],
    ) -> impl Future<Output = Outcome<Vec<Option<Item>>>> + Send;
    /// `md <key> C<cas>`: deletes only the item with this CAS.
    fn delete_if(&self, key: &[u8], cas: u64) -> impl Future<Output = Outcome<Checked>> + Send;
    /// `ms <key> T<ttl> C<cas> c`: rewrites the item with this CAS, giving it a new TTL.
    fn replace_if(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
    ) -> impl Future<Output = Outcome<Checked>> + Send;
    /// `ma <key> D<delta> v` (with `N<ttl> J<initial>` when `create` is given): adds `delta`
    /// to a counter and returns the new value; a missing counter is created at `initial`
    /// (without the delta) when `create` says so, else `None`. For the FIFO queue (`fair`).
    fn bump(
        &self,
        key: &[u8],
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> impl Future<Output = Outcome<Option<u64>>> + Send;
    /// `mn`: one no-op round trip on the pool, timed; then `version` on a fresh connection.
    fn ping(&self) -> impl Future<Output = Outcome<(Duration, String)>> + Send;
}

fn builder(timeouts: Timeouts, max_idle: usize) -> MetaClientBuilder {
    MetaClientBuilder::new()
        .connect_timeout(Some(timeouts.connect))
        .io_timeout(Some(timeouts.io))
        .max_idle(max_idle)
}

// The operations, built once for both backends.

fn add_op(key: &[u8], value: &[u8], ttl: u32) -> Set {
    Set::new(key, value)
        .mode(SetMode::Add)
        .ttl_raw(ttl)
        .return_cas()
}

fn fence_op(fence_key: &[u8], initial: u64) -> Arithmetic {
    Arithmetic::new(fence_key).initial(initial, FENCE_TTL)
}

/// The add, then the fence counter's increment, in one batch (one round trip).
fn fenced_add_ops(key: &[u8], value: &[u8], ttl: u32, fence_key: &[u8], initial: u64) -> [Op; 2] {
    [
        Op::from(add_op(key, value, ttl)),
        Op::from(fence_op(fence_key, initial)),
    ]
}

fn bump_op(key: &[u8], delta: u64, create: Option<(u64, u32)>) -> Arithmetic {
    let op = Arithmetic::new(key).delta(delta);
    match create {
        Some((initial, ttl)) => op.initial(initial, ttl),
        None => op,
    }
}

fn overwrite_op(key: &[u8], value: &[u8], ttl: u32) -> Set {
    Set::new(key, value).ttl_raw(ttl).return_cas()
}

fn read_op(key: &[u8]) -> Get {
    Get::new(key).meta(Meta::NONE.cas().ttl())
}

fn delete_op(key: &[u8], cas: u64) -> Delete {
    Delete::new(key).compare_cas(cas)
}

fn replace_op(key: &[u8], value: &[u8], cas: u64, ttl: u32) -> Set {
    Set::new(key, value)
        .ttl_raw(ttl)
        .compare_cas(cas)
        .return_cas()
}

// Their replies, interpreted once for both backends.

/// How often a request that failed on a connection the server (or a proxy) had closed while
/// it sat in the pool is tried again: once per pooled connection that may be dead (the
/// default pool keeps 8), then on a fresh one. Only failures where nothing was applied
/// ([`Failure::Unavailable`]) with a closed-connection cause are retried, so a server that is
/// down or frozen is not waited on any longer.
const STALE_RETRIES: usize = 9;

/// Whether a failure is a pooled connection found closed: end of file, reset, broken pipe.
fn is_stale(failure: &Failure) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let Failure::Unavailable(cause) = failure else {
        return false;
    };
    match cause.downcast_ref::<memcache::exp::Error>() {
        Some(memcache::exp::Error::Io(error)) => {
            matches!(
                error.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            )
        }
        _ => false,
    }
}

fn retrying<T>(mut run: impl FnMut() -> Outcome<T>) -> Outcome<T> {
    let mut tries = 0;
    loop {
        let outcome = run();
        match &outcome {
            Err(failure) if tries < STALE_RETRIES && is_stale(failure) => tries += 1,
            _ => return outcome,
        }
    }
}

#[cfg(feature = "tokio")]
async fn retrying_async<T, F: Future<Output = Outcome<T>>>(
    mut run: impl FnMut() -> F,
) -> Outcome<T> {
    let mut tries = 0;
    loop {
        let outcome = run().await;
        match &outcome {
            Err(failure) if tries < STALE_RETRIES && is_stale(failure) => tries += 1,
            _ => return outcome,
        }
    }
}

/// The longest `version` reply read before giving up on it.
const VERSION_REPLY_MAX: usize = 256;

/// `VERSION 1.6.18\r\n` → `1.6.18`.
fn parse_version(reply: &[u8]) -> Outcome<String> {
    let text = String::from_utf8_lossy(reply);
    match text
        .strip_prefix("VERSION ")
        .and_then(|rest| rest.strip_suffix("\r\n"))
    {
        Some(version) if !version.is_empty() && version.len() < 64 => Ok(version.to_string()),
        _ => Err(Failure::Protocol(format!(
            "not a version reply: {:?}",
            text.chars().take(64).collect::<String>()
        ))),
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

fn cas_of(reply: &MutationResult) -> Outcome<u64> {
    reply
        .cas
        .ok_or_else(|| Failure::Protocol("store reply without the CAS that was asked for".into()))
}

fn added(reply: memcache::exp::Result<MutationResult>) -> Outcome<Added> {
    let reply = reply.map_err(classify)?;
    match reply.status {
        MutationStatus::Applied => Ok(Added::Stored {
            cas: cas_of(&reply)?,
        }),
        MutationStatus::AlreadyExists | MutationStatus::CasMismatch => Ok(Added::Exists),
        other => Err(Failure::Protocol(format!("add answered {other:?}"))),
    }
}

fn counter_of(reply: &ArithmeticResult) -> Option<u64> {
    (reply.status == MutationStatus::Applied)
        .then_some(reply.value)
        .flatten()
}

fn counted(reply: memcache::exp::Result<ArithmeticResult>) -> Outcome<u64> {
    let reply = reply.map_err(classify)?;
    counter_of(&reply).ok_or_else(|| Failure::Protocol(format!("fence counter answered {reply:?}")))
}

fn bumped(reply: memcache::exp::Result<ArithmeticResult>) -> Outcome<Option<u64>> {
    let reply = reply.map_err(classify)?;
    match reply.status {
        MutationStatus::NotFound => Ok(None),
        _ => counter_of(&reply)
            .map(Some)
            .ok_or_else(|| Failure::Protocol(format!("counter answered {reply:?}"))),
    }
}

fn added_and_counted(
    replies: memcache::exp::Result<Vec<memcache::exp::Result<OpResult>>>,
) -> Outcome<(Added, Outcome<u64>)> {
    let mut replies = replies.map_err(classify)?.into_iter();
    let (Some(add), Some(fence)) = (replies.next(), replies.next()) else {
        return Err(Failure::Protocol("batch reply missing".into()));
    };
    let add = add.map_err(classify)?;
    let outcome = match add.as_mutation() {
        Some(reply) if reply.status == MutationStatus::Applied => Added::Stored {
            cas: cas_of(reply)?,
        },
        Some(reply) if reply.status == MutationStatus::AlreadyExists => Added::Exists,
        _ => return Err(Failure::Protocol(format!("add answered {add:?}"))),
    };
    let fence = fence.map_err(classify).and_then(|fence| {
        fence
            .as_arithmetic()
            .and_then(counter_of)
            .ok_or_else(|| Failure::Protocol(format!("fence counter answered {fence:?}")))
    });
    Ok((outcome, fence))
}

fn overwritten(reply: memcache::exp::Result<MutationResult>) -> Outcome<u64> {
    let reply = reply.map_err(classify)?;
    match reply.status {
        MutationStatus::Applied => cas_of(&reply),
        other => Err(Failure::Protocol(format!("set answered {other:?}"))),
    }
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

fn read_one(reply: memcache::exp::Result<GetResult>) -> Outcome<Option<Item>> {
    item_of(reply.map_err(classify)?)
}

fn read_all(
    replies: memcache::exp::Result<Vec<memcache::exp::Result<GetResult>>>,
) -> Outcome<Vec<Option<Item>>> {
    replies
        .map_err(classify)?
        .into_iter()
        .map(|reply| item_of(reply.map_err(classify)?))
        .collect()
}

fn checked(reply: memcache::exp::Result<MutationResult>, wants_cas: bool) -> Outcome<Checked> {
    let reply = reply.map_err(classify)?;
    match reply.status {
        MutationStatus::Applied if wants_cas => Ok(Checked::Applied {
            cas: Some(cas_of(&reply)?),
        }),
        MutationStatus::Applied => Ok(Checked::Applied { cas: None }),
        MutationStatus::CasMismatch | MutationStatus::AlreadyExists => Ok(Checked::Mismatch),
        MutationStatus::NotFound => Ok(Checked::Missing),
        other => Err(Failure::Protocol(format!("unexpected status {other:?}"))),
    }
}

/// One memcached server with its own pool of blocking connections.
pub struct Backend {
    address: String,
    client: MetaClient,
    host: String,
    port: u16,
    timeouts: Timeouts,
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
        let client = builder(timeouts, max_idle)
            .connect((spec.host().to_string(), spec.port()))
            .map_err(|error| format!("cannot use memcached server {address}: {error}"))?;
        Ok(Backend {
            address,
            client,
            host: spec.host().to_string(),
            port: spec.port(),
            timeouts,
        })
    }

    /// `version` on a fresh connection (the meta protocol has no version command).
    fn version(&self) -> Outcome<String> {
        use std::io::{Read, Write};
        use std::net::ToSocketAddrs;
        let unavailable = |error: std::io::Error| Failure::Unavailable(Box::new(error));
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(unavailable)?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            let mut stream =
                match std::net::TcpStream::connect_timeout(&addr, self.timeouts.connect) {
                    Ok(stream) => stream,
                    Err(error) => {
                        last = error;
                        continue;
                    }
                };
            stream
                .set_read_timeout(Some(self.timeouts.io))
                .map_err(unavailable)?;
            stream
                .set_write_timeout(Some(self.timeouts.io))
                .map_err(unavailable)?;
            stream.write_all(b"version\r\n").map_err(unavailable)?;
            let mut reply = Vec::new();
            let mut chunk = [0u8; 128];
            while !reply.ends_with(b"\n") && reply.len() < VERSION_REPLY_MAX {
                let n = stream.read(&mut chunk).map_err(unavailable)?;
                if n == 0 {
                    break;
                }
                reply.extend_from_slice(&chunk[..n]);
            }
            return parse_version(&reply);
        }
        Err(unavailable(last))
    }

    /// Blocking read, for the clean-up thread.
    pub(crate) fn read_now(&self, key: &[u8]) -> Outcome<Option<Item>> {
        retrying(|| read_one(self.client.run(read_op(key))))
    }

    /// Blocking compare-and-delete, for the clean-up thread.
    pub(crate) fn delete_if_now(&self, key: &[u8], cas: u64) -> Outcome<Checked> {
        retrying(|| checked(self.client.run(delete_op(key, cas)), false))
    }

    /// Blocking compare-and-replace, for the clean-up thread.
    pub(crate) fn replace_if_now(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
    ) -> Outcome<Checked> {
        retrying(|| checked(self.client.run(replace_op(key, value, cas, ttl)), true))
    }
}

impl Transport for Backend {
    fn address(&self) -> &str {
        &self.address
    }

    async fn add(&self, key: &[u8], value: &[u8], ttl: u32) -> Outcome<Added> {
        retrying(|| added(self.client.run(add_op(key, value, ttl))))
    }

    async fn add_fenced(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        fence_key: &[u8],
        initial: u64,
    ) -> Outcome<(Added, Outcome<u64>)> {
        let batch = fenced_add_ops(key, value, ttl, fence_key, initial);
        retrying(|| added_and_counted(self.client.run_batch(batch.clone())))
    }

    async fn next_fence(&self, fence_key: &[u8], initial: u64) -> Outcome<u64> {
        retrying(|| counted(self.client.run(fence_op(fence_key, initial))))
    }

    async fn overwrite(&self, key: &[u8], value: &[u8], ttl: u32) -> Outcome<u64> {
        retrying(|| overwritten(self.client.run(overwrite_op(key, value, ttl))))
    }

    async fn read(&self, key: &[u8]) -> Outcome<Option<Item>> {
        self.read_now(key)
    }

    async fn read_many(&self, keys: &[Vec<u8>]) -> Outcome<Vec<Option<Item>>> {
        retrying(|| read_all(self.client.run_many(keys.iter().map(|key| read_op(key)))))
    }

    async fn delete_if(&self, key: &[u8], cas: u64) -> Outcome<Checked> {
        self.delete_if_now(key, cas)
    }

    async fn replace_if(&self, key: &[u8], value: &[u8], cas: u64, ttl: u32) -> Outcome<Checked> {
        self.replace_if_now(key, value, cas, ttl)
    }

    async fn bump(
        &self,
        key: &[u8],
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Outcome<Option<u64>> {
        retrying(|| bumped(self.client.run(bump_op(key, delta, create))))
    }

    async fn ping(&self) -> Outcome<(Duration, String)> {
        let started = Instant::now();
        self.client.noop().map_err(classify)?;
        let round_trip = started.elapsed();
        Ok((round_trip, self.version()?))
    }
}

/// One memcached server with its own pool of tokio connections.
#[cfg(feature = "tokio")]
pub struct AsyncBackend {
    address: String,
    client: AsyncMetaClient,
    host: String,
    port: u16,
    timeouts: Timeouts,
}

#[cfg(feature = "tokio")]
impl std::fmt::Debug for AsyncBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncBackend")
            .field("address", &self.address)
            .finish()
    }
}

#[cfg(feature = "tokio")]
impl AsyncBackend {
    /// Resolves the server's address; connections are dialed on first use.
    pub(crate) async fn new(
        spec: &ServerSpec,
        timeouts: Timeouts,
        max_idle: usize,
    ) -> Result<AsyncBackend, String> {
        let address = spec.address();
        let client = builder(timeouts, max_idle)
            .connect_async((spec.host().to_string(), spec.port()))
            .await
            .map_err(|error| format!("cannot use memcached server {address}: {error}"))?;
        Ok(AsyncBackend {
            address,
            client,
            host: spec.host().to_string(),
            port: spec.port(),
            timeouts,
        })
    }
}

#[cfg(feature = "tokio")]
impl AsyncBackend {
    /// `version` on a fresh connection (the meta protocol has no version command).
    async fn version(&self) -> Outcome<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let unavailable = |error: std::io::Error| Failure::Unavailable(Box::new(error));
        let timed_out = |_| unavailable(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let mut stream = tokio::time::timeout(self.timeouts.connect, connect)
            .await
            .map_err(timed_out)?
            .map_err(unavailable)?;
        let exchange = async {
            stream.write_all(b"version\r\n").await?;
            let mut reply = Vec::new();
            let mut chunk = [0u8; 128];
            while !reply.ends_with(b"\n") && reply.len() < VERSION_REPLY_MAX {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                reply.extend_from_slice(&chunk[..n]);
            }
            Ok::<_, std::io::Error>(reply)
        };
        let reply = tokio::time::timeout(self.timeouts.io, exchange)
            .await
            .map_err(timed_out)?
            .map_err(unavailable)?;
        parse_version(&reply)
    }
}

#[cfg(feature = "tokio")]
impl Transport for AsyncBackend {
    fn address(&self) -> &str {
        &self.address
    }

    async fn add(&self, key: &[u8], value: &[u8], ttl: u32) -> Outcome<Added> {
        retrying_async(|| async { added(self.client.run(add_op(key, value, ttl)).await) }).await
    }

    async fn add_fenced(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        fence_key: &[u8],
        initial: u64,
    ) -> Outcome<(Added, Outcome<u64>)> {
        let batch = fenced_add_ops(key, value, ttl, fence_key, initial);
        retrying_async(|| async { added_and_counted(self.client.run_batch(batch.clone()).await) })
            .await
    }

    async fn next_fence(&self, fence_key: &[u8], initial: u64) -> Outcome<u64> {
        retrying_async(|| async { counted(self.client.run(fence_op(fence_key, initial)).await) })
            .await
    }

    async fn overwrite(&self, key: &[u8], value: &[u8], ttl: u32) -> Outcome<u64> {
        retrying_async(|| async {
            overwritten(self.client.run(overwrite_op(key, value, ttl)).await)
        })
        .await
    }

    async fn read(&self, key: &[u8]) -> Outcome<Option<Item>> {
        retrying_async(|| async { read_one(self.client.run(read_op(key)).await) }).await
    }

    async fn read_many(&self, keys: &[Vec<u8>]) -> Outcome<Vec<Option<Item>>> {
        retrying_async(|| async {
            let operations: Vec<Get> = keys.iter().map(|key| read_op(key)).collect();
            read_all(self.client.run_many(operations).await)
        })
        .await
    }

    async fn delete_if(&self, key: &[u8], cas: u64) -> Outcome<Checked> {
        retrying_async(|| async { checked(self.client.run(delete_op(key, cas)).await, false) })
            .await
    }

    async fn replace_if(&self, key: &[u8], value: &[u8], cas: u64, ttl: u32) -> Outcome<Checked> {
        retrying_async(|| async {
            checked(
                self.client.run(replace_op(key, value, cas, ttl)).await,
                true,
            )
        })
        .await
    }

    async fn bump(
        &self,
        key: &[u8],
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Outcome<Option<u64>> {
        retrying_async(|| async { bumped(self.client.run(bump_op(key, delta, create)).await) })
            .await
    }

    async fn ping(&self) -> Outcome<(Duration, String)> {
        let started = Instant::now();
        self.client.noop().await.map_err(classify)?;
        let round_trip = started.elapsed();
        Ok((round_trip, self.version().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_replies_are_parsed_and_garbage_is_a_protocol_error() {
        assert_eq!(parse_version(b"VERSION 1.6.18\r\n").unwrap(), "1.6.18");
        for bad in [
            &b""[..],
            b"VERSION \r\n",
            b"ERROR\r\n",
            b"VERSION 1.6",
            b"\xff\xfe garbage",
        ] {
            assert!(
                matches!(parse_version(bad), Err(Failure::Protocol(_))),
                "{bad:?}"
            );
        }
    }
}

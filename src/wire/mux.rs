//! The tokio transport to one server: a few connections ("lanes"), each shared by every task.
//! Requests are pipelined on a lane and matched to replies in order (memcached answers in
//! order; each meta reply's opaque token is checked too), so a thousand tasks use
//! [`LANES`] connections per server instead of a thousand.
//!
//! A connection has no task of its own: its callers drive it (`pipeline`). An uncontended
//! request is written and its reply read by the caller's own task; under load, whichever
//! caller is polled writes what is queued and hands the replies that have arrived to their
//! callers. A caller whose reply does not come within the I/O time-out retires the
//! connection: later requests get a new one.

mod transport;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::conn::{is_timeout, probe_failure, probe_read_failure, tls_failure};
use super::meta::{Reply, Store};
use super::ops::{self, Op, Session};
use super::pipeline::{Answer, Boxed, Expect, Opaques, Owned, Pipeline, READ_CHUNK};
use super::probe;
use super::{Address, Dialect, Protocol, Settings, sniff};
use crate::error::Refusal;
use crate::wire::transport::{Added, Checked, Epoch, Failure, Item, Outcome, Pong, Transport};

/// Connections per server.
const LANES: usize = 2;

/// One probed connection.
struct Link {
    pipeline: Pipeline,
    session: Session,
    /// Requests sent and not answered yet.
    in_flight: AtomicUsize,
    retired: AtomicBool,
}

impl Link {
    /// Takes the connection out of use: it is closed, and the calls still waiting on it fail.
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.pipeline.close(io::ErrorKind::ConnectionAborted);
    }

    fn usable(&self) -> bool {
        !self.retired.load(Ordering::Relaxed) && !self.pipeline.is_broken()
    }
}

/// One memcached server, reached through [`LANES`] multiplexed connections.
pub struct AsyncBackend {
    address: String,
    target: Address,
    settings: Settings,
    /// The live connections, at most [`LANES`].
    lanes: std::sync::Mutex<Vec<Option<Arc<Link>>>>,
    /// One dial at a time per lane: the other callers wait for it.
    dialing: Vec<Mutex<()>>,
    wants_auth: AtomicBool,
}

impl std::fmt::Debug for AsyncBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncBackend")
            .field("address", &self.address)
            .finish()
    }
}

fn unavailable(error: io::Error) -> Failure {
    Failure::Unavailable(Box::new(error))
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no reply within the I/O time-out")
}

async fn dial_stream(address: &Address, settings: &Settings) -> Outcome<Boxed> {
    let connect = async {
        let plain: Boxed = match address {
            Address::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::pin(stream)
            }
            #[cfg(unix)]
            Address::Unix(path) => Box::pin(tokio::net::UnixStream::connect(path).await?),
            #[cfg(not(unix))]
            Address::Unix(_) => return Err(io::ErrorKind::Unsupported.into()),
        };
        Ok::<_, io::Error>(plain)
    };
    let plain = tokio::time::timeout(settings.timeouts.connect, connect)
        .await
        .map_err(|_| unavailable(timed_out()))?
        .map_err(unavailable)?;
    let Some(tls) = &settings.tls else {
        return Ok(plain);
    };
    let name = tls.name_for(address.host()).map_err(unavailable)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    match tokio::time::timeout(settings.timeouts.io, connector.connect(name, plain)).await {
        Ok(Ok(stream)) => Ok(Box::pin(stream)),
        Ok(Err(error)) if !is_timeout(&error) => Err(tls_failure(error)),
        _ => {
            let (target, settings) = (address.clone(), settings.clone());
            Err(blocking(move || sniff::silent_at_handshake(&target, &settings, timed_out())).await)
        }
    }
}

/// Runs a short blocking check (a second opinion on a fresh connection) off the runtime.
async fn blocking(check: impl FnOnce() -> Failure + Send + 'static) -> Failure {
    tokio::task::spawn_blocking(check)
        .await
        .unwrap_or_else(|error| Failure::Unavailable(Box::new(error)))
}

impl AsyncBackend {
    /// A transport to `spec`; connections are dialed on first use.
    /// Connections to the server `address` (as configured) at `target`.
    pub(crate) fn new(address: String, target: Address, settings: Settings) -> AsyncBackend {
        AsyncBackend {
            address,
            target,
            settings,
            lanes: std::sync::Mutex::new(vec![None; LANES]),
            dialing: (0..LANES).map(|_| Mutex::new(())).collect(),
            wants_auth: AtomicBool::new(false),
        }
    }

    /// Dials, probes and starts a connection's tasks; in `auto`, dials again with the
    /// classic probe when the peer closed on the meta one (twemproxy).
    async fn open(&self, send_auth: bool) -> Outcome<Link> {
        match self.open_as(send_auth, self.settings.protocol).await? {
            Some(link) => Ok(link),
            None => {
                let link = self
                    .open_as(send_auth, Protocol::Classic)
                    .await?
                    .ok_or_else(|| unavailable(io::ErrorKind::UnexpectedEof.into()))?;
                // Asked for meta, a server that answers only the classic probe lacks it.
                if self.settings.protocol == Protocol::Meta {
                    return Err(Failure::Refused(Refusal::NoMetaProtocol));
                }
                Ok(link)
            }
        }
    }

    /// Dials and probes with `protocol`; `None` when the classic probe must be tried.
    async fn open_as(&self, send_auth: bool, protocol: Protocol) -> Outcome<Option<Link>> {
        let mut stream = dial_stream(&self.target, &self.settings).await?;
        let tls = self.settings.tls.is_some();
        let auth = self.settings.auth.as_deref().filter(|_| send_auth);
        let mut hello = Vec::new();
        probe::hello(&mut hello, auth, protocol);
        let mut input = Vec::with_capacity(READ_CHUNK);
        let exchange = async {
            stream.write_all(&hello).await.map_err(unavailable)?;
            loop {
                let closed = match stream.read_buf(&mut input).await {
                    Ok(read) => read == 0,
                    Err(error) => match probe_read_failure(error, tls) {
                        None => true,
                        Some(failure) => return Err(failure),
                    },
                };
                match probe::greeting(&input, auth.is_some(), protocol, closed) {
                    Ok(Some(found)) => return Ok(Ok(found)),
                    Ok(None) if closed || input.len() > 64 * 1024 => {
                        return Err(Failure::Protocol("probe reply cut short".into()));
                    }
                    Ok(None) => {}
                    Err(unusable) => return Ok(Err(unusable)),
                }
            }
        };
        let heard = match tokio::time::timeout(self.settings.timeouts.io, exchange).await {
            Ok(heard) => heard?,
            Err(_) if !tls && input.is_empty() => {
                let (target, settings) = (self.target.clone(), self.settings.clone());
                let check = move || sniff::silent_at_hello(&target, &settings, timed_out());
                return Err(blocking(check).await);
            }
            Err(_) => return Err(unavailable(timed_out())),
        };
        let found = match heard {
            Ok(found) => found,
            Err(unusable) if probe::retry_classic(protocol, &unusable, tls) => return Ok(None),
            Err(unusable) => {
                let (target, settings) = (self.target.clone(), self.settings.clone());
                return Err(
                    blocking(move || probe_failure(unusable, tls, &target, &settings)).await,
                );
            }
        };
        if probe::redial_classic(protocol, &found) {
            return Ok(None);
        }
        // The uptime counts from when its reply arrived: the lock-delay is never cut short.
        let heard = Instant::now();
        let dialect = probe::dialect(protocol, &found).map_err(Failure::Refused)?;
        if found.closed {
            return Err(unavailable(io::ErrorKind::UnexpectedEof.into()));
        }
        let session = Session::new(dialect, found, heard, tls);
        Ok(Some(Link {
            pipeline: Pipeline::new(stream, self.settings.timeouts.io),
            session,
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
        }))
    }

    async fn dial(&self) -> Outcome<Link> {
        let has_auth = self.settings.auth.is_some();
        let send_auth = has_auth && self.wants_auth.load(Ordering::Relaxed);
        match self.open(send_auth).await {
            Err(Failure::Refused(Refusal::AuthRequired)) if has_auth && !send_auth => {
                self.wants_auth.store(true, Ordering::Relaxed);
                self.open(true).await
            }
            other => other,
        }
    }

    /// The live connection with the fewest requests in flight; a new one is dialed into a
    /// free lane only while every live one is busy (so a quiet client keeps one warm
    /// connection, a busy one at most [`LANES`]).
    async fn link(&self) -> Outcome<Arc<Link>> {
        let (best, free) = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            for lane in lanes.iter_mut() {
                if lane.as_ref().is_some_and(|link| !link.usable()) {
                    *lane = None;
                }
            }
            let best = lanes
                .iter()
                .flatten()
                .min_by_key(|link| link.in_flight.load(Ordering::Relaxed))
                .cloned();
            (best, lanes.iter().position(Option::is_none))
        };
        let free = match (best, free) {
            (Some(link), Some(_)) if link.in_flight.load(Ordering::Relaxed) == 0 => {
                return Ok(link);
            }
            (Some(link), None) => return Ok(link),
            // With no live link every lane is free.
            (_, free) => free.unwrap_or(0),
        };
        let _dialing = self.dialing[free].lock().await;
        let current = self.lanes.lock().unwrap_or_else(|e| e.into_inner())[free].clone();
        if let Some(link) = current.filter(|link| link.usable()) {
            return Ok(link);
        }
        let link = Arc::new(self.dial().await?);
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())[free] = Some(Arc::clone(&link));
        Ok(link)
    }

    /// Sends `ops` on `link` and waits for their replies.
    async fn run(&self, link: &Link, ops: &[Op<'_>]) -> Answer {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let dialect = link.session.dialect;
        let writes = ops.iter().any(Op::writes);
        let queued = link.pipeline.queue(ops.len(), |out, first| {
            let opaque = |index: usize, op: &Op<'_>| {
                (dialect == Dialect::Meta && op.echoes())
                    .then_some(first.wrapping_add(index as u32))
            };
            let mut classic = Vec::new();
            for (index, op) in ops.iter().enumerate() {
                op.encode(dialect, out, first.wrapping_add(index as u32))?;
                if dialect == Dialect::Classic {
                    classic.push(op.classic().to_owned());
                }
            }
            let opaques = match ops {
                [op] => Opaques::One(opaque(0, op)),
                ops => Opaques::Many(
                    ops.iter()
                        .enumerate()
                        .map(|(i, op)| opaque(i, op))
                        .collect(),
                ),
            };
            Ok(Expect {
                opaques,
                classic,
                writes,
            })
        });
        let pending = match queued {
            Ok(pending) => pending,
            Err(failure) => {
                if link.pipeline.is_broken() {
                    link.retire();
                }
                return Err(failure);
            }
        };
        // The pipeline breaks the connection when the reply does not come within the I/O
        // time-out: the answer is then `Ambiguous` (a write sent) or `Unavailable`.
        let in_flight = InFlight::enter(&link.in_flight);
        let answer = pending.await;
        drop(in_flight);
        if answer.is_err() {
            link.retire();
        }
        answer
    }

    async fn store(
        &self,
        mode: Store,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> Outcome<Added> {
        let link = self.link().await?;
        if let Some(remaining) = link.session.delayed(lock_delay) {
            return Ok(Added::Delayed { remaining });
        }
        let op = Op::Store {
            mode,
            key,
            value,
            ttl,
        };
        let replies = self.run(&link, &[op]).await?;
        let reply = first(&replies)?;
        match mode {
            Store::Add => ops::added(reply, link.session.epoch),
            _ => ops::stored(reply, link.session.epoch),
        }
    }

    async fn checked(&self, op: Op<'_>, epoch: Option<Epoch>) -> Outcome<Checked> {
        let link = self.link().await?;
        if link.session.restarted_since(epoch) {
            return Ok(Checked::Restarted);
        }
        let wants_cas = matches!(op, Op::Store { .. });
        let replies = self.run(&link, &[op]).await?;
        ops::checked(first(&replies)?, wants_cas)
    }
}

/// Counts a request in flight on a link until dropped (also when the caller is cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn first(replies: &[Owned]) -> Outcome<Reply<'_>> {
    replies
        .first()
        .map(Owned::reply)
        .ok_or_else(|| Failure::Protocol("reply missing".into()))
}

//! The blocking transport to one server: a small pool of probed connections. A connection
//! goes back to the pool only after a complete, well-formed exchange; one that saw an error
//! or a time-out is dropped, so no reply can ever be read out of step.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::meta::Store;
use super::ops::{self, Op};
use super::{Address, Dialect, Settings};
use crate::error::Refusal;
use crate::wire::transport::{Added, Checked, Epoch, Failure, Item, Outcome, Pong, Transport};

/// How many times a request is moved to another connection when the one taken from the pool
/// turns out closed before anything was sent on it.
const STALE_RETRIES: usize = 2;

/// Whether a request may be sent again when the pooled connection it went out on, trusted
/// without a check (see `Conn::needs_check`), turns out closed by the server before any
/// byte of the reply.
#[derive(Debug, Clone, Copy)]
enum Resend {
    /// A read or a no-op: it changes nothing.
    Always,
    /// A CAS-checked write whose CAS was read from this incarnation of the server: sent
    /// again only when the new connection meets another incarnation, where the exchange
    /// answers `Restarted` without sending anything.
    IfRestarted(Option<Epoch>),
    /// An add or a counter: its failure stays ambiguous, for the lock logic to settle.
    Never,
}

/// How a connection came out of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkout {
    /// Dialed for this request.
    Dialed,
    /// Pooled, and found open by a peek.
    Checked,
    /// Pooled and used less than `TRUSTED_FOR` ago: taken without a peek.
    Trusted,
}

/// One memcached server with its own pool of blocking connections.
pub struct Backend {
    address: String,
    target: Address,
    settings: Settings,
    idle: Mutex<Vec<Conn>>,
    /// Set once the server asked for ASCII auth: later connections send it first.
    wants_auth: AtomicBool,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("address", &self.address)
            .finish()
    }
}

impl Backend {
    /// A transport to `spec`; connections are dialed on first use.
    /// A pool for the server `address` (as configured: `host:port` or a path) at `target`.
    pub(crate) fn new(address: String, target: Address, settings: Settings) -> Backend {
        Backend {
            address,
            target,
            settings,
            idle: Mutex::new(Vec::new()),
            wants_auth: AtomicBool::new(false),
        }
    }

    /// Dials a new connection, sending ASCII auth first once the server is known to want it
    /// (credentials never reach a server that did not ask for them).
    fn dial(&self) -> Outcome<Conn> {
        let has_auth = self.settings.auth.is_some();
        let send_auth = has_auth && self.wants_auth.load(Ordering::Relaxed);
        match Conn::open(&self.target, &self.settings, send_auth) {
            Err(Failure::Refused(Refusal::AuthRequired)) if has_auth && !send_auth => {
                self.wants_auth.store(true, Ordering::Relaxed);
                Conn::open(&self.target, &self.settings, true)
            }
            other => other,
        }
    }

    /// A pooled connection that is still open (or, used less than `conn::TRUSTED_FOR` ago,
    /// taken as such), or a new one.
    fn checkout(&self) -> Outcome<(Conn, Checkout)> {
        let mut now = None;
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(conn) = pooled else {
                return Ok((self.dial()?, Checkout::Dialed));
            };
            let now = *now.get_or_insert_with(Instant::now);
            if !conn.needs_check(now) {
                return Ok((conn, Checkout::Trusted));
            }
            if !conn.is_stale() {
                return Ok((conn, Checkout::Checked));
            }
        }
    }

    /// Drops every idle connection (after one turned out closed by the server: a restart
    /// closes them all).
    fn drain(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(idle);
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.settings.max_idle {
            idle.push(conn);
        }
    }

    /// Runs `exchange` on a connection, returning it to the pool when it succeeded.
    fn with_conn<T>(
        &self,
        resend: Resend,
        mut exchange: impl FnMut(&mut Conn) -> Outcome<T>,
    ) -> Outcome<T> {
        let mut tries = 0;
        loop {
            let (mut conn, how) = self.checkout()?;
            let failure = match exchange(&mut conn) {
                Ok(value) => {
                    self.checkin(conn);
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            let pooled = how != Checkout::Dialed;
            if tries >= STALE_RETRIES || !pooled {
                return Err(failure);
            }
            // A pooled connection the peer closed between the check and the write (the
            // write fails at once on a closed socket): another connection carries it.
            let broke_on_send = conn.broke_on_send
                && matches!(failure, Failure::Unavailable(_) | Failure::Ambiguous(_));
            // A trusted connection the server had closed (see `Conn::needs_check`).
            let closed = how == Checkout::Trusted && conn.closed_unanswered;
            if !broke_on_send && !closed {
                return Err(failure);
            }
            tries += 1;
            tracing::debug!(server = %self.address, "pooled connection was closed: {failure:?}");
            drop(conn);
            if broke_on_send {
                continue;
            }
            self.drain();
            match resend {
                Resend::Always => {}
                Resend::IfRestarted(Some(epoch)) => {
                    let (mut conn, _) = self.checkout()?;
                    if !conn.session.restarted_since(Some(epoch)) {
                        self.checkin(conn);
                        return Err(failure);
                    }
                    // Answers `Restarted` without sending anything.
                    let answer = exchange(&mut conn);
                    if answer.is_ok() {
                        self.checkin(conn);
                    }
                    return answer;
                }
                Resend::IfRestarted(None) | Resend::Never => return Err(failure),
            }
        }
    }

    /// Blocking read, for the clean-up thread.
    pub(crate) fn read_now(&self, key: &[u8]) -> Outcome<Option<Item>> {
        self.with_conn(Resend::Always, |conn| {
            let epoch = conn.session.epoch;
            let mut found = None;
            conn.run(&[Op::Read { key }], |_, reply| {
                found = ops::item(reply, epoch)?;
                Ok(())
            })?;
            Ok(found)
        })
    }

    /// Blocking compare-and-delete, for the clean-up thread.
    pub(crate) fn delete_if_now(
        &self,
        key: &[u8],
        cas: u64,
        epoch: Option<Epoch>,
    ) -> Outcome<Checked> {
        self.with_conn(Resend::IfRestarted(epoch), |conn| {
            if conn.session.restarted_since(epoch) {
                return Ok(Checked::Restarted);
            }
            let mut answer = Checked::Missing;
            conn.run(&[Op::DeleteIf { key, cas }], |_, reply| {
                answer = ops::checked(reply, false)?;
                Ok(())
            })?;
            Ok(answer)
        })
    }

    /// Blocking compare-and-replace, for the clean-up thread.
    pub(crate) fn replace_if_now(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> Outcome<Checked> {
        self.with_conn(Resend::IfRestarted(epoch), |conn| {
            if conn.session.restarted_since(epoch) {
                return Ok(Checked::Restarted);
            }
            let mode = Store::IfCas(cas);
            let mut answer = Checked::Missing;
            let op = Op::Store {
                mode,
                key,
                value,
                ttl,
            };
            conn.run(&[op], |_, reply| {
                answer = ops::checked(reply, true)?;
                Ok(())
            })?;
            Ok(answer)
        })
    }

    fn store(
        &self,
        mode: Store,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> Outcome<Added> {
        self.with_conn(Resend::Never, |conn| {
            if let Some(remaining) = conn.session.delayed(lock_delay) {
                return Ok(Added::Delayed { remaining });
            }
            let epoch = conn.session.epoch;
            let mut answer = Added::Exists;
            let op = Op::Store {
                mode,
                key,
                value,
                ttl,
            };
            conn.run(&[op], |_, reply| {
                answer = match mode {
                    Store::Add => ops::added(reply, epoch)?,
                    _ => ops::stored(reply, epoch)?,
                };
                Ok(())
            })?;
            Ok(answer)
        })
    }
}

impl Transport for Backend {
    fn address(&self) -> &str {
        &self.address
    }

    async fn add(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> Outcome<Added> {
        self.store(Store::Add, key, value, ttl, lock_delay)
    }

    async fn add_fenced(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        fence_key: &[u8],
        initial: u64,
        lock_delay: Duration,
    ) -> Outcome<(Added, Outcome<u64>)> {
        self.with_conn(Resend::Never, |conn| {
            if let Some(remaining) = conn.session.delayed(lock_delay) {
                let skipped = Failure::Unavailable("lock-delay: nothing sent".into());
                return Ok((Added::Delayed { remaining }, Err(skipped)));
            }
            let epoch = conn.session.epoch;
            let batch = [
                Op::Store {
                    mode: Store::Add,
                    key,
                    value,
                    ttl,
                },
                Op::Increment {
                    key: fence_key,
                    initial,
                },
            ];
            let mut added = Added::Exists;
            let mut fence = Err(Failure::Protocol("fence counter reply missing".into()));
            conn.run(&batch, |index, reply| {
                if index == 0 {
                    added = ops::added(reply, epoch)?;
                } else {
                    fence = ops::counted(reply);
                }
                Ok(())
            })?;
            Ok((added, fence))
        })
    }

    async fn next_fence(&self, fence_key: &[u8], initial: u64) -> Outcome<u64> {
        self.with_conn(Resend::Never, |conn| {
            let mut fence = 0;
            let op = Op::Increment {
                key: fence_key,
                initial,
            };
            conn.run(&[op], |_, reply| {
                fence = ops::counted(reply)?;
                Ok(())
            })?;
            Ok(fence)
        })
    }

    async fn bump(
        &self,
        key: &[u8],
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Outcome<Option<u64>> {
        self.with_conn(Resend::Never, |conn| {
            for _ in 0..ops::CREATE_TRIES {
                let mut bumped = None;
                let op = Op::Bump { key, delta, create };
                conn.run(&[op], |_, reply| {
                    bumped = ops::bumped(reply)?;
                    Ok(())
                })?;
                // Meta created it already (`J`); classic creates it here.
                let (None, Some((initial, ttl)), Dialect::Classic) =
                    (bumped, create, conn.session.dialect)
                else {
                    return Ok(bumped);
                };
                let value = initial.to_string();
                let add = Op::Store {
                    mode: Store::Add,
                    key,
                    value: value.as_bytes(),
                    ttl,
                };
                let mut created = false;
                conn.run(&[add], |_, reply| {
                    created = ops::created(reply)?;
                    Ok(())
                })?;
                if created {
                    return Ok(Some(initial));
                }
            }
            Err(Failure::Unavailable(
                "the counter vanished between incr and add".into(),
            ))
        })
    }

    async fn overwrite(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> Outcome<Added> {
        self.store(Store::Set, key, value, ttl, lock_delay)
    }

    async fn read(&self, key: &[u8]) -> Outcome<Option<Item>> {
        self.read_now(key)
    }

    async fn read_many(&self, keys: &[Vec<u8>]) -> Outcome<Vec<Option<Item>>> {
        let batch: Vec<Op<'_>> = keys.iter().map(|key| Op::Read { key }).collect();
        self.with_conn(Resend::Always, |conn| {
            let epoch = conn.session.epoch;
            let mut items = Vec::with_capacity(batch.len());
            conn.run(&batch, |_, reply| {
                items.push(ops::item(reply, epoch)?);
                Ok(())
            })?;
            Ok(items)
        })
    }

    async fn delete_if(&self, key: &[u8], cas: u64, epoch: Option<Epoch>) -> Outcome<Checked> {
        self.delete_if_now(key, cas, epoch)
    }

    async fn replace_if(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> Outcome<Checked> {
        self.replace_if_now(key, value, cas, ttl, epoch)
    }

    async fn ping(&self) -> Outcome<Pong> {
        self.with_conn(Resend::Always, |conn| {
            let started = Instant::now();
            conn.run(&[Op::Noop], |_, reply| ops::noop(reply))?;
            let round_trip = started.elapsed();
            let session = &conn.session;
            Ok(Pong {
                round_trip,
                version: session.version.clone(),
                dialect: session.dialect.as_str(),
                tls: session.tls,
                auth: session.auth,
            })
        })
    }
}

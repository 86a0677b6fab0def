//! An in-memory memcached for unit tests of the lock logic: the [`Transport`] operations on
//! a map, a manual [`Clock`], and faults injected one request at a time — a reply lost after
//! the command was applied ([`Failure::Ambiguous`]), a garbled reply, a server that cannot
//! be reached, an eviction, a restart (every item gone, CAS values from 1 again, a new
//! [`Epoch`], uptime 0 for the lock-delay) — so the acquire / release / refresh / steal /
//! reap algorithm runs in milliseconds, without Docker (the model: governor's fake clock
//! and in-memory state, r2d2's fake managers).
//!
//! `flavor::Simulated` is the flavour whose transport is the fake: `Client<Simulated>` runs the
//! same lock code as `Client<Blocking>` (its futures complete on their first poll) and
//! sleeps by advancing the clock installed on the calling thread.
//!
//! Crate-private for now: with the `test-util` feature it is compiled (and checked) outside
//! the unit tests too, ready to be exposed to users' own tests.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::wire::transport::{Added, Checked, Epoch, Failure, Item, Outcome, Pong, Transport};

pub(crate) mod clock;

pub(crate) use clock::Clock;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which request a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `add` and `add_fenced`.
    Add,
    /// `overwrite` (the steal).
    Overwrite,
    /// `read` and `read_many`.
    Read,
    /// `delete_if`.
    Delete,
    /// `replace_if` (refresh, cooldown).
    Replace,
    /// `next_fence`.
    Fence,
    /// Any request.
    Any,
}

/// What goes wrong with one request.
pub(crate) enum Fault {
    /// The request is applied, then its reply is lost: [`Failure::Ambiguous`].
    LoseReply,
    /// The request never reaches the server: [`Failure::Unavailable`].
    Unreachable,
    /// The server answers something that is not a reply: [`Failure::Protocol`].
    Garbage,
    /// Runs `before` (another client's move, a restart, time passing), then serves the
    /// request normally: a race at an exact point of the algorithm.
    Before(Box<dyn FnOnce() + Send>),
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::LoseReply => "LoseReply",
            Fault::Unreachable => "Unreachable",
            Fault::Garbage => "Garbage",
            Fault::Before(_) => "Before(..)",
        })
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    cas: u64,
    /// Clock time (since the clock's start) at which the item is gone; `None`: never.
    expires: Option<Duration>,
}

#[derive(Debug)]
struct State {
    items: HashMap<Vec<u8>, Entry>,
    next_cas: u64,
    epoch: Epoch,
    /// Clock time of the last start.
    started: Duration,
    down: bool,
    faults: VecDeque<(Op, Fault)>,
    /// Requests served (faulty ones included), by kind.
    log: Vec<Op>,
}

/// One in-memory memcached server (see the module docs). Cheap to share (`Arc`).
pub(crate) struct FakeServer {
    address: String,
    clock: Clock,
    state: Mutex<State>,
}

impl fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Unix time of the clock's start, as the fake servers tell it.
const UNIX_START: u64 = 1_700_000_000;

impl FakeServer {
    /// A server that started just now (uptime 0) by `clock`.
    pub(crate) fn new(address: &str, clock: &Clock) -> FakeServer {
        let started = clock.elapsed();
        FakeServer {
            address: address.to_string(),
            clock: clock.clone(),
            state: Mutex::new(State {
                items: HashMap::new(),
                next_cas: 1,
                epoch: Epoch {
                    started: UNIX_START + started.as_secs(),
                    pid: 1000,
                },
                started,
                down: false,
                faults: VecDeque::new(),
                log: Vec::new(),
            }),
        }
    }

    /// The next request of kind `op` meets `fault` (faults queue up in order).
    pub(crate) fn inject(&self, op: Op, fault: Fault) {
        lock(&self.state).faults.push_back((op, fault));
    }

    /// Every request fails as [`Failure::Unavailable`] until [`up`](Self::up).
    pub(crate) fn down(&self) {
        lock(&self.state).down = true;
    }

    pub(crate) fn up(&self) {
        lock(&self.state).down = false;
    }

    /// Drops `key` (an eviction, or an operator's delete).
    pub(crate) fn evict(&self, key: &[u8]) {
        lock(&self.state).items.remove(key);
    }

    /// A crash and restart: every item gone, CAS values from 1 again, a new process id and
    /// start time (uptime 0).
    pub(crate) fn restart(&self) {
        let now = self.clock.elapsed();
        let mut state = lock(&self.state);
        state.items.clear();
        state.next_cas = 1;
        state.started = now;
        state.epoch = Epoch {
            started: UNIX_START + now.as_secs(),
            pid: state.epoch.pid + 1,
        };
    }

    /// The value stored at `key`, if any (expired items are gone).
    pub(crate) fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut state = lock(&self.state);
        self.expire(&mut state);
        state.items.get(key).map(|entry| entry.value.clone())
    }

    /// The seconds `key` has left (`Some(None)`: never expires).
    pub(crate) fn ttl(&self, key: &[u8]) -> Option<Option<u64>> {
        let mut state = lock(&self.state);
        self.expire(&mut state);
        let now = self.clock.elapsed();
        state
            .items
            .get(key)
            .map(|entry| entry.expires.map(|at| seconds_up(at.saturating_sub(now))))
    }

    /// Stores `value` at `key` as another client would (no fault, no lock-delay).
    pub(crate) fn put(&self, key: &[u8], value: &[u8], ttl: u32) {
        let mut state = lock(&self.state);
        self.store(&mut state, key, value, ttl);
    }

    /// How many requests of kind `op` were made (`Op::Any`: all).
    pub(crate) fn requests(&self, op: Op) -> usize {
        let state = lock(&self.state);
        state
            .log
            .iter()
            .filter(|logged| op == Op::Any || **logged == op)
            .count()
    }

    fn expire(&self, state: &mut State) {
        let now = self.clock.elapsed();
        state
            .items
            .retain(|_, entry| entry.expires.is_none_or(|at| at > now));
    }

    fn store(&self, state: &mut State, key: &[u8], value: &[u8], ttl: u32) -> u64 {
        let cas = state.next_cas;
        state.next_cas += 1;
        let expires = (ttl > 0).then(|| self.clock.elapsed() + Duration::from_secs(u64::from(ttl)));
        state.items.insert(
            key.to_vec(),
            Entry {
                value: value.to_vec(),
                cas,
                expires,
            },
        );
        cas
    }

    /// The remaining lock-delay, when the server is younger than `lock_delay`.
    fn delayed(&self, state: &State, lock_delay: Duration) -> Option<Duration> {
        let uptime = self.clock.elapsed().saturating_sub(state.started);
        (uptime < lock_delay).then(|| lock_delay - uptime)
    }

    /// Serves one request of kind `op`: the first matching fault decides what goes wrong;
    /// `apply` runs on the state unless the request never arrives.
    fn serve<T>(&self, op: Op, apply: impl FnOnce(&Self, &mut State) -> Outcome<T>) -> Outcome<T> {
        let fault = {
            let mut state = lock(&self.state);
            state.log.push(op);
            let index = state
                .faults
                .iter()
                .position(|(kind, _)| *kind == op || *kind == Op::Any);
            index.and_then(|index| state.faults.remove(index).map(|(_, fault)| fault))
        };
        let fault = match fault {
            Some(Fault::Before(run)) => {
                run();
                None
            }
            other => other,
        };
        let mut state = lock(&self.state);
        if state.down || matches!(fault, Some(Fault::Unreachable)) {
            return Err(Failure::Unavailable("connection refused (fake)".into()));
        }
        if matches!(fault, Some(Fault::Garbage)) {
            return Err(Failure::Protocol(
                "unexpected reply: \"HELLO\" (fake)".into(),
            ));
        }
        self.expire(&mut state);
        let answer = apply(self, &mut state);
        match fault {
            Some(Fault::LoseReply) => Err(Failure::Ambiguous("no reply within 1s (fake)".into())),
            _ => answer,
        }
    }

    fn item(&self, state: &State, key: &[u8]) -> Option<Item> {
        let now = self.clock.elapsed();
        state.items.get(key).map(|entry| Item {
            value: entry.value.clone(),
            cas: entry.cas,
            ttl: entry.expires.map(|at| seconds_up(at.saturating_sub(now))),
            epoch: Some(state.epoch),
        })
    }

    fn added(
        &self,
        state: &mut State,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        delay: Duration,
    ) -> Added {
        if let Some(remaining) = self.delayed(state, delay) {
            return Added::Delayed { remaining };
        }
        if state.items.contains_key(key) {
            return Added::Exists;
        }
        let cas = self.store(state, key, value, ttl);
        Added::Stored {
            cas,
            epoch: Some(state.epoch),
        }
    }

    fn bumped(&self, state: &mut State, key: &[u8], initial: u64) -> Outcome<u64> {
        let next = match state.items.get(key) {
            Some(entry) => std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| Failure::Protocol("counter is not a number (fake)".into()))?
                .wrapping_add(1),
            None => initial,
        };
        let ttl = crate::wire::transport::FENCE_TTL;
        self.store(state, key, next.to_string().as_bytes(), ttl);
        Ok(next)
    }

    /// Whether a write carrying `epoch` must not be sent: the server restarted since.
    fn restarted_since(state: &State, epoch: Option<Epoch>) -> bool {
        epoch.is_some_and(|then| !then.is_same(&state.epoch))
    }

    fn checked_delete(state: &mut State, key: &[u8], cas: u64, epoch: Option<Epoch>) -> Checked {
        if FakeServer::restarted_since(state, epoch) {
            return Checked::Restarted;
        }
        match state.items.get(key) {
            None => Checked::Missing,
            Some(entry) if entry.cas != cas => Checked::Mismatch,
            Some(_) => {
                state.items.remove(key);
                Checked::Applied { cas: None }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn checked_replace(
        &self,
        state: &mut State,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> Checked {
        if FakeServer::restarted_since(state, epoch) {
            return Checked::Restarted;
        }
        match state.items.get(key) {
            None => Checked::Missing,
            Some(entry) if entry.cas != cas => Checked::Mismatch,
            Some(_) => Checked::Applied {
                cas: Some(self.store(state, key, value, ttl)),
            },
        }
    }

    /// The blocking reads and writes of the background clean-up: served like any request,
    /// but never consuming an injected fault (the clean-up thread runs concurrently with
    /// the test, which must decide which request a fault hits); [`down`](Self::down) holds.
    fn quietly<T>(&self, apply: impl FnOnce(&Self, &mut State) -> T) -> Outcome<T> {
        let mut state = lock(&self.state);
        if state.down {
            return Err(Failure::Unavailable("connection refused (fake)".into()));
        }
        self.expire(&mut state);
        Ok(apply(self, &mut state))
    }
}

/// Whole seconds, rounded up (memcached reports a partial second as a whole one).
fn seconds_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl Transport for FakeServer {
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
        self.serve(Op::Add, |fake, state| {
            Ok(fake.added(state, key, value, ttl, lock_delay))
        })
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
        self.serve(Op::Add, |fake, state| {
            let added = fake.added(state, key, value, ttl, lock_delay);
            let fence = match added {
                Added::Delayed { .. } => Err(Failure::Unavailable("not sent (lock-delay)".into())),
                _ => fake.bumped(state, fence_key, initial),
            };
            Ok((added, fence))
        })
    }

    async fn bump(
        &self,
        key: &[u8],
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Outcome<Option<u64>> {
        self.serve(Op::Fence, |fake, state| {
            let current = match state.items.get(key) {
                Some(entry) => Some(
                    std::str::from_utf8(&entry.value)
                        .ok()
                        .and_then(|text| text.parse::<u64>().ok())
                        .ok_or_else(|| {
                            Failure::Protocol("counter is not a number (fake)".into())
                        })?,
                ),
                None => None,
            };
            let (next, ttl) = match (current, create) {
                (Some(value), _) => (value.wrapping_add(delta), 0),
                (None, Some((initial, ttl))) => (initial, ttl),
                (None, None) => return Ok(None),
            };
            match state.items.get_mut(key) {
                // Arithmetic keeps the item's expiry.
                Some(entry) => {
                    entry.value = next.to_string().into_bytes();
                    entry.cas = state.next_cas;
                    state.next_cas += 1;
                }
                None => {
                    fake.store(state, key, next.to_string().as_bytes(), ttl);
                }
            }
            Ok(Some(next))
        })
    }

    async fn next_fence(&self, fence_key: &[u8], initial: u64) -> Outcome<u64> {
        self.serve(Op::Fence, |fake, state| {
            fake.bumped(state, fence_key, initial)
        })
    }

    async fn overwrite(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> Outcome<Added> {
        self.serve(Op::Overwrite, |fake, state| {
            if let Some(remaining) = fake.delayed(state, lock_delay) {
                return Ok(Added::Delayed { remaining });
            }
            let cas = fake.store(state, key, value, ttl);
            Ok(Added::Stored {
                cas,
                epoch: Some(state.epoch),
            })
        })
    }

    async fn read(&self, key: &[u8]) -> Outcome<Option<Item>> {
        self.serve(Op::Read, |fake, state| Ok(fake.item(state, key)))
    }

    async fn read_many(&self, keys: &[Vec<u8>]) -> Outcome<Vec<Option<Item>>> {
        self.serve(Op::Read, |fake, state| {
            Ok(keys.iter().map(|key| fake.item(state, key)).collect())
        })
    }

    async fn delete_if(&self, key: &[u8], cas: u64, epoch: Option<Epoch>) -> Outcome<Checked> {
        self.serve(Op::Delete, |_, state| {
            Ok(FakeServer::checked_delete(state, key, cas, epoch))
        })
    }

    async fn replace_if(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> Outcome<Checked> {
        self.serve(Op::Replace, |fake, state| {
            Ok(fake.checked_replace(state, key, value, cas, ttl, epoch))
        })
    }

    async fn ping(&self) -> Outcome<Pong> {
        self.serve(Op::Any, |_, _| {
            Ok(Pong {
                round_trip: Duration::ZERO,
                version: "1.6.18-fake".into(),
                dialect: "meta",
                tls: false,
                auth: false,
            })
        })
    }
}

impl crate::wire::transport::Sweep for FakeServer {
    fn address(&self) -> &str {
        &self.address
    }

    fn read_now(&self, key: &[u8]) -> Outcome<Option<Item>> {
        self.quietly(|fake, state| fake.item(state, key))
    }

    fn delete_if_now(&self, key: &[u8], cas: u64, epoch: Option<Epoch>) -> Outcome<Checked> {
        self.quietly(|_, state| FakeServer::checked_delete(state, key, cas, epoch))
    }

    fn replace_if_now(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> Outcome<Checked> {
        self.quietly(|fake, state| fake.checked_replace(state, key, value, cas, ttl, epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor::block_on;

    #[test]
    fn add_reads_back_and_expires_by_the_manual_clock() {
        let clock = Clock::new();
        let server = FakeServer::new("fake:1", &clock);
        let added = block_on(server.add(b"k", b"v", 2, Duration::ZERO)).unwrap();
        assert!(matches!(added, Added::Stored { cas: 1, .. }), "{added:?}");
        let again = block_on(server.add(b"k", b"w", 2, Duration::ZERO)).unwrap();
        assert_eq!(again, Added::Exists);
        let item = block_on(server.read(b"k")).unwrap().unwrap();
        assert_eq!((item.value.as_slice(), item.ttl), (&b"v"[..], Some(2)));
        clock.advance(Duration::from_millis(1500));
        assert_eq!(server.ttl(b"k"), Some(Some(1)));
        clock.advance(Duration::from_millis(500));
        assert_eq!(block_on(server.read(b"k")).unwrap(), None);
    }

    #[test]
    fn a_lost_reply_still_applies_the_write() {
        let clock = Clock::new();
        let server = FakeServer::new("fake:1", &clock);
        server.inject(Op::Add, Fault::LoseReply);
        let lost = block_on(server.add(b"k", b"v", 0, Duration::ZERO));
        assert!(matches!(lost, Err(Failure::Ambiguous(_))));
        assert_eq!(server.value(b"k").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_restart_forgets_items_resets_cas_and_refuses_old_epochs() {
        let clock = Clock::new();
        let server = FakeServer::new("fake:1", &clock);
        let Added::Stored { cas, epoch } =
            block_on(server.add(b"k", b"v", 0, Duration::ZERO)).unwrap()
        else {
            panic!("stored")
        };
        clock.advance(Duration::from_secs(10));
        server.restart();
        assert_eq!(server.value(b"k"), None);
        let delayed = block_on(server.add(b"k", b"w", 0, Duration::from_secs(5))).unwrap();
        assert_eq!(
            delayed,
            Added::Delayed {
                remaining: Duration::from_secs(5)
            }
        );
        let Added::Stored { cas: again, .. } =
            block_on(server.add(b"k", b"w", 0, Duration::ZERO)).unwrap()
        else {
            panic!("stored")
        };
        assert_eq!(again, cas, "CAS values start again at 1");
        let stale = block_on(server.delete_if(b"k", cas, epoch)).unwrap();
        assert_eq!(stale, Checked::Restarted);
        assert_eq!(server.value(b"k").as_deref(), Some(&b"w"[..]));
    }
}

//! Lock::Server's locks on the fleet, with a FIFO queue that all gateways share.
//!
//! # Records (all plain memsem locks, under the gateway's namespace)
//!
//! | lock name | what | value (holder info) | lease |
//! |---|---|---|---|
//! | `KEY` | the lock itself | `lock-server requester=R expires=E grant=N` | lock timeout + 1 s |
//! | `memsem-serve/grant/KEY/N` | how to release grant N from any gateway | the token of `KEY` | as `KEY` |
//! | `memsem-serve/queue/KEY` (32 permits) | one slot per waiting LOCK | `TICKET R` | 2 s, kept alive while waiting |
//! | `memsem-serve/ticket/KEY` (16 permits, fencing) | the ticket dispenser | — | released at once |
//!
//! A Lock::Server key is one path component, so it has no `/` and these names never collide
//! with each other; library users contend for `KEY` itself (they do not queue).
//!
//! # LOCK
//!
//! 1. If the requester already holds `KEY` (not timed out): `0`.
//! 2. If nobody is in line, try to add `KEY` at once (the uncontended fast path: four round
//!    trips with the check of step 1 and the grant record).
//! 3. Otherwise, or when that fails, take a number: acquire and at once release a permit of
//!    the dispenser; its fencing number is the ticket, strictly increasing across every
//!    gateway (one memcached counter, incremented atomically with the add).
//! 4. Queue: take a slot of `memsem-serve/queue/KEY` whose info is `TICKET R`. Its lease is
//!    short and kept alive while the request waits, so a gateway that dies drops out of the
//!    queue within 2 s and never stalls it. If another slot already carries `R`: `0`.
//! 5. Poll (`--poll`): read every slot in one round trip; the live slot with the lowest
//!    ticket is first in line. Only the first tries to add `KEY`; a lock whose `expires` has
//!    passed is released through its grant record (owner-checked) so that the timeout is
//!    exact to a poll, not to memcached's whole seconds.
//! 6. On success: write the grant record (`N`: the clock in nanoseconds, unique among the
//!    grants of `KEY`), leave the queue, answer `E` (Unix time with microseconds). At the
//!    attempt timeout (or shutdown, or the client leaving): leave the queue, answer `0`.
//!
//! Requests that reach the dispenser within one round trip of each other may be served in
//! either order; otherwise they are served in arrival order, across gateways. The
//! lease of `KEY` outlasts `E` by a second, so memcached never frees a lock before the time
//! the client was told; `CHECK` and `VERIFY` compare `E` with the clock. Clocks of the
//! gateways' machines are compared (`E` is written by one and read by the others): keep
//! them in sync (NTP) as Lock::Server's clients already assume.
//!
//! # UNLOCK, VERIFY, CHECK
//!
//! From any gateway: read `KEY`'s holder; UNLOCK reads the token from the grant record and
//! releases with it (owner-checked: a lock that changed hands in between is left alone).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memsem::{Client, Error, Semaphore, Tokio, WaitPolicy};

use super::Shutdown;

const QUEUE_PERMITS: u32 = 32;
const DISPENSER_PERMITS: u32 = 16;
const WAITER_TTL: Duration = Duration::from_secs(2);

/// A grant, as `KEY`'s holder info tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub requester: String,
    pub expires: f64,
    pub grant: u64,
}

impl Grant {
    fn info(&self) -> String {
        format!(
            "lock-server requester={} expires={:.6} grant={}",
            self.requester, self.expires, self.grant
        )
    }

    /// Reads a holder info written by [`Grant::info`]; `None` for any other holder.
    pub fn parse(info: &str) -> Option<Grant> {
        let mut words = info.split_whitespace();
        if words.next()? != "lock-server" {
            return None;
        }
        let requester = words.next()?.strip_prefix("requester=")?.to_string();
        let expires = words.next()?.strip_prefix("expires=")?.parse().ok()?;
        let grant = words.next()?.strip_prefix("grant=")?.parse().ok()?;
        Some(Grant {
            requester,
            expires,
            grant,
        })
    }
}

/// The current Unix time, in seconds with a fraction.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// A number for a grant, unique among the grants of one key within a lease: the clock in
/// nanoseconds (one key is granted at most once at a time), plus a counter within this process.
fn grant_id() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos.wrapping_add(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Lock::Server's operations, on the fleet.
#[derive(Debug)]
pub struct Locks {
    pub client: Client<Tokio>,
    pub lock_timeout: Duration,
    pub attempt_timeout: Duration,
    pub poll: Duration,
    /// Log each queued request (`--log-requests`).
    pub log_requests: bool,
    /// Locks this gateway granted (key → token, expiry): released when it shuts down.
    granted: Mutex<HashMap<String, (String, f64)>>,
}

impl Locks {
    pub fn new(
        client: Client<Tokio>,
        lock_timeout: Duration,
        attempt_timeout: Duration,
        poll: Duration,
    ) -> Locks {
        Locks {
            client,
            lock_timeout,
            attempt_timeout,
            poll,
            log_requests: false,
            granted: Mutex::new(HashMap::new()),
        }
    }

    /// The lock `key`, with a lease one second beyond the lock timeout.
    pub fn lock(&self, key: &str) -> Result<Semaphore<Tokio>, Error> {
        self.client
            .semaphore(key)?
            .with_ttl(self.lock_timeout + Duration::from_secs(1))
    }

    fn grant_record(&self, key: &str, grant: u64) -> Result<Semaphore<Tokio>, Error> {
        self.client
            .semaphore(&format!("memsem-serve/grant/{key}/{grant}"))?
            .with_ttl(self.lock_timeout + Duration::from_secs(1))
    }

    /// The grant on `key`: `Ok(None)` when free; `Some(None)` when held by a non-gateway holder.
    async fn current(&self, key: &str) -> Result<Option<Option<Grant>>, Error> {
        let holder = self.lock(key)?.holder().await?;
        Ok(holder.map(|holder| holder.info().and_then(Grant::parse)))
    }

    /// CHECK: whether `key` is locked and not timed out.
    pub async fn check(&self, key: &str) -> Result<bool, Error> {
        Ok(match self.current(key).await? {
            None => false,
            Some(None) => true,
            Some(Some(grant)) => grant.expires > now_unix(),
        })
    }

    /// The live grant of `requester` on `key`, if it holds it.
    async fn held_by(&self, key: &str, requester: &str) -> Result<Option<Grant>, Error> {
        Ok(match self.current(key).await? {
            Some(Some(grant)) if grant.requester == requester && grant.expires > now_unix() => {
                Some(grant)
            }
            _ => None,
        })
    }

    /// VERIFY: whether `requester` holds `key` and it has not timed out.
    pub async fn verify(&self, key: &str, requester: &str) -> Result<bool, Error> {
        Ok(self.held_by(key, requester).await?.is_some())
    }

    /// UNLOCK: releases `key` if `requester` holds it; whether it did.
    pub async fn unlock(&self, key: &str, requester: &str) -> Result<bool, Error> {
        match self.held_by(key, requester).await? {
            Some(grant) => self.release_grant(key, &grant).await,
            None => Ok(false),
        }
    }

    /// Releases the lock of `grant` with the token its grant record keeps (owner-checked).
    async fn release_grant(&self, key: &str, grant: &Grant) -> Result<bool, Error> {
        let record = self.grant_record(key, grant.grant)?.holder().await?;
        let Some(token) = record.as_ref().and_then(|record| record.info()) else {
            return Ok(false);
        };
        match self.lock(key)?.resume(token).await {
            Ok(permit) => {
                permit.release().await?;
                self.forget_granted(key, token);
                Ok(true)
            }
            Err(Error::LockLost { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn forget_granted(&self, key: &str, token: &str) {
        let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        if granted.get(key).is_some_and(|(held, _)| held == token) {
            granted.remove(key);
        }
    }

    /// LOCK: waits in line for `key`, up to the attempt timeout; the expiry once granted,
    /// `None` on time-out, shutdown, or when `requester` already holds or waits for it.
    pub async fn lock_key(
        &self,
        key: &str,
        requester: &str,
        shutdown: &mut Shutdown,
    ) -> Result<Option<f64>, Error> {
        let deadline = Instant::now() + self.attempt_timeout;
        if self.held_by(key, requester).await?.is_some() {
            return Ok(None);
        }
        let queue = self
            .client
            .semaphore(&format!("memsem-serve/queue/{key}"))?
            .with_permits(QUEUE_PERMITS)?;
        // Nobody in line: no ticket needed, try at once.
        if queue.holders().await?.is_empty()
            && let Some(expires) = self.try_take(key, requester, false).await?
        {
            return Ok(Some(expires));
        }
        let ticket = self.ticket(key).await?;
        let queue = queue
            .with_ttl(WAITER_TTL)?
            .with_info(&format!("{ticket} {requester}"))?;
        let Some(place) = queue.try_acquire().await? else {
            return Err(Error::InvalidConfig(format!(
                "{QUEUE_PERMITS} requests already wait for {key}"
            )));
        };
        let place = place.keep_alive();
        if self.log_requests {
            eprintln!("memsem serve lock-server: {key} {requester} queued with ticket {ticket}");
        }
        let outcome = self
            .wait_turn(key, requester, ticket, &queue, deadline, shutdown)
            .await;
        let _ = place.release().await;
        outcome
    }

    /// Takes a ticket from the dispenser of `key`.
    async fn ticket(&self, key: &str) -> Result<u64, Error> {
        let dispenser = self
            .client
            .semaphore(&format!("memsem-serve/ticket/{key}"))?
            .with_permits(DISPENSER_PERMITS)?
            .with_fencing()?
            .with_ttl(Duration::from_secs(5))?
            .with_wait_policy(
                WaitPolicy::new()
                    .poll_time(Duration::from_millis(1))
                    .max_wait(self.attempt_timeout),
            );
        let permit = dispenser.wait_acquire().await?;
        let ticket = permit.fence().unwrap_or(0);
        permit.release().await?;
        Ok(ticket)
    }

    async fn wait_turn(
        &self,
        key: &str,
        requester: &str,
        ticket: u64,
        queue: &Semaphore<Tokio>,
        deadline: Instant,
        shutdown: &mut Shutdown,
    ) -> Result<Option<f64>, Error> {
        loop {
            let waiters: Vec<(u64, String)> = queue
                .holders()
                .await?
                .iter()
                .filter_map(|holder| {
                    let (number, who) = holder.info()?.split_once(' ')?;
                    Some((number.parse().ok()?, who.to_string()))
                })
                .collect();
            if waiters
                .iter()
                .any(|(number, who)| who == requester && *number != ticket)
            {
                return Ok(None);
            }
            let first = waiters.iter().map(|(number, _)| *number).min();
            if first.is_none_or(|first| first >= ticket)
                && let Some(expires) = self.try_take(key, requester, true).await?
            {
                return Ok(Some(expires));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll.min(deadline - now)) => {}
                _ = shutdown.begun() => return Ok(None),
            }
        }
    }

    /// One attempt at `key`; with `end_expired` (the first in line), ends a timed-out grant
    /// first.
    async fn try_take(
        &self,
        key: &str,
        requester: &str,
        end_expired: bool,
    ) -> Result<Option<f64>, Error> {
        if end_expired
            && let Some(Some(grant)) = self.current(key).await?
            && grant.expires <= now_unix()
        {
            self.release_grant(key, &grant).await?;
        }
        let grant = Grant {
            requester: requester.to_string(),
            expires: now_unix() + self.lock_timeout.as_secs_f64(),
            grant: grant_id(),
        };
        let Some(permit) = self
            .lock(key)?
            .with_info(&grant.info())?
            .try_acquire()
            .await?
        else {
            return Ok(None);
        };
        // If this fails, the permit is dropped: released in the background.
        let record = self
            .grant_record(key, grant.grant)?
            .with_info(permit.token())?;
        let Some(record) = record.try_acquire().await? else {
            return Ok(None);
        };
        record.forget();
        let token = permit.forget();
        let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        if granted.len() > 4096 {
            let now = now_unix();
            granted.retain(|_, (_, expires)| *expires > now);
        }
        granted.insert(key.to_string(), (token, grant.expires));
        Ok(Some(grant.expires))
    }

    /// Releases the unexpired locks this gateway granted (at shutdown).
    pub async fn release_granted(&self) -> usize {
        let granted: Vec<(String, (String, f64))> = {
            let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
            granted.drain().collect()
        };
        let now = now_unix();
        let mut released = 0;
        for (key, (token, expires)) in granted {
            if expires <= now {
                continue;
            }
            if let Ok(sem) = self.lock(&key)
                && let Ok(permit) = sem.resume(&token).await
            {
                released += usize::from(permit.release().await.is_ok());
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_info_reads_back() {
        let grant = Grant {
            requester: "worker-1".into(),
            expires: 1_700_000_000.25,
            grant: 42,
        };
        assert_eq!(
            grant.info(),
            "lock-server requester=worker-1 expires=1700000000.250000 grant=42"
        );
        assert_eq!(Grant::parse(&grant.info()), Some(grant));
        assert_eq!(Grant::parse("ci job 42"), None);
        assert_eq!(Grant::parse("lock-server requester=x"), None);
    }
}

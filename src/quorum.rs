//! [`QuorumLock`]: Redlock on memcached — a lock held on a majority of independent servers.

use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::{Error, LostReason, Result};
use crate::flavor::block_on;
use crate::memcached::{Added, Checked, Epoch, Failure, Outcome, Transport};
use crate::semaphore::{DEFAULT_TTL, lease_seconds};
use crate::token::Token;
use crate::wait::{Next, WaitPolicy, Waiter};

/// A lock on a majority of the client's servers (the Redlock algorithm), for locks that must
/// survive the loss of a minority of memcached servers. Every server of the
/// [`Client`] votes; keys are not routed. Get one from [`Client::quorum_lock`].
///
/// **Acquire**: add the key with one random token and the TTL on every server at once; the
/// lock is held when a majority stored it and time is left: the *validity* is the TTL minus
/// the time the adds took minus an allowance for clock drift (1% of the TTL plus 2 ms).
/// Otherwise every add that landed is undone (owner-checked) and the attempt failed.
/// **Extend** and **release** act on the servers that stored it, by token and CAS.
///
/// # Limits
///
/// - The holder must finish (or extend) within [`QuorumPermit::validity`]; a process paused
///   longer (GC, swap, a suspended VM) can overlap with the next holder. Use
///   [fencing](crate::Semaphore::with_fencing) on the protected resource where that matters.
/// - A server that restarts forgets its votes: if a majority of the holder's servers restart
///   within the TTL, a second holder can get in. Keep restarted servers out for one TTL.
/// - TTLs are whole seconds on the server; validity is counted on this process's clock.
/// - Cost: one round trip per attempt (all servers in parallel), plus one to undo a failed
///   attempt.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211,mc4:11211,mc5:11211")?;
/// let lock = client.quorum_lock("ledger-close")?.with_ttl(Duration::from_secs(30))?;
/// if let Some(permit) = lock.try_acquire()? {
///     assert!(permit.validity() > Duration::from_secs(29));
///     // ... work that finishes well within the validity ...
///     permit.release()?;
/// }
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct QuorumLock {
    client: Client,
    name: String,
    key: Vec<u8>,
    ttl_secs: u32,
    policy: WaitPolicy,
}

/// A held [`QuorumLock`]: released on drop.
///
/// # Examples
///
/// ```no_run
/// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
/// let permit = client.quorum_lock("job")?.wait_acquire()?;
/// println!("held on {} servers for {:?}", permit.votes(), permit.validity());
/// # Ok::<(), memsem::Error>(())
/// ```
#[must_use = "a permit is released as soon as it is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct QuorumPermit {
    lock: QuorumLock,
    token: Token,
    /// The voters that stored our token, with the CAS they gave it.
    /// The servers that hold it: index, CAS and the incarnation that granted it.
    held: Vec<(usize, u64, Option<Epoch>)>,
    valid_until: Instant,
    armed: bool,
}

/// A majority of `voters`.
fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// Runs `each` on every item in parallel, one thread per item (one item per voter).
fn on_all<I: Sync, T: Send>(items: &[I], each: impl Fn(&I) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let each = &each;
        let handles: Vec<_> = items
            .iter()
            .map(|item| scope.spawn(move || each(item)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a voter thread panicked"))
            .collect()
    })
}

impl QuorumLock {
    pub(crate) fn new(client: Client, name: String, key: Vec<u8>) -> QuorumLock {
        QuorumLock {
            client,
            name,
            key,
            ttl_secs: DEFAULT_TTL.as_secs() as u32,
            policy: WaitPolicy::default(),
        }
    }

    /// Sets the TTL on each server (whole seconds, rounded up; default 60 s).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for zero or more than 30 days.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let lock = client.quorum_lock("job")?.with_ttl(std::time::Duration::from_secs(10))?;
    /// # let _ = lock;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_ttl(mut self, ttl: Duration) -> Result<QuorumLock> {
        self.ttl_secs = lease_seconds(ttl, self.client.leases().max_lease)?;
        Ok(self)
    }

    /// Sets how [`wait_acquire`](Self::wait_acquire) waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let lock = client
    ///     .quorum_lock("job")?
    ///     .with_wait_policy(memsem::WaitPolicy::new().max_wait(Duration::from_secs(5)));
    /// # let _ = lock;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_wait_policy(mut self, policy: WaitPolicy) -> QuorumLock {
        self.policy = policy;
        self
    }

    /// How many servers vote.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211,127.0.0.1:11212")?;
    /// assert_eq!(client.quorum_lock("job")?.voters(), 2);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn voters(&self) -> usize {
        self.client.backends().len()
    }

    /// One attempt: `Ok(None)` when others hold a majority.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when fewer than a majority of servers answered.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
    /// if let Some(permit) = client.quorum_lock("job")?.try_acquire()? {
    ///     permit.release()?;
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<QuorumPermit>> {
        let backends = self.client.backends();
        let token = Token::generate();
        let started = Instant::now();
        let replies = on_all(backends, |backend| {
            let delay = self.client.leases().lock_delay;
            block_on(backend.add(&self.key, token.as_str().as_bytes(), self.ttl_secs, delay))
        });
        let elapsed = started.elapsed();
        let ttl = Duration::from_secs(u64::from(self.ttl_secs));
        let drift = ttl / 100 + Duration::from_millis(2);
        let validity = ttl.saturating_sub(elapsed).saturating_sub(drift);
        let mut held = Vec::new();
        let mut unsure = Vec::new();
        let mut reachable = 0;
        for (index, reply) in replies.into_iter().enumerate() {
            match reply {
                Ok(Added::Stored { cas, epoch }) => {
                    reachable += 1;
                    held.push((index, cas, epoch));
                }
                // A server in its lock-delay answers, but votes no.
                Ok(Added::Exists | Added::Delayed { .. }) => reachable += 1,
                Err(Failure::Ambiguous(_)) => unsure.push(index),
                Err(_) => {}
            }
        }
        let needed = majority(backends.len());
        if held.len() >= needed && !validity.is_zero() {
            return Ok(Some(QuorumPermit {
                lock: self.clone(),
                token,
                held,
                valid_until: started + validity,
                armed: true,
            }));
        }
        // Failed: undo every vote we got, and have the clean-up settle the unanswered ones.
        let undone = on_all(&held, |&(index, cas, epoch)| {
            block_on(backends[index].delete_if(&self.key, cas, epoch))
        });
        for (&(index, _, _), outcome) in held.iter().zip(undone) {
            if outcome.is_err() {
                unsure.push(index);
            }
        }
        for index in unsure {
            self.client.janitor().clean_up(
                &self.client.cleanup_backends()[index],
                &self.key,
                &token,
                self.ttl_secs,
            );
        }
        if reachable < needed {
            return Err(Error::NoQuorum {
                name: self.name.clone(),
                reachable,
                needed,
                voters: backends.len(),
            });
        }
        Ok(None)
    }

    /// Retries [`try_acquire`](Self::try_acquire) by the wait policy.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when `max_wait` ran out (with the last [`Error::NoQuorum`], if any).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
    /// let permit = client.quorum_lock("job")?.wait_acquire()?;
    /// permit.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    #[doc(alias = "acquire")]
    pub fn wait_acquire(&self) -> Result<QuorumPermit> {
        let mut waiter = Waiter::new(&self.name, &self.policy, Instant::now());
        loop {
            match waiter.after(self.try_acquire(), Instant::now())? {
                Next::Done(permit) => return Ok(permit),
                Next::Sleep(delay) => std::thread::sleep(delay),
            }
        }
    }
}

impl QuorumPermit {
    /// The token stored on every server.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
    /// assert_eq!(client.quorum_lock("job")?.wait_acquire()?.token().len(), 32);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn token(&self) -> &str {
        self.token.as_str()
    }

    /// How many servers hold this lock.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
    /// assert!(client.quorum_lock("job")?.wait_acquire()?.votes() >= 2);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn votes(&self) -> usize {
        self.held.len()
    }

    /// How long the lock is still safely held, by this process's clock (zero once it ran out).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
    /// let permit = client.quorum_lock("job")?.wait_acquire()?;
    /// assert!(!permit.validity().is_zero());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn validity(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }

    /// The old name of [`refresh`](Self::refresh), kept for one release.
    ///
    /// # Errors
    ///
    /// As [`refresh`](Self::refresh).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #![allow(deprecated)]
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
    /// client.quorum_lock("job")?.wait_acquire()?.extend(Duration::from_secs(60))?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    #[deprecated(since = "0.1.0", note = "use `refresh`, the name every lock kind uses")]
    pub fn extend(&mut self, ttl: Duration) -> Result<()> {
        self.refresh(ttl)
    }

    /// Extends the lease to `ttl` on the servers that hold it (owner-checked, in parallel):
    /// the same name as [`Permit::refresh`](crate::Permit::refresh).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when fewer than a majority could be extended in time (the lock is
    /// then released everywhere); [`Error::InvalidConfig`] for a bad TTL.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
    /// let mut permit = client.quorum_lock("job")?.wait_acquire()?;
    /// permit.refresh(Duration::from_secs(60))?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn refresh(&mut self, ttl: Duration) -> Result<()> {
        let secs = lease_seconds(ttl, self.lock.client.leases().max_lease)?;
        let backends = self.lock.client.backends();
        let started = Instant::now();
        let value = self.token.as_str().as_bytes();
        let replies: Vec<Outcome<Checked>> = on_all(&self.held, |&(index, cas, epoch)| {
            block_on(backends[index].replace_if(&self.lock.key, value, cas, secs, epoch))
        });
        let mut held = Vec::new();
        for (&(index, _, epoch), reply) in self.held.iter().zip(replies) {
            if let Ok(Checked::Applied { cas: Some(cas) }) = reply {
                held.push((index, cas, epoch));
            }
        }
        let ttl = Duration::from_secs(u64::from(secs));
        let validity = ttl
            .saturating_sub(started.elapsed())
            .saturating_sub(ttl / 100 + Duration::from_millis(2));
        let enough = held.len() >= majority(backends.len()) && !validity.is_zero();
        self.held = held;
        if !enough {
            self.armed = false;
            // The lock is lost either way; undoing what is left is best effort.
            let _ = self.undo();
            return Err(Error::LockLost {
                name: self.lock.name.clone(),
                reason: LostReason::Missing,
            });
        }
        self.valid_until = started + validity;
        Ok(())
    }

    /// Releases the lock on every server that holds it (owner-checked, in parallel).
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when a server did not confirm (the background clean-up
    /// finishes the job once it answers, or the TTL does).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("mc1:11211,mc2:11211,mc3:11211")?;
    /// client.quorum_lock("job")?.wait_acquire()?.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn release(mut self) -> Result<()> {
        self.armed = false;
        self.undo()
    }

    /// Deletes our token wherever we hold it; unconfirmed deletes go to the clean-up.
    fn undo(&mut self) -> Result<()> {
        let backends = self.lock.client.backends();
        let replies = on_all(&self.held, |&(index, cas, epoch)| {
            block_on(backends[index].delete_if(&self.lock.key, cas, epoch))
        });
        let mut first_error = None;
        for (&(index, _, _), reply) in self.held.iter().zip(replies) {
            if let Err(failure) = reply {
                let backend = &backends[index];
                self.lock.client.janitor().clean_up(
                    &self.lock.client.cleanup_backends()[index],
                    &self.lock.key,
                    &self.token,
                    self.lock.ttl_secs,
                );
                if first_error.is_none() {
                    first_error = Some(match failure {
                        Failure::Unavailable(source) | Failure::Ambiguous(source) => {
                            Error::Unavailable {
                                server: backend.address().to_string(),
                                source,
                            }
                        }
                        Failure::Protocol(detail) => Error::Protocol {
                            server: backend.address().to_string(),
                            detail,
                        },
                        Failure::Refused(reason) => Error::Refused {
                            server: backend.address().to_string(),
                            reason,
                        },
                    });
                }
            }
        }
        self.held.clear();
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for QuorumPermit {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            if let Err(error) = self.undo() {
                tracing::warn!(lock = self.lock.name, error = %crate::error::Chain(&error), "releasing a dropped quorum permit failed");
            }
        }
    }
}

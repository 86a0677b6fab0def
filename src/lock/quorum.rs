//! [`QuorumLock`]: Redlock on memcached — a lock held on a majority of independent servers.

use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::error::{Error, LostReason, Result};
use crate::flavor::{Blocking, Flavor, block_on};
use crate::fleet::Fleet;
use crate::lock::ttl::{DEFAULT_TTL, lease_seconds};
use crate::wait::{self, Repeat, Sleep, WaitPolicy};
use crate::wire::token::Token;
use crate::wire::transport::{Added, Checked, Epoch, Failure, Outcome, Transport};

/// A lock on a majority of the client's servers (the Redlock algorithm), for locks that must
/// survive the loss of a minority of memcached servers. Every server of the
/// [`Client`](crate::Client) votes; keys are not routed. Get one from [`Client::quorum_lock`](crate::Client::quorum_lock).
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
/// With the `tokio` feature, a `Client<Tokio>` gives a `QuorumLock<Tokio>` with the same
/// operations, `async`: the votes are requests in flight together, and waits sleep with
/// `tokio::time`.
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
pub struct QuorumLock<F: Flavor = Blocking> {
    fleet: Arc<Fleet<F>>,
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
pub struct QuorumPermit<F: Flavor = Blocking> {
    lock: QuorumLock<F>,
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

impl<F: Flavor> QuorumLock<F> {
    pub(crate) fn new(fleet: Arc<Fleet<F>>, name: String, key: Vec<u8>) -> QuorumLock<F> {
        QuorumLock {
            fleet,
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
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self> {
        self.ttl_secs = lease_seconds(ttl, self.fleet.leases().max_lease)?;
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
    pub fn with_wait_policy(mut self, policy: WaitPolicy) -> Self {
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
        self.fleet.backends().len()
    }

    pub(crate) async fn try_acquire_core(&self) -> Result<Option<QuorumPermit<F>>> {
        let backends = self.fleet.backends();
        let token = Token::generate();
        let started = Instant::now();
        let delay = self.fleet.leases().lock_delay;
        let value = token.as_str().as_bytes();
        let votes = backends
            .iter()
            .map(|backend| backend.add(&self.key, value, self.ttl_secs, delay));
        let replies = F::join_all(votes.collect()).await;
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
        let undoing = held
            .iter()
            .map(|&(index, cas, epoch)| backends[index].delete_if(&self.key, cas, epoch));
        let undone = F::join_all(undoing.collect()).await;
        for (&(index, _, _), outcome) in held.iter().zip(undone) {
            if outcome.is_err() {
                unsure.push(index);
            }
        }
        for index in unsure {
            self.fleet.janitor().clean_up(
                &self.fleet.cleanup_backends()[index],
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

    pub(crate) async fn wait_acquire_core(&self) -> Result<QuorumPermit<F>> {
        let mut attempt = Repeat(|| self.try_acquire_core());
        let mut sleep = Sleep::<F>::new();
        let waited = wait::run::<F, _, _>(&self.name, &self.policy, &mut attempt, &mut sleep);
        Ok(wait::settled(waited.await?))
    }
}

/// The blocking operations (the default flavour).
impl QuorumLock<Blocking> {
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
        block_on(self.try_acquire_core())
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
        block_on(self.wait_acquire_core())
    }
}

/// The async operations (feature `tokio`): the same names and semantics as the blocking
/// ones. An acquire dropped mid-flight leaves its unseen votes to the TTL.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl QuorumLock<crate::flavor::Tokio> {
    /// One attempt, every vote in flight at once. As [`QuorumLock::try_acquire`].
    ///
    /// # Errors
    ///
    /// As [`QuorumLock::try_acquire`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let servers = "mc1:11211,mc2:11211,mc3:11211";
    /// let client = memsem::Client::builder().servers(servers).build_async().await?;
    /// if let Some(permit) = client.quorum_lock("job")?.try_acquire().await? {
    ///     permit.release().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_acquire(&self) -> Result<Option<QuorumPermit<crate::flavor::Tokio>>> {
        self.try_acquire_core().await
    }

    /// Retries by the wait policy, sleeping with `tokio::time`. As
    /// [`QuorumLock::wait_acquire`].
    ///
    /// # Errors
    ///
    /// As [`QuorumLock::wait_acquire`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let servers = "mc1:11211,mc2:11211,mc3:11211";
    /// let client = memsem::Client::builder().servers(servers).build_async().await?;
    /// client.quorum_lock("job")?.wait_acquire().await?.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_acquire(&self) -> Result<QuorumPermit<crate::flavor::Tokio>> {
        self.wait_acquire_core().await
    }
}

impl<F: Flavor> QuorumPermit<F> {
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

    pub(crate) async fn refresh_core(&mut self, ttl: Duration) -> Result<()> {
        let secs = lease_seconds(ttl, self.lock.fleet.leases().max_lease)?;
        let backends = self.lock.fleet.backends();
        let started = Instant::now();
        let value = self.token.as_str().as_bytes();
        let extending = self.held.iter().map(|&(index, cas, epoch)| {
            backends[index].replace_if(&self.lock.key, value, cas, secs, epoch)
        });
        let replies: Vec<Outcome<Checked>> = F::join_all(extending.collect()).await;
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
            let _ = self.undo().await;
            return Err(Error::LockLost {
                name: self.lock.name.clone(),
                reason: LostReason::Missing,
            });
        }
        self.valid_until = started + validity;
        Ok(())
    }

    pub(crate) async fn release_core(mut self) -> Result<()> {
        self.armed = false;
        self.undo().await
    }

    /// Hands every vote to the client's clean-up thread (a permit dropped in async code).
    fn hand_to_cleanup(&mut self) {
        let client = &self.lock.fleet;
        for &(index, _, _) in &self.held {
            client.janitor().clean_up(
                &client.cleanup_backends()[index],
                &self.lock.key,
                &self.token,
                self.lock.ttl_secs,
            );
        }
        self.held.clear();
    }

    /// Deletes our token wherever we hold it; unconfirmed deletes go to the clean-up.
    async fn undo(&mut self) -> Result<()> {
        let backends = self.lock.fleet.backends();
        let undoing = self
            .held
            .iter()
            .map(|&(index, cas, epoch)| backends[index].delete_if(&self.lock.key, cas, epoch));
        let replies = F::join_all(undoing.collect()).await;
        let mut first_error = None;
        for (&(index, _, _), reply) in self.held.iter().zip(replies) {
            if let Err(failure) = reply {
                let backend = &backends[index];
                self.lock.fleet.janitor().clean_up(
                    &self.lock.fleet.cleanup_backends()[index],
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

/// The blocking operations (the default flavour).
impl QuorumPermit<Blocking> {
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
        block_on(self.refresh_core(ttl))
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
    pub fn release(self) -> Result<()> {
        block_on(self.release_core())
    }
}

/// The async operations (feature `tokio`). Dropping the permit hands the release to the
/// client's background clean-up (never blocking the runtime).
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl QuorumPermit<crate::flavor::Tokio> {
    /// Extends the lease on the servers that hold it. As [`QuorumPermit::refresh`].
    ///
    /// # Errors
    ///
    /// As [`QuorumPermit::refresh`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let servers = "mc1:11211,mc2:11211,mc3:11211";
    /// let client = memsem::Client::builder().servers(servers).build_async().await?;
    /// let mut permit = client.quorum_lock("job")?.wait_acquire().await?;
    /// permit.refresh(std::time::Duration::from_secs(60)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refresh(&mut self, ttl: Duration) -> Result<()> {
        self.refresh_core(ttl).await
    }

    /// Releases the lock everywhere. As [`QuorumPermit::release`].
    ///
    /// # Errors
    ///
    /// As [`QuorumPermit::release`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let servers = "mc1:11211,mc2:11211,mc3:11211";
    /// let client = memsem::Client::builder().servers(servers).build_async().await?;
    /// client.quorum_lock("job")?.wait_acquire().await?.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn release(self) -> Result<()> {
        self.release_core().await
    }
}

impl<F: Flavor> Drop for QuorumPermit<F> {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            if !F::BLOCKING {
                // Never block an async runtime in drop.
                self.hand_to_cleanup();
                return;
            }
            if let Err(error) = block_on(self.undo()) {
                tracing::warn!(lock = self.lock.name, error = %crate::error::Chain(&error), "releasing a dropped quorum permit failed");
            }
        }
    }
}

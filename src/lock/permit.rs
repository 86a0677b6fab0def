//! The [`Permit`] guard: proof of holding a lock, given back on drop.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, LostReason, Result};
use crate::flavor::{Blocking, Flavor, block_on};
use crate::fleet::Target;
use crate::lock::ttl::{lease_seconds, whole_seconds};
use crate::wire::token::Token;
use crate::wire::transport::{Checked, Epoch, Failure, Transport};

/// A held lock. Released when dropped (best effort: a failure is logged with `tracing` and
/// the key is cleaned up in the background once its server answers); call
/// [`release`](Permit::release) to see the outcome.
///
/// Every operation on a permit is owner-checked: it changes the key only while the key still
/// holds this permit's token, so a permit whose lease ran out never touches the next
/// holder's lock; it reports [`Error::LockLost`] instead.
///
/// # Examples
///
/// ```no_run
/// let client = memsem::Client::connect("127.0.0.1:11211")?;
/// let sem = client.semaphore("compaction")?;
/// {
///     let _permit = sem.wait_acquire()?;
///     // ... compact ...
/// } // released here, also when the block panics
/// # Ok::<(), memsem::Error>(())
/// ```
#[must_use = "a permit is released as soon as it is dropped"]
#[clippy::has_significant_drop]
pub struct Permit<F: Flavor = Blocking> {
    target: Arc<Target<F>>,
    key: Vec<u8>,
    slot: u32,
    fence: Option<u64>,
    token: Token,
    value: Vec<u8>,
    cas: u64,
    /// The incarnation of the server that granted the lock (and issued `cas`).
    epoch: Option<Epoch>,
    ttl_secs: u32,
    cooldown_secs: u32,
    acquired_at: Instant,
    expires_at: Option<Instant>,
    armed: bool,
    handoff: Option<crate::lock::fair::Handoff>,
}

/// What reading the key back says about this permit.
enum Found {
    Ours { cas: u64, epoch: Option<Epoch> },
    Lost(LostReason),
}

impl<F: Flavor> Permit<F> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        target: Arc<Target<F>>,
        (key, slot): (Vec<u8>, u32),
        token: Token,
        value: Vec<u8>,
        (cas, epoch): (u64, Option<Epoch>),
        ttl_secs: u32,
        cooldown_secs: u32,
        started: Instant,
    ) -> Permit<F> {
        let expires_at = (ttl_secs > 0).then(|| started + Duration::from_secs(u64::from(ttl_secs)));
        Permit {
            target,
            key,
            slot,
            fence: None,
            token,
            value,
            cas,
            epoch,
            ttl_secs,
            cooldown_secs,
            acquired_at: started,
            expires_at,
            armed: true,
            handoff: None,
        }
    }

    /// With FIFO fairness: how the release hands the lock to the next ticket.
    pub(crate) fn set_handoff(&mut self, handoff: Option<crate::lock::fair::Handoff>) {
        self.handoff = handoff;
    }

    pub(crate) fn set_ticket(&mut self, ticket: u64) {
        if let Some(handoff) = &mut self.handoff {
            handoff.ticket = Some(ticket);
        }
    }

    pub(crate) fn set_fence(&mut self, fence: Option<u64>) {
        self.fence = fence;
    }

    /// The fencing token of this acquisition, when the semaphore hands them out (see
    /// [`Semaphore::with_fencing`](crate::Semaphore::with_fencing)): larger than the number of
    /// every earlier holder of the lock. `None` without fencing, and for a permit picked up
    /// with [`resume`](crate::Semaphore::resume).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("ledger")?.with_fencing()?;
    /// let first = sem.wait_acquire()?;
    /// let a = first.fence().unwrap();
    /// first.release()?;
    /// assert!(sem.wait_acquire()?.fence().unwrap() > a);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }

    /// Sets the expiry from the seconds the server says are left (`None`: never), counted
    /// from just before the read was sent, so that it never overstates the lease.
    pub(crate) fn set_remaining(&mut self, ttl: Option<u64>) {
        // The server's figure is network data: an absurd one must not overflow the clock.
        self.expires_at =
            ttl.and_then(|secs| self.acquired_at.checked_add(Duration::from_secs(secs)));
    }

    /// The lock's name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("job")?.wait_acquire()?;
    /// assert_eq!(permit.name(), "job");
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Which of the semaphore's permits this is, from 1 (see
    /// [`Semaphore::with_permits`](crate::Semaphore::with_permits)). Slot 1 is the Perl
    /// module's key.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("job")?.wait_acquire()?;
    /// assert_eq!(permit.slot(), 1);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// This holder's token (32 hex characters): with it, another process can
    /// [`resume`](crate::Semaphore::resume) the permit. Treat it as a secret; `Debug` never
    /// shows it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("job")?.wait_acquire()?;
    /// assert_eq!(permit.token().len(), 32);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn token(&self) -> &str {
        self.token.as_str()
    }

    /// The lease the permit was taken or last refreshed with; `None` without expiry.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("job")?.wait_acquire()?;
    /// assert_eq!(permit.ttl(), Some(memsem::DEFAULT_TTL));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn ttl(&self) -> Option<Duration> {
        (self.ttl_secs > 0).then(|| Duration::from_secs(u64::from(self.ttl_secs)))
    }

    /// When the lease ends, by this process's clock, counted from just before the request
    /// was sent (so it never overstates the lease). `None` without expiry.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("job")?.wait_acquire()?;
    /// assert!(permit.expires_at().unwrap() > std::time::Instant::now());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// When this permit was acquired (just before the winning request was sent).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("job")?.wait_acquire()?;
    /// println!("held for {:?}", permit.acquired_at().elapsed());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn acquired_at(&self) -> Instant {
        self.acquired_at
    }

    /// Keeps the lock: nothing is sent, and the lease ends with its TTL (or never, without
    /// expiry). Returns the token, with which [`Semaphore::resume`](crate::Semaphore::resume)
    /// can pick the permit up again.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let token: String = client.semaphore("job")?.wait_acquire()?.forget();
    /// println!("{token}");
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn forget(mut self) -> String {
        self.armed = false;
        self.token.as_str().to_string()
    }
}

/// A CAS-checked write of a permit's key.
enum Write {
    Delete,
    Replace { value: Vec<u8>, ttl_secs: u32 },
}

/// The lock logic of a permit, written once for both flavours.
impl<F: Flavor> Permit<F> {
    pub(crate) async fn release_core(mut self) -> Result<()> {
        self.armed = false;
        self.give_back().await
    }

    pub(crate) async fn release_with_cooldown_core(mut self, cooldown: Duration) -> Result<()> {
        self.armed = false;
        self.cooldown_secs = 0;
        if cooldown.is_zero() {
            return self.give_back().await;
        }
        match whole_seconds(cooldown, "the cooldown") {
            Ok(secs) => {
                self.cooldown_secs = secs;
                self.give_back().await
            }
            Err(error) => {
                self.give_back().await?;
                Err(error)
            }
        }
    }

    pub(crate) async fn refresh_core(&mut self, ttl: Duration) -> Result<()> {
        let secs = lease_seconds(ttl, self.target.leases().max_lease)?;
        let started = Instant::now();
        // The holder record says when it was last refreshed (for reap_stale).
        let value = crate::wire::record::Record::refreshed(&self.value);
        let cas = self
            .checked_write(
                "refresh",
                Write::Replace {
                    value: value.clone(),
                    ttl_secs: secs,
                },
            )
            .await?;
        self.value = value;
        self.cas = cas.unwrap_or(self.cas);
        self.ttl_secs = secs;
        self.expires_at = Some(started + Duration::from_secs(u64::from(secs)));
        Ok(())
    }

    pub(crate) async fn is_held_core(&self) -> Result<bool> {
        Ok(matches!(self.inspect("read").await?, Found::Ours { .. }))
    }

    /// Deletes the key (or cools it down), owner-checked.
    async fn give_back(&mut self) -> Result<()> {
        let outcome = if self.cooldown_secs > 0 {
            let write = Write::Replace {
                value: crate::wire::record::Record::cooled(&self.value),
                ttl_secs: self.cooldown_secs,
            };
            self.checked_write("cooldown", write).await
        } else if let Some((ticket, value)) = self.reservation().await {
            // FIFO: the key becomes a short reservation for the next ticket.
            let ttl_secs = crate::lock::fair::RESERVE_TTL;
            let write = Write::Replace {
                value: value.clone(),
                ttl_secs,
            };
            let written = match self.checked_write("release", write).await {
                // A reply lost after the reservation landed: read back, the key is no longer
                // ours, but it holds our reservation. Only this releaser moved the queue to
                // that ticket, so nobody else wrote it.
                Err(error) if error.is_lock_lost() => {
                    match self.target.backend.read(&self.key).await {
                        Ok(Some(item)) if item.value == value => Ok(None),
                        _ => Err(error),
                    }
                }
                other => other,
            };
            if let (Ok(cas), Some(handoff)) = (&written, &self.handoff) {
                let epoch = self.epoch;
                handoff.handed(ticket, self.slot, cas.map(|cas| (cas, epoch)));
            }
            written
        } else {
            self.checked_write("release", Write::Delete).await
        };
        match outcome {
            Err(error @ (Error::Unavailable { .. } | Error::Ambiguous { .. })) => {
                // Finish it in the background once the server answers.
                self.hand_to_cleanup();
                Err(error)
            }
            other => other.map(|_| ()),
        }
    }

    /// With FIFO fairness and somebody queued: the next ticket and its reservation.
    async fn reservation(&self) -> Option<(u64, Vec<u8>)> {
        match &self.handoff {
            Some(handoff) if handoff.wanted() => {
                handoff.held(self.acquired_at.elapsed());
                handoff.next(&*self.target.backend).await
            }
            _ => None,
        }
    }

    /// Leaves the release (owner-checked, with the cooldown if any) to the client's clean-up
    /// thread, which retries until the server answers or the lease ends.
    fn hand_to_cleanup(&self) {
        let target = &self.target;
        target.janitor().release(
            &target.cleanup,
            &self.key,
            &self.token,
            self.ttl_secs,
            self.cooldown_secs,
        );
    }

    /// Reads the key back and says whether it is still ours.
    async fn inspect(&self, operation: &'static str) -> Result<Found> {
        let item = self
            .target
            .backend
            .read(&self.key)
            .await
            .map_err(|failure| self.target.error(operation, failure))?;
        Ok(match item {
            Some(item) if self.token.owns(&item.value) => Found::Ours {
                cas: item.cas,
                epoch: item.epoch,
            },
            Some(_) => Found::Lost(LostReason::HeldByOther),
            None => Found::Lost(LostReason::Missing),
        })
    }

    fn lost(&self, reason: LostReason) -> Error {
        crate::metrics::lost(self.name(), reason);
        Error::LockLost {
            name: self.name().to_string(),
            reason,
        }
    }

    /// Runs a CAS-checked write. The token, not the CAS, says who owns the key: on a CAS
    /// mismatch, or when the reply was lost, the key is read back; while it still holds our
    /// token the write is retried with the CAS found (a lost-but-applied earlier write of
    /// ours changes the CAS). Returns the new CAS when the item still exists.
    async fn checked_write(
        &mut self,
        operation: &'static str,
        write: Write,
    ) -> Result<Option<u64>> {
        let deleting = matches!(write, Write::Delete);
        let mut sent_unanswered = None;
        for _ in 0..4 {
            let backend = &self.target.backend;
            let reply = match &write {
                Write::Delete => backend.delete_if(&self.key, self.cas, self.epoch).await,
                Write::Replace { value, ttl_secs } => {
                    backend
                        .replace_if(&self.key, value, self.cas, *ttl_secs, self.epoch)
                        .await
                }
            };
            match reply {
                Ok(Checked::Applied { cas }) => return Ok(cas),
                // Nothing was sent: the CAS belongs to a server that has restarted since.
                Ok(Checked::Restarted) => return Err(self.lost(LostReason::Restarted)),
                Ok(Checked::Missing) if deleting && sent_unanswered.is_some() => return Ok(None),
                Ok(Checked::Missing) => return Err(self.lost(LostReason::Missing)),
                Ok(Checked::Mismatch) => {}
                Err(Failure::Ambiguous(source)) => sent_unanswered = Some(source),
                Err(failure) => return Err(self.target.error(operation, failure)),
            }
            let found = match self.inspect(operation).await {
                Ok(found) => found,
                Err(error) => {
                    return Err(match sent_unanswered.take() {
                        Some(source) => self.target.error(operation, Failure::Ambiguous(source)),
                        None => error,
                    });
                }
            };
            match found {
                // Our earlier write landed after all.
                Found::Lost(LostReason::Missing) if deleting && sent_unanswered.is_some() => {
                    return Ok(None);
                }
                // Read from another incarnation: our CAS means nothing there.
                Found::Ours {
                    epoch: Some(now), ..
                } if self.epoch.is_some_and(|then| !then.is_same(&now)) => {
                    return Err(self.lost(LostReason::Restarted));
                }
                Found::Ours { cas, .. }
                    if !deleting && sent_unanswered.is_some() && cas != self.cas =>
                {
                    return Ok(Some(cas));
                }
                Found::Ours { cas, .. } => self.cas = cas,
                Found::Lost(reason) => return Err(self.lost(reason)),
            }
        }
        Err(Error::Protocol {
            server: self.target.backend.address().to_string(),
            detail: format!("{operation}: the key's CAS kept changing while it held our token"),
        })
    }
}

impl<F: Flavor> Drop for Permit<F> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        if F::BLOCKING {
            if let Err(error) = block_on(self.give_back()) {
                tracing::warn!(lock = self.name(), error = %crate::error::Chain(&error), "releasing a dropped permit failed");
            }
        } else {
            // Never block an async runtime in drop: the client's clean-up thread releases
            // the lock (owner-checked, with the cooldown if any) right away.
            self.hand_to_cleanup();
        }
    }
}

impl<F: Flavor> fmt::Debug for Permit<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("name", &self.target.name)
            .field("slot", &self.slot)
            .field("fence", &self.fence)
            .field("server", &self.target.backend.address())
            .field("token", &self.token)
            .field("ttl", &self.ttl())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

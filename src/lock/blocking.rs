//! The blocking facade: what [`Semaphore`] and [`Permit`] do for the default flavour, each a
//! `block_on` of the one async implementation.

use crate::lock::holder::Holder;
use crate::lock::semaphore::Semaphore;

use std::ops::ControlFlow;
use std::time::Duration;

use crate::error::Result;
use crate::flavor::{Blocking, block_on};
use crate::lock::permit::Permit;
use crate::wait::{Hook, Waiting};

/// The blocking operations (the default flavour).
impl Semaphore<Blocking> {
    /// Takes the lock if it is free: one round trip (a memcached add of a fresh random
    /// token with the TTL), never sleeps.
    ///
    /// Returns `Ok(None)` when somebody holds it — contention is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`](crate::Error::Unavailable) when the server cannot be reached (nothing was taken);
    /// [`Error::Ambiguous`](crate::Error::Ambiguous) when the add was sent, no reply came, and a second try could not
    /// find out either (a background clean-up removes the lock if it did land; at worst the
    /// TTL ends it); [`Error::Protocol`](crate::Error::Protocol) for a garbled reply.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// match client.semaphore("nightly-report")?.try_acquire()? {
    ///     Some(permit) => {
    ///         println!("running the report");
    ///         permit.release()?;
    ///     }
    ///     None => println!("another machine is running it"),
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<Permit>> {
        block_on(self.try_acquire_core())
    }

    /// Takes the lock, waiting as the [`WaitPolicy`](crate::WaitPolicy) says while somebody holds it or while
    /// its server is unreachable. The same token is offered on every attempt, so an attempt
    /// whose reply was lost is recognised on the next one.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout) when `max_wait` ran out (carrying the last server error, if any);
    /// with [`WaitPolicy::steal_after_wait`](crate::WaitPolicy::steal_after_wait), the errors of the forced write instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use memsem::{Client, Error, WaitPolicy};
    ///
    /// let client = Client::connect("127.0.0.1:11211")?;
    /// let sem = client
    ///     .semaphore("rebuild-index")?
    ///     .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(10)));
    /// match sem.wait_acquire() {
    ///     Ok(permit) => permit.release()?,
    ///     Err(Error::Timeout { waited, attempts, .. }) => {
    ///         eprintln!("still busy after {waited:?} ({attempts} tries)")
    ///     }
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    #[doc(alias = "acquire")]
    pub fn wait_acquire(&self) -> Result<Permit> {
        block_on(self.wait_acquire_core())
    }

    /// [`wait_acquire`](Self::wait_acquire) with the pauses between attempts in the
    /// caller's hands: instead of sleeping, the wait calls `pause`, which is shown where the
    /// wait stands ([`Waiting`]) and waits about [`Waiting::delay`] itself — to repaint a
    /// status line, or to stop early on a signal by returning `ControlFlow::Break(())`,
    /// which gives `Ok(None)` (nothing is held). Everything else is `wait_acquire`'s.
    ///
    /// # Errors
    ///
    /// As [`wait_acquire`](Self::wait_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::ops::ControlFlow;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// static STOP: AtomicBool = AtomicBool::new(false);
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("deploy")?.wait_acquire_with(|waiting| {
    ///     eprint!("\rwaiting {}s", waiting.waited().as_secs());
    ///     std::thread::sleep(waiting.delay());
    ///     match STOP.load(Ordering::Relaxed) {
    ///         true => ControlFlow::Break(()),
    ///         false => ControlFlow::Continue(()),
    ///     }
    /// })?;
    /// if permit.is_none() {
    ///     eprintln!("stopped");
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn wait_acquire_with(
        &self,
        pause: impl FnMut(&Waiting<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Permit>> {
        Ok(block_on(self.wait_acquire_paused(&mut Hook(pause)))?.ok())
    }

    /// Rebuilds the permit held by `token` (printed by `memsem acquire`, or kept from
    /// [`Permit::token`]) in this process, to release, refresh or check it. The TTL of the
    /// returned permit is what the server says is left.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`](crate::Error::LockLost) when the lock is free or held by another token;
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a malformed token; server errors as usual.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let token = sem.try_acquire()?.expect("free").forget();
    /// // ... later, maybe in another process ...
    /// sem.resume(&token)?.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn resume(&self, token: &str) -> Result<Permit> {
        block_on(self.resume_core(token))
    }

    /// Whether `token` holds one of this semaphore's permits right now (Lock::Server's
    /// VERIFY). One read; changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a malformed token; server errors as
    /// [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let permit = sem.try_acquire()?.unwrap();
    /// assert!(sem.verify(permit.token())?);
    /// assert!(!sem.verify("0123456789abcdef0123456789abcdef")?);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn verify(&self, token: &str) -> Result<bool> {
        block_on(self.verify_core(token))
    }

    /// Whether every permit is taken now (for one permit: whether somebody holds the lock or
    /// it is cooling down). One read; the answer may be stale by the time you act on it — use [`try_acquire`](Self::try_acquire) to take it.
    ///
    /// # Errors
    ///
    /// Server errors, as [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// println!("deploy lock is {}", if sem.is_locked()? { "taken" } else { "free" });
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn is_locked(&self) -> Result<bool> {
        block_on(self.is_locked_core())
    }

    /// Every current holder, in slot order (empty when all permits are free). One read.
    ///
    /// # Errors
    ///
    /// Server errors, as [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// for holder in client.semaphore("encoders")?.with_permits(4)?.holders()? {
    ///     println!("slot {}: {:?}", holder.slot(), holder.info());
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn holders(&self) -> Result<Vec<Holder>> {
        block_on(self.holders_core())
    }

    /// Who holds the lock now: `None` when it is free. One read; never shows the full token.
    ///
    /// # Errors
    ///
    /// Server errors, as [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// match client.semaphore("deploy")?.holder()? {
    ///     Some(holder) => println!("held: {}", holder.info().unwrap_or("(no info)")),
    ///     None => println!("free"),
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn holder(&self) -> Result<Option<Holder>> {
        Ok(self.holders()?.into_iter().next())
    }

    /// Removes the holders whose last refresh (by their own clock) is older than
    /// `older_than` — what an operator does after a crash left a lock without expiry, or a
    /// process hangs while holding one. Each removal is CAS-checked: a holder that refreshed
    /// after the read is kept. Holders that store no refresh time (the Perl module) are
    /// never reaped. Returns how many were removed. Compares clocks of different machines:
    /// keep `older_than` well above any clock skew.
    ///
    /// # Errors
    ///
    /// Server errors, as [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let workers = client.semaphore("workers")?.with_permits(8)?;
    /// let reaped = workers.reap_stale(Duration::from_secs(3600))?;
    /// println!("cleared {reaped} stale holders");
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn reap_stale(&self, older_than: Duration) -> Result<u32> {
        block_on(self.reap_stale_core(older_than))
    }

    /// How many of the semaphore's permits are free now (tokio's `available_permits`). One
    /// read; the answer may be stale by the time you act on it.
    ///
    /// # Errors
    ///
    /// Server errors, as [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let encoders = client.semaphore("encoders")?.with_permits(4)?;
    /// let _permit = encoders.try_acquire()?;
    /// assert!(encoders.available_permits()? <= 3);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn available_permits(&self) -> Result<u32> {
        block_on(self.available_permits_core())
    }

    /// Breaks the lock of `holder` (as read by [`holder`](Self::holder) or
    /// [`holders`](Self::holders)) — what an operator does about a lock whose holder is
    /// known dead, including a Perl-style lock without expiry. **Unsafe if the holder still
    /// runs**: it will go on as if it held the lock. Deletes the key only if it is unchanged
    /// since it was read (CAS-checked): `Ok(false)` when it has gone, been refreshed or been
    /// taken by another holder since, so that only the holder that was shown is broken.
    ///
    /// # Errors
    ///
    /// Server errors, as [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// if let Some(holder) = sem.holder()? {
    ///     println!("breaking the lock of {:?}", holder.info());
    ///     sem.break_holder(&holder)?;
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn break_holder(&self, holder: &Holder) -> Result<bool> {
        block_on(self.break_holder_core(holder))
    }
}

/// The blocking operations (the default flavour).
impl Permit<Blocking> {
    /// Gives the lock back: one CAS-checked delete (or, when the semaphore has a cooldown,
    /// the same as [`release_with_cooldown`](Self::release_with_cooldown)).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`](crate::Error::LockLost) when the lease had already ended or another holder has the lock
    /// (which is left untouched); [`Error::Unavailable`](crate::Error::Unavailable) or [`Error::Ambiguous`](crate::Error::Ambiguous) when the
    /// server did not answer (the lock is then deleted in the background once it does, or
    /// ends with its TTL).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("job")?.wait_acquire()?;
    /// permit.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn release(self) -> Result<()> {
        block_on(self.release_core())
    }

    /// Gives the lock back but keeps it closed for `cooldown`: the key keeps this token with
    /// an expiry of `cooldown` (whole seconds, rounded up), so nobody can acquire it until
    /// then. One CAS-checked write. [`Duration::ZERO`] is a plain release.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a cooldown above 30 days (the lock is then released
    /// plainly); otherwise as [`release`](Self::release).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("send-digest")?.wait_acquire()?;
    /// // ... send the digest; nobody may send another for 10 minutes ...
    /// permit.release_with_cooldown(Duration::from_secs(600))?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn release_with_cooldown(self, cooldown: Duration) -> Result<()> {
        block_on(self.release_with_cooldown_core(cooldown))
    }

    /// Extends the lease to `ttl` from now (whole seconds, rounded up). One CAS-checked
    /// write that keeps the value.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`](crate::Error::LockLost) when the lease had already ended (or the server restarted since
    /// the lock was granted); [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a zero TTL or one above the
    /// client's [`max_lease`](crate::ClientBuilder::max_lease); server errors as [`release`](Self::release) (the permit
    /// is then still yours until its current lease ends).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let mut permit = client.semaphore("long-job")?.wait_acquire()?;
    /// for _chunk in 0..10 {
    ///     // ... a chunk of work shorter than the TTL ...
    ///     permit.refresh(Duration::from_secs(60))?;
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn refresh(&mut self, ttl: Duration) -> Result<()> {
        block_on(self.refresh_core(ttl))
    }

    /// Asks the server whether this permit still holds the lock. One read.
    ///
    /// # Errors
    ///
    /// Server errors, as [`release`](Self::release).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let permit = client.semaphore("job")?.wait_acquire()?;
    /// assert!(permit.is_held()?);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn is_held(&self) -> Result<bool> {
        block_on(self.is_held_core())
    }
}

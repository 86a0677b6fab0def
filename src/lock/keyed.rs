//! The keyed mutex (stampede guard): one caller computes, the others wait for it and then
//! read the cache — what Perl's KeyedMutex does.

use crate::error::Result;
use crate::flavor::{Blocking, Flavor, block_on};
use crate::lock::permit::Permit;
use crate::lock::semaphore::Semaphore;
use crate::wait::{self, Repeat, Sleep};

/// What [`Semaphore::lock_or_wait`] found.
///
/// # Examples
///
/// ```no_run
/// use memsem::LockOrWait;
/// let client = memsem::Client::connect("127.0.0.1:11211")?;
/// match client.semaphore("page:/home")?.lock_or_wait()? {
///     LockOrWait::Acquired(permit) => { /* compute, fill the cache */ drop(permit) }
///     LockOrWait::Released => { /* somebody else filled it: read the cache */ }
/// }
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "an acquired permit is released as soon as it is dropped"]
pub enum LockOrWait<F: Flavor = Blocking> {
    /// Nobody held the lock: you hold it now; compute the value, store it, release.
    Acquired(Permit<F>),
    /// Somebody held the lock and has released it (or its lease ended) while you waited:
    /// the value they computed should now be in the cache.
    Released,
}

impl<F: Flavor> Semaphore<F> {
    pub(crate) async fn lock_or_wait_core(&self) -> Result<LockOrWait<F>> {
        if let Some(permit) = self.try_acquire_core().await? {
            return Ok(LockOrWait::Acquired(permit));
        }
        // Whom are we waiting for? Remember the holders' values, and wait until they change.
        let before = self.slot_values().await?;
        if before.iter().all(Option::is_none) {
            // Released between the add and the read.
            return Ok(LockOrWait::Released);
        }
        let before = &before;
        let mut released = Repeat(|| async move {
            let now = self.slot_values().await?;
            let gone = before
                .iter()
                .zip(&now)
                .any(|(was, is)| was.is_some() && was != is);
            Ok(gone.then_some(()))
        });
        let mut sleep = Sleep::<F>::new();
        let policy = self.wait_policy();
        wait::settled(wait::run::<F, _, _>(self.name(), policy, &mut released, &mut sleep).await?);
        Ok(LockOrWait::Released)
    }
}

impl Semaphore<Blocking> {
    /// Takes the lock if it is free; otherwise waits (by the semaphore's
    /// [`WaitPolicy`](crate::WaitPolicy)) until the current holder lets go, and says so
    /// without taking the lock. The cache-aside loop that stops a stampede: on a miss, call
    /// this; `Acquired` computes and fills the cache, `Released` reads the cache again.
    ///
    /// "Lets go" means the holder's record is no longer there: released, expired, or
    /// replaced by a later holder. Set a `max_wait`, and a TTL above the computation's
    /// usual duration.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout) when the holder kept the lock past `max_wait`; server errors as
    /// [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use memsem::{LockOrWait, WaitPolicy};
    ///
    /// # fn cache_get(_: &str) -> Option<String> { None }
    /// # fn cache_set(_: &str, _: &str) {}
    /// # fn expensive_query() -> String { String::new() }
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let guard = client
    ///     .semaphore("report:q3")?
    ///     .with_wait_policy(WaitPolicy::new().poll_time(Duration::from_millis(20)).max_wait(Duration::from_secs(5)));
    /// let report = loop {
    ///     if let Some(hit) = cache_get("report:q3") {
    ///         break hit;
    ///     }
    ///     match guard.lock_or_wait()? {
    ///         LockOrWait::Acquired(permit) => {
    ///             let fresh = expensive_query();
    ///             cache_set("report:q3", &fresh);
    ///             permit.release()?;
    ///             break fresh;
    ///         }
    ///         LockOrWait::Released => continue, // read what the holder stored
    ///     }
    /// };
    /// # let _ = report;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn lock_or_wait(&self) -> Result<LockOrWait> {
        block_on(self.lock_or_wait_core())
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Semaphore<crate::flavor::Tokio> {
    /// Takes the lock if it is free, or waits for its holder to let go. As
    /// [`Semaphore::lock_or_wait`]; cancel safe (see [`Semaphore::try_acquire`](Semaphore#impl-Semaphore<Tokio>)).
    ///
    /// # Errors
    ///
    /// As [`Semaphore::lock_or_wait`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// use memsem::LockOrWait;
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// match client.semaphore("report:q3")?.lock_or_wait().await? {
    ///     LockOrWait::Acquired(permit) => permit.release().await?,
    ///     LockOrWait::Released => { /* read the cache */ }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lock_or_wait(&self) -> Result<LockOrWait<crate::flavor::Tokio>> {
        self.lock_or_wait_core().await
    }
}

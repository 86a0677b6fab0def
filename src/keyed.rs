//! The keyed mutex (stampede guard): one caller computes, the others wait for it and then
//! read the cache — what Perl's KeyedMutex does.

use crate::error::Result;
use crate::permit::Permit;
use crate::semaphore::Semaphore;
use crate::token::Token;
use crate::wait::{self, RealClock};

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
pub enum LockOrWait {
    /// Nobody held the lock: you hold it now; compute the value, store it, release.
    Acquired(Permit),
    /// Somebody held the lock and has released it (or its lease ended) while you waited:
    /// the value they computed should now be in the cache.
    Released,
}

impl Semaphore {
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
        let token = Token::generate();
        let mut unsure = None;
        let first = self.attempt(&token, &mut unsure);
        if let Some(key) = unsure.take() {
            self.abandon(&key, &token);
        }
        if let Some(permit) = first? {
            return Ok(LockOrWait::Acquired(permit));
        }
        // Whom are we waiting for? Remember the holders' values, and wait until they change.
        let before = self.slot_values()?;
        if before.iter().all(Option::is_none) {
            // Released between the add and the read.
            return Ok(LockOrWait::Released);
        }
        wait::poll(self.name(), self.wait_policy(), &mut RealClock, || {
            let now = self.slot_values()?;
            let gone = before
                .iter()
                .zip(&now)
                .any(|(was, is)| was.is_some() && was != is);
            Ok(gone.then_some(LockOrWait::Released))
        })
    }
}

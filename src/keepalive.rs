//! [`KeepAlive`]: a permit whose lease is refreshed in the background while it is held.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, LostReason, Result};
use crate::flavor::Flavor;
use crate::permit::Permit;

/// A permit kept alive by a background thread that refreshes its lease every third of its
/// TTL (more often for leases of a few seconds, since memcached counts whole seconds), so the
/// protected work may run far longer than the TTL while a crashed process still frees the
/// lock within one TTL. Get one from [`Permit::keep_alive`].
///
/// When a refresh finds the lock gone or taken by somebody else — or cannot reach the server
/// before the lease ends — the keep-alive stops and the permit counts as lost: poll
/// [`is_lost`](KeepAlive::is_lost) between steps of the work, or block on
/// [`wait_lost`](KeepAlive::wait_lost) in a watchdog thread, and stop the protected work.
///
/// Dropping it stops the refreshing and releases the lock.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// let client = memsem::Client::connect("127.0.0.1:11211")?;
/// let sem = client.semaphore("reindex")?.with_ttl(Duration::from_secs(30))?;
/// let held = sem.wait_acquire()?.keep_alive();
/// for batch in 0..1000 {
///     if held.is_lost() {
///         eprintln!("lost the lock at batch {batch}: {:?}", held.lost_reason());
///         break;
///     }
///     // ... one batch of work, however long the whole job takes ...
/// }
/// held.release()?;
/// # Ok::<(), memsem::Error>(())
/// ```
#[must_use = "the lock is released as soon as the keep-alive is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct KeepAlive {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    permit: Option<Permit>,
    stopping: bool,
    lost: Option<LostReason>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KeepAlive {
    pub(crate) fn start(permit: Permit, on_lost: Option<OnLost>) -> KeepAlive {
        let ttl = permit.ttl();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                permit: Some(permit),
                stopping: false,
                lost: None,
            }),
            changed: Condvar::new(),
        });
        // A lock without expiry needs no refreshing.
        let thread = ttl.and_then(|ttl| {
            let worker = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("memsem-keepalive".into())
                .spawn(move || refresh_loop(&worker, ttl, on_lost))
                .map_err(|error| tracing::warn!(error = %crate::error::Chain(&error), "cannot start the keep-alive thread"))
                .ok()
        });
        KeepAlive { shared, thread }
    }

    /// Whether the lock was found lost (or the lease ran out unrefreshed). Never blocks on
    /// the network.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let held = client.semaphore("job")?.wait_acquire()?.keep_alive();
    /// assert!(!held.is_lost());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn is_lost(&self) -> bool {
        lock(&self.shared).lost.is_some()
    }

    /// Why the lock was lost, once it is.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let held = client.semaphore("job")?.wait_acquire()?.keep_alive();
    /// assert_eq!(held.lost_reason(), None);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn lost_reason(&self) -> Option<LostReason> {
        lock(&self.shared).lost
    }

    /// Blocks until the lock is lost (`true`) or `timeout` passes (`false`): the
    /// notification a watchdog thread waits on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let held = client.semaphore("job")?.wait_acquire()?.keep_alive();
    /// if held.wait_lost(Duration::from_secs(5)) {
    ///     eprintln!("lost: stop the work");
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn wait_lost(&self, timeout: Duration) -> bool {
        // A timeout too large for the clock means: wait as long as it takes.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = lock(&self.shared);
        while state.lost.is_none() {
            let left = deadline.map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return false;
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// The permit's token (see [`Permit::token`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let held = client.semaphore("job")?.wait_acquire()?.keep_alive();
    /// assert_eq!(held.token().len(), 32);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn token(&self) -> String {
        lock(&self.shared)
            .permit
            .as_ref()
            .map(|p| p.token().to_string())
            .unwrap_or_default()
    }

    /// Stops refreshing and releases the lock (as [`Permit::release`]).
    ///
    /// # Errors
    ///
    /// As [`Permit::release`]; [`Error::LockLost`] when the keep-alive had found it lost.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let held = client.semaphore("job")?.wait_acquire()?.keep_alive();
    /// held.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn release(mut self) -> Result<()> {
        match self.stop() {
            Some(permit) => permit.release(),
            None => Err(Error::Protocol {
                server: String::new(),
                detail: "keep-alive holds no permit".into(),
            }),
        }
    }

    /// Stops refreshing and gives the permit back to the caller, still held.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let held = client.semaphore("job")?.wait_acquire()?.keep_alive();
    /// let permit = held.into_permit().expect("still there");
    /// permit.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn into_permit(mut self) -> Option<Permit> {
        self.stop()
    }

    fn stop(&mut self) -> Option<Permit> {
        {
            let mut state = lock(&self.shared);
            state.stopping = true;
        }
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        lock(&self.shared).permit.take()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        // Dropping the permit releases it.
        drop(self.stop());
    }
}

/// How often a keep-alive refreshes a lease of `ttl`: every third of it, and at least twice
/// within the part of it that memcached surely counts (its clock ticks in whole seconds, so
/// a lease of `ttl` can end up to a second early).
fn refresh_interval(ttl: Duration) -> Duration {
    let sure = ttl.saturating_sub(Duration::from_secs(1));
    (ttl / 3).min(sure / 2).max(Duration::from_millis(100))
}

/// What a refresh's outcome means for a keep-alive: the reason when the lock is lost, and
/// when to refresh next — sooner after a failure, since the lease is running out. Shared by
/// the thread and the tokio task.
fn judge<F: Flavor>(
    permit: &Permit<F>,
    outcome: Result<()>,
    interval: Duration,
) -> (Option<LostReason>, Duration) {
    let expired = permit.expires_at().is_some_and(|at| Instant::now() >= at);
    match outcome {
        Ok(()) => (None, interval),
        Err(Error::LockLost { reason, .. }) => (Some(reason), interval),
        Err(error) if expired => {
            tracing::warn!(lock = permit.name(), error = %crate::error::Chain(&error), "refreshing the lease failed until it ran out");
            crate::metrics::lost(permit.name(), LostReason::Expired);
            (Some(LostReason::Expired), interval)
        }
        Err(error) => {
            tracing::warn!(lock = permit.name(), error = %crate::error::Chain(&error), "refreshing the lease failed; retrying");
            let retry = (interval / 4).max(Duration::from_millis(100));
            let next = match permit.expires_at() {
                Some(at) => retry.min(at.saturating_duration_since(Instant::now())),
                None => retry,
            };
            (None, next)
        }
    }
}

/// Called once, from the keep-alive thread, with the reason, when the lock is lost.
pub(crate) type OnLost = Box<dyn FnOnce(LostReason) + Send + 'static>;

fn refresh_loop(shared: &Shared, ttl: Duration, on_lost: Option<OnLost>) {
    let interval = refresh_interval(ttl);
    let mut next = interval;
    let mut state = lock(shared);
    loop {
        let due = Instant::now() + next;
        while !state.stopping && Instant::now() < due {
            let left = due.saturating_duration_since(Instant::now());
            state = match shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        if state.stopping {
            return;
        }
        let Some(mut permit) = state.permit.take() else {
            return;
        };
        // Refresh without holding the lock, so that is_lost() and stop() never wait on the
        // network.
        drop(state);
        let outcome = permit.refresh(ttl);
        let (lost, after) = judge(&permit, outcome, interval);
        next = after;
        state = lock(shared);
        if let Some(reason) = lost {
            tracing::warn!(lock = permit.name(), %reason, "lock lost");
            state.lost = Some(reason);
            // The lock is not ours any more: nothing to release.
            permit.forget();
            shared.changed.notify_all();
            drop(state);
            if let Some(on_lost) = on_lost {
                on_lost(reason);
            }
            return;
        }
        state.permit = Some(permit);
    }
}

/// The async twin of [`KeepAlive`] (feature `tokio`): a tokio task refreshes the lease
/// every third of its TTL. Get one from `Permit<Tokio>::keep_alive`.
///
/// Dropping it stops the task; the permit is then released in the background (as dropping
/// an async permit does).
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), memsem::Error> {
/// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
/// let held = client.semaphore("reindex")?.wait_acquire().await?.keep_alive();
/// tokio::select! {
///     _ = held.lost() => eprintln!("lost the lock: {:?}", held.lost_reason()),
///     _ = async { /* the long job */ } => {}
/// }
/// held.release().await?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "the lock is released as soon as the keep-alive is dropped"]
#[derive(Debug)]
pub struct AsyncKeepAlive {
    shared: Arc<AsyncShared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[cfg(feature = "tokio")]
#[derive(Debug)]
struct AsyncShared {
    state: Mutex<AsyncState>,
    stop: tokio::sync::Notify,
    lost: tokio::sync::Notify,
}

#[cfg(feature = "tokio")]
#[derive(Debug)]
struct AsyncState {
    permit: Option<Permit<crate::Tokio>>,
    stopping: bool,
    lost: Option<LostReason>,
}

#[cfg(feature = "tokio")]
fn lock_async(shared: &AsyncShared) -> MutexGuard<'_, AsyncState> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(feature = "tokio")]
impl AsyncKeepAlive {
    pub(crate) fn start(permit: Permit<crate::Tokio>) -> AsyncKeepAlive {
        let ttl = permit.ttl();
        let shared = Arc::new(AsyncShared {
            state: Mutex::new(AsyncState {
                permit: Some(permit),
                stopping: false,
                lost: None,
            }),
            stop: tokio::sync::Notify::new(),
            lost: tokio::sync::Notify::new(),
        });
        let task = match (ttl, tokio::runtime::Handle::try_current()) {
            (Some(ttl), Ok(runtime)) => Some(runtime.spawn(refresh_task(Arc::clone(&shared), ttl))),
            (Some(_), Err(_)) => {
                tracing::warn!(
                    "keep_alive called outside a tokio runtime: the lease is not refreshed"
                );
                None
            }
            (None, _) => None,
        };
        AsyncKeepAlive { shared, task }
    }

    /// Whether the lock was found lost. Never waits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let held = client.semaphore("job")?.wait_acquire().await?.keep_alive();
    /// assert!(!held.is_lost());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_lost(&self) -> bool {
        lock_async(&self.shared).lost.is_some()
    }

    /// Why the lock was lost, once it is.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let held = client.semaphore("job")?.wait_acquire().await?.keep_alive();
    /// assert_eq!(held.lost_reason(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn lost_reason(&self) -> Option<LostReason> {
        lock_async(&self.shared).lost
    }

    /// Completes when the lock is lost (never, while it is held): the notification to
    /// `select!` on next to the protected work. Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// use std::time::Duration;
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let held = client.semaphore("job")?.wait_acquire().await?.keep_alive();
    /// let lost = tokio::time::timeout(Duration::from_secs(1), held.lost()).await.is_ok();
    /// assert!(!lost);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lost(&self) {
        loop {
            let notified = self.shared.lost.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.is_lost() {
                return;
            }
            notified.await;
        }
    }

    /// Stops refreshing and releases the lock (as `Permit<Tokio>::release`).
    ///
    /// # Errors
    ///
    /// As [`Permit::release`]; [`Error::LockLost`] when the keep-alive had found it lost.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let held = client.semaphore("job")?.wait_acquire().await?.keep_alive();
    /// held.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn release(self) -> Result<()> {
        let reason = self.lost_reason();
        match self.into_permit().await {
            Some(permit) => permit.release().await,
            None => Err(Error::Protocol {
                server: String::new(),
                detail: match reason {
                    Some(reason) => format!("the keep-alive holds no permit: {reason}"),
                    None => "the keep-alive holds no permit".into(),
                },
            }),
        }
    }

    /// Stops refreshing and gives the permit back, still held (`None` once lost).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let held = client.semaphore("job")?.wait_acquire().await?.keep_alive();
    /// let permit = held.into_permit().await.expect("still held");
    /// permit.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn into_permit(mut self) -> Option<Permit<crate::Tokio>> {
        lock_async(&self.shared).stopping = true;
        self.shared.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        lock_async(&self.shared).permit.take()
    }
}

#[cfg(feature = "tokio")]
impl Drop for AsyncKeepAlive {
    fn drop(&mut self) {
        // Stop the task; the permit, left in the shared state, is released in the background
        // when the task lets go of it.
        lock_async(&self.shared).stopping = true;
        self.shared.stop.notify_one();
    }
}

#[cfg(feature = "tokio")]
async fn refresh_task(shared: Arc<AsyncShared>, ttl: Duration) {
    let interval = refresh_interval(ttl);
    let mut next = interval;
    loop {
        if tokio::time::timeout(next, shared.stop.notified())
            .await
            .is_ok()
        {
            return;
        }
        let taken = {
            let mut state = lock_async(&shared);
            if state.stopping {
                None
            } else {
                state.permit.take()
            }
        };
        let Some(mut permit) = taken else { return };
        let outcome = permit.refresh(ttl).await;
        let (lost, after) = judge(&permit, outcome, interval);
        next = after;
        let mut state = lock_async(&shared);
        if let Some(reason) = lost {
            tracing::warn!(lock = permit.name(), %reason, "lock lost");
            state.lost = Some(reason);
            permit.forget();
            drop(state);
            shared.lost.notify_waiters();
            return;
        }
        state.permit = Some(permit);
        if state.stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_leases_are_refreshed_within_memcached_s_whole_second() {
        let ms = Duration::from_millis;
        assert_eq!(refresh_interval(Duration::from_secs(2)), ms(500));
        assert_eq!(refresh_interval(Duration::from_secs(3)), ms(1000));
        assert_eq!(refresh_interval(Duration::from_secs(60)), ms(20_000));
        assert_eq!(refresh_interval(Duration::from_secs(1)), ms(100));
    }
}

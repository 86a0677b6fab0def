//! [`KeepAlive`]: a permit whose lease is refreshed in the background while it is held.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, LostReason, Result};
use crate::flavor::Flavor;
use crate::lock::lease::{lease_margin, refresh_interval};
use crate::lock::permit::Permit;

#[cfg(feature = "tokio")]
mod task;
#[cfg(feature = "tokio")]
pub use task::AsyncKeepAlive;

/// A permit kept alive by a background thread that refreshes its lease every third of its
/// TTL (more often for leases of a few seconds, since memcached counts whole seconds), so the
/// protected work may run far longer than the TTL while a crashed process still frees the
/// lock within one TTL. Get one from [`Permit::keep_alive`].
///
/// When a refresh finds the lock gone or taken by somebody else — or no refresh has been
/// confirmed by the end of the lease minus a margin ([`lease_margin`](crate::lease_margin),
/// counted from just before the last confirmed request was sent; a watchdog thread reports
/// it then, even while a refresh is still waiting for the network) — the keep-alive stops
/// and the permit counts as lost: poll
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
    threads: Vec<JoinHandle<()>>,
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
    /// When the lease is declared lost unless a refresh is confirmed first; `None` for a
    /// lock without expiry.
    deadline: Option<Instant>,
    on_lost: Callback,
}

/// The `on_lost` callback, called once by whichever thread finds the loss.
struct Callback(Option<OnLost>);

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// Records the loss, wakes the waiters, then (without the lock held) calls `on_lost`.
fn declare_lost(shared: &Shared, mut state: MutexGuard<'_, State>, reason: LostReason) {
    tracing::warn!(%reason, "lock lost");
    state.lost = Some(reason);
    let on_lost = state.on_lost.0.take();
    shared.changed.notify_all();
    drop(state);
    if let Some(on_lost) = on_lost {
        on_lost(reason);
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KeepAlive {
    /// Starts refreshing `permit`; the loss is reported `stop_time` earlier than the lease
    /// margin requires, for work that needs that long to stop.
    pub(crate) fn start(permit: Permit, on_lost: Option<OnLost>, stop_time: Duration) -> KeepAlive {
        let ttl = permit.ttl();
        let margin = ttl.map_or(Duration::ZERO, |ttl| lease_margin(ttl) + stop_time);
        let deadline = permit
            .expires_at()
            .map(|at| at.checked_sub(margin).unwrap_or(at));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                permit: Some(permit),
                stopping: false,
                lost: None,
                deadline,
                on_lost: Callback(on_lost),
            }),
            changed: Condvar::new(),
        });
        let mut threads = Vec::new();
        // A lock without expiry needs no refreshing.
        if let Some(ttl) = ttl {
            let refresher = Arc::clone(&shared);
            let watchdog = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("memsem-keepalive".into())
                .spawn(move || refresh_loop(&refresher, ttl, margin))
                .and_then(|refreshing| {
                    threads.push(refreshing);
                    std::thread::Builder::new()
                        .name("memsem-lease-watch".into())
                        .spawn(move || watch_loop(&watchdog, margin))
                });
            match spawned {
                Ok(watching) => threads.push(watching),
                Err(error) => tracing::warn!(
                    error = %crate::error::Chain(&error),
                    "cannot start the keep-alive threads"
                ),
            }
        }
        KeepAlive { shared, threads }
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
        for thread in self.threads.drain(..) {
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

/// What a refresh's outcome means for a keep-alive: the reason when the lock is lost, and
/// when to refresh next — sooner after a failure, since the lease is running out. Shared by
/// the thread and the tokio task.
pub(crate) fn judge<F: Flavor>(
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

fn refresh_loop(shared: &Shared, ttl: Duration, margin: Duration) {
    let interval = refresh_interval(ttl, margin);
    let mut next = interval;
    let mut state = lock(shared);
    loop {
        let due = Instant::now() + next;
        while !state.stopping && state.lost.is_none() && Instant::now() < due {
            let left = due.saturating_duration_since(Instant::now());
            state = match shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        if state.stopping || state.lost.is_some() {
            return;
        }
        let Some(mut permit) = state.permit.take() else {
            return;
        };
        // Refresh without holding the lock, so that is_lost() and stop() never wait on the
        // network.
        drop(state);
        let outcome = permit.refresh(ttl);
        let confirmed = outcome.is_ok();
        let (lost, after) = judge(&permit, outcome, interval);
        next = after;
        state = lock(shared);
        if state.lost.is_some() {
            // The watchdog found the lease's end first: keep the permit, whose owner-checked
            // release may still free the lock early.
            state.permit = Some(permit);
            return;
        }
        if let Some(reason) = lost {
            // The lock is not ours any more: nothing to release.
            permit.forget();
            declare_lost(shared, state, reason);
            return;
        }
        if confirmed {
            state.deadline = permit
                .expires_at()
                .map(|at| at.checked_sub(margin).unwrap_or(at));
            shared.changed.notify_all();
        }
        state.permit = Some(permit);
    }
}

/// Reports the lease lost when its deadline (end − margin) passes without a confirmed
/// refresh, whatever the refresh thread is waiting for.
fn watch_loop(shared: &Shared, margin: Duration) {
    let mut state = lock(shared);
    loop {
        if state.stopping || state.lost.is_some() {
            return;
        }
        let Some(deadline) = state.deadline else {
            return;
        };
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(margin = %crate::error::Human(margin), "no refresh confirmed before the lease's safe end");
            if let Some(permit) = &state.permit {
                crate::metrics::lost(permit.name(), LostReason::Expired);
            }
            declare_lost(shared, state, LostReason::Expired);
            return;
        }
        state = match shared.changed.wait_timeout(state, deadline - now) {
            Ok((state, _)) => state,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// Keeping a blocking permit alive.
impl Permit<crate::flavor::Blocking> {
    /// Hands the permit to a background thread that refreshes its lease every third of its
    /// TTL until it is released or dropped, and flags the lock as lost when a refresh finds
    /// it gone (see [`KeepAlive`](crate::KeepAlive)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let held = client.semaphore("long-job")?.wait_acquire()?.keep_alive();
    /// // ... work for longer than the TTL ...
    /// held.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn keep_alive(self) -> crate::lock::keepalive::KeepAlive {
        crate::lock::keepalive::KeepAlive::start(self, None, Duration::ZERO)
    }

    /// As [`keep_alive`](Self::keep_alive), and calls `on_lost` (once, from the keep-alive
    /// thread, with the reason) when the lock is found lost: the notification for code that
    /// cannot poll, such as a supervisor that must stop a child process.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::mpsc;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let (lost_tx, lost_rx) = mpsc::channel();
    /// let held = client.semaphore("job")?.wait_acquire()?.keep_alive_with(move |why| {
    ///     let _ = lost_tx.send(why.to_string());
    /// });
    /// // ... select on lost_rx next to the other events of the program ...
    /// # drop(lost_rx);
    /// held.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn keep_alive_with(
        self,
        on_lost: impl FnOnce(crate::error::LostReason) + Send + 'static,
    ) -> crate::lock::keepalive::KeepAlive {
        crate::lock::keepalive::KeepAlive::start(self, Some(Box::new(on_lost)), Duration::ZERO)
    }

    /// As [`keep_alive_with`](Self::keep_alive_with), for work that needs up to `stop_time`
    /// to stop once told: the loss is reported that much earlier, so that the work can be
    /// stopped before the lease can end on the server (`memsem run` passes its
    /// `--kill-after`). The lease must be longer than `stop_time` plus
    /// [`lease_margin`](crate::lease_margin), or the loss is reported at once.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let held = client
    ///     .semaphore("job")?
    ///     .wait_acquire()?
    ///     .keep_alive_stopping_within(Duration::from_secs(5), |why| eprintln!("stop now: {why}"));
    /// held.release()?;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn keep_alive_stopping_within(
        self,
        stop_time: Duration,
        on_lost: impl FnOnce(crate::error::LostReason) + Send + 'static,
    ) -> crate::lock::keepalive::KeepAlive {
        crate::lock::keepalive::KeepAlive::start(self, Some(Box::new(on_lost)), stop_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_lease_is_reported_sooner_than_a_failing_refresh_would() {
        let margin = lease_margin(Duration::from_secs(60));
        assert!(margin > Duration::from_secs(1));
        assert!(
            refresh_interval(Duration::from_secs(60), margin) * 2
                < Duration::from_secs(60) - margin
        );
    }
}

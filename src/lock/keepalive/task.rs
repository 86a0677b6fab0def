//! [`AsyncKeepAlive`]: the tokio twin of [`KeepAlive`](crate::KeepAlive).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, LostReason, Result};
use crate::lock::lease::{lease_margin, refresh_interval};
use crate::lock::permit::Permit;

use super::judge;

/// The async twin of [`KeepAlive`](crate::KeepAlive) (feature `tokio`): a tokio task refreshes the lease
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
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "the lock is released as soon as the keep-alive is dropped"]
#[derive(Debug)]
pub struct AsyncKeepAlive {
    shared: Arc<AsyncShared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct AsyncShared {
    state: Mutex<AsyncState>,
    stop: tokio::sync::Notify,
    lost: tokio::sync::Notify,
}

#[derive(Debug)]
struct AsyncState {
    permit: Option<Permit<crate::flavor::Tokio>>,
    stopping: bool,
    lost: Option<LostReason>,
    /// As [`State::deadline`].
    deadline: Option<Instant>,
}

fn lock_async(shared: &AsyncShared) -> MutexGuard<'_, AsyncState> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AsyncKeepAlive {
    pub(crate) fn start(permit: Permit<crate::flavor::Tokio>) -> AsyncKeepAlive {
        let ttl = permit.ttl();
        let margin = ttl.map_or(Duration::ZERO, lease_margin);
        let deadline = permit
            .expires_at()
            .map(|at| at.checked_sub(margin).unwrap_or(at));
        let shared = Arc::new(AsyncShared {
            state: Mutex::new(AsyncState {
                permit: Some(permit),
                stopping: false,
                lost: None,
                deadline,
            }),
            stop: tokio::sync::Notify::new(),
            lost: tokio::sync::Notify::new(),
        });
        let task = match (ttl, tokio::runtime::Handle::try_current()) {
            (Some(ttl), Ok(runtime)) => {
                Some(runtime.spawn(refresh_task(Arc::clone(&shared), ttl, margin)))
            }
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
    pub async fn into_permit(mut self) -> Option<Permit<crate::flavor::Tokio>> {
        lock_async(&self.shared).stopping = true;
        self.shared.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        lock_async(&self.shared).permit.take()
    }
}

impl Drop for AsyncKeepAlive {
    fn drop(&mut self) {
        // Stop the task; the permit, left in the shared state, is released in the background
        // when the task lets go of it.
        lock_async(&self.shared).stopping = true;
        self.shared.stop.notify_one();
    }
}

async fn refresh_task(shared: Arc<AsyncShared>, ttl: Duration, margin: Duration) {
    let interval = refresh_interval(ttl, margin);
    let mut next = interval;
    let declare = |reason: LostReason| {
        tracing::warn!(%reason, "lock lost");
        lock_async(&shared).lost = Some(reason);
        shared.lost.notify_waiters();
    };
    let late = || {
        tracing::warn!(margin = %crate::error::Human(margin), "no refresh confirmed before the lease's safe end");
        LostReason::Expired
    };
    loop {
        let deadline = lock_async(&shared).deadline;
        let wait = deadline.map_or(next, |at| {
            next.min(at.saturating_duration_since(Instant::now()))
        });
        if tokio::time::timeout(wait, shared.stop.notified())
            .await
            .is_ok()
        {
            return;
        }
        if deadline.is_some_and(|at| Instant::now() >= at) {
            declare(late());
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
        let refreshed = match deadline {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                tokio::time::timeout_at(at, permit.refresh(ttl)).await.ok()
            }
            None => Some(permit.refresh(ttl).await),
        };
        let Some(outcome) = refreshed else {
            // The lease's safe end came first; the permit stays for an owner-checked release.
            lock_async(&shared).permit = Some(permit);
            declare(late());
            return;
        };
        let confirmed = outcome.is_ok();
        let (lost, after) = judge(&permit, outcome, interval);
        next = after;
        if let Some(reason) = lost {
            permit.forget();
            declare(reason);
            return;
        }
        let mut state = lock_async(&shared);
        if confirmed {
            state.deadline = permit
                .expires_at()
                .map(|at| at.checked_sub(margin).unwrap_or(at));
        }
        state.permit = Some(permit);
        if state.stopping {
            return;
        }
    }
}

/// Keeping an async permit alive.
impl Permit<crate::flavor::Tokio> {
    /// Hands the permit to a tokio task that refreshes its lease every third of its TTL
    /// until released or dropped, and flags the lock as lost when a refresh finds it gone
    /// (see [`AsyncKeepAlive`](crate::AsyncKeepAlive)). Call it inside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let held = client.semaphore("long-job")?.wait_acquire().await?.keep_alive();
    /// // ... work for longer than the TTL ...
    /// held.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_alive(self) -> crate::lock::keepalive::AsyncKeepAlive {
        crate::lock::keepalive::AsyncKeepAlive::start(self)
    }
}

//! The tokio facade (feature `tokio`): the same operations, `async`.

use crate::lock::holder::Holder;
use crate::lock::semaphore::Semaphore;

use std::time::Duration;

use crate::error::Result;
use crate::lock::permit::Permit;

/// The async operations (feature `tokio`): the same names and semantics as the blocking
/// ones.
///
/// **Cancel safety**: every method may be dropped at an `.await`. Dropping
/// [`try_acquire`](Self::try_acquire) or [`wait_acquire`](Self::wait_acquire) while an add is
/// in flight never leaves a lock held: the key is handed to the client's background
/// clean-up, which deletes it if the add landed (at worst the TTL ends it). Dropping the
/// others changes nothing on the server (they only read).
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Semaphore<crate::flavor::Tokio> {
    /// Takes the lock if it is free: one round trip, never sleeps. As
    /// [`Semaphore::try_acquire`]; cancel safe.
    ///
    /// # Errors
    ///
    /// As [`Semaphore::try_acquire`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// if let Some(permit) = client.semaphore("nightly-report")?.try_acquire().await? {
    ///     permit.release().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_acquire(&self) -> Result<Option<Permit<crate::flavor::Tokio>>> {
        self.try_acquire_core().await
    }

    /// Takes the lock, waiting by the [`WaitPolicy`](crate::WaitPolicy) (sleeping with `tokio::time`, so other
    /// tasks run meanwhile). As [`Semaphore::wait_acquire`]; cancel safe: dropping it mid-wait
    /// leaves no lock held.
    ///
    /// # Errors
    ///
    /// As [`Semaphore::wait_acquire`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// use std::time::Duration;
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let sem = client.semaphore("rebuild-index")?;
    /// let permit = tokio::time::timeout(Duration::from_secs(10), sem.wait_acquire())
    ///     .await
    ///     .expect("acquired within 10 s")?;
    /// permit.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[doc(alias = "acquire")]
    pub async fn wait_acquire(&self) -> Result<Permit<crate::flavor::Tokio>> {
        self.wait_acquire_core().await
    }

    /// Rebuilds the permit held by `token`. As [`Semaphore::resume`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::resume`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(token: String) -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// client.semaphore("deploy")?.resume(&token).await?.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resume(&self, token: &str) -> Result<Permit<crate::flavor::Tokio>> {
        self.resume_core(token).await
    }

    /// Whether `token` holds a permit now. As [`Semaphore::verify`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::verify`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(token: String) -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// println!("{}", client.semaphore("deploy")?.verify(&token).await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify(&self, token: &str) -> Result<bool> {
        self.verify_core(token).await
    }

    /// Whether every permit is taken now. As [`Semaphore::is_locked`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::is_locked`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// println!("{}", client.semaphore("deploy")?.is_locked().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn is_locked(&self) -> Result<bool> {
        self.is_locked_core().await
    }

    /// Every current holder. As [`Semaphore::holders`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::holders`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// for holder in client.semaphore("workers")?.with_permits(4)?.holders().await? {
    ///     println!("slot {}: {:?}", holder.slot(), holder.info());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn holders(&self) -> Result<Vec<Holder>> {
        self.holders_core().await
    }

    /// Who holds the lock now. As [`Semaphore::holder`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::holder`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// println!("{:?}", client.semaphore("deploy")?.holder().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn holder(&self) -> Result<Option<Holder>> {
        Ok(self.holders_core().await?.into_iter().next())
    }

    /// Removes stale holders. As [`Semaphore::reap_stale`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::reap_stale`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// use std::time::Duration;
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// client.semaphore("workers")?.with_permits(8)?.reap_stale(Duration::from_secs(3600)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reap_stale(&self, older_than: Duration) -> Result<u32> {
        self.reap_stale_core(older_than).await
    }

    /// How many permits are free now. As [`Semaphore::available_permits`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::available_permits`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// println!("{} free", client.semaphore("encoders")?.with_permits(4)?.available_permits().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn available_permits(&self) -> Result<u32> {
        self.available_permits_core().await
    }

    /// Breaks the lock of `holder`, CAS-checked. As [`Semaphore::break_holder`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::break_holder`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let sem = client.semaphore("deploy")?;
    /// if let Some(holder) = sem.holder().await? {
    ///     sem.break_holder(&holder).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn break_holder(&self, holder: &Holder) -> Result<bool> {
        self.break_holder_core(holder).await
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Permit<crate::flavor::Tokio> {
    /// Gives the lock back. As [`Permit::release`].
    ///
    /// # Errors
    ///
    /// As [`Permit::release`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let permit = client.semaphore("job")?.wait_acquire().await?;
    /// permit.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn release(self) -> Result<()> {
        self.release_core().await
    }

    /// Gives the lock back, keeping it closed for `cooldown`. As
    /// [`Permit::release_with_cooldown`].
    ///
    /// # Errors
    ///
    /// As [`Permit::release_with_cooldown`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// use std::time::Duration;
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let permit = client.semaphore("digest")?.wait_acquire().await?;
    /// permit.release_with_cooldown(Duration::from_secs(600)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn release_with_cooldown(self, cooldown: Duration) -> Result<()> {
        self.release_with_cooldown_core(cooldown).await
    }

    /// Extends the lease. As [`Permit::refresh`].
    ///
    /// # Errors
    ///
    /// As [`Permit::refresh`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// use std::time::Duration;
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let mut permit = client.semaphore("job")?.wait_acquire().await?;
    /// permit.refresh(Duration::from_secs(60)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refresh(&mut self, ttl: Duration) -> Result<()> {
        self.refresh_core(ttl).await
    }

    /// Asks the server whether this permit still holds the lock. As [`Permit::is_held`].
    ///
    /// # Errors
    ///
    /// As [`Permit::is_held`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// let permit = client.semaphore("job")?.wait_acquire().await?;
    /// assert!(permit.is_held().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn is_held(&self) -> Result<bool> {
        self.is_held_core().await
    }
}

//! [`Holder`]: what the server says about a held lock.

use std::time::{Duration, SystemTime};

use crate::wire::record::{Meta, Record};
use crate::wire::transport::{Epoch, Item};

/// What the server says about a held lock, from [`Semaphore::holder`](crate::Semaphore::holder).
///
/// # Examples
///
/// ```no_run
/// let client = memsem::Client::connect("127.0.0.1:11211")?;
/// if let Some(holder) = client.semaphore("deploy")?.holder()? {
///     println!("held by {:?}, {:?} left", holder.info(), holder.ttl());
/// }
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub(crate) slot: u32,
    pub(crate) info: Option<String>,
    pub(crate) meta: Option<Meta>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) token_prefix: String,
    /// The item's CAS when it was read, and the server's incarnation then: what
    /// [`Semaphore::break_holder`] checks.
    pub(crate) cas: u64,
    /// The server incarnation the CAS was read from: a break is never sent to another.
    pub(crate) epoch: Option<Epoch>,
}

impl Holder {
    /// Which permit the holder has, from 1.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let _permit = sem.try_acquire()?;
    /// assert_eq!(sem.holder()?.unwrap().slot(), 1);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The holder information stored with the token (see [`Semaphore::with_info`](crate::Semaphore::with_info)); `None`
    /// for a lock taken without it, or by the Perl module.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?.with_info("ci job 42")?;
    /// let _permit = sem.try_acquire()?;
    /// assert_eq!(sem.holder()?.unwrap().info(), Some("ci job 42"));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn info(&self) -> Option<&str> {
        self.info.as_deref()
    }

    /// The host name of the holder's machine; `None` for a holder that did not say (the
    /// Perl module).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let _permit = sem.try_acquire()?;
    /// println!("held on {:?}", sem.holder()?.unwrap().host());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn host(&self) -> Option<&str> {
        self.meta.as_ref().map(|meta| meta.host.as_str())
    }

    /// The holder's process id; `None` when unknown.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let _permit = sem.try_acquire()?;
    /// assert_eq!(sem.holder()?.unwrap().pid(), Some(std::process::id()));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.meta.as_ref().map(|meta| meta.pid)
    }

    /// When the holder acquired the lock, by the holder's clock; `None` when unknown.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let _permit = sem.try_acquire()?;
    /// assert!(sem.holder()?.unwrap().acquired_at().is_some());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn acquired_at(&self) -> Option<SystemTime> {
        self.meta.as_ref().and_then(Meta::acquired_at)
    }

    /// When the holder last refreshed its lease (or acquired it), by the holder's clock;
    /// what [`Semaphore::reap_stale`](crate::Semaphore::reap_stale) compares.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let _permit = sem.try_acquire()?;
    /// assert!(sem.holder()?.unwrap().refreshed_at().is_some());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn refreshed_at(&self) -> Option<SystemTime> {
        self.meta.as_ref().and_then(Meta::refreshed_at)
    }

    /// Whether the holder has let go and the lock is only cooling down (released with
    /// [`Permit::release_with_cooldown`](crate::Permit::release_with_cooldown) or a
    /// semaphore cooldown): nobody runs, but nobody may take it before [`ttl`](Self::ttl)
    /// runs out. Always `false` for holders that store no metadata (the Perl module).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("digest")?;
    /// sem.try_acquire()?.unwrap().release_with_cooldown(Duration::from_secs(60))?;
    /// assert!(sem.holder()?.unwrap().is_cooling_down());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn is_cooling_down(&self) -> bool {
        self.released_at().is_some()
    }

    /// When the holder released the lock into its cooldown, by the holder's clock; `None`
    /// while it holds it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// if let Some(holder) = client.semaphore("digest")?.holder()? {
    ///     println!("released at {:?}", holder.released_at());
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn released_at(&self) -> Option<SystemTime> {
        self.meta.as_ref().and_then(Meta::released_at)
    }

    /// How long the lock has left, by the server's count; `None` when it never expires.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let _permit = sem.try_acquire()?;
    /// assert!(sem.holder()?.unwrap().ttl().is_some());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The first 4 characters of the holder's token: enough to tell holders apart in a log,
    /// not enough to release their lock.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?;
    /// let permit = sem.try_acquire()?.unwrap();
    /// assert!(permit.token().starts_with(sem.holder()?.unwrap().token_prefix()));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn token_prefix(&self) -> &str {
        &self.token_prefix
    }
}

impl Holder {
    pub(crate) fn from_item(slot: u32, item: &Item) -> Holder {
        let record = Record::decode(&item.value);
        let token = &record.token;
        Holder {
            slot,
            info: record.info,
            meta: record.meta,
            ttl: item.ttl.map(Duration::from_secs),
            token_prefix: String::from_utf8_lossy(&token[..token.len().min(4)]).into_owned(),
            cas: item.cas,
            epoch: item.epoch,
        }
    }
}

//! The [`Semaphore`] handle: a named lock and its settings.

use crate::lock::ttl::{DEFAULT_TTL, lease_seconds, whole_seconds};

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::flavor::{Blocking, Flavor};
use crate::fleet::Target;
use crate::wait::WaitPolicy;
use crate::wire::transport::Transport;

/// A named lock on the fleet (one permit). Get one from [`Client::semaphore`](crate::Client::semaphore);
/// cheap to clone.
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | TTL (lease) | 60 s ([`DEFAULT_TTL`]) |
/// | cooldown after release | none |
/// | wait policy | [`WaitPolicy::default`] (wait forever, poll every 100 ms ± 50%) |
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use memsem::{Client, WaitPolicy};
///
/// let client = Client::connect("127.0.0.1:11211")?;
/// let import = client
///     .semaphore("daily-import")?
///     .with_ttl(Duration::from_secs(300))?
///     .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(30)));
/// let permit = import.wait_acquire()?; // waits up to 30 s for the current holder
/// // ... import ...
/// permit.release()?;
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore<F: Flavor = Blocking> {
    pub(crate) target: Arc<Target<F>>,
    pub(crate) ttl_secs: u32,
    pub(crate) cooldown_secs: u32,
    pub(crate) policy: WaitPolicy,
    pub(crate) info: Option<String>,
    pub(crate) permits: u32,
    pub(crate) fence_key: Option<Vec<u8>>,
    /// The FIFO queue, with [`Fairness::Fifo`](crate::Fairness::Fifo).
    pub(crate) queue: Option<Arc<crate::lock::fair::Queue>>,
}

/// The most permits one semaphore may have.
pub const MAX_PERMITS: u32 = 1000;

/// The longest holder information stored with a lock, in bytes.
pub const MAX_INFO_BYTES: usize = 1024;

impl<F: Flavor> Semaphore<F> {
    pub(crate) fn new(target: Target<F>) -> Semaphore<F> {
        let max_lease = target.leases().max_lease;
        Semaphore {
            target: Arc::new(target),
            ttl_secs: whole_seconds(DEFAULT_TTL.min(max_lease), "the TTL")
                .unwrap_or(DEFAULT_TTL.as_secs() as u32),
            cooldown_secs: 0,
            policy: WaitPolicy::default(),
            info: None,
            permits: 1,
            fence_key: None,
            queue: None,
        }
    }

    /// Sets the lease: a permit not released or refreshed within `ttl` ends by itself.
    /// memcached counts whole seconds: a fraction is rounded up.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for zero, or more than the client's
    /// [`max_lease`](crate::ClientBuilder::max_lease) (5 min by default).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("job")?.with_ttl(Duration::from_millis(1500))?;
    /// assert_eq!(sem.ttl(), Some(Duration::from_secs(2)));
    /// assert!(client.semaphore("job")?.with_ttl(Duration::ZERO).is_err());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self> {
        self.ttl_secs = lease_seconds(ttl, self.target.leases().max_lease)?;
        Ok(self)
    }

    /// **Dangerous**: permits never expire, like the Perl module's locks. A holder that
    /// crashes keeps the lock until somebody deletes the key or memcached evicts it or
    /// restarts. Only for parity with old Perl code.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.semaphore("job")?.without_expiry().ttl(), None);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn without_expiry(mut self) -> Self {
        self.ttl_secs = 0;
        self
    }

    /// After every release, keep the lock closed for `cooldown` (what the Perl module's
    /// `timeout` promised): nobody can acquire it until the cooldown ends. Whole seconds,
    /// rounded up; [`Duration::ZERO`] turns it off.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for more than 30 days.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("mailer")?.with_cooldown(Duration::from_secs(10))?;
    /// assert_eq!(sem.cooldown(), Some(Duration::from_secs(10)));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_cooldown(mut self, cooldown: Duration) -> Result<Self> {
        self.cooldown_secs = match cooldown.is_zero() {
            true => 0,
            false => whole_seconds(cooldown, "the cooldown")?,
        };
        Ok(self)
    }

    /// Sets how [`wait_acquire`](Self::wait_acquire) waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memsem::WaitPolicy;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client
    ///     .semaphore("job")?
    ///     .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(5)));
    /// assert_eq!(sem.wait_policy().wait_limit(), Some(Duration::from_secs(5)));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_wait_policy(mut self, policy: WaitPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Stores `info` (who holds the lock and why: a host, a job id) with every permit's
    /// token, for [`holder`](Self::holder) and `memsem status` to show. The value on the
    /// server becomes `token + "\n" + info`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `info` is longer than [`MAX_INFO_BYTES`] or contains a
    /// line break (CR or LF), which could be read as a command by a server or proxy that
    /// does not speak the meta protocol.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?.with_info("deploy by alice from ci-7")?;
    /// assert!(client.semaphore("deploy")?.with_info(&"x".repeat(5000)).is_err());
    /// # let _ = sem;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_info(mut self, info: &str) -> Result<Self> {
        if info.contains(['\r', '\n']) {
            return Err(Error::InvalidConfig(
                "holder info must be one line: it contains a line break (CR or LF)".into(),
            ));
        }
        if info.len() > MAX_INFO_BYTES {
            return Err(Error::InvalidConfig(format!(
                "holder info is {} bytes; at most {MAX_INFO_BYTES}",
                info.len()
            )));
        }
        self.info = Some(info.to_string());
        Ok(self)
    }

    /// Lets up to `permits` holders in at once (a counting semaphore; default 1). Each permit
    /// is a slot key: slot 1 is exactly the 1-permit key (Perl-compatible), slot *k* ≥ 2 is
    /// that key followed by `#k`. All slots live on the server of slot 1, so an acquire costs
    /// two round trips whatever `permits` is: one pipelined read of every slot, plus one add.
    /// The read carries `permits` keys, so its cost grows with them (about 6× the time of a
    /// 1-permit acquire at 64 permits; BENCHMARKS.md).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for 0 or more than [`MAX_PERMITS`]; [`Error::InvalidName`]
    /// when the longest slot key would exceed 250 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let encoders = client.semaphore("video-encoders")?.with_permits(4)?;
    /// assert_eq!(encoders.permits(), 4);
    /// assert!(client.semaphore("x")?.with_permits(0).is_err());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_permits(mut self, permits: u32) -> Result<Self> {
        if permits == 0 || permits > MAX_PERMITS {
            return Err(Error::InvalidConfig(format!(
                "a semaphore has 1 to {MAX_PERMITS} permits, not {permits}"
            )));
        }
        if self.slot_key(permits).len() > crate::wire::key::MAX_KEY_BYTES {
            return Err(Error::InvalidName {
                name: self.name().to_string(),
                reason: "the slot keys of this many permits would exceed 250 bytes",
            });
        }
        self.permits = permits;
        Ok(self)
    }

    /// Hands out a fencing token with every permit ([`Permit::fence`](crate::Permit::fence)): a number, strictly
    /// increasing across the acquisitions of this name, that a protected resource can store
    /// and compare to reject writes from a holder whose lease has already passed to somebody
    /// else. It comes from a counter key `namespace + "__fence__" + name` on the lock's server,
    /// incremented in the same round trip as the add (no extra round trip). When that key is
    /// evicted or memcached restarts, the counter is recreated from the clock in
    /// microseconds, so numbers keep increasing as long as the server's host clock does not
    /// step back and fewer than a million acquisitions per second are made.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when the counter key would exceed 250 bytes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("ledger")?.with_fencing()?;
    /// let permit = sem.wait_acquire()?;
    /// let fence = permit.fence().expect("fencing is on");
    /// // write_to_ledger(entry, fence): the ledger rejects fence numbers below the last seen
    /// # let _ = fence;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_fencing(mut self) -> Result<Self> {
        let key = &self.target.key;
        let namespace = &key.wire[..key.wire.len() - key.routed.len()];
        let mut fence_key = namespace.to_vec();
        fence_key.extend_from_slice(b"__fence__");
        fence_key.extend_from_slice(self.target.name.as_bytes());
        if fence_key.len() > crate::wire::key::MAX_KEY_BYTES {
            return Err(Error::InvalidName {
                name: self.name().to_string(),
                reason: "the fencing counter key (namespace + \"__fence__\" + name) would exceed 250 bytes",
            });
        }
        self.fence_key = Some(fence_key);
        Ok(self)
    }

    /// Sets how [`wait_acquire`](Self::wait_acquire) orders waiters (see [`Fairness`](crate::Fairness);
    /// default [`Fairness::Polling`](crate::Fairness::Polling)). With
    /// [`Fairness::Fifo`](crate::Fairness::Fifo) waiters draw numbered tickets from a counter
    /// key `lock key + "#queue"` on the lock's server and are served in order; an uncontended
    /// acquire is still one add. README's "Fair waiting" section says how it works and how
    /// fairness degrades next to plain-`add` clients (the Perl module).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when the queue key would exceed 250 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::Fairness;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let sem = client.semaphore("deploy")?.with_fairness(Fairness::Fifo)?;
    /// assert_eq!(sem.fairness(), Fairness::Fifo);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn with_fairness(mut self, fairness: crate::lock::fair::Fairness) -> Result<Self> {
        self.queue = match fairness {
            crate::lock::fair::Fairness::Polling => None,
            crate::lock::fair::Fairness::Fifo => {
                let mut key = self.slot_key(1);
                key.extend_from_slice(b"#queue");
                if key.len() > crate::wire::key::MAX_KEY_BYTES {
                    return Err(Error::InvalidName {
                        name: self.name().to_string(),
                        reason: "the queue key (lock key + \"#queue\") would exceed 250 bytes",
                    });
                }
                // One queue per lock key in this client: its waiters and holders hand each
                // other their turns directly.
                let fleet = &self.target.fleet;
                Some(
                    fleet
                        .shared
                        .get(&key, || crate::lock::fair::Queue::new(key.clone())),
                )
            }
        };
        Ok(self)
    }

    /// How waiters are ordered.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.semaphore("job")?.fairness(), memsem::Fairness::Polling);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn fairness(&self) -> crate::lock::fair::Fairness {
        match self.queue {
            Some(_) => crate::lock::fair::Fairness::Fifo,
            None => crate::lock::fair::Fairness::Polling,
        }
    }

    /// How many holders may be in at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.semaphore("job")?.permits(), 1);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The lock's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.semaphore("job")?.name(), "job");
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// The memcached server that holds this lock, `host:port`.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.semaphore("job")?.server(), "127.0.0.1:11211");
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn server(&self) -> &str {
        self.target.backend.address()
    }

    /// The lease given to each permit; `None` without expiry.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.semaphore("job")?.ttl(), Some(memsem::DEFAULT_TTL));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn ttl(&self) -> Option<Duration> {
        (self.ttl_secs > 0).then(|| Duration::from_secs(u64::from(self.ttl_secs)))
    }

    /// The cooldown applied by [`Permit::release`](crate::Permit::release); `None` when off.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.semaphore("job")?.cooldown(), None);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn cooldown(&self) -> Option<Duration> {
        (self.cooldown_secs > 0).then(|| Duration::from_secs(u64::from(self.cooldown_secs)))
    }

    /// The wait policy of [`wait_acquire`](Self::wait_acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.semaphore("job")?.wait_policy(), &memsem::WaitPolicy::default());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn wait_policy(&self) -> &WaitPolicy {
        &self.policy
    }
}

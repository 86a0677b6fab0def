//! The [`Semaphore`] handle: a named lock and how to take it.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::client::Target;
use crate::error::{Error, LostReason, Result};
use crate::flavor::{Blocking, Flavor, block_on};
use crate::holder::{Meta, Record};
use crate::memcached::{Added, Checked, Epoch, Failure, Item, Outcome, Transport};
use crate::metrics;
use crate::permit::Permit;
use crate::token::Token;
use crate::wait::{self, Attempt, Hook, Pause, Sleep, WaitPolicy, Waiting};

/// The default lease: a holder that dies without releasing blocks others at most this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// memcached reads an expiry above 30 days as a Unix date.
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

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
    cooldown_secs: u32,
    pub(crate) policy: WaitPolicy,
    info: Option<String>,
    permits: u32,
    fence_key: Option<Vec<u8>>,
    /// The FIFO queue, with [`Fairness::Fifo`](crate::Fairness::Fifo).
    pub(crate) queue: Option<Arc<crate::fair::Queue>>,
}

/// The most permits one semaphore may have.
pub const MAX_PERMITS: u32 = 1000;

/// The longest holder information stored with a lock, in bytes.
pub const MAX_INFO_BYTES: usize = 1024;

/// What the server says about a held lock, from [`Semaphore::holder`].
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
    slot: u32,
    info: Option<String>,
    meta: Option<Meta>,
    ttl: Option<Duration>,
    token_prefix: String,
    /// The item's CAS when it was read, and the server's incarnation then: what
    /// [`Semaphore::break_holder`] checks.
    cas: u64,
    /// The server incarnation the CAS was read from: a break is never sent to another.
    epoch: Option<Epoch>,
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

    /// The holder information stored with the token (see [`Semaphore::with_info`]); `None`
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
    /// what [`Semaphore::reap_stale`] compares.
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

/// A lease in whole seconds (rounded up): at least 1 s, at most `max_lease`.
pub(crate) fn lease_seconds(ttl: Duration, max_lease: Duration) -> Result<u32> {
    let secs = whole_seconds(ttl, "the TTL")?;
    if u64::from(secs) > max_lease.as_secs().max(1) {
        return Err(Error::InvalidConfig(format!(
            "a TTL of {secs} s is above the longest lease ({} s, max_lease): keep the lease \
             short and refresh it, or raise max_lease (and the lock-delay with it)",
            max_lease.as_secs()
        )));
    }
    Ok(secs)
}

/// Converts a duration to memcached's whole seconds (rounding up), or says why it cannot be one.
pub(crate) fn whole_seconds(duration: Duration, what: &str) -> Result<u32> {
    if duration.is_zero() {
        return Err(Error::InvalidConfig(format!(
            "{what} must be at least 1 s, not 0"
        )));
    }
    let secs = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    if secs > MAX_TTL_SECS {
        return Err(Error::InvalidConfig(format!(
            "{what} of {secs} s is above 30 days, which memcached would read as a date"
        )));
    }
    Ok(secs as u32)
}

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
        if self.slot_key(permits).len() > crate::key::MAX_KEY_BYTES {
            return Err(Error::InvalidName {
                name: self.name().to_string(),
                reason: "the slot keys of this many permits would exceed 250 bytes",
            });
        }
        self.permits = permits;
        Ok(self)
    }

    /// Hands out a fencing token with every permit ([`Permit::fence`]): a number, strictly
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
        if fence_key.len() > crate::key::MAX_KEY_BYTES {
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
    pub fn with_fairness(mut self, fairness: crate::Fairness) -> Result<Self> {
        self.queue = match fairness {
            crate::Fairness::Polling => None,
            crate::Fairness::Fifo => {
                let mut key = self.slot_key(1);
                key.extend_from_slice(b"#queue");
                if key.len() > crate::key::MAX_KEY_BYTES {
                    return Err(Error::InvalidName {
                        name: self.name().to_string(),
                        reason: "the queue key (lock key + \"#queue\") would exceed 250 bytes",
                    });
                }
                Some(Arc::new(crate::fair::Queue::new(key)))
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
    pub fn fairness(&self) -> crate::Fairness {
        match self.queue {
            Some(_) => crate::Fairness::Fifo,
            None => crate::Fairness::Polling,
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

    /// The cooldown applied by [`Permit::release`]; `None` when off.
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

/// Keys where an add with this token may have landed unseen (sent, no answer; or cancelled
/// mid-flight). Whatever is left when it is dropped goes to the background clean-up, which
/// deletes such a key while it carries the token: so an abandoned acquire — an error, a
/// time-out, or an async acquire dropped mid-wait — never leaves a lock behind.
pub(crate) struct Unsure<'a, F: Flavor> {
    sem: &'a Semaphore<F>,
    pub(crate) token: Token,
    keys: Vec<Vec<u8>>,
}

impl<'a, F: Flavor> Unsure<'a, F> {
    fn new(sem: &'a Semaphore<F>) -> Unsure<'a, F> {
        Unsure {
            sem,
            token: Token::generate(),
            keys: Vec::new(),
        }
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    pub(crate) fn mark(&mut self, key: &[u8]) {
        if !self.contains(key) {
            self.keys.push(key.to_vec());
        }
    }

    pub(crate) fn settle(&mut self, key: &[u8]) {
        self.keys.retain(|k| k != key);
    }
}

impl<F: Flavor> Drop for Unsure<'_, F> {
    fn drop(&mut self) {
        for key in self.keys.drain(..) {
            self.sem.abandon(&key, &self.token);
        }
    }
}

/// One acquire attempt of a wait, offering the same token every time.
struct Acquiring<'a, F: Flavor> {
    sem: &'a Semaphore<F>,
    unsure: Unsure<'a, F>,
}

impl<F: Flavor> Attempt for Acquiring<'_, F> {
    type Output = Permit<F>;
    async fn attempt(&mut self) -> Result<Option<Permit<F>>> {
        let outcome = self.sem.attempt(&mut self.unsure).await;
        self.sem.counted(outcome)
    }
}

/// The lock logic, written once for both flavours (blocking and tokio).
impl<F: Flavor> Semaphore<F> {
    pub(crate) async fn try_acquire_core(&self) -> Result<Option<Permit<F>>> {
        let mut unsure = Unsure::new(self);
        let outcome = self.attempt(&mut unsure).await;
        self.counted(outcome)
    }

    pub(crate) async fn wait_acquire_core(&self) -> Result<Permit<F>> {
        Ok(wait::settled(
            self.wait_acquire_paused(&mut Sleep::<F>::new()).await?,
        ))
    }

    /// The wait, pausing between attempts with `pause` (which may end it: `Ok(Err(stop))`).
    pub(crate) async fn wait_acquire_paused<P: Pause>(
        &self,
        pause: &mut P,
    ) -> Result<std::result::Result<Permit<F>, P::Stop>> {
        let mut acquiring = Acquiring {
            sem: self,
            unsure: Unsure::new(self),
        };
        let waiting = Instant::now();
        let waited = match &self.queue {
            // FIFO fairness: the queue's own wait (tickets, hand-offs).
            Some(queue) => self
                .fifo_wait(queue, &mut acquiring.unsure)
                .await
                .map(|permit| {
                    metrics::acquired(self.name());
                    Ok(permit)
                }),
            None => wait::run::<F, _, _>(self.name(), &self.policy, &mut acquiring, pause).await,
        };
        let Acquiring { mut unsure, .. } = acquiring;
        let error = match waited {
            Ok(outcome) => {
                if outcome.is_ok() {
                    metrics::waited(self.name(), waiting.elapsed(), true);
                }
                return Ok(outcome);
            }
            Err(error) => error,
        };
        if matches!(error, Error::Timeout { .. }) {
            metrics::waited(self.name(), waiting.elapsed(), false);
        }
        if !(matches!(error, Error::Timeout { .. }) && self.policy.steals_after_wait()) {
            return Err(error);
        }
        let started = Instant::now();
        let token = unsure.token.clone();
        let value = self.value_for(&token);
        let slot = rand::random_range(1..=self.permits);
        let key = self.slot_key(slot);
        let stored = self
            .target
            .backend
            .overwrite(&key, &value, self.ttl_secs, self.lock_delay())
            .await
            .map_err(|failure| self.target.error("acquire", failure))?;
        let (cas, epoch) = match stored {
            Added::Stored { cas, epoch } => (cas, epoch),
            Added::Delayed { remaining } => return Err(self.delayed(remaining)),
            Added::Exists => {
                return Err(Error::Protocol {
                    server: self.server().to_string(),
                    detail: "an overwrite answered that the key exists".into(),
                });
            }
        };
        unsure.settle(&key);
        let mut permit = self.permit((key, slot), token, value, (cas, epoch), started);
        permit.set_fence(self.fence_now().await?);
        metrics::acquired(self.name());
        tracing::warn!(
            lock = self.name(),
            "took the lock by force after max_wait (steal_after_wait)"
        );
        Ok(Ok(permit))
    }

    pub(crate) async fn resume_core(&self, token: &str) -> Result<Permit<F>> {
        let token = Token::parse(token)?;
        let started = Instant::now();
        let slots = self.read_slots().await?;
        let mine = slots.iter().zip(1..).find_map(|(item, slot)| match item {
            Some(item) if token.owns(&item.value) => Some((slot, item.clone())),
            _ => None,
        });
        match mine {
            Some((slot, item)) => {
                let mut permit = self.permit(
                    (self.slot_key(slot), slot),
                    token,
                    item.value,
                    (item.cas, item.epoch),
                    started,
                );
                permit.set_remaining(item.ttl);
                Ok(permit)
            }
            None if self.permits == 1 && slots[0].is_some() => {
                Err(self.lost(LostReason::HeldByOther))
            }
            None => Err(self.lost(LostReason::Missing)),
        }
    }

    pub(crate) async fn verify_core(&self, token: &str) -> Result<bool> {
        let token = Token::parse(token)?;
        Ok(self
            .read_slots()
            .await?
            .iter()
            .flatten()
            .any(|item| token.owns(&item.value)))
    }

    pub(crate) async fn is_locked_core(&self) -> Result<bool> {
        Ok(self.read_slots().await?.iter().all(Option::is_some))
    }

    pub(crate) async fn holders_core(&self) -> Result<Vec<Holder>> {
        let slots = self.read_slots().await?;
        Ok(slots
            .into_iter()
            .zip(1..)
            .filter_map(|(item, slot)| item.map(|item| Holder::from_item(slot, &item)))
            .collect())
    }

    pub(crate) async fn available_permits_core(&self) -> Result<u32> {
        let slots = self.read_slots().await?;
        Ok(slots.iter().filter(|item| item.is_none()).count() as u32)
    }

    pub(crate) async fn break_holder_core(&self, holder: &Holder) -> Result<bool> {
        let outcome = self
            .target
            .backend
            .delete_if(&self.slot_key(holder.slot), holder.cas, holder.epoch)
            .await
            .map_err(|failure| self.target.error("break", failure))?;
        let broken = matches!(outcome, Checked::Applied { .. });
        if broken {
            tracing::info!(
                lock = self.name(),
                slot = holder.slot,
                "broke a holder's lock"
            );
        }
        Ok(broken)
    }

    pub(crate) async fn reap_stale_core(&self, older_than: Duration) -> Result<u32> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut reaped = 0;
        for (item, slot) in self.read_slots().await?.into_iter().zip(1..) {
            let Some(item) = item else { continue };
            let stale = Record::decode(&item.value)
                .meta
                .and_then(|meta| meta.refreshed_at())
                .is_some_and(|at| at < cutoff);
            if !stale {
                continue;
            }
            let outcome = self
                .target
                .backend
                .delete_if(&self.slot_key(slot), item.cas, item.epoch)
                .await
                .map_err(|failure| self.target.error("reap", failure))?;
            if matches!(outcome, Checked::Applied { .. }) {
                tracing::info!(lock = self.name(), slot, "reaped a stale holder");
                reaped += 1;
            }
        }
        Ok(reaped)
    }

    fn lost(&self, reason: LostReason) -> Error {
        Error::LockLost {
            name: self.name().to_string(),
            reason,
        }
    }

    /// The client's lock-delay.
    fn lock_delay(&self) -> Duration {
        self.target.leases().lock_delay
    }

    fn delayed(&self, remaining: Duration) -> Error {
        Error::LockDelay {
            server: self.server().to_string(),
            remaining,
        }
    }

    pub(crate) fn permit(
        &self,
        slot: (Vec<u8>, u32),
        token: Token,
        value: Vec<u8>,
        grant: (u64, Option<Epoch>),
        started: Instant,
    ) -> Permit<F> {
        let mut permit = Permit::new(
            Arc::clone(&self.target),
            slot,
            token,
            value,
            grant,
            self.ttl_secs,
            self.cooldown_secs,
            started,
        );
        permit.set_handoff(self.queue.as_ref().map(|queue| crate::fair::Handoff {
            queue: Arc::clone(queue),
            ticket: None,
        }));
        permit
    }

    /// The key of permit `slot` (from 1): slot 1 is the Perl module's key.
    pub(crate) fn slot_key(&self, slot: u32) -> Vec<u8> {
        let mut key = self.target.key.wire.clone();
        if slot > 1 {
            key.extend_from_slice(format!("#{slot}").as_bytes());
        }
        key
    }

    /// The value of every slot, `None` where free: one round trip.
    pub(crate) async fn slot_values(&self) -> Result<Vec<Option<Vec<u8>>>> {
        Ok(self
            .read_slots()
            .await?
            .into_iter()
            .map(|item| item.map(|item| item.value))
            .collect())
    }

    /// Reads every slot in one round trip.
    pub(crate) async fn read_slots(&self) -> Result<Vec<Option<Item>>> {
        let backend = &self.target.backend;
        let outcome = match self.permits {
            1 => backend
                .read(&self.target.key.wire)
                .await
                .map(|item| vec![item]),
            n => {
                backend
                    .read_many(&(1..=n).map(|slot| self.slot_key(slot)).collect::<Vec<_>>())
                    .await
            }
        };
        outcome.map_err(|failure| self.target.error("read", failure))
    }

    /// Counts an attempt's outcome in the metrics.
    fn counted(&self, outcome: Result<Option<Permit<F>>>) -> Result<Option<Permit<F>>> {
        match &outcome {
            Ok(Some(_)) => metrics::acquired(self.name()),
            Ok(None) => metrics::contended(self.name()),
            Err(_) => {}
        }
        outcome
    }

    /// One acquire attempt with `unsure`'s token.
    pub(crate) async fn attempt(&self, unsure: &mut Unsure<'_, F>) -> Result<Option<Permit<F>>> {
        if self.permits == 1 {
            return self.add_slot(1, unsure).await;
        }
        let slots = self.read_slots().await?;
        let started = Instant::now();
        let mut free = Vec::new();
        for (item, slot) in slots.into_iter().zip(1..) {
            match item {
                Some(item) if unsure.token.owns(&item.value) => {
                    // An earlier add of ours landed after all.
                    let key = self.slot_key(slot);
                    return self.adopt(slot, key, item, unsure, started).await.map(Some);
                }
                Some(_) => {}
                None => free.push(slot),
            }
        }
        // Try the free slots in random order, so that waiters spread over them.
        while !free.is_empty() {
            let slot = free.swap_remove(rand::random_range(0..free.len()));
            if let Some(permit) = self.add_slot(slot, unsure).await? {
                return Ok(Some(permit));
            }
        }
        Ok(None)
    }

    /// Adds the key of `slot` with `unsure`'s token, settling a lost reply by asking again.
    pub(crate) async fn add_slot(
        &self,
        slot: u32,
        unsure: &mut Unsure<'_, F>,
    ) -> Result<Option<Permit<F>>> {
        let key = self.slot_key(slot);
        let value = self.value_for(&unsure.token);
        let started = Instant::now();
        let was_unsure = unsure.contains(&key);
        // From here until a definite answer, the add may land: if this future is dropped
        // (an async acquire cancelled), the clean-up takes over.
        unsure.mark(&key);
        let mut ambiguous = false;
        let added = match self.add_key(&key, &value).await {
            Err(Failure::Ambiguous(_)) => {
                // The add may have landed. Asking again with the same token settles it: a
                // second add either stores (ours now) or finds the key, whose value tells.
                ambiguous = true;
                self.add_key(&key, &value).await
            }
            other => other,
        };
        match added {
            Ok((Added::Delayed { remaining }, _)) => {
                // Nothing was sent this time; an earlier unanswered add stays marked for the
                // clean-up.
                if !ambiguous && !was_unsure {
                    unsure.settle(&key);
                }
                Err(self.delayed(remaining))
            }
            Ok((Added::Stored { cas, epoch }, fence)) => {
                unsure.settle(&key);
                let mut permit = self.permit(
                    (key, slot),
                    unsure.token.clone(),
                    value,
                    (cas, epoch),
                    started,
                );
                // Without its number the permit is useless: dropping it releases the lock.
                permit.set_fence(fence?);
                Ok(Some(permit))
            }
            Ok((Added::Exists, _)) if ambiguous || was_unsure => {
                match self.target.backend.read(&key).await {
                    Ok(Some(item)) if unsure.token.owns(&item.value) => {
                        self.adopt(slot, key, item, unsure, started).await.map(Some)
                    }
                    // Somebody else's: our add may still land once they let go; the key
                    // stays marked so the clean-up checks it.
                    Ok(_) => Ok(None),
                    Err(failure) => Err(self.target.error("acquire", failure)),
                }
            }
            Ok((Added::Exists, _)) => {
                unsure.settle(&key);
                Ok(None)
            }
            Err(Failure::Unavailable(source)) if ambiguous => {
                Err(self.target.error("acquire", Failure::Ambiguous(source)))
            }
            Err(failure @ Failure::Unavailable(_)) => {
                // Never written: it cannot land.
                if !was_unsure {
                    unsure.settle(&key);
                }
                Err(self.target.error("acquire", failure))
            }
            Err(failure) => Err(self.target.error("acquire", failure)),
        }
    }

    /// Takes over a slot found holding our token (an add whose reply was lost landed after
    /// all). The number drawn with the lost add is unknown: a new one is drawn now, while
    /// holding the lock (a failure drops, and so releases, the permit).
    pub(crate) async fn adopt(
        &self,
        slot: u32,
        key: Vec<u8>,
        item: Item,
        unsure: &mut Unsure<'_, F>,
        started: Instant,
    ) -> Result<Permit<F>> {
        unsure.settle(&key);
        let mut permit = self.permit(
            (key, slot),
            unsure.token.clone(),
            item.value,
            (item.cas, item.epoch),
            started,
        );
        permit.set_fence(self.fence_now().await?);
        Ok(permit)
    }

    /// One add of `key`, with a fencing number drawn in the same round trip when fencing is on.
    async fn add_key(&self, key: &[u8], value: &[u8]) -> Outcome<(Added, Result<Option<u64>>)> {
        let backend = &self.target.backend;
        match &self.fence_key {
            Some(fence_key) => {
                let (added, fence) = backend
                    .add_fenced(
                        key,
                        value,
                        self.ttl_secs,
                        fence_key,
                        fence_floor(),
                        self.lock_delay(),
                    )
                    .await?;
                Ok((
                    added,
                    fence.map(Some).map_err(|f| self.target.error("fence", f)),
                ))
            }
            None => Ok((
                backend
                    .add(key, value, self.ttl_secs, self.lock_delay())
                    .await?,
                Ok(None),
            )),
        }
    }

    /// A fencing number drawn now, when fencing is on.
    pub(crate) async fn fence_now(&self) -> Result<Option<u64>> {
        let Some(fence_key) = &self.fence_key else {
            return Ok(None);
        };
        let fence = self
            .target
            .backend
            .next_fence(fence_key, fence_floor())
            .await
            .map_err(|failure| self.target.error("fence", failure))?;
        Ok(Some(fence))
    }

    /// The value stored for a permit: the token, then the holder record.
    pub(crate) fn value_for(&self, token: &Token) -> Vec<u8> {
        Record {
            token: token.as_str().as_bytes().to_vec(),
            meta: Some(Meta::here()),
            info: self.info.clone(),
        }
        .encode()
    }

    /// Hands a key where our token may have landed unseen to the background clean-up.
    pub(crate) fn abandon(&self, key: &[u8], token: &Token) {
        self.target
            .janitor()
            .clean_up(&self.target.cleanup, key, token, self.ttl_secs);
    }
}

/// The blocking operations (the default flavour).
impl Semaphore<Blocking> {
    /// Takes the lock if it is free: one round trip (a memcached add of a fresh random
    /// token with the TTL), never sleeps.
    ///
    /// Returns `Ok(None)` when somebody holds it — contention is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server cannot be reached (nothing was taken);
    /// [`Error::Ambiguous`] when the add was sent, no reply came, and a second try could not
    /// find out either (a background clean-up removes the lock if it did land; at worst the
    /// TTL ends it); [`Error::Protocol`] for a garbled reply.
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

    /// Takes the lock, waiting as the [`WaitPolicy`] says while somebody holds it or while
    /// its server is unreachable. The same token is offered on every attempt, so an attempt
    /// whose reply was lost is recognised on the next one.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when `max_wait` ran out (carrying the last server error, if any);
    /// with [`WaitPolicy::steal_after_wait`], the errors of the forced write instead.
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
    /// [`Error::LockLost`] when the lock is free or held by another token;
    /// [`Error::InvalidConfig`] for a malformed token; server errors as usual.
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
    /// [`Error::InvalidConfig`] for a malformed token; server errors as
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
impl Semaphore<crate::Tokio> {
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
    pub async fn try_acquire(&self) -> Result<Option<Permit<crate::Tokio>>> {
        self.try_acquire_core().await
    }

    /// Takes the lock, waiting by the [`WaitPolicy`] (sleeping with `tokio::time`, so other
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
    pub async fn wait_acquire(&self) -> Result<Permit<crate::Tokio>> {
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
    pub async fn resume(&self, token: &str) -> Result<Permit<crate::Tokio>> {
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

impl Holder {
    fn from_item(slot: u32, item: &Item) -> Holder {
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

/// Where a missing fencing counter restarts: the clock in microseconds, above every number
/// handed out before an eviction or restart (see [`Semaphore::with_fencing`]).
fn fence_floor() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_rounds_up_and_rejects_what_memcached_would_misread() {
        assert_eq!(
            whole_seconds(Duration::from_millis(1500), "ttl").unwrap(),
            2
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(30 * 24 * 3600), "ttl").unwrap(),
            2_592_000
        );
        for bad in [
            Duration::ZERO,
            Duration::from_secs(30 * 24 * 3600 + 1),
            Duration::MAX,
        ] {
            assert!(
                matches!(whole_seconds(bad, "ttl"), Err(Error::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }
}

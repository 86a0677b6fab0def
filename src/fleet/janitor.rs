//! Cleans up locks whose release (or acquire) could not be confirmed: a background thread
//! keeps checking the key, and deletes it while it still carries this process's token.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::wire::Backend;
use crate::wire::token::Token;
use crate::wire::transport::{Checked, Epoch, Item, Outcome, Sweep, Transport};

impl Sweep for Backend {
    fn address(&self) -> &str {
        Transport::address(self)
    }

    fn read_now(&self, key: &[u8]) -> Outcome<Option<Item>> {
        Backend::read_now(self, key)
    }

    fn delete_if_now(&self, key: &[u8], cas: u64, epoch: Option<Epoch>) -> Outcome<Checked> {
        Backend::delete_if_now(self, key, cas, epoch)
    }

    fn replace_if_now(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> Outcome<Checked> {
        Backend::replace_if_now(self, key, value, cas, ttl, epoch)
    }
}

/// How often pending chores are retried.
const ROUND: Duration = Duration::from_millis(250);

/// After a clean-up is confirmed, look once more this much later: an add that was sent
/// before a server froze can be applied after the first check.
const RECHECK_AFTER: Duration = Duration::from_secs(2);

/// Locks without a TTL are tried for this long at most.
const NO_TTL_LIMIT: Duration = Duration::from_secs(3600);

/// One lock to make sure of.
struct Chore {
    backend: Arc<dyn Sweep>,
    key: Vec<u8>,
    token: Token,
    /// After this the lock has expired by itself (or we give up).
    until: Instant,
    /// When the next check is due.
    due: Instant,
    /// A confirmed clean-up waiting for its re-check.
    confirmed: bool,
    /// Instead of deleting the lock, keep it closed this many seconds (a cooldown release).
    cooldown_secs: u32,
    /// Counted as unsettled until its first confirmed check (or its end).
    unsettled: Option<Arc<Unsettled>>,
}

/// How many chores have not been confirmed yet, for [`Janitor::wait_settled`].
#[derive(Debug, Default)]
struct Unsettled {
    count: Mutex<usize>,
    settled: Condvar,
}

impl Unsettled {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn done(&self) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        self.settled.notify_all();
    }
}

impl Chore {
    /// The chore's first check is confirmed (or it is over): it no longer counts.
    fn settle(&mut self) {
        if let Some(unsettled) = self.unsettled.take() {
            unsettled.done();
        }
    }
}

impl Drop for Chore {
    fn drop(&mut self) {
        self.settle();
    }
}

impl Chore {
    /// One check: `true` when the chore is finished.
    fn work(&mut self, now: Instant) -> bool {
        if now >= self.until {
            return true;
        }
        if now < self.due {
            return false;
        }
        let clean = match self.backend.read_now(&self.key) {
            Ok(Some(item)) if self.token.owns(&item.value) && self.cooldown_secs > 0 => {
                let cooled = self.backend.replace_if_now(
                    &self.key,
                    &crate::wire::record::Record::cooled(&item.value),
                    item.cas,
                    self.cooldown_secs,
                    item.epoch,
                );
                // Cooled down: the key stays ours until it expires; nothing more to do.
                if matches!(cooled, Ok(Checked::Applied { .. })) {
                    return true;
                }
                false
            }
            Ok(Some(item)) if self.token.owns(&item.value) => {
                matches!(
                    self.backend.delete_if_now(&self.key, item.cas, item.epoch),
                    Ok(Checked::Applied { .. })
                )
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if !clean {
            self.due = now + ROUND;
            return false;
        }
        if self.confirmed {
            tracing::debug!(server = self.backend.address(), "orphaned lock cleaned up");
            return true;
        }
        self.confirmed = true;
        self.settle();
        self.due = now + RECHECK_AFTER;
        false
    }
}

/// The per-client clean-up queue; its thread starts on the first chore and ends when the
/// client is gone and nothing is left to do.
#[derive(Debug, Default)]
pub(crate) struct Janitor {
    queue: Mutex<Option<Sender<Chore>>>,
    unsettled: Arc<Unsettled>,
}

impl Janitor {
    pub(crate) fn new() -> Janitor {
        Janitor::default()
    }

    /// Makes sure `key` does not keep `token` once the server answers again; `ttl_secs` of
    /// 0 means the lock never expires.
    pub(crate) fn clean_up(
        &self,
        backend: &Arc<dyn Sweep>,
        key: &[u8],
        token: &Token,
        ttl_secs: u32,
    ) {
        self.release(backend, key, token, ttl_secs, 0);
    }

    /// Releases `key` in the background while it still carries `token`: deletes it, or with
    /// `cooldown_secs` above 0 keeps it closed that long.
    pub(crate) fn release(
        &self,
        backend: &Arc<dyn Sweep>,
        key: &[u8],
        token: &Token,
        ttl_secs: u32,
        cooldown_secs: u32,
    ) {
        let now = Instant::now();
        let limit = match ttl_secs {
            0 => NO_TTL_LIMIT,
            secs => Duration::from_secs(u64::from(secs) + 1),
        };
        let chore = Chore {
            backend: Arc::clone(backend),
            key: key.to_vec(),
            token: token.clone(),
            until: now + limit,
            due: now,
            confirmed: false,
            cooldown_secs,
            unsettled: Some(Arc::clone(&self.unsettled)),
        };
        self.unsettled.add();
        let mut queue = match self.queue.lock() {
            Ok(queue) => queue,
            Err(poisoned) => poisoned.into_inner(),
        };
        let chore = match queue.as_ref() {
            Some(sender) => match sender.send(chore) {
                Ok(()) => return,
                Err(mpsc::SendError(chore)) => chore,
            },
            None => chore,
        };
        let (sender, receiver) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("memsem-janitor".into())
            .spawn(move || run(receiver));
        match spawned {
            Ok(_) => {
                // The receiver is alive in the new thread, so this send cannot fail.
                let _ = sender.send(chore);
                *queue = Some(sender);
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "cannot start the lock clean-up thread; the lock's TTL will end it")
            }
        }
    }
}

impl Janitor {
    /// Blocks until every chore has had its first confirmed check, or `timeout` passes;
    /// `true` when none is left unconfirmed.
    pub(crate) fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut count = self
            .unsettled
            .count
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            let left = deadline.map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return false;
            }
            count = match self.unsettled.settled.wait_timeout(count, left) {
                Ok((count, _)) => count,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

fn run(receiver: Receiver<Chore>) {
    let mut chores: Vec<Chore> = Vec::new();
    let mut open = true;
    while open || !chores.is_empty() {
        let wait = if chores.is_empty() {
            Duration::from_secs(3600)
        } else {
            ROUND
        };
        if open {
            match receiver.recv_timeout(wait) {
                Ok(chore) => chores.push(chore),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        } else {
            std::thread::sleep(wait);
        }
        let now = Instant::now();
        chores.retain_mut(|chore| !chore.work(now));
    }
}

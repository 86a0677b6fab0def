//! The acquire algorithm behind [`Semaphore`]: one attempt (an add per free slot, a lost
//! reply settled by asking again with the same token), the wait and the steal, the reads.

use crate::lock::holder::Holder;
use crate::lock::semaphore::Semaphore;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, LostReason, Result};
use crate::flavor::Flavor;
use crate::lock::permit::Permit;
use crate::metrics;
use crate::wait::{self, Attempt, Pause, Sleep};
use crate::wire::record::Record;
use crate::wire::token::Token;
use crate::wire::transport::{Added, Checked, Epoch, Failure, Item, Outcome, Transport};

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
    pub(crate) fn new(sem: &'a Semaphore<F>) -> Unsure<'a, F> {
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
pub(crate) struct Acquiring<'a, F: Flavor> {
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

    pub(crate) fn lost(&self, reason: LostReason) -> Error {
        Error::LockLost {
            name: self.name().to_string(),
            reason,
        }
    }

    /// The client's lock-delay.
    pub(crate) fn lock_delay(&self) -> Duration {
        self.target.leases().lock_delay
    }

    pub(crate) fn delayed(&self, remaining: Duration) -> Error {
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
        permit.set_handoff(self.queue.as_ref().map(|queue| crate::lock::fair::Handoff {
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
    pub(crate) fn counted(&self, outcome: Result<Option<Permit<F>>>) -> Result<Option<Permit<F>>> {
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
    pub(crate) async fn add_key(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Outcome<(Added, Result<Option<u64>>)> {
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
        Record::fresh(token.as_str().as_bytes(), self.info.as_deref())
    }

    /// Hands a key where our token may have landed unseen to the background clean-up.
    pub(crate) fn abandon(&self, key: &[u8], token: &Token) {
        self.target
            .janitor()
            .clean_up(&self.target.cleanup, key, token, self.ttl_secs);
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

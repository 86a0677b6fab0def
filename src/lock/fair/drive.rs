//! The I/O of a FIFO wait: runs the reads and writes that [`Wait`] asks for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DRAW, Letter, Membership, QUEUE_TTL, Queue, Step, Wait};
use crate::error::{Error, Result};
use crate::flavor::Flavor;
use crate::lock::acquire::Unsure;
use crate::lock::permit::Permit;
use crate::lock::semaphore::Semaphore;
use crate::mailbox::Mailbox;
use crate::wire::transport::{Checked, Epoch, Failure, Transport};

/// How long to wait before asking a server again after an error.
const AFTER_ERROR: Duration = Duration::from_millis(50);

/// How long a waiter whose predecessor is in this process waits for its letter before it
/// reads the server anyway (a safety net: the predecessor's release or departure sends one).
const COVERED_POLL: Duration = Duration::from_millis(500);

/// Whether an error ends the wait at once rather than being retried (never the lock-delay
/// of a restarted server: the wait goes on through it, as a polling wait does).
fn fatal(error: &Error) -> bool {
    !matches!(
        error,
        Error::Unavailable { .. }
            | Error::Ambiguous { .. }
            | Error::Protocol { .. }
            | Error::LockDelay { .. }
    )
}

/// How long to wait before reading the lock's keys again after `error`: to the end of a
/// lock-delay (the deadline still cuts it), else a short pause.
fn after(error: &Error) -> Duration {
    match error {
        Error::LockDelay { remaining, .. } => (*remaining).max(AFTER_ERROR),
        _ => AFTER_ERROR,
    }
}

/// The bookkeeping shared by the steps: the deadline and the last error.
struct Clock<'a> {
    name: &'a str,
    started: Instant,
    deadline: Option<Instant>,
    attempts: u32,
    last_error: Option<Box<Error>>,
}

impl Clock<'_> {
    fn timeout(&mut self, now: Instant) -> Error {
        Error::Timeout {
            name: self.name.to_string(),
            waited: now.saturating_duration_since(self.started),
            attempts: self.attempts,
            last_error: self.last_error.take(),
        }
    }

    /// How long to sleep before the next read: `delay`, cut at the deadline; `None` when
    /// the deadline has passed.
    fn sleep_for(&self, delay: Duration, now: Instant) -> Option<Duration> {
        match self.deadline {
            Some(deadline) if now >= deadline => None,
            Some(deadline) => Some(delay.min(deadline - now)),
            None => Some(delay),
        }
    }

    fn failed(&mut self, error: Error) -> Result<()> {
        if fatal(&error) {
            return Err(error);
        }
        self.last_error = Some(Box::new(error));
        Ok(())
    }
}

impl<F: Flavor> Semaphore<F> {
    /// Waits in the FIFO queue until a permit is ours; ends with [`Error::Timeout`] at
    /// `max_wait`.
    pub(crate) async fn fifo_wait(
        &self,
        queue: &Arc<Queue>,
        unsure: &mut Unsure<'_, F>,
    ) -> Result<Permit<F>> {
        let started = Instant::now();
        let mut clock = Clock {
            name: self.name(),
            started,
            deadline: self.policy.wait_limit().map(|wait| started + wait),
            attempts: 0,
            last_error: None,
        };
        // Uncontended (as far as this process knows): one add, as without fairness.
        if !queue.contended() {
            clock.attempts += 1;
            match self.attempt(unsure).await {
                Ok(Some(permit)) => return Ok(permit),
                Ok(None) => {}
                Err(error) => clock.failed(error)?,
            }
        }
        loop {
            let now = Instant::now();
            // Before the draw: a wait cancelled right after the draw still leaves this
            // process's releasers handing over (and so moving past its ticket).
            queue.set_contended(true);
            let drawn = self
                .target
                .backend
                .bump(&queue.key, DRAW, Some((DRAW, QUEUE_TTL)))
                .await;
            let counter = match drawn {
                Ok(Some(counter)) => counter,
                Ok(None) => {
                    let detail = "the queue counter was not created".to_string();
                    clock.failed(self.target.error("queue", Failure::Protocol(detail)))?;
                    self.pause(&mut clock, AFTER_ERROR).await?;
                    continue;
                }
                Err(failure) => {
                    clock.failed(self.target.error("queue", failure))?;
                    self.pause(&mut clock, AFTER_ERROR).await?;
                    continue;
                }
            };
            let mut wait = Wait::new(counter, queue, self.permits(), now);
            let membership = Membership::new(&queue.local, wait.ticket());
            let mailbox = &membership.mailbox;
            if let Some(permit) = self
                .in_line(queue, &mut wait, mailbox, unsure, &mut clock)
                .await?
            {
                membership.hold();
                return Ok(permit);
            }
            // The counter was reset: draw again.
        }
    }

    /// Sleeps `delay` (cut at the deadline), or times out.
    async fn pause(&self, clock: &mut Clock<'_>, delay: Duration) -> Result<()> {
        let now = Instant::now();
        match clock.sleep_for(delay, now) {
            Some(delay) => {
                F::sleep(delay).await;
                Ok(())
            }
            None => Err(clock.timeout(now)),
        }
    }

    /// Sleeps `delay` (cut at the deadline; longer when the ticket before ours is in this
    /// process, which will tell us), or until a letter comes; times out at the deadline.
    async fn await_turn(
        &self,
        clock: &mut Clock<'_>,
        delay: Duration,
        (queue, ticket, mailbox): (&Queue, u64, &Mailbox<Letter>),
    ) -> Result<Option<Letter>> {
        if let Some(letter) = mailbox.take() {
            return Ok(Some(letter));
        }
        let delay = match queue.local.covers(ticket) {
            true => delay.max(COVERED_POLL),
            false => delay,
        };
        let now = Instant::now();
        match clock.sleep_for(delay, now) {
            Some(delay) if delay.is_zero() => Ok(None),
            Some(delay) => Ok(F::receive(mailbox, delay).await),
            None => Err(clock.timeout(now)),
        }
    }

    /// Follows one ticket: `Some(permit)`, or `None` when a new ticket is needed.
    async fn in_line(
        &self,
        queue: &Queue,
        wait: &mut Wait,
        mailbox: &Mailbox<Letter>,
        unsure: &mut Unsure<'_, F>,
        clock: &mut Clock<'_>,
    ) -> Result<Option<Permit<F>>> {
        let backend = &self.target.backend;
        let ticket = wait.ticket();
        let mut step = wait.first();
        loop {
            // A letter from this process's releaser replaces the read it would have needed.
            let delay = match step {
                Step::ReadQueue(delay) | Step::ReadSlots(delay) => Some(delay),
                _ => None,
            };
            if let Some(delay) = delay {
                match self
                    .await_turn(clock, delay, (queue, ticket, mailbox))
                    .await?
                {
                    Some(Letter::Granted { slot, cas, epoch }) => {
                        step = Step::Claim { slot, cas, epoch };
                    }
                    Some(Letter::Recheck) => step = Step::ReadQueue(Duration::ZERO),
                    None => {}
                }
            }
            step = match step {
                Step::Redraw => return Ok(None),
                Step::ReadQueue(_) => match backend.read(&queue.key).await {
                    Ok(item) => {
                        let counter = item.and_then(|item| {
                            std::str::from_utf8(&item.value).ok()?.trim().parse().ok()
                        });
                        wait.on_queue(counter, queue, Instant::now())
                    }
                    Err(failure) => {
                        clock.failed(self.target.error("queue", failure))?;
                        Step::ReadQueue(super::POLL_MIN.max(AFTER_ERROR))
                    }
                },
                Step::ReadSlots(_) => {
                    clock.attempts += 1;
                    let slots = match self.read_slots().await {
                        Ok(slots) => slots,
                        Err(error) => {
                            clock.failed(error)?;
                            step = Step::ReadSlots(AFTER_ERROR);
                            continue;
                        }
                    };
                    let started = Instant::now();
                    // An earlier claim or add of ours whose reply was lost landed after all.
                    let mine = slots.iter().zip(1..).find_map(|(item, slot)| match item {
                        Some(item) if unsure.token.owns(&item.value) => Some((slot, item.clone())),
                        _ => None,
                    });
                    if let Some((slot, item)) = mine {
                        let key = self.slot_key(slot);
                        let mut permit = self.adopt(slot, key, item, unsure, started).await?;
                        permit.set_ticket(wait.ticket());
                        return Ok(Some(permit));
                    }
                    wait.on_slots(&slots, started)
                }
                Step::Add { slot } => match self.add_slot(slot, unsure).await {
                    Ok(Some(mut permit)) => {
                        permit.set_ticket(wait.ticket());
                        return Ok(Some(permit));
                    }
                    Ok(None) => Step::ReadSlots(Duration::ZERO),
                    Err(error) => {
                        let delay = after(&error);
                        clock.failed(error)?;
                        Step::ReadSlots(delay)
                    }
                },
                Step::Claim { slot, cas, epoch } => {
                    match self.claim(slot, (cas, epoch), unsure).await {
                        Ok(Some(mut permit)) => {
                            permit.set_ticket(wait.ticket());
                            return Ok(Some(permit));
                        }
                        Ok(None) => Step::ReadSlots(Duration::ZERO),
                        Err(error) => {
                            clock.failed(error)?;
                            Step::ReadSlots(AFTER_ERROR)
                        }
                    }
                }
            };
        }
    }

    /// Replaces the reservation with this CAS in `slot` by our holder record: one
    /// CAS-checked write, sent only to the incarnation of the server the reservation was read
    /// from (CAS values start again after a restart). `None` when the reservation changed,
    /// expired or its server restarted in between.
    ///
    /// No lock-delay check is needed here: a reservation exists only as a CAS-checked rewrite
    /// of a key held on the same incarnation, which an add created after the lock-delay.
    async fn claim(
        &self,
        slot: u32,
        (cas, epoch): (u64, Option<Epoch>),
        unsure: &mut Unsure<'_, F>,
    ) -> Result<Option<Permit<F>>> {
        let key = self.slot_key(slot);
        let value = self.value_for(&unsure.token);
        let started = Instant::now();
        let was_unsure = unsure.contains(&key);
        // Until a definite answer our record may land: a dropped wait leaves it to the
        // clean-up, and the next read recognises it.
        unsure.mark(&key);
        let reply = self
            .target
            .backend
            .replace_if(&key, &value, cas, self.ttl_secs, epoch)
            .await;
        match reply {
            Ok(Checked::Applied { cas: Some(cas) }) => {
                unsure.settle(&key);
                let mut permit = self.permit(
                    (key, slot),
                    unsure.token.clone(),
                    value,
                    (cas, epoch),
                    started,
                );
                // Without its number the permit is useless: dropping it releases the lock.
                permit.set_fence(self.fence_now().await?);
                Ok(Some(permit))
            }
            Ok(Checked::Applied { cas: None }) => Err(self.target.error(
                "claim",
                Failure::Protocol("store reply without the CAS that was asked for".into()),
            )),
            // Nothing was sent for a restarted server: the reservation is gone with it.
            Ok(Checked::Restarted) => {
                if !was_unsure {
                    unsure.settle(&key);
                }
                Ok(None)
            }
            Ok(Checked::Mismatch | Checked::Missing) => {
                if !was_unsure {
                    unsure.settle(&key);
                }
                Ok(None)
            }
            Err(failure @ Failure::Unavailable(_)) => {
                if !was_unsure {
                    unsure.settle(&key);
                }
                Err(self.target.error("claim", failure))
            }
            Err(failure) => Err(self.target.error("claim", failure)),
        }
    }
}

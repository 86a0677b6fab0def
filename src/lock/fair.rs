//! FIFO hand-off ([`Fairness::Fifo`]): waiters take a numbered ticket and the releaser hands
//! the lock to the next ticket instead of letting the fastest poller win.
//!
//! The lock key stays the only mutual-exclusion point: whoever holds the `add`ed key (or a
//! key it wrote over a reservation with a CAS-checked replace) holds the lock. The queue
//! only decides who tries next:
//!
//! - **Tickets**: one counter key per semaphore (`lock key + "#queue"`) packs two numbers,
//!   the tickets drawn (high 32 bits) and the last ticket handed the lock (low 32 bits). A
//!   waiter draws with `ma D2³²` (auto-created), which also tells it how far it is from the
//!   head; a releaser advances the handed number with `ma D1`, which also tells it whether
//!   anybody holds the next ticket.
//! - **Hand-off**: the releaser rewrites its own key (CAS-checked, as any release) into a
//!   *reservation* for the next ticket, with a short TTL ([`RESERVE_TTL`]), instead of
//!   deleting it, so newcomers' adds (and Perl's) keep failing. The waiter with that ticket
//!   claims it with a CAS-checked replace of the reservation it read.
//! - **Dead waiters**: a reservation seen unchanged for [`SKIP_AFTER`] may be claimed by
//!   any later ticket, and it expires by itself after [`RESERVE_TTL`].
//! - **In one process**: a releaser whose next ticket waits in the same client hands it the
//!   reservation's CAS through a mailbox (`local`), and a waiter whose predecessor ticket
//!   is its own process's waits for that letter instead of polling: 4 commands per
//!   acquisition (draw, claim, the releaser's `ma` and reservation).
//! - **Polling**: otherwise, far from the head a waiter reads the counter, at a rate set by
//!   its distance and the measured time per hand-off; at the head it reads the lock key.
//!
//! The decisions are pure ([`Wait`], [`Position`], [`reservation`]); the semaphore runs
//! the I/O they ask for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::wire::transport::{Epoch, Item, Transport};

mod drive;
mod local;

pub(crate) use local::{Letter, Local, Membership};

/// How [`Semaphore::wait_acquire`](crate::Semaphore::wait_acquire) orders waiters.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fairness {
    /// Every waiter polls by its [`WaitPolicy`](crate::WaitPolicy); whoever polls right after
    /// a release wins (the default, and what the Perl module and other lock libraries do).
    #[default]
    Polling,
    /// Waiters queue with numbered tickets and releasers hand the lock to the next one
    /// (first come, first served). The wait policy's `max_wait` still applies; its poll
    /// times do not. Plain-`add` clients on the same name (Perl, older memsem) stay
    /// excluded but get in only when the queue is empty.
    Fifo,
}

/// The high half of the queue counter: one ticket drawn.
pub(crate) const DRAW: u64 = 1 << 32;

/// How long an unclaimed reservation keeps the lock closed to newcomers (whole seconds:
/// it lives 1 to 2 s).
pub(crate) const RESERVE_TTL: u32 = 2;

/// How long a reservation may sit unchanged before a later ticket may claim it (its
/// waiter is presumed dead or stuck).
pub(crate) const SKIP_AFTER: Duration = Duration::from_millis(150);

/// How long an idle queue counter lives (it is recreated when gone).
pub(crate) const QUEUE_TTL: u32 = 24 * 3600;

/// The longest sleep between two reads at the head of the queue: a long hold is watched
/// as often as the polling default's mean (100 ms), a short one more closely.
const HEAD_POLL_MAX: Duration = Duration::from_millis(100);
/// The shortest sleep between two reads.
const POLL_MIN: Duration = Duration::from_micros(50);
/// With N permits, how long to wait before reading every slot again after a read that
/// found no reservation for us.
const HANDED_RETRY: Duration = Duration::from_micros(200);
/// The longest sleep between two reads of the counter.
const QUEUE_POLL_MAX: Duration = Duration::from_millis(200);
/// What a hand-off adds to a hold, roughly: the releaser's two round trips, the next
/// waiter's read and claim.
const HANDOFF_COST: Duration = Duration::from_micros(200);
/// How long the queue may stand still, per ticket between a waiter and the head, before
/// that waiter reads the lock itself: when the head's waiter died after drawing and the key
/// is free, nobody else would take it.
const STUCK_CHECK: Duration = Duration::from_secs(1);
/// The time per hand-off assumed before any is measured.
const FIRST_STEP: Duration = Duration::from_millis(1);

/// The queue counter, unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// Tickets drawn so far (the last ticket's number).
    pub(crate) drawn: u64,
    /// The last ticket handed the lock.
    pub(crate) handed: u64,
}

impl Position {
    pub(crate) fn unpack(counter: u64) -> Position {
        Position {
            drawn: counter >> 32,
            handed: counter & (DRAW - 1),
        }
    }
}

/// The value of a key reserved for `ticket`. It contains spaces, so no token owns it.
pub(crate) fn reservation(ticket: u64) -> Vec<u8> {
    format!("memsem reserved {ticket}").into_bytes()
}

/// The ticket a key's value is reserved for; `None` for a holder's value.
pub(crate) fn reserved_for(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.strip_prefix(b"memsem reserved ")?)
        .ok()?
        .parse()
        .ok()
}

/// A semaphore's queue: its counter key and what this process has learnt about it.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) key: Vec<u8>,
    /// Whether the lock was contended lately: then acquires go straight to a ticket and
    /// releases hand off.
    contended: AtomicBool,
    /// The measured hold plus the hand-off's round trips, as holders see it, in
    /// nanoseconds: the best case of the pace.
    hold_ns: AtomicU64,
    /// This process's waiters and holders of the queue, by ticket.
    pub(crate) local: Local,
}

impl Queue {
    pub(crate) fn new(key: Vec<u8>) -> Queue {
        Queue {
            key,
            contended: AtomicBool::new(false),
            hold_ns: AtomicU64::new(FIRST_STEP.as_nanos() as u64),
            local: Local::default(),
        }
    }

    pub(crate) fn contended(&self) -> bool {
        self.contended.load(Ordering::Relaxed)
    }

    pub(crate) fn set_contended(&self, contended: bool) {
        self.contended.store(contended, Ordering::Relaxed);
    }

    fn hold(&self) -> Duration {
        Duration::from_nanos(self.hold_ns.load(Ordering::Relaxed))
    }

    /// Takes in a holder's hold.
    fn learn_hold(&self, held: Duration) {
        let old = self.hold();
        store(&self.hold_ns, (old * 3 + held + HANDOFF_COST) / 4);
    }
}

fn store(cell: &AtomicU64, value: Duration) {
    cell.store(
        value.as_nanos().min(u64::MAX.into()) as u64,
        Ordering::Relaxed,
    );
}

/// What a releaser needs to hand its permit over: the queue, and its own ticket (never
/// hand to oneself). Dropped with the permit, it takes the ticket out of the queue's local
/// members.
#[derive(Debug)]
pub(crate) struct Handoff {
    pub(crate) queue: std::sync::Arc<Queue>,
    pub(crate) ticket: Option<u64>,
}

impl Handoff {
    /// A holder's measure of the pace: it held the lock for `held` (the hand-off itself
    /// adds a few round trips).
    pub(crate) fn held(&self, held: Duration) {
        self.queue.learn_hold(held);
    }

    /// Whether a release should look for a next waiter at all.
    pub(crate) fn wanted(&self) -> bool {
        self.ticket.is_some() || self.queue.contended()
    }

    /// Advances the queue and returns the next ticket and the reservation to write for it,
    /// or `None` when nobody waits (or the counter cannot be read: then the key is deleted
    /// and the head of the queue adds it). One `ma`, more when it lands on our own ticket
    /// or one that already holds.
    pub(crate) async fn next<T: Transport>(&self, backend: &T) -> Option<(u64, Vec<u8>)> {
        // A ticket whose waiter here already holds a permit (it found a free slot before its
        // turn came) is passed over: a reservation for it would sit unclaimed until a later
        // ticket may take it as stale.
        for _ in 0..4 {
            let counter = backend.bump(&self.queue.key, 1, None).await.ok()??;
            let Position { drawn, handed } = Position::unpack(counter);
            if handed > drawn {
                self.queue.set_contended(false);
                return None;
            }
            if Some(handed) != self.ticket && !self.queue.local.holds(handed) {
                return Some((handed, reservation(handed)));
            }
        }
        None
    }

    /// The reservation for `ticket` is written (in `slot`, with this CAS when the reply
    /// said): tells its waiter at once if it is in this process.
    pub(crate) fn handed(&self, ticket: u64, slot: u32, written: Option<(u64, Option<Epoch>)>) {
        let letter = match written {
            Some((cas, epoch)) => Letter::Granted { slot, cas, epoch },
            None => Letter::Recheck,
        };
        self.queue.local.grant(ticket, letter);
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.queue.local.leave(ticket);
        }
    }
}

/// What the waiter does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Sleep, then read the queue counter.
    ReadQueue(Duration),
    /// Sleep, then read the lock's keys.
    ReadSlots(Duration),
    /// Replace the reservation in `slot` (from 1) that has this CAS, read from this
    /// incarnation of the server.
    Claim {
        slot: u32,
        cas: u64,
        epoch: Option<Epoch>,
    },
    /// Add the free key of `slot`.
    Add { slot: u32 },
    /// The counter was reset (evicted, server restarted): draw a new ticket.
    Redraw,
}

/// One waiter's place in the queue, and when to look again. No I/O: it is told what the
/// reads found and the time.
#[derive(Debug)]
pub(crate) struct Wait {
    ticket: u64,
    handed: u64,
    /// When `handed` last moved (estimated: between the two reads that saw it move).
    moved_at: Instant,
    /// When the counter was last read.
    read_at: Instant,
    /// When a read first saw the current `handed`: the current turn has lasted at least
    /// since then (a lower bound, unlike `moved_at`, so that waits never grow on a guess).
    seen_at: Instant,
    /// The pace of the queue (time per hand-off), and a holder's hold with its hand-off.
    step: Duration,
    /// How many times this waiter measured the pace.
    paces_seen: u32,
    /// When a waiter away from the head last read the lock itself (see [`STUCK_CHECK`]).
    checked_at: Instant,
    hold: Duration,
    permits: u32,
    /// A reservation for an earlier ticket: (slot, CAS, first seen).
    stale: Option<(u32, u64, Instant)>,
}

impl Wait {
    /// After drawing: the counter the draw returned, for a semaphore of `permits`.
    pub(crate) fn new(counter: u64, queue: &Queue, permits: u32, now: Instant) -> Wait {
        let position = Position::unpack(counter);
        // With N permits a hand-off comes every hold / N.
        let hold = queue.hold() / permits.max(1);
        Wait {
            ticket: position.drawn,
            handed: position.handed,
            moved_at: now,
            read_at: now,
            seen_at: now,
            step: hold,
            paces_seen: 0,
            checked_at: now,
            hold,
            permits: permits.max(1),
            stale: None,
        }
    }

    pub(crate) fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Where to look first.
    pub(crate) fn first(&self) -> Step {
        self.after_move(Instant::now())
    }

    /// How long the current holder is expected to keep the lock: this process's holders'
    /// measure, or the pace this waiter saw when longer (holders elsewhere keep it longer).
    fn expected_hold(&self) -> Duration {
        self.hold.max(self.step)
    }

    fn at_head(&self) -> bool {
        self.ticket <= self.handed + 1
    }

    /// The step when the counter says where the head is.
    fn after_move(&self, now: Instant) -> Step {
        if self.ticket <= self.handed {
            // Handed to us (or we were passed): the reservation is there now.
            return Step::ReadSlots(Duration::ZERO);
        }
        let ahead = (self.ticket - self.handed - 1) as u32;
        // The current turn has lasted at least `elapsed` (since a read first saw it).
        let elapsed = now.saturating_duration_since(self.seen_at);
        if self.at_head() {
            // Start reading a little before the holder's release is due.
            let hold = self.expected_hold();
            let due = self.moved_at + hold;
            let wait = due.saturating_duration_since(now + hold / 4);
            if self.permits > 1 {
                // Reading every slot costs N commands: read the counter (one) until it
                // says the hand-off to us has happened, then the slots once.
                let interval = (hold.max(elapsed) / 4).clamp(POLL_MIN, HEAD_POLL_MAX);
                return Step::ReadQueue(wait.max(interval).min(HEAD_POLL_MAX));
            }
            Step::ReadSlots(wait.min(HEAD_POLL_MAX))
        } else {
            // Sleep through part of the time until our predecessor's turn, then read the
            // counter again: a waiter that oversleeps stalls everybody behind it (and slows
            // the pace it measures), one that wakes early costs a read. The distance shrinks
            // geometrically: about log(waiters ahead) reads.
            // When the turn is overdue (a long hold, or a fresh process whose pace is not
            // measured yet), the reads still back off with it: our turn cannot come before
            // the current one ends, and a quarter of its length is a small delay on that.
            let due = self.moved_at + self.step * (ahead + 1);
            let until_predecessor = due.saturating_duration_since(now + self.step);
            let wait = (until_predecessor * 9 / 10).max(self.step).max(elapsed / 4);
            Step::ReadQueue(wait.clamp(POLL_MIN, QUEUE_POLL_MAX))
        }
    }

    /// Takes in the time per hand-off this waiter saw: a faster pace at once, a slower one
    /// slowly (a waiter that wakes late makes the hand-offs slower still; one that wakes
    /// early costs a read). Each waiter keeps its own: shared, every waiter would count
    /// the same stall again.
    fn learn_pace(&mut self, measured: Duration) {
        let old = self.step;
        self.paces_seen = self.paces_seen.saturating_add(1);
        self.step = if measured < old {
            (old + measured * 3) / 4
        } else if self.paces_seen <= 2 {
            // The first readings of a waiter correct the process's guess (1 ms in a fresh
            // process, whatever the holds are) quickly.
            (old + measured.min(old * 8)) / 2
        } else {
            // One stall counts as at most twice the pace.
            (old * 7 + measured.min(old * 2)) / 8
        };
    }

    /// The counter read: `None` when it is gone.
    pub(crate) fn on_queue(&mut self, counter: Option<u64>, queue: &Queue, now: Instant) -> Step {
        let Some(counter) = counter else {
            return Step::Redraw;
        };
        let position = Position::unpack(counter);
        if position.drawn < self.ticket {
            return Step::Redraw;
        }
        if position.handed > self.handed {
            let moved = (position.handed - self.handed) as u32;
            // The last move happened between the previous read and this one, and within
            // the last step when several did.
            let since_read = now.saturating_duration_since(self.read_at);
            let moved_at = now
                .checked_sub(since_read.min(self.step) / 2)
                .unwrap_or(now);
            // The time per hand-off, shared with the other waiters of this process (and
            // with its holders, who measure their holds).
            self.learn_pace(moved_at.saturating_duration_since(self.moved_at) / moved);
            self.handed = position.handed;
            self.moved_at = moved_at;
            self.seen_at = now;
        }
        self.read_at = now;
        self.hold = queue.hold() / self.permits;
        if self.stuck(now) {
            self.checked_at = now;
            return Step::ReadSlots(Duration::ZERO);
        }
        self.after_move(now)
    }

    /// Whether this waiter, away from the head, should read the lock because the queue
    /// has stood still for [`STUCK_CHECK`] per ticket ahead of it (and it has not looked
    /// for that long): the nearest live waiter to a dead head notices first.
    fn stuck(&self, now: Instant) -> bool {
        if self.at_head() || self.ticket <= self.handed {
            return false;
        }
        let ahead = (self.ticket - self.handed - 1).min(u64::from(u32::MAX)) as u32;
        let after = STUCK_CHECK.saturating_mul(ahead);
        now.saturating_duration_since(self.seen_at) >= after
            && now.saturating_duration_since(self.checked_at) >= after
    }

    /// The lock's keys read (slot 1 first).
    pub(crate) fn on_slots(&mut self, slots: &[Option<Item>], now: Instant) -> Step {
        let mut free = None;
        let mut earlier = None;
        // Ours, or else the earliest later ticket's while we were passed: FIFO either way,
        // and a later waiter's own reservation is left to it (taking it would make that
        // waiter wait for ours to go stale).
        let mut claimable: Option<(u64, Step)> = None;
        for (item, slot) in slots.iter().zip(1..) {
            match item {
                None => {
                    free.get_or_insert(slot);
                }
                Some(item) => match reserved_for(&item.value) {
                    Some(ticket)
                        if ticket >= self.ticket
                            && claimable.as_ref().is_none_or(|(best, _)| ticket < *best) =>
                    {
                        let claim = Step::Claim {
                            slot,
                            cas: item.cas,
                            epoch: item.epoch,
                        };
                        claimable = Some((ticket, claim));
                    }
                    Some(ticket) if ticket >= self.ticket => {}
                    Some(_) => {
                        earlier.get_or_insert((slot, item.cas, item.epoch));
                    }
                    None => {}
                },
            }
        }
        if let Some((_, claim)) = claimable {
            return claim;
        }
        if let Some(slot) = free {
            return Step::Add { slot };
        }
        match (earlier, self.stale) {
            (Some((slot, cas, epoch)), Some((s, c, since))) if (slot, cas) == (s, c) => {
                if now.saturating_duration_since(since) >= SKIP_AFTER {
                    return Step::Claim { slot, cas, epoch };
                }
            }
            (Some((slot, cas, _)), _) => self.stale = Some((slot, cas, now)),
            (None, _) => self.stale = None,
        }
        if !self.at_head() && self.ticket > self.handed {
            // A check of a standing queue found a holder: back to the counter.
            return self.after_move(now);
        }
        // At the head, waiting for the holder's release: a few reads per hold, and when the
        // holder keeps it longer than measured, a read per quarter of its hold so far (the
        // reads grow apart geometrically, up to the polling default's mean).
        let held_for = now.saturating_duration_since(self.seen_at);
        let base = (self.expected_hold() / 4).max(held_for / 4);
        let mut interval = base.clamp(POLL_MIN, HEAD_POLL_MAX);
        if self.permits > 1 {
            // Handed but not reserved yet: the releaser writes the reservation one round
            // trip after moving the counter; a read of every slot costs N commands.
            interval = interval.max(HANDED_RETRY);
        }
        Step::ReadSlots(interval)
    }
}

#[cfg(test)]
mod tests;

//! The tickets of one queue held in this process: a releaser whose next ticket waits in the
//! same process hands it its turn through a [`Mailbox`] instead of leaving it to find out
//! at its next read, and a waiter whose predecessor is ours does not poll at all.
//!
//! Nothing here decides who holds the lock: the reservation on the server and the waiter's
//! CAS-checked claim still do. A letter only saves the reads that would have found it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::mailbox::Mailbox;
use crate::wire::transport::Epoch;

/// What a waiter of this process is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Letter {
    /// The releaser wrote the reservation for this ticket into `slot`; it has this CAS on
    /// this incarnation of the server.
    Granted {
        slot: u32,
        cas: u64,
        epoch: Option<Epoch>,
    },
    /// The ticket before this one left without handing over to it (gave up, lost its lock,
    /// or the reply to its hand-off was lost): look at the server again.
    Recheck,
}

#[derive(Debug)]
enum Member {
    Waiting(Arc<Mailbox<Letter>>),
    Holding,
}

/// The members of one queue in this process, by ticket.
#[derive(Debug, Default)]
pub(crate) struct Local {
    members: Mutex<Members>,
}

#[derive(Debug, Default)]
struct Members {
    by_ticket: BTreeMap<u64, Member>,
    /// The last ticket a letter granted its turn (no recheck is needed for it).
    last_granted: u64,
}

impl Local {
    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A waiter of this process drew `ticket`: its mailbox.
    pub(crate) fn enlist(&self, ticket: u64) -> Arc<Mailbox<Letter>> {
        let mailbox = Arc::new(Mailbox::default());
        self.members()
            .by_ticket
            .insert(ticket, Member::Waiting(Arc::clone(&mailbox)));
        mailbox
    }

    /// Whether the ticket just before `ticket` is ours (waiting or holding): then its
    /// release or its departure sends `ticket` a letter.
    pub(crate) fn covers(&self, ticket: u64) -> bool {
        ticket
            .checked_sub(1)
            .is_some_and(|before| self.members().by_ticket.contains_key(&before))
    }

    /// Whether the waiter of `ticket` is ours and holds a permit already.
    pub(crate) fn holds(&self, ticket: u64) -> bool {
        matches!(self.members().by_ticket.get(&ticket), Some(Member::Holding))
    }

    /// The waiter of `ticket` holds the lock now.
    pub(crate) fn holding(&self, ticket: u64) {
        if let Some(member) = self.members().by_ticket.get_mut(&ticket) {
            *member = Member::Holding;
        }
    }

    /// Tells the waiter of `ticket`, if it is ours, that its reservation is written.
    /// Whether it was ours.
    pub(crate) fn grant(&self, ticket: u64, letter: Letter) -> bool {
        let mut members = self.members();
        let Some(Member::Waiting(mailbox)) = members.by_ticket.get(&ticket) else {
            return false;
        };
        let mailbox = Arc::clone(mailbox);
        members.last_granted = ticket;
        drop(members);
        // A grant replaces an unread recheck; a recheck never replaces a grant.
        mailbox.post(letter, |_| true)
    }

    /// `ticket` leaves (its waiter gave up, or its holder released): if the next ticket
    /// waits here and was not granted its turn, it is told to look again.
    pub(crate) fn leave(&self, ticket: u64) {
        let mut members = self.members();
        members.by_ticket.remove(&ticket);
        let next = ticket.saturating_add(1);
        if members.last_granted == next {
            return;
        }
        if let Some(Member::Waiting(mailbox)) = members.by_ticket.get(&next) {
            let mailbox = Arc::clone(mailbox);
            drop(members);
            mailbox.post(Letter::Recheck, |old| *old == Letter::Recheck);
        }
    }
}

/// A waiter's membership: leaves the queue's local members when dropped (a wait that ends
/// or is cancelled), unless its waiter became the holder.
#[derive(Debug)]
pub(crate) struct Membership<'a> {
    local: &'a Local,
    ticket: u64,
    pub(crate) mailbox: Arc<Mailbox<Letter>>,
    holds: bool,
}

impl<'a> Membership<'a> {
    pub(crate) fn new(local: &'a Local, ticket: u64) -> Membership<'a> {
        Membership {
            local,
            ticket,
            mailbox: local.enlist(ticket),
            holds: false,
        }
    }

    /// The waiter holds the lock: the permit's release leaves the queue instead.
    pub(crate) fn hold(mut self) {
        self.local.holding(self.ticket);
        self.holds = true;
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        if !self.holds {
            self.local.leave(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRANT: Letter = Letter::Granted {
        slot: 1,
        cas: 9,
        epoch: None,
    };

    #[test]
    fn a_ticket_is_covered_by_its_predecessor_waiting_or_holding_here() {
        let local = Local::default();
        let first = Membership::new(&local, 4);
        assert!(local.covers(5));
        assert!(!local.covers(6));
        assert!(!local.covers(4));
        assert!(!local.holds(4));
        first.hold();
        assert!(local.holds(4));
        assert!(local.covers(5), "a holder of ticket 4 hands 5 its turn");
        local.leave(4);
        assert!(!local.covers(5));
    }

    #[test]
    fn a_grant_reaches_only_a_waiting_ticket_of_this_process() {
        let local = Local::default();
        let waiter = Membership::new(&local, 7);
        assert!(!local.grant(8, GRANT), "ticket 8 waits elsewhere");
        assert!(local.grant(7, GRANT));
        assert_eq!(waiter.mailbox.take(), Some(GRANT));
    }

    #[test]
    fn leaving_without_handing_over_tells_the_next_ticket_to_look_again() {
        let local = Local::default();
        let first = Membership::new(&local, 1);
        let second = Membership::new(&local, 2);
        drop(first);
        assert_eq!(second.mailbox.take(), Some(Letter::Recheck));
        // A holder that handed its successor the turn sends no recheck after it.
        let third = Membership::new(&local, 3);
        second.hold();
        assert!(local.grant(3, GRANT));
        local.leave(2);
        assert_eq!(third.mailbox.take(), Some(GRANT));
        assert_eq!(third.mailbox.take(), None);
    }

    #[test]
    fn a_recheck_never_replaces_a_grant() {
        let local = Local::default();
        let _holder = Membership::new(&local, 1);
        let next = Membership::new(&local, 2);
        local.grant(2, GRANT);
        // Another ticket granted since: leaving 1 now posts a recheck to 2, kept behind the
        // grant.
        let _later = Membership::new(&local, 3);
        local.grant(3, GRANT);
        local.leave(1);
        assert_eq!(next.mailbox.take(), Some(GRANT));
    }
}

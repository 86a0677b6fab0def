//! The FIFO decisions ([`Wait`], [`Position`], [`reservation`]), without I/O.

use super::*;

/// The incarnation the test items are read from: a claim carries it.
const EPOCH: Option<Epoch> = Some(Epoch {
    started: 1_000,
    pid: 42,
});

fn item(value: &[u8], cas: u64) -> Option<Item> {
    Some(Item {
        value: value.to_vec(),
        cas,
        ttl: Some(2),
        epoch: EPOCH,
    })
}

fn counter(drawn: u64, handed: u64) -> u64 {
    drawn * DRAW + handed
}

impl Wait {
    fn new_for_test(counter: u64, queue: &Queue, now: Instant) -> Wait {
        Wait::new(counter, queue, 1, now)
    }
}

#[test]
fn the_counter_packs_drawn_and_handed() {
    assert_eq!(
        Position::unpack(counter(7, 3)),
        Position {
            drawn: 7,
            handed: 3
        }
    );
    // The first draw creates the counter at one ticket drawn, none handed.
    assert_eq!(
        Position::unpack(DRAW),
        Position {
            drawn: 1,
            handed: 0
        }
    );
}

#[test]
fn reservations_round_trip_and_no_token_owns_them() {
    assert_eq!(reserved_for(&reservation(42)), Some(42));
    assert_eq!(reserved_for(b"0123456789abcdef0123456789abcdef"), None);
    assert_eq!(reserved_for(b"memsem reserved x"), None);
    assert_eq!(reserved_for(b"memsem reserved 4\n2"), None);
    let value = reservation(9);
    assert!(value.contains(&b' '), "tokens never contain spaces");
}

#[test]
fn far_waiters_read_the_counter_near_their_turn_and_the_head_reads_the_lock() {
    let queue = Queue::new(b"q".to_vec());
    let now = Instant::now();
    let mut wait = Wait::new_for_test(counter(10, 2), &queue, now);
    assert_eq!(wait.ticket(), 10);
    // 7 hand-offs ahead at 1 ms each: read the counter again before our turn.
    match wait.first() {
        Step::ReadQueue(delay) => assert!(delay <= Duration::from_millis(8), "{delay:?}"),
        other => panic!("a far waiter reads the counter, got {other:?}"),
    }
    // No move yet at 6 ms; 7 moves by 7 ms (so about 6.5 ms after the draw).
    let read = wait.on_queue(Some(counter(11, 2)), &queue, now + Duration::from_millis(6));
    assert!(matches!(read, Step::ReadQueue(_)), "{read:?}");
    let later = now + Duration::from_millis(7);
    match wait.on_queue(Some(counter(12, 9)), &queue, later) {
        Step::ReadSlots(delay) => assert!(delay <= HEAD_POLL_MAX),
        other => panic!("the head reads the lock, got {other:?}"),
    }
    assert!(wait.at_head());
    // 7 hand-offs in 7 ms: the step stays about 1 ms.
    assert!(wait.step >= Duration::from_micros(900));
}

#[test]
fn the_waiter_claims_its_reservation_and_not_an_earlier_ones_until_it_is_stale() {
    let queue = Queue::new(b"q".to_vec());
    let now = Instant::now();
    let mut wait = Wait::new_for_test(counter(5, 4), &queue, now);
    assert_eq!(
        wait.on_slots(&[item(&reservation(5), 77)], now),
        Step::Claim {
            slot: 1,
            cas: 77,
            epoch: EPOCH
        }
    );
    // An earlier ticket's reservation: wait, then skip it once it sat unchanged.
    assert!(matches!(
        wait.on_slots(&[item(&reservation(4), 80)], now),
        Step::ReadSlots(_)
    ));
    assert!(matches!(
        wait.on_slots(&[item(&reservation(4), 80)], now + SKIP_AFTER / 2),
        Step::ReadSlots(_)
    ));
    assert_eq!(
        wait.on_slots(&[item(&reservation(4), 80)], now + SKIP_AFTER),
        Step::Claim {
            slot: 1,
            cas: 80,
            epoch: EPOCH
        }
    );
    // A new reservation (another CAS) restarts the clock.
    assert!(matches!(
        wait.on_slots(&[item(&reservation(4), 81)], now + SKIP_AFTER * 2),
        Step::ReadSlots(_)
    ));
}

#[test]
fn a_free_key_is_added_and_a_holder_is_waited_for() {
    let queue = Queue::new(b"q".to_vec());
    let now = Instant::now();
    let mut wait = Wait::new_for_test(counter(3, 2), &queue, now);
    assert_eq!(wait.on_slots(&[None], now), Step::Add { slot: 1 });
    let holder = item(b"0123456789abcdef0123456789abcdef\nhost", 5);
    match wait.on_slots(std::slice::from_ref(&holder), now) {
        Step::ReadSlots(delay) => assert!(delay >= POLL_MIN && delay <= HEAD_POLL_MAX),
        other => panic!("wait for the holder, got {other:?}"),
    }
    // N permits: the reservation in any slot, else a free one.
    assert_eq!(
        wait.on_slots(&[holder.clone(), item(&reservation(3), 9)], now),
        Step::Claim {
            slot: 2,
            cas: 9,
            epoch: EPOCH
        }
    );
    assert_eq!(wait.on_slots(&[holder, None], now), Step::Add { slot: 2 });
}

#[test]
fn with_n_permits_the_head_reads_the_counter_until_handed() {
    let queue = Queue::new(b"q".to_vec());
    let now = Instant::now();
    let mut wait = Wait::new(counter(9, 7), &queue, 8, now);
    assert!(matches!(wait.first(), Step::ReadQueue(_)));
    assert!(matches!(
        wait.on_queue(Some(counter(12, 8)), &queue, now),
        Step::ReadQueue(_)
    ));
    assert_eq!(
        wait.on_queue(Some(counter(12, 9)), &queue, now),
        Step::ReadSlots(Duration::ZERO)
    );
}

#[test]
fn a_waiter_takes_its_own_reservation_before_a_later_tickets() {
    let queue = Queue::new(b"q".to_vec());
    let now = Instant::now();
    let mut wait = Wait::new(counter(9, 7), &queue, 8, now);
    let slots = [
        item(&reservation(11), 3),
        item(&reservation(9), 4),
        item(&reservation(10), 5),
    ];
    assert_eq!(
        wait.on_slots(&slots, now),
        Step::Claim {
            slot: 2,
            cas: 4,
            epoch: EPOCH
        }
    );
    let passed = [item(&reservation(11), 3), item(&reservation(10), 5)];
    assert_eq!(
        wait.on_slots(&passed, now),
        Step::Claim {
            slot: 2,
            cas: 5,
            epoch: EPOCH
        }
    );
}

#[test]
fn a_passed_waiter_takes_a_later_reservation() {
    let queue = Queue::new(b"q".to_vec());
    let now = Instant::now();
    let mut wait = Wait::new_for_test(counter(3, 1), &queue, now);
    assert_eq!(
        wait.on_queue(Some(counter(6, 5)), &queue, now),
        Step::ReadSlots(Duration::ZERO)
    );
    assert_eq!(
        wait.on_slots(&[item(&reservation(6), 4)], now),
        Step::Claim {
            slot: 1,
            cas: 4,
            epoch: EPOCH
        }
    );
}

#[test]
fn a_queue_standing_behind_a_dead_head_is_noticed_by_the_next_live_waiter() {
    // Ticket 3 waits; ticket 2, the head, was drawn by a waiter that died, and the key
    // was deleted by a holder that saw no queue: nobody would ever take it.
    let queue = Queue::new(b"q".to_vec());
    let now = Instant::now();
    let mut wait = Wait::new_for_test(counter(3, 1), &queue, now);
    let still = Some(counter(3, 1));
    assert!(matches!(
        wait.on_queue(still, &queue, now + STUCK_CHECK / 2),
        Step::ReadQueue(_)
    ));
    // One ticket ahead: after STUCK_CHECK of a standing queue it reads the lock.
    let later = now + STUCK_CHECK;
    assert_eq!(
        wait.on_queue(still, &queue, later),
        Step::ReadSlots(Duration::ZERO)
    );
    assert_eq!(wait.on_slots(&[None], later), Step::Add { slot: 1 });
    // A holder there: back to the counter, and no new check for another STUCK_CHECK.
    let holder = item(b"0123456789abcdef0123456789abcdef\nhost", 5);
    assert!(matches!(
        wait.on_slots(std::slice::from_ref(&holder), later),
        Step::ReadQueue(_)
    ));
    assert!(matches!(
        wait.on_queue(still, &queue, later + STUCK_CHECK / 2),
        Step::ReadQueue(_)
    ));
    // Waiters further back look later: two tickets ahead, twice as long.
    let mut far = Wait::new_for_test(counter(4, 1), &queue, now);
    let still = Some(counter(4, 1));
    assert!(matches!(
        far.on_queue(still, &queue, later),
        Step::ReadQueue(_)
    ));
    assert_eq!(
        far.on_queue(still, &queue, now + STUCK_CHECK * 2),
        Step::ReadSlots(Duration::ZERO)
    );
}

#[test]
fn a_reset_counter_means_a_new_ticket() {
    let queue = Queue::new(b"q".to_vec());
    let now = Instant::now();
    let mut wait = Wait::new_for_test(counter(40, 30), &queue, now);
    assert_eq!(wait.on_queue(None, &queue, now), Step::Redraw);
    assert_eq!(
        wait.on_queue(Some(counter(2, 1)), &queue, now),
        Step::Redraw
    );
}

//! Unit tests of the lock algorithm (acquire, release, refresh, cooldown, steal, reap,
//! lock-delay, restart epochs, N permits) on the in-memory fake memcached: faults at exact
//! points, a manual clock, milliseconds per test, no Docker. The same code runs against
//! real servers in the integration suite (`tests/it/`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, LostReason};
use crate::flavor::Simulated;
use crate::flavor::block_on;
use crate::lock::permit::Permit;
use crate::lock::semaphore::Semaphore;
use crate::wait::WaitPolicy;
use crate::wire::fake::{Clock, FakeServer, Fault, Op};
use crate::wire::record::{Meta, Record};
use crate::wire::transport::Transport;

type Sem = Semaphore<Simulated>;

const KEY: &[u8] = b"__lock__job";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn job(fleet: &FakeFleet) -> Sem {
    fleet.client.semaphore("job").unwrap()
}

fn acquire(sem: &Sem) -> Option<Permit<Simulated>> {
    block_on(sem.try_acquire_core()).unwrap()
}

fn holder_token(fleet: &FakeFleet, key: &[u8]) -> Option<Vec<u8>> {
    fleet
        .server()
        .value(key)
        .map(|value| Record::decode(&value).token)
}

fn lost_reason(error: Error) -> LostReason {
    match error {
        Error::LockLost { reason, .. } => reason,
        other => panic!("expected LockLost, got {other:?}"),
    }
}

#[test]
fn an_add_whose_reply_was_lost_is_recognised_by_the_second_add() {
    let fleet = FakeFleet::single();
    fleet.server().inject(Op::Add, Fault::LoseReply);
    let permit = acquire(&job(&fleet)).expect("the lost add landed: ours");
    assert_eq!(
        holder_token(&fleet, KEY).as_deref(),
        Some(permit.token().as_bytes())
    );
    assert_eq!(fleet.server().requests(Op::Add), 2);
    assert_eq!(fleet.server().requests(Op::Read), 1);
}

#[test]
fn an_acquire_left_unsure_is_cleaned_up_in_the_background() {
    let fleet = FakeFleet::single();
    fleet.server().inject(Op::Add, Fault::LoseReply);
    fleet.server().inject(Op::Add, Fault::LoseReply);
    let error = block_on(job(&fleet).try_acquire_core()).unwrap_err();
    assert!(matches!(error, Error::Ambiguous { .. }), "{error:?}");
    assert!(fleet.server().value(KEY).is_some(), "the add did land");
    assert!(fleet.client.inner.janitor().wait_settled(secs(5)));
    assert_eq!(fleet.server().value(KEY), None, "and was deleted");
}

#[test]
fn an_add_lost_while_another_holds_the_lock_is_not_taken_for_ours() {
    let fleet = FakeFleet::single();
    let other = acquire(&job(&fleet)).unwrap();
    fleet.server().inject(Op::Add, Fault::LoseReply);
    assert!(acquire(&job(&fleet)).is_none());
    assert_eq!(
        holder_token(&fleet, KEY).as_deref(),
        Some(other.token().as_bytes())
    );
}

#[test]
fn an_unreachable_server_takes_nothing_and_garbage_is_a_protocol_error() {
    let fleet = FakeFleet::single();
    fleet.server().inject(Op::Add, Fault::Unreachable);
    let error = block_on(job(&fleet).try_acquire_core()).unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    fleet.server().inject(Op::Add, Fault::Garbage);
    let error = block_on(job(&fleet).try_acquire_core()).unwrap_err();
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
    assert_eq!(fleet.server().value(KEY), None);
}

#[test]
fn a_release_whose_reply_was_lost_is_confirmed_by_reading_back() {
    let fleet = FakeFleet::single();
    let permit = acquire(&job(&fleet)).unwrap();
    fleet.server().inject(Op::Delete, Fault::LoseReply);
    block_on(permit.release_core()).expect("the lost delete landed");
    assert_eq!(fleet.server().value(KEY), None);
}

#[test]
fn a_refresh_whose_reply_was_lost_keeps_the_permit_usable() {
    let fleet = FakeFleet::single();
    let mut permit = acquire(&job(&fleet)).unwrap();
    fleet.server().inject(Op::Replace, Fault::LoseReply);
    block_on(permit.refresh_core(secs(30))).expect("the lost refresh landed");
    assert_eq!(fleet.server().ttl(KEY), Some(Some(30)));
    // The CAS learnt by reading back is the one the release needs.
    block_on(permit.release_core()).unwrap();
    assert_eq!(fleet.server().value(KEY), None);
}

#[test]
fn a_release_after_expiry_reports_lock_lost_and_spares_the_next_holder() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_ttl(secs(5)).unwrap();
    let first = acquire(&sem).unwrap();
    fleet.clock.advance(secs(5));
    let second = acquire(&sem).expect("the first lease ended");
    let error = block_on(first.release_core()).unwrap_err();
    assert_eq!(lost_reason(error), LostReason::HeldByOther);
    assert_eq!(
        holder_token(&fleet, KEY).as_deref(),
        Some(second.token().as_bytes())
    );
    let mut second = second;
    fleet.clock.advance(secs(5));
    let error = block_on(second.refresh_core(secs(5))).unwrap_err();
    assert_eq!(lost_reason(error), LostReason::Missing);
}

#[test]
fn an_evicted_lock_is_reported_lost() {
    let fleet = FakeFleet::single();
    let permit = acquire(&job(&fleet)).unwrap();
    fleet.server().evict(KEY);
    assert!(!block_on(permit.is_held_core()).unwrap());
    let error = block_on(permit.release_core()).unwrap_err();
    assert_eq!(lost_reason(error), LostReason::Missing);
}

#[test]
fn after_a_restart_a_stale_release_is_lock_lost_and_the_new_holder_is_untouched() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet);
    let old = acquire(&sem).unwrap();
    fleet.server().restart();
    // CAS values start again at 1: the new holder's item has the old holder's CAS.
    let new = acquire(&sem).expect("a restarted server forgot the lock");
    let error = block_on(old.release_core()).unwrap_err();
    assert_eq!(lost_reason(error), LostReason::Restarted);
    assert_eq!(
        holder_token(&fleet, KEY).as_deref(),
        Some(new.token().as_bytes())
    );
}

#[test]
fn after_a_restart_a_stale_refresh_is_lock_lost() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet);
    let mut old = acquire(&sem).unwrap();
    fleet.server().restart();
    let _new = acquire(&sem).unwrap();
    let error = block_on(old.refresh_core(secs(60))).unwrap_err();
    assert_eq!(lost_reason(error), LostReason::Restarted);
}

#[test]
fn a_restarted_server_grants_no_lock_within_the_lock_delay() {
    let fleet = FakeFleet::new(1, crate::client::Client::builder().lock_delay(secs(5)));
    let sem = job(&fleet);
    fleet.clock.advance(secs(10));
    let held = acquire(&sem).expect("up for 10 s");
    drop(held);
    fleet.server().restart();
    fleet.clock.advance(secs(2));
    match block_on(sem.try_acquire_core()) {
        Err(Error::LockDelay { remaining, .. }) => assert_eq!(remaining, secs(3)),
        other => panic!("expected LockDelay, got {other:?}"),
    }
    assert_eq!(fleet.server().value(KEY), None);
}

#[test]
fn wait_acquire_waits_through_the_lock_delay() {
    let fleet = FakeFleet::new(1, crate::client::Client::builder().lock_delay(secs(5)));
    let sem = job(&fleet).with_wait_policy(
        WaitPolicy::new()
            .max_wait(secs(60))
            .poll_time(Duration::from_millis(500))
            .jitter(0.0),
    );
    let permit = block_on(sem.wait_acquire_core()).unwrap();
    assert_eq!(fleet.clock.elapsed(), secs(5));
    assert!(fleet.server().value(KEY).is_some());
    drop(permit);
}

#[test]
fn wait_acquire_gives_up_at_max_wait_by_the_clock() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_wait_policy(
        WaitPolicy::new()
            .max_wait(secs(2))
            .poll_time(Duration::from_millis(300))
            .jitter(0.0),
    );
    let _holder = acquire(&sem).unwrap();
    match block_on(sem.wait_acquire_core()) {
        Err(Error::Timeout {
            waited, attempts, ..
        }) => {
            assert_eq!(waited, secs(2));
            assert_eq!(attempts, 8, "at 0, 0.3, … 1.8 and 2.0 s");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[test]
fn wait_acquire_retries_an_unreachable_server_until_it_answers() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_wait_policy(WaitPolicy::new().max_wait(secs(10)).jitter(0.0));
    for _ in 0..3 {
        fleet.server().inject(Op::Add, Fault::Unreachable);
    }
    fleet.server().inject(Op::Add, Fault::Garbage);
    let permit = block_on(sem.wait_acquire_core()).unwrap();
    assert_eq!(fleet.server().requests(Op::Add), 5);
    drop(permit);
}

#[test]
fn steal_after_wait_overwrites_and_the_old_holder_learns_it_lost() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_wait_policy(
        WaitPolicy::new()
            .max_wait(secs(1))
            .jitter(0.0)
            .steal_after_wait(true),
    );
    let old = acquire(&sem).unwrap();
    let thief = block_on(sem.wait_acquire_core()).expect("taken by force");
    assert_eq!(
        holder_token(&fleet, KEY).as_deref(),
        Some(thief.token().as_bytes())
    );
    let error = block_on(old.release_core()).unwrap_err();
    assert_eq!(lost_reason(error), LostReason::HeldByOther);
    block_on(thief.release_core()).unwrap();
}

/// A holder record as another process would have written it `age` ago (by the real clock).
fn old_record(token: &str, age: Duration) -> Vec<u8> {
    let mut meta = Meta::here();
    let ms = age.as_millis() as u64;
    meta.acquired_ms -= ms;
    meta.refreshed_ms -= ms;
    Record {
        token: token.as_bytes().to_vec(),
        meta: Some(meta),
        info: None,
    }
    .encode()
}

#[test]
fn reap_stale_removes_old_holders_only() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_permits(3).unwrap();
    let server = fleet.server();
    server.put(KEY, &old_record(&"a".repeat(32), secs(7200)), 0);
    server.put(b"__lock__job#2", "b".repeat(32).as_bytes(), 0); // Perl: no record
    let fresh = acquire(&sem).expect("slot 3 is free");
    assert_eq!(fresh.slot(), 3);
    assert_eq!(block_on(sem.reap_stale_core(secs(3600))).unwrap(), 1);
    assert_eq!(server.value(KEY), None);
    assert!(server.value(b"__lock__job#2").is_some());
    assert!(block_on(fresh.is_held_core()).unwrap());
}

#[test]
fn reap_stale_spares_a_holder_that_refreshed_after_the_read() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet);
    let server = Arc::clone(&fleet.servers[0]);
    server.put(KEY, &old_record(&"a".repeat(32), secs(7200)), 0);
    let refreshed = old_record(&"a".repeat(32), Duration::ZERO);
    let racer = Arc::clone(&server);
    server.inject(
        Op::Delete,
        Fault::Before(Box::new(move || racer.put(KEY, &refreshed, 60))),
    );
    assert_eq!(block_on(sem.reap_stale_core(secs(3600))).unwrap(), 0);
    assert!(server.value(KEY).is_some());
}

#[test]
fn n_permits_admit_exactly_n_holders() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_permits(3).unwrap();
    let permits: Vec<_> = (0..5).filter_map(|_| acquire(&sem)).collect();
    assert_eq!(permits.len(), 3);
    let mut slots: Vec<u32> = permits.iter().map(Permit::slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, [1, 2, 3]);
    assert_eq!(block_on(sem.holders_core()).unwrap().len(), 3);
    assert!(block_on(sem.is_locked_core()).unwrap());
}

#[test]
fn a_slot_taken_between_the_read_and_the_add_sends_the_add_elsewhere_or_nowhere() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_permits(2).unwrap();
    let rivals: Arc<Mutex<Vec<Permit<Simulated>>>> = Arc::default();
    let (rival_sem, won) = (sem.clone(), Arc::clone(&rivals));
    // Right after our read saw both slots free, a rival takes both.
    fleet.server().inject(
        Op::Add,
        Fault::Before(Box::new(move || {
            let mut won = won.lock().unwrap();
            won.extend(acquire(&rival_sem));
            won.extend(acquire(&rival_sem));
        })),
    );
    assert!(acquire(&sem).is_none(), "both slots went to the rival");
    assert_eq!(rivals.lock().unwrap().len(), 2);
    // One slot freed between the read and the add: the add goes to the other one.
    let freed = rivals.lock().unwrap().pop().unwrap();
    let free_slot = freed.slot();
    block_on(freed.release_core()).unwrap();
    let permit = acquire(&sem).expect("the freed slot");
    assert_eq!(permit.slot(), free_slot);
}

#[test]
fn a_lost_add_on_a_multi_permit_semaphore_is_found_by_the_next_read() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet)
        .with_permits(4)
        .unwrap()
        .with_wait_policy(WaitPolicy::new().max_wait(secs(5)).jitter(0.0));
    fleet.server().inject(Op::Add, Fault::LoseReply);
    fleet.server().inject(Op::Add, Fault::Unreachable);
    let permit = block_on(sem.wait_acquire_core()).unwrap();
    let holders = block_on(sem.holders_core()).unwrap();
    assert_eq!(holders.len(), 1, "one key, ours: {holders:?}");
    assert_eq!(holders[0].slot(), permit.slot());
}

#[test]
fn a_cooldown_keeps_the_lock_closed_until_it_ends() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_cooldown(secs(10)).unwrap();
    let permit = acquire(&sem).unwrap();
    block_on(permit.release_core()).unwrap();
    assert_eq!(fleet.server().ttl(KEY), Some(Some(10)));
    assert!(acquire(&sem).is_none());
    fleet.clock.advance(secs(10));
    assert!(acquire(&sem).is_some());
}

#[test]
fn fencing_numbers_keep_growing_across_a_restart() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet).with_fencing().unwrap();
    let first = acquire(&sem).unwrap();
    let a = first.fence().unwrap();
    block_on(first.release_core()).unwrap();
    let second = acquire(&sem).unwrap();
    assert_eq!(second.fence(), Some(a + 1));
    drop(second);
    fleet.server().restart();
    let third = acquire(&sem).unwrap();
    assert!(third.fence().unwrap() > a + 1);
}

#[test]
fn a_resumed_permit_releases_what_the_token_holds() {
    let fleet = FakeFleet::single();
    let sem = job(&fleet);
    let token = acquire(&sem).unwrap().forget();
    assert!(block_on(sem.verify_core(&token)).unwrap());
    let permit = block_on(sem.resume_core(&token)).unwrap();
    block_on(permit.release_core()).unwrap();
    assert_eq!(fleet.server().value(KEY), None);
    let error = block_on(sem.resume_core(&token)).unwrap_err();
    assert_eq!(lost_reason(error), LostReason::Missing);
}

#[test]
fn a_release_the_server_missed_is_finished_in_the_background_once_it_answers() {
    let fleet = FakeFleet::single();
    let permit = acquire(&job(&fleet)).unwrap();
    fleet.server().down();
    let error = block_on(permit.release_core()).unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(
        !fleet
            .client
            .inner
            .janitor()
            .wait_settled(Duration::from_millis(300))
    );
    assert!(fleet.server().value(KEY).is_some());
    fleet.server().up();
    assert!(fleet.client.inner.janitor().wait_settled(secs(5)));
    assert_eq!(fleet.server().value(KEY), None);
}

#[test]
fn a_dropped_permit_is_released() {
    let fleet = FakeFleet::single();
    drop(acquire(&job(&fleet)).unwrap());
    assert_eq!(fleet.server().value(KEY), None);
}

fn quorum_fleet() -> FakeFleet {
    FakeFleet::new(
        3,
        crate::client::Client::builder().lock_delay(Duration::ZERO),
    )
}

#[test]
fn a_quorum_lock_holds_with_a_majority_and_releases_everywhere() {
    let fleet = quorum_fleet();
    fleet.servers[2].down();
    let lock = fleet.client.quorum_lock("job").unwrap();
    let permit = block_on(lock.try_acquire_core()).unwrap().expect("2 of 3");
    assert_eq!(permit.votes(), 2);
    assert!(fleet.servers[0].value(KEY).is_some() && fleet.servers[1].value(KEY).is_some());
    block_on(permit.release_core()).unwrap();
    assert!(
        fleet
            .servers
            .iter()
            .all(|server| server.value(KEY).is_none())
    );
}

#[test]
fn a_quorum_lock_without_a_majority_undoes_its_votes() {
    let fleet = quorum_fleet();
    fleet.servers[1].down();
    fleet.servers[2].down();
    let lock = fleet.client.quorum_lock("job").unwrap();
    let error = block_on(lock.try_acquire_core()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NoQuorum {
                reachable: 1,
                needed: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(fleet.servers[0].value(KEY), None, "the one vote was undone");
}

#[test]
fn a_held_quorum_lock_shuts_out_the_next_and_a_lost_majority_is_lock_lost() {
    let fleet = quorum_fleet();
    let lock = fleet.client.quorum_lock("job").unwrap();
    let mut permit = block_on(lock.try_acquire_core()).unwrap().unwrap();
    assert!(block_on(lock.try_acquire_core()).unwrap().is_none());
    fleet.servers[0].evict(KEY);
    fleet.servers[1].evict(KEY);
    let error = block_on(permit.refresh_core(secs(30))).unwrap_err();
    assert!(error.is_lock_lost(), "{error:?}");
    assert_eq!(
        fleet.servers[2].value(KEY),
        None,
        "the last vote was undone"
    );
}

#[test]
fn a_quorum_wait_sleeps_on_the_clock_until_a_majority_is_free() {
    let fleet = quorum_fleet();
    let lock = fleet
        .client
        .quorum_lock("job")
        .unwrap()
        .with_ttl(secs(10))
        .unwrap();
    let held = block_on(lock.try_acquire_core()).unwrap().unwrap();
    held_forgotten(held);
    let waiting = lock.with_wait_policy(WaitPolicy::new().max_wait(secs(60)).jitter(0.0));
    let permit = block_on(waiting.wait_acquire_core()).unwrap();
    assert!(fleet.clock.elapsed() >= secs(10));
    assert_eq!(permit.votes(), 3);
}

/// Leaves a quorum permit's votes to expire (a holder that crashed).
fn held_forgotten(permit: crate::lock::quorum::QuorumPermit<Simulated>) {
    std::mem::forget(permit);
}

/// A fleet of fake servers on one clock, and a client over them.
pub(crate) struct FakeFleet {
    pub(crate) clock: Clock,
    pub(crate) servers: Vec<Arc<FakeServer>>,
    pub(crate) client: crate::client::Client<Simulated>,
}

impl FakeFleet {
    /// `count` fake servers and a client configured by `builder` (its servers are set
    /// here); the clock is installed on the calling thread.
    pub(crate) fn new(count: usize, builder: crate::client::ClientBuilder) -> FakeFleet {
        let clock = Clock::new();
        clock.install();
        let list: Vec<String> = (0..count)
            .map(|n| format!("127.0.0.1:{}", 21_000 + n))
            .collect();
        let servers: Vec<Arc<FakeServer>> = list
            .iter()
            .map(|address| Arc::new(FakeServer::new(address, &clock)))
            .collect();
        let by_address = servers.clone();
        let client = builder
            .servers(&list.join(","))
            .build_over::<Simulated>(|spec| {
                let address = spec.address();
                let server = by_address
                    .iter()
                    .find(|server| server.address() == address)
                    .expect("every spec is one of the fakes");
                Arc::clone(server)
            })
            .expect("a valid fake fleet");
        FakeFleet {
            clock,
            servers,
            client,
        }
    }

    /// One server and a client with the lock-delay off.
    pub(crate) fn single() -> FakeFleet {
        FakeFleet::new(
            1,
            crate::client::Client::builder().lock_delay(Duration::ZERO),
        )
    }

    pub(crate) fn server(&self) -> &FakeServer {
        &self.servers[0]
    }
}

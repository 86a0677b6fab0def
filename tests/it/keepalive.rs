//! Keep-alive: a lease refreshed in the background, and the signal when it is lost.

use std::time::{Duration, Instant};

use crate::harness::{Memcached, unique};

#[test]
fn keep_alive_holds_a_lock_for_three_times_its_ttl() {
    let server = Memcached::start();
    let name = unique("keepalive");
    let ttl = Duration::from_secs(2);
    let sem = server.semaphore(&name).with_ttl(ttl).unwrap();
    let held = sem.try_acquire().unwrap().unwrap().keep_alive();
    let other = server.semaphore(&name);
    let started = Instant::now();
    let mut tries = 0;
    // Knock every 200 ms for three TTLs: the lock must stay taken the whole time.
    while started.elapsed() < ttl * 3 {
        assert!(
            other.try_acquire().unwrap().is_none(),
            "lock lost after {:?}",
            started.elapsed()
        );
        assert!(!held.is_lost());
        tries += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(tries >= 25);
    held.release().unwrap();
    assert!(
        other.try_acquire().unwrap().is_some(),
        "released at the end"
    );
}

#[test]
fn keep_alive_signals_loss_within_one_refresh_interval_when_the_key_is_deleted() {
    let server = Memcached::start();
    let name = unique("keepalive-lost");
    let ttl = Duration::from_secs(3);
    let sem = server.semaphore(&name).with_ttl(ttl).unwrap();
    let held = sem.try_acquire().unwrap().unwrap().keep_alive();
    assert!(server.raw().delete(format!("__lock__{name}").as_bytes()));
    let deleted = Instant::now();
    assert!(
        held.wait_lost(ttl),
        "loss signalled within one refresh interval (ttl/3) plus slack"
    );
    assert!(
        deleted.elapsed() <= ttl / 3 + Duration::from_millis(500),
        "took {:?}",
        deleted.elapsed()
    );
    assert!(held.is_lost());
    assert_eq!(held.lost_reason(), Some(memsem::LostReason::Missing));
    // Someone else can take it, and dropping the lost keep-alive leaves their lock alone.
    let thief = server
        .semaphore(&name)
        .try_acquire()
        .unwrap()
        .expect("free");
    drop(held);
    assert!(thief.is_held().unwrap());
    thief.release().unwrap();
}

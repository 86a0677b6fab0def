//! Fencing tokens: strictly increasing numbers across acquisitions, evictions and restarts.

use crate::harness::{Memcached, unique};

#[test]
fn fencing_tokens_strictly_increase_over_ten_thousand_acquisitions() {
    let server = Memcached::start();
    let name = unique("fence");
    let sem = server.semaphore(&name).with_fencing().unwrap();
    let mut last = 0;
    for round in 0..10_000 {
        let permit = sem.try_acquire().unwrap().expect("uncontended");
        let fence = permit.fence().expect("fencing is on");
        assert!(fence > last, "round {round}: fence {fence} after {last}");
        last = fence;
        permit.release().unwrap();
    }
    let plain = server.client().semaphore(&unique("plain")).unwrap();
    assert_eq!(
        plain.try_acquire().unwrap().unwrap().fence(),
        None,
        "fencing is opt-in"
    );
}

#[test]
fn fencing_tokens_keep_increasing_after_eviction_and_restart() {
    let server = Memcached::start_pinned();
    let name = unique("fence-restart");
    let sem = server.semaphore(&name).with_fencing().unwrap();
    let next = || {
        let permit = sem.try_acquire().unwrap().expect("free");
        let fence = permit.fence().unwrap();
        permit.release().unwrap();
        fence
    };
    let before = next();
    assert!(next() > before);
    // What an eviction does: the counter key disappears.
    assert!(server.raw().delete(format!("__fence__{name}").as_bytes()));
    let after_eviction = next();
    assert!(
        after_eviction > before,
        "{after_eviction} after eviction, {before} before"
    );
    server.restart();
    let after_restart = next();
    assert!(
        after_restart > after_eviction,
        "{after_restart} after restart, {after_eviction} before"
    );
}

#[test]
fn a_waiter_that_gets_the_lock_after_a_holder_has_a_larger_fence() {
    let server = Memcached::start();
    let name = unique("fence-order");
    let a = server.semaphore(&name).with_fencing().unwrap();
    let b = server.semaphore(&name).with_fencing().unwrap();
    let first = a.try_acquire().unwrap().unwrap();
    // B's failed attempts draw numbers too, but only the winner's number counts.
    for _ in 0..5 {
        assert!(b.try_acquire().unwrap().is_none());
    }
    let fence_a = first.fence().unwrap();
    first.release().unwrap();
    let second = b.try_acquire().unwrap().unwrap();
    assert!(second.fence().unwrap() > fence_a);
}

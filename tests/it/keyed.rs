//! The keyed mutex: wait for the holder, then read the cache.

use std::thread;
use std::time::Duration;

use memsem::{Error, LockOrWait, WaitPolicy};

use crate::harness::{Memcached, unique};
use crate::processes::run_example;

fn policy(max_wait_ms: u64) -> WaitPolicy {
    WaitPolicy::new()
        .poll_time(Duration::from_millis(20))
        .max_wait(Duration::from_millis(max_wait_ms))
}

#[test]
fn lock_or_wait_acquires_a_free_lock() {
    let server = Memcached::start();
    let sem = server.client().semaphore(&unique("keyed-free")).unwrap();
    let LockOrWait::Acquired(permit) = sem.lock_or_wait().unwrap() else {
        panic!("a free lock is acquired");
    };
    assert!(permit.is_held().unwrap());
}

#[test]
fn waiters_get_released_after_the_holder_releases_without_taking_the_lock() {
    let server = Memcached::start();
    let name = unique("keyed");
    let holder = server.semaphore(&name).try_acquire().unwrap().unwrap();
    let mut raw = server.raw();
    let (reads, adds) = (raw.stat("cmd_get"), raw.stat("cmd_set"));
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let sem = server.semaphore(&name).with_wait_policy(policy(10_000));
            thread::spawn(move || matches!(sem.lock_or_wait().unwrap(), LockOrWait::Released))
        })
        .collect();
    // Hold until every waiter has seen the lock held: each sends one add (a failed add
    // counts in cmd_set), then reads the holder's value. Counting reads alone is not enough:
    // a waiter polling every 20 ms reads several times while a slow one has not tried yet.
    raw.wait_for_stat("cmd_set", adds, 5);
    raw.wait_for_stat("cmd_get", reads, 5);
    holder.release().unwrap();
    for waiter in waiters {
        assert!(waiter.join().unwrap(), "waiter saw Released");
    }
    let sem = server.semaphore(&name);
    assert!(!sem.is_locked().unwrap(), "no waiter took the lock");
}

#[test]
fn lock_or_wait_times_out_while_the_holder_keeps_it() {
    let server = Memcached::start();
    let name = unique("keyed-timeout");
    let _holder = server.semaphore(&name).try_acquire().unwrap().unwrap();
    let sem = server.semaphore(&name).with_wait_policy(policy(300));
    assert!(matches!(
        sem.lock_or_wait().unwrap_err(),
        Error::Timeout { .. }
    ));
}

#[test]
fn fifty_readers_of_a_cold_key_cause_one_backend_fetch() {
    let server = Memcached::start();
    let stdout = run_example("stampede", &[&server.address()]);
    assert!(stdout.contains("50 served, backend fetches: 1"), "{stdout}");
}

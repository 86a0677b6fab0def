//! Counting semaphores: N permits on one name.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use memsem::WaitPolicy;

use crate::harness::{Memcached, unique};

#[test]
fn n_permits_admit_exactly_n_holders_in_distinct_slots() {
    let server = Memcached::start();
    let name = unique("slots");
    let sem = server
        .semaphore(&name)
        .with_permits(3)
        .unwrap()
        .with_info("t")
        .unwrap();
    let permits: Vec<_> = (0..3)
        .map(|_| sem.try_acquire().unwrap().expect("a free permit"))
        .collect();
    let mut slots: Vec<u32> = permits.iter().map(|p| p.slot()).collect();
    slots.sort();
    assert_eq!(slots, [1, 2, 3]);
    assert!(
        sem.try_acquire().unwrap().is_none(),
        "a fourth holder must wait"
    );
    assert!(sem.is_locked().unwrap(), "all permits taken");
    let holders = sem.holders().unwrap();
    assert_eq!(
        holders.iter().map(|h| h.slot()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Slot 1 is the Perl module's key; the others add "#k".
    let mut raw = server.raw();
    for permit in &permits {
        let key = match permit.slot() {
            1 => format!("__lock__{name}"),
            k => format!("__lock__{name}#{k}"),
        };
        let value = raw.get(key.as_bytes()).expect("slot key stored");
        assert!(value.starts_with(permit.token().as_bytes()));
    }
    let mut permits = permits.into_iter();
    let first = permits.next().unwrap();
    let freed = first.slot();
    first.release().unwrap();
    assert!(!sem.is_locked().unwrap());
    let next = sem
        .try_acquire()
        .unwrap()
        .expect("a released permit is reusable");
    assert_eq!(next.slot(), freed);
    // A permit of any slot can be resumed by its token.
    let resumed = server
        .semaphore(&name)
        .with_permits(3)
        .unwrap()
        .resume(next.token())
        .unwrap();
    assert_eq!(resumed.slot(), freed);
    resumed.forget();
}

#[test]
fn concurrency_never_exceeds_the_permits_and_all_are_used() {
    let server = Memcached::start();
    let name = unique("concurrency");
    let (threads, rounds, permits) = (8, 25, 3);
    let inside = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let sem = server
                .semaphore(&name)
                .with_permits(permits)
                .unwrap()
                .with_wait_policy(
                    WaitPolicy::new()
                        .poll_time(Duration::from_millis(2))
                        .max_wait(Duration::from_secs(60)),
                );
            let (inside, most) = (Arc::clone(&inside), Arc::clone(&most));
            thread::spawn(move || {
                for _ in 0..rounds {
                    let permit = sem.wait_acquire().unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(5)); // the work
                    inside.fetch_sub(1, Ordering::SeqCst);
                    permit.release().unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    println!(
        "{threads} threads x {rounds} rounds on {permits} permits: at most {most} inside at once"
    );
    assert!(
        most <= permits,
        "{most} holders at once with {permits} permits"
    );
    assert_eq!(most, permits, "every permit was usable");
}

#[test]
fn holders_show_host_pid_times_and_info() {
    let server = Memcached::start();
    let name = unique("holders");
    let sem = server
        .semaphore(&name)
        .with_permits(2)
        .unwrap()
        .with_info("batch 7")
        .unwrap();
    let _a = sem.try_acquire().unwrap().unwrap();
    let holders = sem.holders().unwrap();
    assert_eq!(holders.len(), 1);
    let holder = &holders[0];
    assert_eq!(holder.pid(), Some(std::process::id()));
    assert!(holder.host().is_some_and(|h| !h.is_empty()));
    assert_eq!(holder.info(), Some("batch 7"));
    let acquired = holder.acquired_at().unwrap();
    assert!(acquired.elapsed().unwrap() < Duration::from_secs(60));
    assert_eq!(holder.refreshed_at(), Some(acquired));
}

#[test]
fn reap_stale_removes_only_holders_not_refreshed_within_the_cutoff() {
    let server = Memcached::start();
    let name = unique("reap");
    let sem = server
        .semaphore(&name)
        .with_permits(3)
        .unwrap()
        .without_expiry();
    // A Perl-style holder (a bare token, no refresh time) in slot 3: never reaped.
    let mut raw = server.raw();
    let perl_key = format!("__lock__{name}#3");
    raw.set(perl_key.as_bytes(), b"0123456789abcdef0123456789abcdef", 0);
    let stale = sem.try_acquire().unwrap().unwrap().forget(); // a crashed holder
    let mut alive = sem.try_acquire().unwrap().unwrap();
    // Let the holders age past the cutoff, then the live one refreshes.
    std::thread::sleep(Duration::from_millis(1200));
    alive.refresh(Duration::from_secs(60)).unwrap();
    assert_eq!(sem.reap_stale(Duration::from_secs(1)).unwrap(), 1);
    let left = sem.holders().unwrap();
    assert_eq!(
        left.len(),
        2,
        "the refreshed holder and the Perl holder are left"
    );
    assert!(alive.is_held().unwrap());
    assert!(
        sem.resume(&stale).unwrap_err().is_lock_lost(),
        "the stale holder is gone"
    );
    assert!(raw.get(perl_key.as_bytes()).is_some());
    alive.release().unwrap();
}

#[test]
fn verify_answers_for_the_holders_token_only() {
    let server = Memcached::start();
    let name = unique("verify");
    let sem = server.semaphore(&name).with_permits(2).unwrap();
    let a = sem.try_acquire().unwrap().unwrap();
    let b = sem.try_acquire().unwrap().unwrap();
    assert!(sem.verify(a.token()).unwrap() && sem.verify(b.token()).unwrap());
    assert!(!sem.verify("0123456789abcdef0123456789abcdef").unwrap());
    assert!(
        sem.verify("bad token").is_err(),
        "malformed tokens are rejected"
    );
    let token = a.token().to_string();
    a.release().unwrap();
    assert!(!sem.verify(&token).unwrap(), "released");
    b.release().unwrap();
}

#[test]
fn acquire_cost_does_not_grow_with_the_number_of_permits() {
    let server = Memcached::start();
    let mut raw = server.raw();
    for permits in [1u32, 8, 64] {
        let sem = server
            .client()
            .semaphore(&unique("cost"))
            .unwrap()
            .with_permits(permits)
            .unwrap();
        // Fill half the slots, then measure one more acquire.
        let held: Vec<_> = (0..permits / 2)
            .map(|_| sem.try_acquire().unwrap().unwrap())
            .collect();
        let (gets, sets) = (raw.stat("cmd_get"), raw.stat("cmd_set"));
        let permit = sem.try_acquire().unwrap().expect("a free slot");
        let (gets, sets) = (raw.stat("cmd_get") - gets, raw.stat("cmd_set") - sets);
        // One add; for N > 1 also one pipelined read of every slot (a single round trip).
        let round_trips = if permits == 1 { 1 } else { 2 };
        println!(
            "N = {permits}: {round_trips} round trip(s), {gets} keys read in one batch, {sets} add"
        );
        assert_eq!(sets, 1, "one add per acquire, whatever N");
        assert_eq!(
            gets,
            if permits == 1 { 0 } else { u64::from(permits) },
            "each slot read once"
        );
        drop((held, permit));
    }
}

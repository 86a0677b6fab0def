//! The core behaviour of semaphores and permits against a real memcached.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use memsem::{Error, LostReason, WaitPolicy};

use crate::harness::{Memcached, unique};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn two_clients_contend_and_only_one_wins() {
    let server = Memcached::start();
    let name = unique("contend");
    let a = server.semaphore(&name);
    let b = server.semaphore(&name);
    let held = a.try_acquire().unwrap().expect("first acquire wins");
    assert!(
        b.try_acquire().unwrap().is_none(),
        "second client must not get the lock"
    );
    assert!(
        a.try_acquire().unwrap().is_none(),
        "not even the same handle gets it twice"
    );
    assert!(held.is_held().unwrap());
    held.release().unwrap();
}

#[test]
fn release_lets_the_other_in() {
    let server = Memcached::start();
    let name = unique("release");
    let a = server.semaphore(&name);
    let b = server.semaphore(&name);
    let permit = a.try_acquire().unwrap().unwrap();
    assert!(b.try_acquire().unwrap().is_none());
    permit.release().unwrap();
    let permit = b.try_acquire().unwrap().expect("free after release");
    permit.release().unwrap();
}

#[test]
fn key_on_the_wire_is_the_perl_modules_key_holding_the_token() {
    let server = Memcached::start();
    let name = unique("wire");
    let sem = server
        .client_with_namespace("app:")
        .semaphore(&name)
        .unwrap();
    let permit = sem.try_acquire().unwrap().unwrap();
    let key = format!("app:__lock__{name}");
    let (value, ttl) = server
        .raw()
        .get_with_ttl(key.as_bytes())
        .expect("key stored");
    let expected = format!("{}\nmemsem1 host=", permit.token());
    assert!(
        value.starts_with(expected.as_bytes()),
        "token, then the holder record: {value:?}"
    );
    assert!(
        ttl > 0 && ttl <= 60,
        "default TTL is 60 s, server says {ttl}"
    );
    permit.release().unwrap();
    assert_eq!(
        server.raw().get(key.as_bytes()),
        None,
        "release deletes the key"
    );
}

#[test]
fn release_after_expiry_and_retake_reports_lock_lost_and_keeps_the_new_holder() {
    let server = Memcached::start();
    let name = unique("expired");
    let a = server
        .semaphore(&name)
        .with_ttl(Duration::from_secs(1))
        .unwrap();
    let b = server.semaphore(&name).with_wait_policy(
        WaitPolicy::new()
            .poll_time(ms(50))
            .max_wait(Duration::from_secs(10)),
    );
    let old = a.try_acquire().unwrap().unwrap();
    // B gets in once the 1 s lease has run out.
    let new = b.wait_acquire().expect("lease expires, B acquires");
    let error = old.release().unwrap_err();
    assert!(
        matches!(
            error,
            Error::LockLost {
                reason: LostReason::HeldByOther,
                ..
            }
        ),
        "expected LockLost(HeldByOther), got {error}"
    );
    let key = format!("__lock__{name}");
    assert_eq!(
        server.raw().token(key.as_bytes()).as_deref(),
        Some(new.token()),
        "B's lock is intact"
    );
    new.release().unwrap();
}

#[test]
fn release_of_a_deleted_key_reports_missing() {
    let server = Memcached::start();
    let name = unique("deleted");
    let sem = server.semaphore(&name);
    let permit = sem.try_acquire().unwrap().unwrap();
    assert!(server.raw().delete(format!("__lock__{name}").as_bytes()));
    assert!(!permit.is_held().unwrap());
    let error = permit.release().unwrap_err();
    assert!(
        matches!(
            error,
            Error::LockLost {
                reason: LostReason::Missing,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn cooldown_blocks_for_its_duration_then_allows() {
    let server = Memcached::start();
    let name = unique("cooldown");
    let a = server.semaphore(&name);
    let b = server.semaphore(&name).with_wait_policy(
        WaitPolicy::new()
            .poll_time(ms(50))
            .max_wait(Duration::from_secs(10)),
    );
    let permit = a.try_acquire().unwrap().unwrap();
    let released = Instant::now();
    permit
        .release_with_cooldown(Duration::from_secs(2))
        .unwrap();
    assert!(
        b.try_acquire().unwrap().is_none(),
        "cooldown keeps the lock closed"
    );
    let key = format!("__lock__{name}");
    let (_, ttl) = server.raw().get_with_ttl(key.as_bytes()).unwrap();
    assert!(
        ttl <= 2,
        "cooldown sets the expiry to 2 s, server says {ttl}"
    );
    let permit = b.wait_acquire().expect("free after the cooldown");
    // memcached counts whole seconds: a 2 s expiry ends between 1 and 2 s later.
    assert!(
        released.elapsed() >= Duration::from_secs(1),
        "opened after {:?}",
        released.elapsed()
    );
    permit.release().unwrap();
}

#[test]
fn handle_level_cooldown_applies_to_release_and_drop() {
    let server = Memcached::start();
    let name = unique("cooldown-default");
    let sem = server
        .semaphore(&name)
        .with_cooldown(Duration::from_secs(30))
        .unwrap();
    drop(sem.try_acquire().unwrap().unwrap());
    assert!(
        sem.try_acquire().unwrap().is_none(),
        "dropped permit leaves the cooldown"
    );
    let (_, ttl) = server
        .raw()
        .get_with_ttl(format!("__lock__{name}").as_bytes())
        .unwrap();
    assert!(ttl > 2 && ttl <= 30, "cooldown expiry, server says {ttl}");
}

#[test]
fn wait_acquire_on_a_lock_held_throughout_times_out_within_max_wait_and_one_poll() {
    let server = Memcached::start();
    let name = unique("timeout");
    let holder = server.semaphore(&name).try_acquire().unwrap().unwrap();
    let (max_wait, poll) = (ms(600), ms(100));
    let waiter = server
        .semaphore(&name)
        .with_wait_policy(WaitPolicy::new().max_wait(max_wait).poll_time(poll));
    let started = Instant::now();
    let error = waiter.wait_acquire().unwrap_err();
    let elapsed = started.elapsed();
    let Error::Timeout {
        waited,
        attempts,
        last_error,
        ..
    } = error
    else {
        panic!("expected Timeout, got {error}");
    };
    assert!(waited >= max_wait, "gave up early: {waited:?}");
    assert!(
        elapsed <= max_wait + poll * 3 / 2 + ms(400),
        "gave up late: {elapsed:?}"
    );
    assert!(
        attempts >= 5,
        "polled only {attempts} times in {max_wait:?} at {poll:?}"
    );
    assert!(last_error.is_none(), "the server was fine: {last_error:?}");
    holder.release().unwrap();
}

#[test]
fn wait_acquire_gets_the_lock_within_a_poll_of_its_release() {
    let server = Memcached::start();
    let name = unique("handover");
    let holder = server.semaphore(&name).try_acquire().unwrap().unwrap();
    let sets = server.raw().stat("cmd_set");
    let poll = ms(100);
    let waiter = server.semaphore(&name).with_wait_policy(
        WaitPolicy::new()
            .poll_time(poll)
            .max_wait(Duration::from_secs(10)),
    );
    let (started_tx, started_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        started_tx.send(()).unwrap();
        let permit = waiter.wait_acquire().expect("acquired after release");
        let acquired = Instant::now();
        permit.release().unwrap();
        acquired
    });
    started_rx.recv().unwrap();
    // The waiter has found the lock held once its first add has reached the server (the
    // holder's add was the first).
    server.raw().wait_for_stat("cmd_set", sets, 1);
    let released = Instant::now();
    holder.release().unwrap();
    let acquired = handle.join().unwrap();
    let gap = acquired.saturating_duration_since(released);
    assert!(
        gap <= poll * 3 / 2 + ms(200),
        "hand-over took {gap:?} with poll {poll:?} ± 50%"
    );
}

#[test]
fn refresh_extends_the_lease_on_the_server() {
    let server = Memcached::start();
    let name = unique("refresh");
    let sem = server
        .semaphore(&name)
        .with_ttl(Duration::from_secs(2))
        .unwrap();
    let mut permit = sem.try_acquire().unwrap().unwrap();
    permit.refresh(Duration::from_secs(120)).unwrap();
    let key = format!("__lock__{name}");
    let (_, ttl) = server.raw().get_with_ttl(key.as_bytes()).unwrap();
    assert_eq!(
        server.raw().token(key.as_bytes()).as_deref(),
        Some(permit.token()),
        "refresh keeps the token"
    );
    assert!(ttl > 60, "refresh set a 120 s lease, server says {ttl}");
    assert_eq!(permit.ttl(), Some(Duration::from_secs(120)));
    // A refresh still works after another refresh (the CAS is followed).
    permit.refresh(Duration::from_secs(30)).unwrap();
    permit.release().unwrap();
    assert_eq!(server.raw().get(key.as_bytes()), None);
}

#[test]
fn refresh_of_a_lost_lock_reports_lock_lost_and_leaves_the_new_holder_alone() {
    let server = Memcached::start();
    let name = unique("refresh-lost");
    let sem = server.semaphore(&name);
    let mut permit = sem.try_acquire().unwrap().unwrap();
    let key = format!("__lock__{name}");
    let mut raw = server.raw();
    raw.set(key.as_bytes(), b"someone-else", 0);
    let error = permit.refresh(Duration::from_secs(60)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::LockLost {
                reason: LostReason::HeldByOther,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(raw.get(key.as_bytes()), Some(b"someone-else".to_vec()));
    drop(permit);
    assert_eq!(
        raw.get(key.as_bytes()),
        Some(b"someone-else".to_vec()),
        "drop leaves it alone too"
    );
}

#[test]
fn forget_keeps_the_lock_and_resume_picks_it_up_by_token() {
    let server = Memcached::start();
    let name = unique("resume");
    let sem = server.semaphore(&name);
    let token = sem.try_acquire().unwrap().unwrap().forget();
    assert!(sem.is_locked().unwrap(), "forget leaves the lock held");
    let other = server.semaphore(&name);
    assert!(
        other
            .resume("0123456789abcdef0123456789abcdef")
            .unwrap_err()
            .is_lock_lost()
    );
    let permit = other.resume(&token).expect("the token holds the lock");
    assert!(permit.ttl().is_some());
    permit.release().unwrap();
    assert!(!sem.is_locked().unwrap());
    assert!(matches!(
        sem.resume(&token).unwrap_err(),
        Error::LockLost {
            reason: LostReason::Missing,
            ..
        }
    ));
}

#[test]
fn drop_releases_also_during_a_panic() {
    let server = Memcached::start();
    let name = unique("panic");
    let sem = server.semaphore(&name);
    let worker = sem.clone();
    let result = thread::spawn(move || {
        let _permit = worker.try_acquire().unwrap().unwrap();
        panic!("the protected work failed");
    })
    .join();
    assert!(result.is_err(), "the worker panicked");
    let permit = sem
        .try_acquire()
        .unwrap()
        .expect("the panicking holder's drop released the lock");
    permit.release().unwrap();
}

#[test]
fn steal_after_wait_takes_the_lock_and_the_old_holder_learns_it_is_lost() {
    let server = Memcached::start();
    let name = unique("steal");
    let old = server.semaphore(&name).try_acquire().unwrap().unwrap();
    let thief = server.semaphore(&name).with_wait_policy(
        WaitPolicy::new()
            .max_wait(ms(300))
            .poll_time(ms(50))
            .steal_after_wait(true),
    );
    let new = thief.wait_acquire().expect("stolen after max_wait");
    assert!(new.is_held().unwrap());
    assert!(!old.is_held().unwrap());
    assert!(old.release().unwrap_err().is_lock_lost());
    assert!(
        new.is_held().unwrap(),
        "the old holder's release left the thief's lock alone"
    );
    new.release().unwrap();
}

#[test]
fn no_expiry_locks_are_stored_without_ttl() {
    let server = Memcached::start();
    let name = unique("forever");
    let sem = server.semaphore(&name).without_expiry();
    let permit = sem.try_acquire().unwrap().unwrap();
    let (_, ttl) = server
        .raw()
        .get_with_ttl(format!("__lock__{name}").as_bytes())
        .unwrap();
    assert_eq!(ttl, -1, "no expiry, like the Perl module");
    assert_eq!(permit.expires_at(), None);
    permit.release().unwrap();
}

#[test]
fn invalid_durations_are_rejected_before_anything_is_sent() {
    let server = Memcached::start();
    let sem = server.client().semaphore("durations").unwrap();
    for bad in [Duration::ZERO, Duration::from_secs(30 * 24 * 3600 + 1)] {
        assert!(
            matches!(
                sem.clone().with_ttl(bad).unwrap_err(),
                Error::InvalidConfig(_)
            ),
            "{bad:?}"
        );
    }
    assert!(
        sem.clone()
            .with_cooldown(Duration::from_secs(31 * 24 * 3600))
            .is_err()
    );
    let mut permit = sem.try_acquire().unwrap().unwrap();
    assert!(matches!(
        permit.refresh(Duration::ZERO).unwrap_err(),
        Error::InvalidConfig(_)
    ));
    assert!(
        permit.is_held().unwrap(),
        "a rejected refresh changes nothing"
    );
    permit.release().unwrap();
}

#[test]
fn holder_shows_info_and_ttl_but_never_the_whole_token() {
    let server = Memcached::start();
    let name = unique("holder");
    let sem = server.semaphore(&name).with_info("job 42 on ci-7").unwrap();
    assert_eq!(sem.holder().unwrap(), None, "free");
    let mut permit = sem.try_acquire().unwrap().unwrap();
    let holder = sem.holder().unwrap().expect("held");
    assert_eq!(holder.info(), Some("job 42 on ci-7"));
    assert!(holder.ttl().unwrap() <= Duration::from_secs(60));
    assert_eq!(holder.token_prefix().len(), 4);
    assert!(permit.token().starts_with(holder.token_prefix()));
    assert!(
        !format!("{holder:?}{permit:?}").contains(permit.token()),
        "Debug hides the token"
    );
    // Refresh and release work with the info stored beside the token.
    permit.refresh(Duration::from_secs(30)).unwrap();
    assert_eq!(
        sem.holder().unwrap().unwrap().info(),
        Some("job 42 on ci-7")
    );
    let other = server.semaphore(&name);
    other.resume(permit.token()).unwrap().forget();
    permit.release().unwrap();
    assert_eq!(sem.holder().unwrap(), None);
}

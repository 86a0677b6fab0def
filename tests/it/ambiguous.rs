//! Writes whose reply never comes: the request reached memcached and was applied, the answer
//! is held back by a proxy (deterministic, unlike a pause). No false "acquired", and no lock
//! left behind with our token once the server answers again.

use std::time::{Duration, Instant};

use memsem::{Client, Error};

use crate::harness::{Memcached, Raw, unique};
use crate::proxy::{Mode, Proxy};

const IO_TIMEOUT: Duration = Duration::from_millis(400);

fn client(proxy: &Proxy) -> Client {
    crate::harness::builder()
        .servers(proxy.address())
        .io_timeout(IO_TIMEOUT)
        .connect_timeout(IO_TIMEOUT)
        .build()
        .unwrap()
}

/// Polls the server directly until `key` is gone; panics after `within`.
pub fn wait_gone(raw: &mut Raw, key: &[u8], within: Duration) -> Duration {
    let started = Instant::now();
    while raw.get(key).is_some() {
        assert!(
            started.elapsed() < within,
            "{} still held after {within:?}",
            String::from_utf8_lossy(key)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn add_whose_reply_is_lost_is_not_claimed_and_is_cleaned_up() {
    for fenced in [false, true] {
        let server = Memcached::start();
        let proxy = Proxy::start(&server.address());
        let name = unique("lost-add");
        let mut sem = client(&proxy).semaphore(&name).unwrap();
        if fenced {
            sem = sem.with_fencing().unwrap();
        }
        drop(sem.try_acquire().unwrap().expect("free"));
        proxy.set(Mode::Hold);
        let error = sem
            .try_acquire()
            .expect_err("no reply, no lock: never a false 'acquired'");
        assert!(matches!(error, Error::Ambiguous { .. }), "{error}");
        let key = format!("__lock__{name}");
        let mut raw = server.raw();
        assert!(
            raw.get(key.as_bytes()).is_some(),
            "the add did reach the server (fenced: {fenced})"
        );
        proxy.set(Mode::Pass);
        let took = wait_gone(&mut raw, key.as_bytes(), Duration::from_secs(10));
        println!("lost add (fenced: {fenced}): orphan removed {took:?} after the server answered");
        let permit = sem.try_acquire().unwrap().expect("free again");
        permit.release().unwrap();
    }
}

#[test]
fn refresh_whose_reply_is_lost_keeps_the_lock_and_the_next_refresh_succeeds() {
    let server = Memcached::start();
    let proxy = Proxy::start(&server.address());
    let name = unique("lost-refresh");
    let sem = client(&proxy).semaphore(&name).unwrap();
    let mut permit = sem.try_acquire().unwrap().expect("free");
    proxy.set(Mode::Hold);
    let error = permit.refresh(Duration::from_secs(30)).unwrap_err();
    assert!(
        matches!(error, Error::Ambiguous { .. } | Error::Unavailable { .. }),
        "{error}"
    );
    proxy.set(Mode::Pass);
    assert!(permit.is_held().unwrap(), "the lock is still ours");
    permit.refresh(Duration::from_secs(30)).unwrap();
    let key = format!("__lock__{name}");
    let (_, ttl) = server.raw().get_with_ttl(key.as_bytes()).unwrap();
    assert!(ttl > 20, "the refresh set the new TTL: {ttl}");
    permit.release().unwrap();
    assert_eq!(server.raw().get(key.as_bytes()), None);
}

#[test]
fn release_whose_reply_is_lost_leaves_no_lock_behind() {
    let server = Memcached::start();
    let proxy = Proxy::start(&server.address());
    let name = unique("lost-release");
    let sem = client(&proxy).semaphore(&name).unwrap();
    let permit = sem.try_acquire().unwrap().expect("free");
    proxy.set(Mode::Hold);
    let error = permit.release().unwrap_err();
    assert!(
        matches!(error, Error::Ambiguous { .. } | Error::Unavailable { .. }),
        "{error}"
    );
    proxy.set(Mode::Pass);
    let key = format!("__lock__{name}");
    wait_gone(&mut server.raw(), key.as_bytes(), Duration::from_secs(10));
    sem.try_acquire().unwrap().expect("free").release().unwrap();
}

#[test]
fn refresh_and_release_sent_into_a_paused_server_settle_once_it_resumes() {
    let server = Memcached::start();
    let client = server.client();
    let name = unique("paused-refresh");
    let sem = client.semaphore(&name).unwrap();
    let mut permit = sem.try_acquire().unwrap().expect("free");
    server.pause();
    let refreshed = permit.refresh(Duration::from_secs(30));
    server.unpause();
    let error = refreshed.unwrap_err();
    assert!(
        matches!(error, Error::Ambiguous { .. } | Error::Unavailable { .. }),
        "{error}"
    );
    assert!(permit.is_held().unwrap());
    server.pause();
    let released = permit.release();
    server.unpause();
    assert!(
        released.is_err(),
        "a frozen server cannot confirm a release"
    );
    let key = format!("__lock__{name}");
    wait_gone(&mut server.raw(), key.as_bytes(), Duration::from_secs(10));
}

//! Quorum locks (Redlock) over five independent memcached servers.

use std::time::{Duration, Instant};

use memsem::{Client, Error};

use crate::harness::{Memcached, unique};

fn fleet(servers: &[Memcached]) -> Client {
    let list: Vec<String> = servers.iter().map(Memcached::address).collect();
    crate::harness::builder()
        .servers(&list.join(","))
        .io_timeout(Duration::from_millis(400))
        .connect_timeout(Duration::from_millis(400))
        .build()
        .unwrap()
}

fn five() -> Vec<Memcached> {
    (0..5).map(|_| Memcached::start()).collect()
}

#[test]
fn quorum_lock_excludes_a_second_holder_and_release_lets_it_in() {
    let servers = five();
    let name = unique("quorum");
    let a = fleet(&servers).quorum_lock(&name).unwrap();
    let b = fleet(&servers).quorum_lock(&name).unwrap();
    let mut permit = a.try_acquire().unwrap().expect("free");
    assert_eq!(permit.votes(), 5);
    assert!(permit.validity() > Duration::from_secs(55));
    for server in &servers {
        let value = server.raw().get(format!("__lock__{name}").as_bytes());
        assert_eq!(
            value,
            Some(permit.token().as_bytes().to_vec()),
            "every voter stores the token"
        );
    }
    assert!(b.try_acquire().unwrap().is_none());
    permit.refresh(Duration::from_secs(30)).unwrap();
    assert!(permit.validity() <= Duration::from_secs(30));
    permit.release().unwrap();
    b.try_acquire()
        .unwrap()
        .expect("free after release")
        .release()
        .unwrap();
}

#[test]
fn quorum_lock_works_with_two_of_five_servers_stopped() {
    let servers = five();
    servers[0].stop();
    servers[3].stop();
    let name = unique("quorum-2down");
    let a = fleet(&servers).quorum_lock(&name).unwrap();
    let permit = a.try_acquire().unwrap().expect("a majority of 3 is up");
    assert_eq!(permit.votes(), 3);
    let b = fleet(&servers).quorum_lock(&name).unwrap();
    assert!(
        b.try_acquire().unwrap().is_none(),
        "the live majority says held"
    );
    permit.release().unwrap();
    assert!(b.try_acquire().unwrap().is_some());
}

#[test]
fn quorum_lock_fails_cleanly_with_three_of_five_servers_stopped() {
    let servers = five();
    for index in [1, 2, 4] {
        servers[index].stop();
    }
    let name = unique("quorum-3down");
    let lock = fleet(&servers).quorum_lock(&name).unwrap();
    let started = Instant::now();
    let error = lock.try_acquire().unwrap_err();
    assert!(
        matches!(
            error,
            Error::NoQuorum {
                reachable: 2,
                needed: 3,
                voters: 5,
                ..
            }
        ),
        "expected NoQuorum, got {error}"
    );
    assert!(error.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failed fast: {:?}",
        started.elapsed()
    );
    for index in [0, 3] {
        let left = servers[index]
            .raw()
            .get(format!("__lock__{name}").as_bytes());
        assert_eq!(left, None, "the votes on live servers were undone");
    }
}

#[test]
fn a_minority_holder_cannot_take_the_quorum() {
    let servers = five();
    let name = unique("quorum-split");
    // Somebody holds the key on three servers (say, a holder whose other votes expired).
    for server in &servers[..3] {
        server
            .raw()
            .set(format!("__lock__{name}").as_bytes(), b"other-holder", 60);
    }
    let lock = fleet(&servers).quorum_lock(&name).unwrap();
    assert!(
        lock.try_acquire().unwrap().is_none(),
        "2 votes are not a majority"
    );
    for server in &servers[3..] {
        assert_eq!(
            server.raw().get(format!("__lock__{name}").as_bytes()),
            None,
            "failed attempt undone"
        );
    }
}

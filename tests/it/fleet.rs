//! A fleet of servers: one server's trouble stays with that server's locks.

use std::time::Duration;

use memsem::{Client, Error, Semaphore};

use crate::harness::{Memcached, unique};

fn fleet_client(servers: &[Memcached]) -> Client {
    let list: Vec<String> = servers.iter().map(Memcached::address).collect();
    crate::harness::builder()
        .servers(&list.join(","))
        .io_timeout(Duration::from_millis(800))
        .connect_timeout(Duration::from_millis(800))
        .build()
        .unwrap()
}

/// A lock name that routes to `server`.
fn name_on(client: &Client, server: &Memcached) -> Semaphore {
    (0..10_000)
        .map(|i| client.semaphore(&unique(&format!("fleet-{i}"))).unwrap())
        .find(|sem| sem.server() == server.address())
        .expect("some name routes to every server")
}

#[test]
fn a_stopped_server_fails_only_its_own_locks_and_never_reroutes_them() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let client = fleet_client(&servers);
    let on_dead = name_on(&client, &servers[0]);
    let on_live = [name_on(&client, &servers[1]), name_on(&client, &servers[2])];
    servers[0].stop();
    let error = on_dead.try_acquire().unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");
    assert!(
        error.to_string().contains(&servers[0].address()),
        "names the dead server: {error}"
    );
    // Not moved elsewhere: the same name still routes to the dead server.
    assert_eq!(on_dead.server(), servers[0].address());
    for sem in &on_live {
        sem.try_acquire()
            .unwrap()
            .expect("locks on live servers work")
            .release()
            .unwrap();
    }
}

#[test]
fn a_frozen_server_does_not_stall_locks_that_live_on_the_others() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let client = fleet_client(&servers);
    let on_frozen = name_on(&client, &servers[0]);
    let on_live = [name_on(&client, &servers[1]), name_on(&client, &servers[2])];
    drop(on_frozen.try_acquire().unwrap()); // open a pooled connection to it
    servers[0].pause();
    let stuck = std::thread::spawn(move || on_frozen.try_acquire());
    for _ in 0..20 {
        for sem in &on_live {
            sem.try_acquire().unwrap().expect("free").release().unwrap();
        }
    }
    assert!(
        !stuck.is_finished(),
        "the other servers' locks finished while the frozen one still waits"
    );
    let outcome = stuck.join().unwrap();
    servers[0].unpause();
    assert!(outcome.is_err(), "a frozen server grants nothing");
}

#[test]
fn ping_reports_each_server_up_with_its_version_or_down_by_name() {
    let servers: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let client = fleet_client(&servers);
    servers[1].stop();
    let answers = client.ping();
    assert_eq!(answers.len(), 2);
    let (up, answer) = &answers[0];
    assert_eq!(up, &servers[0].address());
    let status = answer.as_ref().expect("the first server is up");
    assert!(
        status.version().starts_with("1."),
        "version {:?}",
        status.version()
    );
    let (down, answer) = &answers[1];
    assert_eq!(down, &servers[1].address());
    assert!(answer.as_ref().unwrap_err().is_unavailable());
}

//! `memsem serve lock-server` with Lock::Server::Client's protocol (tests/perl/lock_server.pl)
//! and raw sockets; the helpers are in the parent module.

use std::time::Instant;

use super::{Client, Gateway, LOCK_SERVER_PL, PATIENCE, SectionLog, ls_call, raw_exchange};
use crate::harness::{Memcached, unique};

#[test]
fn lock_server_clients_of_two_gateways_never_overlap() {
    let server = Memcached::start();
    let options = ["--lock-timeout", "10", "--lock-attempt-timeout", "60"];
    let gateways = [
        Gateway::lock_server(&server, &options),
        Gateway::lock_server(&server, &options),
    ];
    let key = unique("ls-contended");
    let log = SectionLog::new();
    let workers: Vec<Client> = (0..4)
        .map(|i| {
            let who = format!("worker{i}");
            let address = &gateways[i % 2].address;
            Client::spawn(
                LOCK_SERVER_PL,
                &["work", address, &key, &who, "10", log.path()],
            )
        })
        .collect();
    for worker in workers {
        let (out, code) = worker.finish();
        assert_eq!(code, Some(0), "{out}");
        assert!(out.starts_with("granted 10 "), "{out}");
        assert!(out.ends_with("unlock_failures 0\n"), "{out}");
    }
    assert_eq!(log.sections(), 4 * 10);
}

#[test]
fn lock_server_keeps_fifo_order_across_gateways() {
    let server = Memcached::start();
    let options = ["--lock-timeout", "30", "--lock-attempt-timeout", "60"];
    let gateways = [
        Gateway::lock_server(&server, &options),
        Gateway::lock_server(&server, &options),
    ];
    let key = unique("ls-fifo");
    assert_ne!(ls_call(&gateways[0], &["LOCK", &key, "first"]), "0");

    // w1 on gateway B, w2 on A, w3 on B, w4 on A: each queued before the next asks.
    let mut waiters = Vec::new();
    for i in 1..=4 {
        let who = format!("w{i}");
        let gateway = &gateways[i % 2];
        waiters.push(Client::spawn(
            LOCK_SERVER_PL,
            &["call", &gateway.address, "LOCK", &key, &who],
        ));
        gateway.wait_for(&format!("{key} {who} queued"), 1);
    }
    let mut previous = "first".to_string();
    for (i, waiter) in waiters.into_iter().enumerate() {
        let who = format!("w{}", i + 1);
        // Unlock through either gateway, whichever granted it.
        assert_eq!(ls_call(&gateways[i % 2], &["UNLOCK", &key, &previous]), "1");
        let (reply, code) = waiter.finish();
        assert_eq!(code, Some(0));
        assert_ne!(reply.trim(), "0", "{who} is granted next");
        assert_eq!(ls_call(&gateways[0], &["VERIFY", &key, &who]), "1");
        assert_eq!(ls_call(&gateways[1], &["VERIFY", &key, &who]), "1");
        previous = who;
    }
    assert_eq!(ls_call(&gateways[1], &["UNLOCK", &key, &previous]), "1");
    assert_eq!(ls_call(&gateways[0], &["CHECK", &key]), "0");
}

#[test]
fn lock_server_queue_outlives_a_dead_gateway() {
    let server = Memcached::start();
    let options = ["--lock-timeout", "30", "--lock-attempt-timeout", "60"];
    let a = Gateway::lock_server(&server, &options);
    let mut b = Gateway::lock_server(&server, &options);
    let key = unique("ls-dead-waiter");
    assert_ne!(ls_call(&a, &["LOCK", &key, "holder"]), "0");
    // w1 queues through B, then B dies: w1's place in line must not stall w2 for ever.
    let w1 = Client::spawn(LOCK_SERVER_PL, &["call", &b.address, "LOCK", &key, "w1"]);
    b.wait_for(&format!("{key} w1 queued"), 1);
    let w2 = Client::spawn(LOCK_SERVER_PL, &["call", &a.address, "LOCK", &key, "w2"]);
    a.wait_for(&format!("{key} w2 queued"), 1);
    b.signal(libc::SIGKILL);
    assert_eq!(b.exit_code(), None);
    assert_eq!(
        w1.finish().1,
        Some(5),
        "w1's connection died with its gateway"
    );

    assert_eq!(ls_call(&a, &["UNLOCK", &key, "holder"]), "1");
    let (reply, code) = w2.finish();
    assert_eq!(code, Some(0));
    assert_ne!(reply.trim(), "0", "w2 is granted once w1's place expires");
    assert_eq!(ls_call(&a, &["VERIFY", &key, "w2"]), "1");
}

#[test]
fn lock_server_verbs_timeouts_and_library_users() {
    let server = Memcached::start();
    let options = ["--lock-timeout", "1", "--lock-attempt-timeout", "0.2"];
    let a = Gateway::lock_server(&server, &options);
    let b = Gateway::lock_server(&server, &options);
    let key = unique("ls-verbs");
    assert_eq!(ls_call(&a, &["PING"]), "1");
    assert_eq!(ls_call(&a, &["CHECK", &key]), "0");
    let expires: f64 = ls_call(&a, &["LOCK", &key, "me"]).parse().unwrap();
    assert!(expires > 1e9, "a Unix time: {expires}");
    assert_eq!(ls_call(&b, &["CHECK", &key]), "1");
    assert_eq!(ls_call(&b, &["VERIFY", &key, "me"]), "1");
    assert_eq!(ls_call(&b, &["VERIFY", &key, "you"]), "0");
    assert_eq!(ls_call(&b, &["LOCK", &key, "me"]), "0", "already holding");
    assert_eq!(ls_call(&b, &["UNLOCK", &key, "you"]), "0");
    assert_eq!(ls_call(&b, &["UNLOCK", &key, "me"]), "1");
    assert_eq!(ls_call(&a, &["UNLOCK", &key, "me"]), "0");
    assert_eq!(ls_call(&a, &["CHECK", &key]), "0");

    // A lock nobody unlocks times out at its expiry.
    let expires: f64 = ls_call(&a, &["LOCK", &key, "me"]).parse().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while ls_call(&b, &["CHECK", &key]) == "1" {
        assert!(Instant::now() < deadline, "the lock never timed out");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!(now.as_secs_f64() >= expires, "not before its expiry");
    assert_eq!(ls_call(&b, &["VERIFY", &key, "me"]), "0");
    assert_ne!(
        ls_call(&b, &["LOCK", &key, "you"]),
        "0",
        "taken over after the timeout"
    );
    assert_eq!(ls_call(&b, &["UNLOCK", &key, "you"]), "1");

    // A library user of the same name holds it: gateways see it locked and wait in vain.
    let permit = server.semaphore(&key).try_acquire().unwrap().unwrap();
    assert_eq!(ls_call(&a, &["CHECK", &key]), "1");
    assert_eq!(ls_call(&a, &["LOCK", &key, "me"]), "0", "attempt timeout");
    permit.release().unwrap();
    assert_ne!(ls_call(&a, &["LOCK", &key, "me"]), "0");
    assert!(server.semaphore(&key).try_acquire().unwrap().is_none());
}

#[test]
fn lock_server_bad_input_gets_0_and_leaks_no_lock() {
    let server = Memcached::start();
    let gateway = Gateway::lock_server(&server, &["--idle-timeout", "1s"]);
    let key = unique("ls-bad");
    let cases: [(&str, Vec<u8>); 8] = [
        ("garbage", b"garbage\n\n".to_vec()),
        (
            "unknown verb",
            format!("GET /FROB/{key}/me\n\n").into_bytes(),
        ),
        (
            "missing requester",
            format!("GET /LOCK/{key}\n\n").into_bytes(),
        ),
        ("space", format!("GET /LOCK/{key} x/me\n\n").into_bytes()),
        (
            "control byte",
            format!("GET /LOCK/{key}\x01/me\n\n").into_bytes(),
        ),
        (
            "control byte in requester",
            format!("GET /LOCK/{key}/m\x7fe\n\n").into_bytes(),
        ),
        ("not UTF-8", b"GET /LOCK/\xff\xfe/me\n\n".to_vec()),
        (
            "huge line",
            format!("GET /LOCK/{}/me\n\n", "k".repeat(100_000)).into_bytes(),
        ),
    ];
    for (what, bytes) in &cases {
        let answer = raw_exchange(&gateway.address, bytes, false);
        assert!(answer == b"0\n" || answer.is_empty(), "{what}: {answer:?}");
    }
    gateway.wait_for("bad request", cases.len());
    assert_eq!(ls_call(&gateway, &["SHUTDOWN"]), "0", "no --allow-shutdown");
    assert_eq!(ls_call(&gateway, &["PING"]), "1");
    assert_eq!(ls_call(&gateway, &["CHECK", &key]), "0");
    assert!(
        server.semaphore(&key).try_acquire().unwrap().is_some(),
        "no lock leaked"
    );

    // A client that sends nothing is disconnected.
    assert_eq!(raw_exchange(&gateway.address, b"", false), b"");
    gateway.wait_for("idle, closed", 1);
}

#[test]
fn lock_server_shutdown_answers_waiters_and_releases_locks() {
    let server = Memcached::start();
    let mut gateway = Gateway::lock_server(
        &server,
        &[
            "--lock-timeout",
            "30",
            "--lock-attempt-timeout",
            "60",
            "--allow-shutdown",
        ],
    );
    let key = unique("ls-shutdown");
    assert_ne!(ls_call(&gateway, &["LOCK", &key, "holder"]), "0");
    let waiter = Client::spawn(
        LOCK_SERVER_PL,
        &["call", &gateway.address, "LOCK", &key, "waiter"],
    );
    gateway.wait_for(&format!("{key} waiter queued"), 1);

    gateway.signal(libc::SIGTERM);
    let (reply, code) = waiter.finish();
    assert_eq!((reply.trim(), code), ("0", Some(0)));
    assert_eq!(gateway.exit_code(), Some(0));
    gateway.wait_for("1 held locks released", 1);
    assert!(
        server.semaphore(&key).try_acquire().unwrap().is_some(),
        "released"
    );

    // SHUTDOWN, allowed.
    let mut gateway = Gateway::lock_server(&server, &["--allow-shutdown"]);
    assert_eq!(ls_call(&gateway, &["SHUTDOWN"]), "1");
    assert_eq!(gateway.exit_code(), Some(0));
    assert!(!gateway.is_running());
}

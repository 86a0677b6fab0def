//! Frozen and missing servers, garbage replies and hostile names.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use memsem::{Error, WaitPolicy};

use crate::harness::{Memcached, unique};

const IO_TIMEOUT: Duration = Duration::from_millis(400);

#[test]
fn paused_server_gives_an_error_within_the_timeouts_never_a_hang() {
    let server = Memcached::start();
    let name = unique("paused");
    let sem = server.semaphore(&name);
    // Warm the pool so the request goes out on an open connection.
    drop(sem.try_acquire().unwrap());
    server.pause();
    let started = Instant::now();
    let outcome = sem.try_acquire();
    let elapsed = started.elapsed();
    server.unpause();
    let error = outcome.expect_err("a frozen server cannot grant a lock");
    assert!(
        matches!(error, Error::Ambiguous { .. } | Error::Unavailable { .. }),
        "expected Ambiguous or Unavailable, got {error}"
    );
    // The add and its settling retry each wait at most one I/O timeout (plus a connect).
    assert!(
        elapsed < IO_TIMEOUT * 3 + Duration::from_millis(500),
        "took {elapsed:?}"
    );
}

#[test]
fn add_lost_during_a_pause_is_not_claimed_and_does_not_leave_an_orphaned_lock() {
    let server = Memcached::start();
    let name = unique("ambiguous");
    let client = server.client();
    let sem = client.semaphore(&name).unwrap();
    drop(sem.try_acquire().unwrap());
    server.pause();
    let outcome = sem.try_acquire();
    server.unpause();
    let error = outcome.expect_err("no false 'acquired' while the server is frozen");
    assert!(
        matches!(error, Error::Ambiguous { .. }),
        "the add was sent: {error}"
    );
    // The add was applied when the server resumed; memsem's clean-up must delete it long
    // before its 60 s TTL, so another client gets in.
    let other = server.semaphore(&name).with_wait_policy(
        WaitPolicy::new()
            .poll_time(Duration::from_millis(50))
            .max_wait(Duration::from_secs(15)),
    );
    let permit = other
        .wait_acquire()
        .expect("the orphaned lock was cleaned up");
    permit.release().unwrap();
    // At least three items were stored: the warm-up lock, the add lost in the pause (so the
    // test really exercised an orphan), and the other client's lock. The settling second add,
    // also frozen, may land too after the clean-up removed the first; the clean-up's
    // re-check removes that one as well.
    let stored = server.raw().stat("total_items");
    assert!(
        stored >= 3,
        "the lost add did land on the server: {stored} items stored"
    );
}

#[test]
fn wait_acquire_rides_out_a_pause_and_holds_exactly_one_lock() {
    let server = Memcached::start();
    let name = unique("ride-out");
    let sem = server.semaphore(&name).with_wait_policy(
        WaitPolicy::new()
            .poll_time(Duration::from_millis(50))
            .max_wait(Duration::from_secs(20)),
    );
    drop(sem.try_acquire().unwrap());
    server.pause();
    let waiter = {
        let sem = sem.clone();
        thread::spawn(move || sem.wait_acquire())
    };
    // Let a few attempts time out against the frozen server.
    thread::sleep(IO_TIMEOUT * 3);
    server.unpause();
    let permit = waiter
        .join()
        .unwrap()
        .expect("acquired once the server answered");
    assert!(permit.is_held().unwrap());
    let key = format!("__lock__{name}");
    assert_eq!(
        server.raw().token(key.as_bytes()).as_deref(),
        Some(permit.token())
    );
    permit.release().unwrap();
    assert_eq!(
        server.raw().get(key.as_bytes()),
        None,
        "nothing left behind"
    );
}

#[test]
fn release_lost_in_a_pause_is_finished_in_the_background() {
    let server = Memcached::start();
    let name = unique("release-paused");
    let sem = server.semaphore(&name);
    let permit = sem.try_acquire().unwrap().unwrap();
    server.pause();
    let error = permit
        .release()
        .expect_err("a frozen server cannot confirm a release");
    assert!(
        matches!(error, Error::Ambiguous { .. } | Error::Unavailable { .. }),
        "{error}"
    );
    server.unpause();
    let other = server.semaphore(&name).with_wait_policy(
        WaitPolicy::new()
            .poll_time(Duration::from_millis(50))
            .max_wait(Duration::from_secs(15)),
    );
    other
        .wait_acquire()
        .expect("the release completed after the pause")
        .release()
        .unwrap();
}

#[test]
fn unreachable_server_is_unavailable_and_names_the_server() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let client = crate::harness::builder()
        .servers(&address)
        .connect_timeout(IO_TIMEOUT)
        .build()
        .unwrap();
    let error = client
        .semaphore("anything")
        .unwrap()
        .try_acquire()
        .unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(
        error.to_string().contains(&address),
        "the message names the server: {error}"
    );
    let waited = client
        .semaphore("anything")
        .unwrap()
        .with_wait_policy(
            WaitPolicy::new()
                .max_wait(Duration::from_millis(200))
                .poll_time(Duration::from_millis(50)),
        )
        .wait_acquire()
        .unwrap_err();
    assert!(
        matches!(waited, Error::Timeout { .. }) && waited.is_unavailable(),
        "{waited}"
    );
}

/// A fake server that answers every request with `reply`.
pub(crate) fn fake_server(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

#[test]
fn garbage_replies_are_errors_not_panics_or_hangs() {
    let replies: [&'static [u8]; 4] = [
        b"HELLO THERE\r\n",
        b"VA 99999999999 c1\r\nshort\r\n",
        b"HD c\r\n",
        b"\xff\xfe\x00garbage\r\n",
    ];
    for reply in replies {
        let address = fake_server(reply);
        let client = crate::harness::builder()
            .servers(&address)
            .io_timeout(IO_TIMEOUT)
            .build()
            .unwrap();
        let sem = client.semaphore("garbage").unwrap();
        let started = Instant::now();
        let outcome = sem.try_acquire();
        assert!(
            outcome.is_err(),
            "reply {:?} must not grant a lock: {outcome:?}",
            String::from_utf8_lossy(reply)
        );
        assert!(started.elapsed() < IO_TIMEOUT * 3 + Duration::from_millis(500));
    }
}

#[test]
fn hostile_names_are_rejected_or_travel_safely_and_inject_nothing() {
    let server = Memcached::start();
    let mut raw = server.raw();
    let sentinel = unique("sentinel");
    raw.set(sentinel.as_bytes(), b"still here", 0);
    let client = server.client();
    let long_ok = "n".repeat(250 - "__lock__".len());
    let too_long = "n".repeat(251 - "__lock__".len());
    let hostile = [
        "x\r\nflush_all",
        "x\r\ndelete sentinel",
        "with space",
        "nul\0byte",
        "tab\tname",
        "bell\x07",
        "del\x7f",
        "",
        &too_long,
        "\r\n",
        " ",
    ];
    for name in hostile {
        let error = client.semaphore(name).unwrap_err();
        assert!(
            matches!(error, Error::InvalidName { .. }),
            "{name:?} -> {error}"
        );
    }
    let odd_but_fine = [
        "grüße-日本語",
        "semi;colon",
        "quote\"d",
        "dollar$",
        "%00",
        &long_ok,
    ];
    for name in odd_but_fine {
        let sem = client
            .semaphore(name)
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let permit = sem.try_acquire().unwrap().expect("free");
        let key = format!("__lock__{name}");
        assert_eq!(
            raw.token(key.as_bytes()).as_deref(),
            Some(permit.token()),
            "{name:?}"
        );
        permit.release().unwrap();
    }
    for namespace in ["a b", "x\r\nflush_all\r\n", "\0"] {
        let error = crate::harness::builder()
            .servers(&server.address())
            .namespace(namespace)
            .build()
            .unwrap_err();
        assert!(
            matches!(error, Error::InvalidName { .. }),
            "{namespace:?} -> {error}"
        );
    }
    assert_eq!(
        raw.get(sentinel.as_bytes()),
        Some(b"still here".to_vec()),
        "nothing was injected"
    );
}

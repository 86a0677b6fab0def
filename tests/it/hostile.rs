//! Hostile input: arbitrary names, namespaces and durations against one real memcached
//! (property tests), and replies that are garbage, oversized, dripped, cut short, late or
//! followed by a hang-up (a misbehaving proxy in front of a real server).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use memsem::{Client, Error};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::ambiguous::wait_gone;
use crate::harness::{Memcached, unique};
use crate::proxy::{Mode, Proxy};

const IO_TIMEOUT: Duration = Duration::from_millis(400);

/// Durations from zero to far beyond 30 days, short of `Duration::MAX` (see the report on
/// `whole_seconds` overflowing there).
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0u64..5_000).prop_map(Duration::from_millis),
        1 => (0u64..4_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        1 => (0u64..u64::MAX - 1, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9:._-]{1,20}",
        3 => "[^\\s\\x00-\\x1f\\x7f]{1,80}",
        // Protocol words and separators, the makings of an injection.
        2 => "(x|\r|\n|\r\n| |\t|\0|flush_all|delete |set |mn|noreply|\u{7f}|ü|日){0,12}",
        1 => any::<String>(),
        1 => "\\PC{0,260}",
        1 => ".{240,300}",
    ]
}

#[test]
fn arbitrary_names_namespaces_and_durations_never_panic_or_inject() {
    let server = Memcached::start();
    let raw = RefCell::new(server.raw());
    let sentinel = unique("sentinel");
    raw.borrow_mut().set(sentinel.as_bytes(), b"untouched", 0);
    let cases = 300;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let (acquired, rejected) = (Cell::new(0u32), Cell::new(0u32));
    let outcome = runner.run(
        &(
            prop_oneof![Just(String::new()), text()],
            text(),
            duration(),
            duration(),
        ),
        |(namespace, name, ttl, refresh)| {
            let built = crate::harness::builder()
                .servers(&server.address())
                .namespace(&namespace)
                .io_timeout(IO_TIMEOUT)
                .build();
            let client = match built {
                Ok(client) => client,
                Err(Error::InvalidName { .. }) => {
                    rejected.set(rejected.get() + 1);
                    return Ok(());
                }
                Err(other) => panic!("namespace {namespace:?}: {other}"),
            };
            let sem = match client.semaphore(&name) {
                Ok(sem) => sem,
                Err(Error::InvalidName { .. }) => {
                    rejected.set(rejected.get() + 1);
                    return Ok(());
                }
                Err(other) => panic!("name {name:?}: {other}"),
            };
            let sem = match sem.with_ttl(ttl) {
                Ok(sem) => sem,
                Err(Error::InvalidConfig(_)) => {
                    prop_assert!(ttl.is_zero() || ttl > memsem::DEFAULT_MAX_LEASE);
                    rejected.set(rejected.get() + 1);
                    return Ok(());
                }
                Err(other) => panic!("ttl {ttl:?}: {other}"),
            };
            let mut permit = sem
                .try_acquire()
                .map_err(|e| TestCaseError::fail(format!("{name:?}: {e}")))?
                .ok_or_else(|| TestCaseError::fail(format!("{name:?} was not free")))?;
            acquired.set(acquired.get() + 1);
            let mut key = namespace.as_bytes().to_vec();
            key.extend_from_slice(b"__lock__");
            key.extend_from_slice(name.as_bytes());
            let stored = raw.borrow_mut().token(&key);
            prop_assert_eq!(stored.as_deref(), Some(permit.token()));
            match permit.refresh(refresh) {
                Ok(()) => {}
                Err(Error::InvalidConfig(_)) => {}
                Err(other) => panic!("refresh {refresh:?}: {other}"),
            }
            permit
                .release()
                .map_err(|e| TestCaseError::fail(format!("release {name:?}: {e}")))?;
            prop_assert_eq!(raw.borrow_mut().get(&key), None);
            prop_assert_eq!(
                raw.borrow_mut().get(sentinel.as_bytes()),
                Some(b"untouched".to_vec())
            );
            Ok(())
        },
    );
    println!(
        "hostile input: {cases} cases, {} acquired and released, {} rejected",
        acquired.get(),
        rejected.get()
    );
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    assert_eq!(
        raw.borrow_mut().get(sentinel.as_bytes()),
        Some(b"untouched".to_vec())
    );
}

/// The client against a proxy in `mode`: every operation ends with an error (or, for a reply
/// that arrived whole, success) within its time-out, and once the proxy passes replies again
/// the same client works and is not out of step with the server.
fn bad_replies_end_in_time_and_leave_the_client_in_step(mode: Mode) {
    let server = Memcached::start();
    let proxy = Proxy::start(&server.address());
    let client = crate::harness::builder()
        .servers(proxy.address())
        .io_timeout(IO_TIMEOUT)
        .connect_timeout(IO_TIMEOUT)
        .build()
        .unwrap();
    let bound = IO_TIMEOUT * 2 + IO_TIMEOUT + Duration::from_millis(600);
    let held = client.semaphore(&unique("held")).unwrap();
    let mut permit = held.try_acquire().unwrap().expect("free");
    let sem = client.semaphore(&unique("bad-reply")).unwrap();
    proxy.set(mode);

    let started = Instant::now();
    let acquired = sem.try_acquire();
    let took = started.elapsed();
    assert!(took <= bound, "{mode:?}: try_acquire took {took:?}");
    match (&acquired, mode) {
        (Ok(Some(_)), Mode::ReplyThenClose) => {}
        (Err(_), _) => {}
        (other, _) => panic!("{mode:?}: a bad reply granted {other:?}"),
    }
    drop(acquired);
    let started = Instant::now();
    let checked = permit.is_held();
    let took = started.elapsed();
    assert!(took <= bound, "{mode:?}: is_held took {took:?}");
    assert!(
        checked.is_err() || mode == Mode::ReplyThenClose,
        "{mode:?}: {checked:?}"
    );
    let started = Instant::now();
    let refreshed = permit.refresh(Duration::from_secs(60));
    assert!(
        started.elapsed() <= bound,
        "{mode:?}: refresh took {:?}",
        started.elapsed()
    );
    assert!(
        refreshed.is_err() || mode == Mode::ReplyThenClose,
        "{mode:?}: {refreshed:?}"
    );

    proxy.set(Mode::Pass);
    // Connections the proxy hung up on may still sit idle in the pool: the next request
    // finds them closed and goes out again on a fresh one, so it succeeds at once.
    let probe = client.semaphore(&unique("probe")).unwrap();
    if let Err(error) = probe.holder() {
        panic!("{mode:?}: the first request after recovery failed: {error}");
    }
    // The same client, on fresh names: answers match the server's state exactly.
    let mut raw = server.raw();
    for _ in 0..5 {
        let name = unique("in-step");
        let fresh = client.semaphore(&name).unwrap();
        assert!(fresh.holder().unwrap().is_none(), "{mode:?}: a stale reply");
        let permit = fresh.try_acquire().unwrap().expect("free");
        let key = format!("__lock__{name}");
        assert_eq!(raw.token(key.as_bytes()).as_deref(), Some(permit.token()));
        assert!(permit.is_held().unwrap());
        assert!(fresh.try_acquire().unwrap().is_none(), "held means held");
        permit.release().unwrap();
        assert_eq!(raw.get(key.as_bytes()), None);
    }
    assert!(
        permit.is_held().unwrap(),
        "{mode:?}: the first lock is still ours"
    );
    permit.release().unwrap();
}

#[test]
fn garbage_reply_is_an_error_in_time_and_the_client_stays_in_step() {
    bad_replies_end_in_time_and_leave_the_client_in_step(Mode::Garbage);
}

#[test]
fn oversized_value_header_is_an_error_in_time_and_the_client_stays_in_step() {
    bad_replies_end_in_time_and_leave_the_client_in_step(Mode::Oversized);
}

#[test]
fn endless_slow_drip_is_an_error_in_time_and_the_client_stays_in_step() {
    bad_replies_end_in_time_and_leave_the_client_in_step(Mode::Drip);
}

#[test]
fn truncated_reply_is_an_error_in_time_and_the_client_stays_in_step() {
    bad_replies_end_in_time_and_leave_the_client_in_step(Mode::Truncate);
}

#[test]
fn late_reply_is_an_error_in_time_and_the_client_stays_in_step() {
    bad_replies_end_in_time_and_leave_the_client_in_step(Mode::Hold);
}

#[test]
fn reply_then_hang_up_leaves_the_client_in_step() {
    bad_replies_end_in_time_and_leave_the_client_in_step(Mode::ReplyThenClose);
}

/// A connection the server closes right after a reply, reused at once (too soon after its
/// last exchange for the pool to check it): the read, the add and the owner-checked delete
/// sent on it meet the close, and each is settled on a new connection, never an error.
#[test]
fn requests_meeting_a_close_right_after_a_reply_are_settled_on_a_new_connection() {
    let server = Memcached::start();
    let proxy = Proxy::start(&server.address());
    let client = crate::harness::builder()
        .servers(proxy.address())
        .io_timeout(IO_TIMEOUT)
        .build()
        .unwrap();
    let sem = client.semaphore(&unique("closed-after-reply")).unwrap();
    assert!(!sem.is_locked().unwrap());
    for _ in 0..5 {
        proxy.set(Mode::CloseAfterReply);
        assert!(!sem.is_locked().unwrap());
        assert!(!sem.is_locked().unwrap(), "a read after the close");
        proxy.set(Mode::CloseAfterReply);
        assert!(!sem.is_locked().unwrap());
        let permit = sem.try_acquire().unwrap().expect("an add after the close");
        proxy.set(Mode::CloseAfterReply);
        assert!(permit.is_held().unwrap());
        permit.release().unwrap();
        assert!(!sem.is_locked().unwrap(), "released after the close");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An async client through `proxy`, with the short I/O and connect time-outs of these tests.
async fn async_client(proxy: &Proxy) -> memsem::Client<memsem::Tokio> {
    crate::harness::builder()
        .servers(proxy.address())
        .io_timeout(IO_TIMEOUT)
        .connect_timeout(IO_TIMEOUT)
        .build_async()
        .await
        .unwrap()
}

/// The same with the async client: the lock operations are settled on a new connection.
#[test]
fn async_lock_operations_meeting_a_close_right_after_a_reply_succeed() {
    let server = Memcached::start();
    let proxy = Proxy::start(&server.address());
    runtime().block_on(async {
        let client = async_client(&proxy).await;
        let sem = client
            .semaphore(&unique("async-closed-after-reply"))
            .unwrap();
        assert!(!sem.is_locked().await.unwrap());
        for _ in 0..5 {
            proxy.set(Mode::CloseAfterReply);
            assert!(!sem.is_locked().await.unwrap());
            let permit = sem
                .try_acquire()
                .await
                .unwrap()
                .expect("an add after the close");
            proxy.set(Mode::CloseAfterReply);
            assert!(permit.is_held().await.unwrap());
            permit.release().await.unwrap();
            assert!(!sem.is_locked().await.unwrap(), "released after the close");
        }
    });
}

/// The async client's I/O time-out (one timer per connection): a request into a blackhole
/// ends with an error in time, and the client works again once the blackhole is gone.
#[test]
fn async_requests_into_a_blackhole_end_within_the_io_timeout() {
    let server = Memcached::start();
    let proxy = Proxy::start(&server.address());
    runtime().block_on(async {
        let client = async_client(&proxy).await;
        let sem = client.semaphore(&unique("async-blackhole")).unwrap();
        assert!(!sem.is_locked().await.unwrap());
        proxy.set(Mode::Blackhole);
        let started = Instant::now();
        let outcome = sem.try_acquire().await;
        let took = started.elapsed();
        assert!(outcome.is_err(), "{outcome:?}");
        let bound = IO_TIMEOUT * 3 + Duration::from_millis(600);
        assert!(took <= bound, "try_acquire took {took:?}");
        let started = Instant::now();
        let read = sem.is_locked().await;
        assert!(read.is_err(), "{read:?}");
        assert!(
            started.elapsed() <= bound,
            "is_locked took {:?}",
            started.elapsed()
        );
        proxy.set(Mode::Pass);
        assert!(sem.is_locked().await.is_ok());
    });
}

/// An I/O time-out too long for the clock (`Duration::MAX`) is no panic, blocking or async.
#[test]
fn an_io_timeout_of_duration_max_is_no_panic() {
    let server = Memcached::start();
    let builder = || {
        crate::harness::builder()
            .servers(&server.address())
            .io_timeout(Duration::MAX)
    };
    let sem = builder().build().unwrap();
    let sem = sem.semaphore(&unique("max-io")).unwrap();
    for _ in 0..3 {
        sem.try_acquire().unwrap().expect("free").release().unwrap();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = builder().build_async().await.unwrap();
        let sem = client.semaphore(&unique("async-max-io")).unwrap();
        for _ in 0..3 {
            let permit = sem.try_acquire().await.unwrap().expect("free");
            permit.release().await.unwrap();
        }
    });
}

/// An add that memcached applied but whose reply was garbage is an unknown outcome: the
/// caller gets an error, and the clean-up removes the lock well before its 60 s TTL (this
/// was an orphan until the acquire path kept unanswered adds for the clean-up).
#[test]
fn add_answered_with_garbage_is_an_error_and_leaves_no_orphaned_lock() {
    let server = Memcached::start();
    let proxy = Proxy::start(&server.address());
    let client = crate::harness::builder()
        .servers(proxy.address())
        .io_timeout(IO_TIMEOUT)
        .build()
        .unwrap();
    let name = unique("garbage-add");
    let sem = client.semaphore(&name).unwrap();
    // Connect (and probe the server) while the proxy still passes replies.
    assert!(!sem.is_locked().unwrap());
    proxy.set(Mode::Garbage);
    let error = sem.try_acquire().unwrap_err();
    assert!(
        matches!(error, Error::Ambiguous { .. } | Error::Protocol { .. }),
        "{error}"
    );
    proxy.set(Mode::Pass);
    let key = format!("__lock__{name}");
    wait_gone(&mut server.raw(), key.as_bytes(), Duration::from_secs(10));
}

/// `Duration::MAX` as a TTL is `InvalidConfig` (it used to overflow the rounding up to whole
/// seconds: a panic in debug builds, "never expires" in release builds).
#[test]
fn ttl_of_duration_max_is_rejected() {
    let client = Client::connect("127.0.0.1:1").unwrap();
    let outcome = client.semaphore("x").unwrap().with_ttl(Duration::MAX);
    assert!(
        matches!(outcome, Err(Error::InvalidConfig(_))),
        "{outcome:?}"
    );
}

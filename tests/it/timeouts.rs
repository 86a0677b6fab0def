//! Time-outs are behaviour contracts: with the server frozen (it accepts connections through
//! docker-proxy and answers nothing), every call returns within its configured time-outs plus
//! a margin, never hangs.

use std::time::{Duration, Instant};

use memsem::WaitPolicy;

use crate::harness::{Memcached, unique};

const IO: Duration = Duration::from_millis(400);
const CONNECT: Duration = Duration::from_millis(300);
/// Scheduling slack on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(700);

fn timed<T>(what: &str, bound: Duration, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let outcome = call();
    let took = started.elapsed();
    println!("frozen server: {what} returned after {took:?} (bound {bound:?})");
    assert!(took <= bound, "{what} took {took:?}, above {bound:?}");
    outcome
}

#[test]
fn every_call_returns_within_its_timeouts_while_the_server_is_frozen() {
    let server = Memcached::start();
    let client = crate::harness::builder()
        .servers(&server.address())
        .io_timeout(IO)
        .connect_timeout(CONNECT)
        .build()
        .unwrap();
    let held = client.semaphore(&unique("held")).unwrap();
    let mut permit = held.try_acquire().unwrap().expect("free");
    let mut second = held.clone();
    let other = client.semaphore(&unique("other")).unwrap();
    let max_wait = Duration::from_secs(1);
    let poll = Duration::from_millis(100);
    let waiting = other.clone().with_wait_policy(
        WaitPolicy::new()
            .poll_time(poll)
            .jitter(0.0)
            .max_wait(max_wait),
    );
    second = second.with_ttl(Duration::from_secs(5)).unwrap();
    server.pause();

    // An add that times out is settled by a second add: two I/O time-outs and a connect.
    let one_write = IO * 2 + CONNECT + MARGIN;
    let one_read = IO + CONNECT + MARGIN;
    assert!(timed("try_acquire", one_write, || other.try_acquire()).is_err());
    assert!(
        timed("try_acquire (fenced)", one_write, || {
            second.clone().with_fencing().unwrap().try_acquire()
        })
        .is_err()
    );
    assert!(timed("is_held", one_read, || permit.is_held()).is_err());
    assert!(timed("holder", one_read, || held.holder()).is_err());
    assert!(timed("is_locked", one_read, || held.is_locked()).is_err());
    // A CAS write that gets no answer is followed by a read-back.
    assert!(
        timed("refresh", one_write, || permit
            .refresh(Duration::from_secs(30)))
        .is_err()
    );
    let error = timed(
        "wait_acquire",
        max_wait + poll + IO * 2 + CONNECT + MARGIN,
        || waiting.wait_acquire(),
    )
    .unwrap_err();
    assert!(matches!(error, memsem::Error::Timeout { .. }), "{error}");
    assert!(timed("release", one_write, || permit.release()).is_err());
    let pings = timed("ping", one_read, || client.ping());
    assert!(pings.iter().all(|(_, answer)| answer.is_err()));
    server.unpause();
}

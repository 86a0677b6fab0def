//! Issue 12: no double holder across memcached restarts (epochs, lock-delay), partitions
//! (the lease deadline) and wrapper crashes; non-retryable refusals. Real memcached
//! processes, killed and restarted on the same port.

use std::time::Duration;

use memsem::{Client, Error, LostReason, WaitPolicy};

use crate::harness::{Raw, builder, unique};
use crate::procs::Memcached;

/// A memcached process on a port of its own, which can be crashed and started again there.
struct Restartable {
    server: Option<Memcached>,
    port: u16,
}

impl Restartable {
    fn start() -> Restartable {
        let server = Memcached::start("127.0.0.1", None);
        let port = server.port;
        Restartable {
            server: Some(server),
            port,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then a new memcached on the same port: it has forgotten every lock and its
    /// CAS values start again at 1.
    fn crash_and_restart(&mut self) {
        drop(self.server.take());
        self.server = Some(Memcached::start("127.0.0.1", Some(self.port)));
    }

    fn client(&self, lock_delay: Duration) -> Client {
        builder()
            .servers(&self.address())
            .io_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .lock_delay(lock_delay)
            .build()
            .expect("client")
    }
}

fn restarted(error: &Error) -> bool {
    matches!(
        error,
        Error::LockLost {
            reason: LostReason::Restarted,
            ..
        }
    )
}

#[test]
fn a_release_with_a_cas_from_before_a_restart_never_deletes_the_new_holders_lock() {
    let mut server = Restartable::start();
    let name = unique("restart-release");
    let a = server.client(Duration::ZERO).semaphore(&name).unwrap();
    let first = a.try_acquire().unwrap().expect("free");
    server.crash_and_restart();
    // Without lock-delay, the restarted server grants the lock again at once (CAS 1 again).
    let b = server.client(Duration::ZERO).semaphore(&name).unwrap();
    let second = b
        .try_acquire()
        .unwrap()
        .expect("the restarted server forgot the lock");

    let error = first.release().unwrap_err();
    assert!(restarted(&error), "{error}");
    assert!(
        b.verify(second.token()).unwrap(),
        "the stale release touched B's lock"
    );
    assert!(
        b.try_acquire().unwrap().is_none(),
        "C got in while B holds it"
    );
    second.release().unwrap();
}

#[test]
fn a_refresh_or_cooldown_from_before_a_restart_is_never_sent() {
    let mut server = Restartable::start();
    let name = unique("restart-refresh");
    let sem = server.client(Duration::ZERO).semaphore(&name).unwrap();
    let mut refreshed = sem.try_acquire().unwrap().expect("free");
    let other = server.client(Duration::ZERO);
    let cooled = other
        .semaphore(&format!("{name}-2"))
        .unwrap()
        .try_acquire()
        .unwrap()
        .expect("free");
    server.crash_and_restart();
    let b = server.client(Duration::ZERO).semaphore(&name).unwrap();
    let second = b.try_acquire().unwrap().expect("forgotten by the restart");

    let error = refreshed.refresh(Duration::from_secs(30)).unwrap_err();
    assert!(restarted(&error), "{error}");
    let error = cooled
        .release_with_cooldown(Duration::from_secs(30))
        .unwrap_err();
    assert!(restarted(&error), "{error}");
    // Nothing was written: B's lock keeps its value and its TTL.
    assert!(b.verify(second.token()).unwrap());
    let mut raw = Raw::connect(&server.address());
    assert!(raw.get(format!("{name}-2").as_bytes()).is_none());
    drop(refreshed);
    assert!(b.verify(second.token()).unwrap());
    second.release().unwrap();
}

#[test]
fn a_restarted_server_grants_no_lock_during_the_lock_delay_and_the_old_holder_is_told() {
    let mut server = Restartable::start();
    let name = unique("lock-delay");
    let delay = Duration::from_secs(3);
    let old = server.client(delay);
    // A server that has been up less than the delay grants nothing either: wait it out.
    let mut held = old
        .semaphore(&name)
        .unwrap()
        .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(30)))
        .wait_acquire()
        .unwrap();
    server.crash_and_restart();

    let sem = server.client(delay).semaphore(&name).unwrap();
    match sem.try_acquire() {
        Err(Error::LockDelay { remaining, .. }) => {
            assert!(remaining <= delay, "{remaining:?}");
        }
        other => panic!("expected the lock-delay, got {other:?}"),
    }
    let error = held.refresh(Duration::from_secs(30)).unwrap_err();
    assert!(restarted(&error), "{error}");

    let waiting = sem.with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(30)));
    let permit = waiting
        .wait_acquire()
        .expect("granted once the delay is over");
    // memcached reports an uptime up to 2 s ahead of its real one: count from that.
    let uptime = Raw::connect(&server.address()).stat("uptime");
    assert!(
        uptime >= delay.as_secs() + 2,
        "granted {uptime} s (reported) after the restart"
    );
    permit.release().unwrap();
}

#[test]
fn fencing_numbers_keep_increasing_across_a_restart() {
    let mut server = Restartable::start();
    let name = unique("fence-restart");
    let fenced = |server: &Restartable| {
        server
            .client(Duration::ZERO)
            .semaphore(&name)
            .unwrap()
            .with_fencing()
            .unwrap()
    };
    let before = fenced(&server).try_acquire().unwrap().expect("free");
    let first = before.fence().expect("fencing is on");
    before.release().unwrap();
    server.crash_and_restart();
    let after = fenced(&server).try_acquire().unwrap().expect("free");
    assert!(after.fence().expect("fencing is on") > first);
    after.release().unwrap();
}

#[test]
fn leases_above_max_lease_are_refused_unless_it_is_raised() {
    let server = Restartable::start();
    let client = server.client(Duration::ZERO);
    let error = client
        .semaphore("long")
        .unwrap()
        .with_ttl(Duration::from_secs(301))
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidConfig(text) if text.contains("max_lease")),
        "{error}"
    );
    let mut permit = client
        .semaphore("long")
        .unwrap()
        .try_acquire()
        .unwrap()
        .unwrap();
    assert!(matches!(
        permit.refresh(Duration::from_secs(600)),
        Err(Error::InvalidConfig(_))
    ));
    let raised = builder()
        .servers(&server.address())
        .max_lease(Duration::from_secs(600))
        .lock_delay(Duration::ZERO)
        .build()
        .unwrap();
    let sem = raised
        .semaphore("long")
        .unwrap()
        .with_ttl(Duration::from_secs(600))
        .unwrap();
    assert_eq!(sem.ttl(), Some(Duration::from_secs(600)));
    permit.release().unwrap();
}

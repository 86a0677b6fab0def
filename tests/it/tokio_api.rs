//! The async (tokio) flavour: the same behaviour as the blocking API, plus cancellation.

use std::time::{Duration, Instant};

use memsem::{Client, Error, LockOrWait, LostReason, Tokio, WaitPolicy};

use crate::harness::{Memcached, unique};

async fn client(server: &Memcached) -> Client<Tokio> {
    crate::harness::builder()
        .servers(&server.address())
        .io_timeout(Duration::from_millis(400))
        .connect_timeout(Duration::from_millis(400))
        .build_async()
        .await
        .expect("async client")
}

fn policy(poll_ms: u64, max_wait_ms: u64) -> WaitPolicy {
    WaitPolicy::new()
        .poll_time(Duration::from_millis(poll_ms))
        .max_wait(Duration::from_millis(max_wait_ms))
}

/// Takes the free lock `name`.
async fn hold(client: &Client<Tokio>, name: &str) -> memsem::Permit<Tokio> {
    client
        .semaphore(name)
        .unwrap()
        .try_acquire()
        .await
        .unwrap()
        .expect("a free lock")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls `check` until it is true, for up to `limit`.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[test]
fn async_clients_contend_and_release_lets_the_other_in() {
    // Containers start outside the runtime (testcontainers' blocking runner has its own).
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-contend");
        let a = client(&server).await.semaphore(&name).unwrap();
        let b = client(&server).await.semaphore(&name).unwrap();
        let permit = a.try_acquire().await.unwrap().expect("free");
        assert!(b.try_acquire().await.unwrap().is_none());
        assert!(permit.is_held().await.unwrap());
        assert_eq!(
            server
                .raw()
                .token(format!("__lock__{name}").as_bytes())
                .as_deref(),
            Some(permit.token())
        );
        permit.release().await.unwrap();
        b.try_acquire()
            .await
            .unwrap()
            .expect("free after release")
            .release()
            .await
            .unwrap();
    });
}

#[test]
fn async_release_after_expiry_reports_lock_lost_and_keeps_the_new_holder() {
    // Containers start outside the runtime (testcontainers' blocking runner has its own).
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-expired");
        let a = client(&server)
            .await
            .semaphore(&name)
            .unwrap()
            .with_ttl(Duration::from_secs(1))
            .unwrap();
        let b = client(&server)
            .await
            .semaphore(&name)
            .unwrap()
            .with_wait_policy(policy(50, 10_000));
        let old = a.try_acquire().await.unwrap().unwrap();
        let new = b.wait_acquire().await.expect("lease expires, B acquires");
        let error = old.release().await.unwrap_err();
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
        assert!(new.is_held().await.unwrap());
        new.release().await.unwrap();
    });
}

#[test]
fn async_cooldown_refresh_fencing_and_permits_behave_like_the_blocking_api() {
    // Containers start outside the runtime (testcontainers' blocking runner has its own).
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-features");
        let client = client(&server).await;
        let sem = client
            .semaphore(&name)
            .unwrap()
            .with_permits(2)
            .unwrap()
            .with_fencing()
            .unwrap();
        let mut first = sem.try_acquire().await.unwrap().unwrap();
        let second = sem.try_acquire().await.unwrap().unwrap();
        assert_ne!(first.slot(), second.slot());
        assert!(second.fence().unwrap() > first.fence().unwrap());
        assert!(
            sem.try_acquire().await.unwrap().is_none(),
            "both permits taken"
        );
        assert_eq!(sem.holders().await.unwrap().len(), 2);
        first.refresh(Duration::from_secs(120)).await.unwrap();
        assert!(sem.verify(first.token()).await.unwrap());
        first
            .release_with_cooldown(Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            sem.try_acquire().await.unwrap().is_none(),
            "the cooled-down slot stays closed"
        );
        second.release().await.unwrap();
        assert!(sem.try_acquire().await.unwrap().is_some());
    });
}

#[test]
fn async_wait_acquire_times_out_within_max_wait_and_one_poll() {
    // Containers start outside the runtime (testcontainers' blocking runner has its own).
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-timeout");
        let _holder = client(&server)
            .await
            .semaphore(&name)
            .unwrap()
            .try_acquire()
            .await
            .unwrap()
            .unwrap();
        let waiter = client(&server)
            .await
            .semaphore(&name)
            .unwrap()
            .with_wait_policy(policy(100, 600));
        let started = Instant::now();
        let error = waiter.wait_acquire().await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(error, Error::Timeout { .. }), "{error}");
        assert!(
            elapsed >= Duration::from_millis(600)
                && elapsed <= Duration::from_millis(600 + 150 + 400),
            "{elapsed:?}"
        );
    });
}

#[test]
fn async_keyed_mutex_waiters_get_released() {
    // Containers start outside the runtime (testcontainers' blocking runner has its own).
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-keyed");
        let client = client(&server).await;
        let holder = hold(&client, &name).await;
        let mut raw = server.raw();
        let reads = raw.stat("cmd_get");
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let sem = client
                    .semaphore(&name)
                    .unwrap()
                    .with_wait_policy(policy(20, 10_000));
                tokio::spawn(async move {
                    matches!(sem.lock_or_wait().await.unwrap(), LockOrWait::Released)
                })
            })
            .collect();
        // Every waiter has seen the lock held once it has read the holder's value.
        raw.wait_for_stat("cmd_get", reads, 10);
        holder.release().await.unwrap();
        for waiter in waiters {
            assert!(waiter.await.unwrap());
        }
    });
}

#[test]
fn dropping_an_async_permit_releases_it_without_blocking() {
    // Containers start outside the runtime (testcontainers' blocking runner has its own).
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-drop");
        let sem = client(&server).await.semaphore(&name).unwrap();
        drop(sem.try_acquire().await.unwrap().unwrap());
        let mut raw = server.raw();
        let key = format!("__lock__{name}");
        assert!(
            eventually(Duration::from_secs(5), || raw.get(key.as_bytes()).is_none()).await,
            "released in the background"
        );
    });
}

#[test]
fn cancelling_wait_acquire_mid_wait_leaves_no_lock_held() {
    // Containers start outside the runtime (testcontainers' blocking runner has its own).
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-cancel");
        let client = client(&server).await;
        let holder = hold(&client, &name).await;
        let waiter = client
            .semaphore(&name)
            .unwrap()
            .with_wait_policy(policy(10, 60_000));
        // Cancel the waiter while it polls.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waiter.wait_acquire())
                .await
                .is_err()
        );
        holder.release().await.unwrap();
        let mut raw = server.raw();
        let key = format!("__lock__{name}");
        assert!(
            eventually(Duration::from_secs(5), || raw.get(key.as_bytes()).is_none()).await,
            "nothing left held"
        );
        assert!(waiter.try_acquire().await.unwrap().is_some());
    });
}

#[test]
fn cancelling_an_acquire_during_a_paused_server_leaves_no_lock_past_the_cleanup() {
    // Containers start outside the runtime (testcontainers' blocking runner has its own).
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-cancel-paused");
        let client = client(&server).await;
        let sem = client
            .semaphore(&name)
            .unwrap()
            .with_wait_policy(policy(50, 60_000));
        drop(sem.try_acquire().await.unwrap()); // warm the pool
        server.pause();
        // The add goes out and gets no answer; the future is dropped mid-flight.
        let cancelled = tokio::time::timeout(Duration::from_millis(250), sem.wait_acquire()).await;
        assert!(cancelled.is_err(), "no false acquire while frozen");
        server.unpause();
        // The add lands when the server resumes; the clean-up deletes it long before the 60 s TTL.
        let other = crate::harness::builder()
            .servers(&server.address())
            .build_async()
            .await
            .unwrap();
        let other = other
            .semaphore(&name)
            .unwrap()
            .with_wait_policy(policy(50, 15_000));
        let permit = other
            .wait_acquire()
            .await
            .expect("the cancelled acquire left nothing held");
        permit.release().await.unwrap();
        // Warm-up, the add cancelled in flight (it did land), and the other client's lock.
        let stored = server.raw().stat("total_items");
        assert!(
            stored >= 3,
            "the cancelled add landed and was cleaned up: {stored} items stored"
        );
    });
}

#[test]
fn tasks_on_a_current_thread_runtime_make_progress_while_one_waits() {
    let server = Memcached::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = client(&server).await;
        let name = unique("async-progress");
        let _holder = hold(&client, &name).await;
        let waiter = client
            .semaphore(&name)
            .unwrap()
            .with_wait_policy(policy(50, 1_500));
        let waiting = tokio::spawn(async move { waiter.wait_acquire().await.map(|_| ()) });
        // While the waiter sleeps between polls, 100 other tasks lock their own names.
        let started = Instant::now();
        let others: Vec<_> = (0..100)
            .map(|i| {
                let sem = client.semaphore(&format!("{name}-{i}")).unwrap();
                tokio::spawn(async move {
                    sem.try_acquire()
                        .await
                        .unwrap()
                        .unwrap()
                        .release()
                        .await
                        .unwrap()
                })
            })
            .collect();
        for other in others {
            other.await.unwrap();
        }
        let others_done = started.elapsed();
        assert!(
            !waiting.is_finished(),
            "the waiter is still waiting when the others are done"
        );
        assert!(matches!(waiting.await.unwrap(), Err(Error::Timeout { .. })));
        println!(
            "100 tasks locked and released their names in {others_done:?} while one task waited"
        );
    });
}

#[test]
fn async_keep_alive_holds_past_the_ttl_and_signals_loss() {
    let server = Memcached::start();
    runtime().block_on(async {
        let name = unique("async-keepalive");
        let ttl = Duration::from_secs(2);
        let client = client(&server).await;
        let sem = client.semaphore(&name).unwrap().with_ttl(ttl).unwrap();
        let held = sem.try_acquire().await.unwrap().unwrap().keep_alive();
        let started = Instant::now();
        while started.elapsed() < ttl * 3 {
            assert!(
                sem.try_acquire().await.unwrap().is_none(),
                "lost after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(!held.is_lost());
        // Delete the key from outside: the next refresh finds it gone.
        assert!(server.raw().delete(format!("__lock__{name}").as_bytes()));
        let deleted = Instant::now();
        tokio::time::timeout(ttl, held.lost())
            .await
            .expect("loss signalled");
        assert!(
            deleted.elapsed() <= ttl / 3 + Duration::from_millis(500),
            "{:?}",
            deleted.elapsed()
        );
        assert!(held.is_lost() && held.lost_reason().is_some());
        assert!(held.into_permit().await.is_none(), "nothing to release");
        // A healthy one releases on request.
        let held = sem.try_acquire().await.unwrap().unwrap().keep_alive();
        held.release().await.unwrap();
        assert!(!sem.is_locked().await.unwrap());
    });
}

#[test]
fn two_hundred_tasks_reading_a_cold_key_cause_one_backend_fetch() {
    let server = Memcached::start();
    let stdout = crate::processes::run_example("tokio_stampede", &[&server.address()]);
    assert!(
        stdout.contains("200 served, backend fetches: 1"),
        "{stdout}"
    );
}

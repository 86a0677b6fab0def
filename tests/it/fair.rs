//! FIFO hand-off (`Fairness::Fifo`) against a real memcached: mutual exclusion with many
//! threads, the order waiters are served in, a waiter killed in the queue, and Perl's
//! plain-`add` clients on the same name. (The faults run in FIFO mode in chaos.rs.)

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use memsem::{Fairness, Protocol, Semaphore, WaitPolicy};

use crate::harness::{Memcached, Raw, unique};
use crate::processes::example;

/// The queue counter of lock `name` (no namespace): (tickets drawn, last ticket handed).
fn queue(raw: &mut Raw, name: &str) -> (u64, u64) {
    let key = format!("__lock__{name}#queue");
    let value = raw.get(key.as_bytes()).map_or(0, |value| {
        String::from_utf8_lossy(&value)
            .trim()
            .parse()
            .expect("a number")
    });
    (value >> 32, value & 0xffff_ffff)
}

/// Waits until `tickets` tickets have been drawn on lock `name`.
fn wait_for_tickets(raw: &mut Raw, name: &str, tickets: u64) {
    crate::harness::wait_until(&format!("{tickets} tickets drawn"), || {
        queue(raw, name).0 >= tickets
    });
}

/// Another process queued on `name` (the chaos example's `queue`), once it holds ticket
/// `ticket`.
fn queued_process(server: &Memcached, raw: &mut Raw, name: &str, ticket: u64) -> Child {
    let child = Command::new(example("chaos"))
        .args(["queue", &server.address(), name])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the queued process");
    wait_for_tickets(raw, name, ticket);
    child
}

/// SIGKILLs a queued process and reaps it.
fn kill(child: &mut Child) {
    child.kill().expect("SIGKILL the queued process");
    child.wait().expect("reap it");
}

/// What a waiting thread reports: the outcome of its wait and release, and the wait's length.
type Waited = (memsem::Result<memsem::Result<()>>, Duration);

/// A thread of ours that waits for `sem`, then releases it.
fn waiter(sem: &Semaphore) -> thread::JoinHandle<Waited> {
    let sem = sem.clone();
    thread::spawn(move || {
        let started = Instant::now();
        let permit = sem.wait_acquire();
        (permit.map(|permit| permit.release()), started.elapsed())
    })
}

fn fifo(sem: Semaphore) -> Semaphore {
    sem.with_fairness(Fairness::Fifo)
        .expect("a short name")
        .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(60)))
}

/// `threads` threads take `sem` `rounds` times each, holding it ~1 ms; returns the most
/// holders seen inside at once and the acquisitions counted inside.
fn contend(sem: &Semaphore, threads: usize, rounds: usize) -> (usize, u64) {
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (sem, inside, most, count) = (
                sem.clone(),
                Arc::clone(&inside),
                Arc::clone(&most),
                Arc::clone(&count),
            );
            thread::spawn(move || {
                for _ in 0..rounds {
                    let permit = sem.wait_acquire().expect("acquired within 60 s");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // The critical section's work.
                    thread::sleep(Duration::from_millis(1));
                    count.fetch_add(1, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    permit.release().expect("release");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("a contender panicked");
    }
    (most.load(Ordering::SeqCst), count.load(Ordering::SeqCst))
}

#[test]
fn fifo_threads_never_overlap_and_the_lock_is_handed_over() {
    let server = Memcached::start();
    let name = unique("fair-mutex");
    let sem = fifo(server.semaphore(&name));
    let (threads, rounds) = (12, 25);
    let (most, count) = contend(&sem, threads, rounds);
    let (drawn, handed) = queue(&mut server.raw(), &name);
    println!("fifo mutex: {count} acquisitions, {drawn} tickets drawn, {handed} handed");
    assert_eq!(most, 1, "two holders of a FIFO lock at once");
    assert_eq!(count, (threads * rounds) as u64);
    assert!(handed > 0, "no hand-off happened: the queue was not used");
    assert_eq!(
        server.raw().get(format!("__lock__{name}").as_bytes()),
        None,
        "the lock is left free (not reserved) when nobody waits"
    );
}

/// The classic dialect has no auto-creating `ma`: tickets are `incr`, the counter is created
/// by an `add` when `incr` finds none (see `Transport::bump`). The queue must work the same.
#[test]
fn fifo_in_the_classic_dialect_never_overlaps_and_hands_over() {
    let server = Memcached::start();
    let name = unique("fair-classic");
    let client = crate::harness::builder()
        .servers(&server.address())
        .protocol(Protocol::Classic)
        .build()
        .expect("client");
    let sem = fifo(client.semaphore(&name).expect("a valid name"));
    let (threads, rounds) = (8, 20);
    let (most, count) = contend(&sem, threads, rounds);
    let (drawn, handed) = queue(&mut server.raw(), &name);
    println!("fifo classic: {count} acquisitions, {drawn} tickets drawn, {handed} handed");
    assert_eq!(most, 1, "two holders of a FIFO lock at once");
    assert_eq!(count, (threads * rounds) as u64);
    assert!(
        drawn > 0,
        "no ticket was drawn: the counter was never created"
    );
    assert!(handed > 0, "no hand-off happened: the queue was not used");
}

#[test]
fn fifo_with_n_permits_never_exceeds_n_holders() {
    let server = Memcached::start();
    let name = unique("fair-permits");
    let sem = fifo(server.semaphore(&name).with_permits(3).expect("3 permits"));
    let (threads, rounds) = (12, 15);
    let (most, count) = contend(&sem, threads, rounds);
    let (drawn, handed) = queue(&mut server.raw(), &name);
    println!(
        "fifo 3 permits: {count} acquisitions, at most {most} inside, {drawn} tickets, {handed} handed"
    );
    assert!(most <= 3, "{most} holders of a 3-permit semaphore at once");
    assert_eq!(count, (threads * rounds) as u64);
    assert!(handed > 0, "no hand-off happened: the queue was not used");
}

#[test]
fn fifo_serves_waiters_in_the_order_they_queued() {
    let server = Memcached::start();
    let name = unique("fair-order");
    let sem = fifo(server.semaphore(&name));
    let mut raw = server.raw();
    let holder = sem.try_acquire().expect("memcached answers").expect("free");
    let order = Arc::new(Mutex::new(Vec::new()));
    let waiters = 6;
    let mut handles = Vec::new();
    for waiter in 1..=waiters {
        let (sem, order) = (sem.clone(), Arc::clone(&order));
        handles.push(thread::spawn(move || {
            let permit = sem.wait_acquire().expect("acquired within 60 s");
            order.lock().unwrap().push(waiter);
            permit.release().expect("release");
        }));
        // The next waiter starts once this one holds its ticket.
        wait_for_tickets(&mut raw, &name, waiter);
    }
    holder.release().expect("release");
    for handle in handles {
        handle.join().expect("a waiter panicked");
    }
    let order = order.lock().unwrap().clone();
    println!("served in order {order:?}");
    assert_eq!(order, (1..=waiters).collect::<Vec<_>>());
}

#[test]
fn a_waiter_killed_in_the_queue_does_not_stall_it() {
    let server = Memcached::start();
    let name = unique("fair-dead");
    let sem = fifo(server.semaphore(&name));
    let mut raw = server.raw();
    let holder = sem.try_acquire().expect("memcached answers").expect("free");
    // Ticket 1: another process, killed while it waits; ticket 2: a thread of ours.
    let mut doomed = queued_process(&server, &mut raw, &name, 1);
    let next = waiter(&sem);
    wait_for_tickets(&mut raw, &name, 2);
    kill(&mut doomed);
    holder.release().expect("release");
    // The release reserved the lock for ticket 1, which nobody will claim.
    let (outcome, waited) = next.join().expect("the waiter panicked");
    outcome
        .expect("ticket 2 got the lock after the dead ticket 1")
        .expect("release");
    let mut line = String::new();
    let mut stdout = BufReader::new(doomed.stdout.take().expect("piped"));
    stdout.read_line(&mut line).expect("read");
    assert_eq!(line, "", "the killed process never held the lock");
    println!("ticket 2 acquired {waited:?} after queueing, past the dead ticket 1");
}

#[test]
fn a_dead_head_ticket_and_a_key_freed_without_hand_off_do_not_stall_the_queue() {
    let server = Memcached::start();
    let name = unique("fair-stuck");
    let sem = fifo(server.semaphore(&name));
    let mut raw = server.raw();
    // A holder that knows nothing of the queue (polling mode, its own client): its release
    // deletes the key instead of handing it over.
    let plain = server.semaphore(&name);
    let holder = plain
        .try_acquire()
        .expect("memcached answers")
        .expect("free");
    // Ticket 1: another process, killed while it waits: the head of the queue is dead.
    let mut doomed = queued_process(&server, &mut raw, &name, 1);
    kill(&mut doomed);
    // Ticket 2: a thread of ours, behind the dead head.
    let next = waiter(&sem);
    wait_for_tickets(&mut raw, &name, 2);
    holder.release().expect("release");
    assert_eq!(
        queue(&mut raw, &name),
        (2, 0),
        "nobody handed ticket 1 its turn"
    );
    // The key is free and the head will never take it: ticket 2 notices the standing
    // queue and takes the lock.
    let (outcome, waited) = next.join().expect("the waiter panicked");
    outcome
        .expect("ticket 2 got the lock past the dead head")
        .expect("release");
    println!("ticket 2 acquired {waited:?} after queueing, past a dead head and a freed key");
}

#[test]
fn memsem_run_fifo_serves_queued_processes_in_order() {
    let server = Memcached::start();
    let name = unique("fair-cli");
    let sem = fifo(server.semaphore(&name));
    let mut raw = server.raw();
    let holder = sem.try_acquire().expect("memcached answers").expect("free");
    let log = std::env::temp_dir().join(unique("memsem-fair-cli"));
    let run = |who: &str| {
        crate::cli::memsem(&server)
            .args(["run", "--fifo", "--wait", "60s", &name, "--", "sh", "-c"])
            .arg(format!("echo {who} >> {}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("memsem starts")
    };
    // Three processes queue one after the other (tickets 1, 2, 3), then the holder leaves.
    let mut queued = Vec::new();
    for (ticket, who) in ["first", "second", "third"].into_iter().enumerate() {
        queued.push(run(who));
        wait_for_tickets(&mut raw, &name, ticket as u64 + 1);
    }
    holder.release().expect("release");
    for child in queued {
        let output = child.wait_with_output().expect("memsem ends");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let order = std::fs::read_to_string(&log).expect("the commands wrote");
    std::fs::remove_file(&log).unwrap();
    assert_eq!(
        order, "first\nsecond\nthird\n",
        "served in the order they queued"
    );
}

/// The Perl implementation of the Cache::Memcached::Semaphore protocol.
const SEMAPHORE_PL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/perl/semaphore.pl");

#[test]
fn perl_plain_add_clients_stay_excluded_from_a_fifo_lock() {
    let server = Memcached::start();
    let name = unique("fair-perl");
    let dir = std::env::temp_dir().join(unique("memsem-fair-perl"));
    std::fs::create_dir_all(&dir).unwrap();
    let counter = dir.join("count");
    std::fs::write(&counter, b"0").unwrap();
    let (perl_workers, threads, rounds) = (2, 3, 60);
    let servers = format!("{}:1", server.address());
    let perls: Vec<_> = (0..perl_workers)
        .map(|_| {
            Command::new("perl")
                .arg(SEMAPHORE_PL)
                .args(["worker", &servers, "", &name])
                .arg(rounds.to_string())
                .arg(counter.to_str().unwrap())
                .arg("500")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("perl runs: apt-get install -y perl libcache-memcached-perl")
        })
        .collect();
    let sem = fifo(server.semaphore(&name));
    let overlaps = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (sem, counter, overlaps) = (sem.clone(), counter.clone(), Arc::clone(&overlaps));
            thread::spawn(move || {
                let inside = counter.with_extension("inside");
                for _ in 0..rounds {
                    let permit = sem.wait_acquire().expect("acquired within 60 s");
                    // The marker Perl's workers create too: existing = somebody is inside.
                    let marker = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&inside);
                    if marker.is_err() {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    let n: u64 = std::fs::read_to_string(&counter)
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    std::fs::write(&counter, (n + 1).to_string()).unwrap();
                    if marker.is_ok() {
                        std::fs::remove_file(&inside).unwrap();
                    }
                    permit.release().expect("release");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("a memsem thread panicked");
    }
    for perl in perls {
        let output = perl.wait_with_output().expect("wait for perl");
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{}", stdout.trim());
        assert!(
            output.status.success(),
            "perl worker failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("overlaps 0"), "{stdout}");
    }
    let count: u64 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (drawn, handed) = queue(&mut server.raw(), &name);
    println!("perl + fifo: count {count}, {drawn} tickets drawn, {handed} handed");
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "memsem saw Perl inside");
    assert_eq!(count, (rounds * (perl_workers + threads)) as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fifo_tasks_on_tokio_never_overlap_and_a_cancelled_waiter_does_not_stall_the_queue() {
    let server = Memcached::start();
    let name = unique("fair-tokio");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let client = crate::harness::builder()
            .servers(&server.address())
            .build_async()
            .await
            .expect("async client");
        let sem = client
            .semaphore(&name)
            .and_then(|sem| sem.with_fairness(Fairness::Fifo))
            .expect("a valid name")
            .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(60)));
        // Ticket 1 is dropped mid-wait (cancelled); ticket 2 must still get the lock.
        let holder = sem.try_acquire().await.expect("answers").expect("free");
        let cancelled = tokio::spawn({
            let sem = sem.clone();
            async move { sem.wait_acquire().await.map(|_| ()) }
        });
        let (address, watched) = (server.address(), name.clone());
        tokio::task::spawn_blocking(move || {
            wait_for_tickets(&mut Raw::connect(&address), &watched, 1)
        })
        .await
        .expect("the ticket watcher");
        cancelled.abort();
        assert!(cancelled.await.is_err(), "the first waiter was cancelled");
        holder.release().await.expect("release");
        let next = sem
            .wait_acquire()
            .await
            .expect("the queue moves past a cancelled ticket");
        next.release().await.expect("release");

        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (sem, inside, most) = (sem.clone(), Arc::clone(&inside), Arc::clone(&most));
                tokio::spawn(async move {
                    for _ in 0..10 {
                        let permit = sem.wait_acquire().await.expect("acquired within 60 s");
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                        permit.release().await.expect("release");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a task panicked");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "two tasks held the FIFO lock at once"
        );
    });
    let (drawn, handed) = queue(&mut server.raw(), &name);
    println!("tokio fifo: {drawn} tickets drawn, {handed} handed");
    assert!(handed > 1, "the queue was not used");
}

//! memsem's cost and behaviour under contention, measured against a floor in the same run.
//!
//! ```text
//! cargo bench --all-features --bench scenarios  # the full run, about 3 minutes (7 needs tokio)
//! cargo bench --bench scenarios              # the same without the tokio tasks
//! cargo bench --bench scenarios -- --smoke   # every scenario at a trivial size
//! MEMSEM_BENCH_SMOKE=1 cargo bench --bench scenarios
//! cargo test --bench scenarios               # also the smoke size (no --bench argument)
//! ```
//!
//! It starts its own memcached (`memcached` must be installed) on a free loopback port and
//! prints markdown tables:
//! 1. uncontended acquire+release pairs: memsem vs the floor (a raw meta add + meta delete
//!    with the same client library, `memcache::exp::MetaClient`) vs the Perl module's
//!    protocol (add, get, delete through Cache::Memcached, tests/perl/semaphore.pl);
//! 2. many names: T threads each locking its own names, pairs/s vs the floor;
//! 3. contention on one name: W waiters holding H, for memsem's default wait policy and the
//!    fixed policies of other lock libraries;
//! 4. N permits: the acquire cost for N = 1, 8, 64 with half the slots held by others;
//! 5. the CLI: `memsem run NAME -- true` vs `true` vs `flock LOCKFILE true`;
//! 6. contention with separate processes (this executable again, `--worker`) vs threads;
//! 7. 1,000 waiters as tokio tasks vs as threads (feature `tokio`), measured in child
//!    processes (`--crowd`) so that their memory figures are their own;
//! 8. uncontended acquire+release over TCP, a unix socket and TLS, each against a raw
//!    socket (or rustls stream) sending the same two meta commands;
//! 9. lock+unlock through `memsem serve keyedmutexd` and `memsem serve lock-server` vs the
//!    library call (needs the `memsem` binary built);
//! 10. meta vs classic: acquire+release pairs in each dialect, on memcached and through
//!     nutcracker, as multiples of the raw round trip on the same path;
//! 11. fair waiting: FIFO hand-off vs polling, with the physical limits (a 1 ms sleep, a
//!     round trip) measured in the same run.

#[allow(dead_code)]
#[path = "../it/procs.rs"]
mod procs;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use memcache::exp::{Delete, MetaClient, Set, SetMode};
use memsem::{Client, Error, WaitPolicy};

use procs::Memcached;

#[path = "scenarios/cli.rs"]
mod cli;
#[path = "scenarios/crowd.rs"]
mod crowd;
#[path = "scenarios/dialects.rs"]
mod dialects;
#[path = "scenarios/fair.rs"]
mod fair;
#[path = "scenarios/gateways.rs"]
mod gateways;
#[allow(dead_code)]
#[path = "../it/nutcracker.rs"]
mod nutcracker;
#[path = "scenarios/permits.rs"]
mod permits;
#[path = "scenarios/processes.rs"]
mod processes;
#[path = "scenarios/transports.rs"]
mod transports;

const SEMAPHORE_PL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/perl/semaphore.pl");

/// Sizes of one run.
struct Sizes {
    pairs: usize,
    many_names_for: Duration,
    threads: &'static [usize],
    waiters: &'static [usize],
    holds: &'static [Duration],
    contend_for: Duration,
    permit_counts: &'static [u32],
    acquires: usize,
    cli_runs: usize,
    process_waiters: usize,
    crowd_waiters: usize,
    crowd_names: usize,
    crowd_for: Duration,
    fair_waiters: usize,
    limit_samples: usize,
}

const FULL: Sizes = Sizes {
    pairs: 5_000,
    many_names_for: Duration::from_secs(1),
    threads: &[1, 2, 8, 32],
    waiters: &[4, 16, 64],
    holds: &[Duration::from_millis(1), Duration::from_millis(50)],
    contend_for: Duration::from_secs(3),
    permit_counts: &[1, 8, 64],
    acquires: 2_000,
    cli_runs: 100,
    process_waiters: 16,
    crowd_waiters: 1_000,
    crowd_names: 20,
    crowd_for: Duration::from_secs(3),
    fair_waiters: 64,
    limit_samples: 1_000,
};

const SMOKE: Sizes = Sizes {
    pairs: 20,
    many_names_for: Duration::from_millis(50),
    threads: &[1, 2],
    waiters: &[4],
    holds: &[Duration::from_millis(1), Duration::from_millis(50)],
    contend_for: Duration::from_millis(150),
    permit_counts: &[1, 8],
    acquires: 20,
    cli_runs: 2,
    process_waiters: 2,
    crowd_waiters: 20,
    crowd_names: 2,
    crowd_for: Duration::from_millis(200),
    fair_waiters: 8,
    limit_samples: 20,
};

/// A client builder for the benchmarks: every scenario starts a fresh memcached, which the
/// default lock-delay would keep from granting locks.
fn builder() -> memsem::ClientBuilder {
    Client::builder().lock_delay(Duration::ZERO)
}

/// A client for `address` with the benchmarks' settings.
fn client(address: &str) -> Result<Client, Error> {
    builder().servers(address).build()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // This executable again, as one of the processes of scenarios 6 and 7.
    match args.first().map(String::as_str) {
        Some("--worker") => return processes::worker(&args[1..]),
        Some("--crowd") => return crowd::child(&args[1..]),
        _ => {}
    }
    // `cargo bench` passes --bench; `cargo test --bench scenarios` does not: then smoke.
    let smoke = args.iter().any(|a| a == "--smoke")
        || std::env::var("MEMSEM_BENCH_SMOKE").is_ok_and(|v| v == "1")
        || !args.iter().any(|a| a == "--bench");
    let sizes = if smoke { &SMOKE } else { &FULL };

    let server = Memcached::start("127.0.0.1", None);
    let address = server.address();
    println!(
        "memsem scenarios{}: {} cores, {}, server {address}\n",
        if smoke { " (smoke size)" } else { "" },
        thread::available_parallelism().map_or(0, |n| n.get()),
        memcached_version(&address),
    );

    // `-- --only N[,N...]` runs only those tables (1-11).
    let only: Option<Vec<u32>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|at| args.get(at + 1))
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        });
    let run = |table: u32| only.as_ref().is_none_or(|tables| tables.contains(&table));
    if run(1) {
        // One worker thread: both clients' connections are then served by the same thread.
        // With memcached's default of 4 on 2 cores, a connection's round trip is ~50 or ~150
        // µs depending on which worker it lands on, which swamps the difference measured here.
        let single = Memcached::start_with("127.0.0.1", None, &["-t", "1"]);
        uncontended_pairs(&single.address(), sizes);
    }
    if run(2) {
        many_names(&address, sizes);
    }
    if run(3) {
        contention(&address, sizes);
    }
    if run(4) {
        permits::acquire_cost(&address, sizes);
    }
    if run(5) {
        cli::wall_time(&address, sizes);
    }
    if run(6) {
        processes::versus_threads(&address, sizes);
    }
    if run(7) {
        crowd::tasks_vs_threads(&address, sizes);
    }
    if run(8) {
        transports::over_transports(sizes);
    }
    if run(9) {
        gateways::lock_unlock(&address, sizes);
    }
    if run(10) {
        dialects::meta_vs_classic(sizes);
    }
    if run(11) {
        fair::fifo_vs_polling(&address, sizes);
    }
}

fn memcached_version(address: &str) -> String {
    let mut stream = procs::connect(address).expect("connect to memcached");
    stream.write_all(b"version\r\n").expect("send version");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read version");
    format!("memcached {}", line.trim().trim_start_matches("VERSION "))
}

/// The floor: one meta add and one meta delete, as memsem sends them minus the CAS checks.
struct Floor(MetaClient);

impl Floor {
    fn connect(address: &str) -> Floor {
        // memsem's defaults: 8 idle connections kept per server.
        let client = MetaClient::builder()
            .max_idle(8)
            .connect(address)
            .expect("connect the floor client");
        Floor(client)
    }

    fn pair(&self, key: &[u8]) {
        let added = self
            .0
            .run(
                Set::new(key, "0123456789abcdef0123456789abcdef")
                    .mode(SetMode::Add)
                    .ttl_raw(60),
            )
            .expect("meta add");
        assert!(added.applied(), "the floor's key was taken");
        self.0.run(Delete::new(key)).expect("meta delete");
    }
}

fn median_us(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

fn uncontended_pairs(address: &str, sizes: &Sizes) {
    let n = sizes.pairs;
    let warm = n / 10;

    // Interleaved, one floor pair then one memsem pair, so that a machine whose load drifts
    // during the run weighs on both alike.
    let floor = Floor::connect(address);
    let client = crate::client(address).expect("memsem client");
    let sem = client.semaphore("bench-pair").expect("a valid name");
    let (mut floor_samples, mut memsem_samples) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..warm + n {
        let started = Instant::now();
        floor.pair(b"bench-floor-pair");
        let floor_took = started.elapsed();
        let started = Instant::now();
        let permit = sem.try_acquire().expect("memcached answers").expect("free");
        permit.release().expect("release");
        let memsem_took = started.elapsed();
        if i >= warm {
            floor_samples.push(floor_took);
            memsem_samples.push(memsem_took);
        }
    }
    let floor_us = median_us(floor_samples);
    let memsem_us = median_us(memsem_samples);

    let perl = perl_pairs(address, n);

    println!("## 1. Uncontended acquire+release pair (median of {n}, µs)\n");
    println!("| implementation | round trips | µs per pair | × floor |");
    println!("|---|---:|---:|---:|");
    println!("| floor: meta add + meta delete (memcache::exp) | 2 | {floor_us:.1} | 1.00 |");
    println!(
        "| memsem try_acquire + release | 2 | {memsem_us:.1} | {:.2} |",
        memsem_us / floor_us
    );
    match perl {
        Ok(perl_us) => println!(
            "| Perl protocol: add, get, delete (Cache::Memcached 1.30) | 3 | {perl_us:.1} | {:.2} |",
            perl_us / floor_us
        ),
        Err(why) => println!("| Perl protocol | 3 | n/a: {why} | |"),
    }
    println!();
}

/// The Perl module's protocol timed inside one perl process: median µs per pair.
fn perl_pairs(address: &str, n: usize) -> Result<f64, String> {
    let output = Command::new("perl")
        .arg(SEMAPHORE_PL)
        .args(["bench", &format!("{address}:1"), "bench:", "perl-pair"])
        .arg(n.to_string())
        .output()
        .map_err(|e| format!("perl not runnable ({e}): apt-get install -y perl"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    stdout
        .split_whitespace()
        .skip_while(|&w| w != "median_us")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unexpected perl output {stdout:?}"))
}

/// Runs `body(thread index, stop time)` on `threads` threads; returns the sum of what they
/// return.
fn on_threads(
    threads: usize,
    run_for: Duration,
    body: impl Fn(usize, Instant) -> u64 + Send + Sync + 'static,
) -> u64 {
    let body = Arc::new(body);
    let stop = Instant::now() + run_for;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let body = Arc::clone(&body);
            thread::spawn(move || body(t, stop))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a bench thread panicked"))
        .sum()
}

fn many_names(address: &str, sizes: &Sizes) {
    const NAMES_PER_THREAD: usize = 16;
    let secs = sizes.many_names_for.as_secs_f64();
    println!(
        "## 2. Many names: T threads, each locking its own {NAMES_PER_THREAD} names in turn ({secs} s each)\n"
    );
    println!("| threads | floor pairs/s | memsem pairs/s | memsem ÷ floor |");
    println!("|---:|---:|---:|---:|");
    for &threads in sizes.threads {
        let floor = Arc::new(Floor::connect(address));
        let floor_pairs = on_threads(threads, sizes.many_names_for, move |t, stop| {
            let keys: Vec<Vec<u8>> = (0..NAMES_PER_THREAD)
                .map(|i| format!("bench-floor-{t}-{i}").into_bytes())
                .collect();
            let mut pairs = 0;
            while Instant::now() < stop {
                floor.pair(&keys[pairs as usize % NAMES_PER_THREAD]);
                pairs += 1;
            }
            pairs
        });

        let client = crate::client(address).expect("memsem client");
        let memsem_pairs = on_threads(threads, sizes.many_names_for, move |t, stop| {
            let sems: Vec<_> = (0..NAMES_PER_THREAD)
                .map(|i| client.semaphore(&format!("bench-many-{t}-{i}")).unwrap())
                .collect();
            let mut pairs = 0;
            while Instant::now() < stop {
                let sem = &sems[pairs as usize % NAMES_PER_THREAD];
                let permit = sem.try_acquire().expect("memcached answers").expect("free");
                permit.release().expect("release");
                pairs += 1;
            }
            pairs
        });
        let (floor_rate, memsem_rate) = (floor_pairs as f64 / secs, memsem_pairs as f64 / secs);
        println!(
            "| {threads} | {floor_rate:.0} | {memsem_rate:.0} | {:.2} |",
            memsem_rate / floor_rate
        );
    }
    println!();
}

/// The wait policies compared: memsem's default and other lock libraries' fixed ones.
fn policies() -> Vec<(&'static str, WaitPolicy)> {
    let ms = Duration::from_millis;
    vec![
        ("memsem default (100 ms ± 50%)", WaitPolicy::new()),
        (
            "Symfony (100 ms ± 10%)",
            WaitPolicy::new().poll_time(ms(100)).jitter(0.1),
        ),
        (
            "Laravel (250 ms fixed)",
            WaitPolicy::new().poll_time(ms(250)).jitter(0.0),
        ),
        (
            "redsync (uniform 50–250 ms)",
            WaitPolicy::new().poll_time(ms(150)).jitter(0.667),
        ),
        (
            "node-redlock (200 ± 100 ms)",
            WaitPolicy::new().poll_time(ms(200)).jitter(0.5),
        ),
        (
            "Perl module (tight loop)",
            WaitPolicy::new().poll_time(Duration::ZERO).jitter(0.0),
        ),
    ]
}

/// One acquisition seen by a waiter.
struct Acquisition {
    waiter: usize,
    acquired: Instant,
    releasing: Instant,
}

/// What the waiters of one scenario saw.
#[derive(Default)]
struct Log {
    acquisitions: Vec<Acquisition>,
    longest_wait: Duration,
}

/// The server's `stats` counters.
fn stats(address: &str) -> HashMap<String, u64> {
    let mut stream = procs::connect(address).expect("connect to memcached");
    stream.write_all(b"stats\r\n").expect("send stats");
    let mut stats = HashMap::new();
    for line in BufReader::new(stream).lines() {
        let line = line.expect("read stats");
        if line == "END" {
            break;
        }
        let mut words = line.split_whitespace().skip(1);
        if let (Some(name), Some(value)) = (words.next(), words.next()) {
            stats.insert(name.to_string(), value.parse::<u64>().unwrap_or(0));
        }
    }
    stats
}

/// The memcached commands executed so far (gets, sets, deletes, touches, arithmetic).
fn commands(address: &str) -> u64 {
    let stats = stats(address);
    [
        "cmd_get",
        "cmd_set",
        "cmd_touch",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "decr_misses",
    ]
    .iter()
    .map(|name| stats.get(*name).copied().unwrap_or(0))
    .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn contention(address: &str, sizes: &Sizes) {
    let secs = sizes.contend_for.as_secs_f64();
    println!("## 3. Contention on one name ({secs} s per row)\n");
    println!(
        "Each waiter loops: wait_acquire, hold, release, then think for `think` before \
         queueing again. Hand-over = the next acquisition is by another waiter; gap = from the \
         holder starting its release to that waiter's acquire returning. Max rate = 1 / hold. \
         Longest wait counts waits still running at the end.\n"
    );
    contention_header();
    let client = crate::client(address).expect("memsem client");
    let mut rows = Vec::new();
    for &hold in sizes.holds {
        for &waiters in sizes.waiters {
            for (label, policy) in policies() {
                rows.push((waiters, hold, hold, label, policy));
            }
        }
    }
    // The worst case for a polling lock: a holder that queues again at once keeps the lock.
    for &waiters in sizes.waiters {
        let hold = sizes.holds[0];
        rows.push((
            waiters,
            hold,
            Duration::ZERO,
            policies()[0].0,
            WaitPolicy::new(),
        ));
    }
    for (run, (waiters, hold, think, label, policy)) in rows.into_iter().enumerate() {
        let sem = client
            .semaphore(&format!("bench-contended-{run}"))
            .expect("a valid name");
        let times = Times {
            hold,
            think,
            stop: Instant::now() + sizes.contend_for,
        };
        let (log, commands) = contend_on_threads(address, &sem, waiters, &policy, times);
        let row = Row {
            waiters,
            hold,
            think,
            label: label.to_string(),
            secs,
            commands,
        };
        report_contention(&row, &log);
    }
    println!();
}

/// The header of a contention table (scenarios 3 and 6).
fn contention_header() {
    println!(
        "| waiters | hold | think | policy | acq/s | × max rate | hand-overs | gap p50 ms | gap p99 ms | commands/acq | Jain | longest wait ms |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
}

/// `waiters` threads looping on `sem` until `times.stop`: what they saw and the memcached
/// commands they cost.
fn contend_on_threads(
    address: &str,
    sem: &memsem::Semaphore,
    waiters: usize,
    policy: &WaitPolicy,
    times: Times,
) -> (Log, u64) {
    let log = Arc::new(Mutex::new(Log::default()));
    let before = commands(address);
    let handles: Vec<_> = (0..waiters)
        .map(|waiter| {
            let (sem, policy, log) = (sem.clone(), policy.clone(), Arc::clone(&log));
            thread::spawn(move || waiter_loop(waiter, &sem, &policy, times, &log))
        })
        .collect();
    for handle in handles {
        handle.join().expect("a waiter panicked");
    }
    let after = commands(address);
    let log = Arc::try_unwrap(log)
        .ok()
        .expect("all waiters done")
        .into_inner()
        .expect("not poisoned");
    (log, after - before)
}

/// A waiter's timing: how long it holds, how long it thinks before queueing again, when
/// the scenario ends.
#[derive(Clone, Copy)]
struct Times {
    hold: Duration,
    think: Duration,
    stop: Instant,
}

/// One row of the contention table.
struct Row {
    waiters: usize,
    hold: Duration,
    think: Duration,
    label: String,
    secs: f64,
    commands: u64,
}

fn waiter_loop(
    waiter: usize,
    sem: &memsem::Semaphore,
    policy: &WaitPolicy,
    times: Times,
    log: &Mutex<Log>,
) {
    let Times { hold, think, stop } = times;
    loop {
        let started = Instant::now();
        let Some(left) = stop
            .checked_duration_since(started)
            .filter(|d| !d.is_zero())
        else {
            return;
        };
        let sem = sem.clone().with_wait_policy(policy.clone().max_wait(left));
        match sem.wait_acquire() {
            Ok(permit) => {
                let acquired = Instant::now();
                thread::sleep(hold);
                let releasing = Instant::now();
                permit.release().expect("release");
                let mut log = log.lock().expect("not poisoned");
                log.longest_wait = log.longest_wait.max(acquired - started);
                log.acquisitions.push(Acquisition {
                    waiter,
                    acquired,
                    releasing,
                });
                drop(log);
                thread::sleep(think);
            }
            Err(Error::Timeout { .. }) => {
                // Still waiting when the scenario ended: a wait at least this long.
                let mut log = log.lock().expect("not poisoned");
                log.longest_wait = log.longest_wait.max(started.elapsed());
                return;
            }
            Err(other) => panic!("waiter {waiter}: {other}"),
        }
    }
}

fn report_contention(row: &Row, log: &Log) {
    let Row {
        waiters,
        hold,
        think,
        ref label,
        secs,
        commands,
    } = *row;
    let mut acquisitions: Vec<&Acquisition> = log.acquisitions.iter().collect();
    acquisitions.sort_by_key(|a| a.acquired);
    // Hand-overs: the next acquisition is by another waiter (a holder re-taking its own
    // lock at once is not one).
    let mut gaps: Vec<Duration> = acquisitions
        .windows(2)
        .filter(|pair| pair[0].waiter != pair[1].waiter)
        .map(|pair| {
            pair[1]
                .acquired
                .saturating_duration_since(pair[0].releasing)
        })
        .collect();
    gaps.sort();
    let handovers = gaps.len();
    let mut per_waiter = vec![0u64; waiters];
    for a in &acquisitions {
        per_waiter[a.waiter] += 1;
    }
    let sum: f64 = per_waiter.iter().map(|&x| x as f64).sum();
    let squares: f64 = per_waiter.iter().map(|&x| (x as f64).powi(2)).sum();
    let jain = if squares > 0.0 {
        sum * sum / (waiters as f64 * squares)
    } else {
        0.0
    };
    let count = acquisitions.len();
    let rate = count as f64 / secs;
    let max_rate = 1.0 / hold.as_secs_f64();
    let per_acquisition = if count > 0 {
        format!("{:.1}", commands as f64 / count as f64)
    } else {
        format!("{commands} total")
    };
    let gap = |p: f64| {
        if gaps.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2}", ms(percentile(&gaps, p)))
        }
    };
    println!(
        "| {waiters} | {} ms | {} ms | {label} | {rate:.1} | {:.2} | {handovers} | {} | {} | {per_acquisition} | {jain:.2} | {:.0} |",
        hold.as_millis(),
        think.as_millis(),
        rate / max_rate,
        gap(0.5),
        gap(0.99),
        ms(log.longest_wait),
    );
}

//! Scenario 7 (issue 8): a crowd of waiters on a few names, as tokio tasks on the async API
//! vs as threads on the blocking API. Each side runs in a child process of its own (this
//! executable again, `--crowd`), so that its memory and thread figures are its own.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use memsem::{Error, WaitPolicy};

use crate::{Sizes, commands, ms, stats};

/// What one side of the comparison did.
#[derive(Default)]
struct Tally {
    acquisitions: u64,
    errors: u64,
    held: Duration,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.acquisitions += other.acquisitions;
        self.errors += other.errors;
        self.held += other.held;
    }
}

/// A `kB` line of /proc/self/status (VmRSS, VmHWM) or the thread count (Threads).
fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Samples the process's thread count until dropped; the most seen, not counting itself.
struct ThreadPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    sampler: Option<thread::JoinHandle<()>>,
}

impl ThreadPeak {
    fn start() -> ThreadPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(status("Threads") as usize - 1, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(5));
                }
            })
        };
        ThreadPeak {
            stop,
            peak,
            sampler: Some(sampler),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            sampler.join().expect("the sampler panicked");
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// The crowd's shape.
#[derive(Clone, Copy)]
struct Crowd {
    waiters: usize,
    names: usize,
    hold: Duration,
    run_for: Duration,
}

/// Idle connections kept per server: memsem's default (8) unless `MEMSEM_BENCH_POOL` says
/// otherwise (to measure what a pool sized to the crowd changes).
fn pool_size() -> usize {
    std::env::var("MEMSEM_BENCH_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// `--crowd threads|tasks ADDRESS WAITERS NAMES HOLD_US RUN_MS`: prints `result` and the
/// acquisitions, errors, ns held, peak threads, VmRSS before (kB), VmHWM after (kB).
pub fn child(args: &[String]) {
    let [mode, address, waiters, names, hold_us, run_ms] = args else {
        panic!("usage: --crowd threads|tasks ADDRESS WAITERS NAMES HOLD_US RUN_MS");
    };
    let number = |s: &String| -> u64 { s.parse().expect("a number") };
    let crowd = Crowd {
        waiters: number(waiters) as usize,
        names: number(names) as usize,
        hold: Duration::from_micros(number(hold_us)),
        run_for: Duration::from_millis(number(run_ms)),
    };
    let peak = ThreadPeak::start();
    let (tally, rss_before) = match mode.as_str() {
        "threads" => on_threads(address, crowd),
        "tasks" => on_tasks(address, crowd),
        other => panic!("unknown crowd mode {other}"),
    };
    let threads = peak.finish();
    println!(
        "result {} {} {} {threads} {rss_before} {}",
        tally.acquisitions,
        tally.errors,
        tally.held.as_nanos(),
        status("VmHWM"),
    );
}

/// The blocking API: one thread per waiter. Returns the tally and VmRSS before the threads.
fn on_threads(address: &str, crowd: Crowd) -> (Tally, u64) {
    let client = crate::builder()
        .servers(address)
        .max_idle_connections(pool_size())
        .build()
        .expect("memsem client");
    let sems: Vec<_> = (0..crowd.names)
        .map(|i| {
            client
                .semaphore(&format!("bench-crowd-threads-{i}"))
                .unwrap()
        })
        .collect();
    let rss_before = status("VmRSS");
    let stop = Instant::now() + crowd.run_for;
    let handles: Vec<_> = (0..crowd.waiters)
        .map(|waiter| {
            let sem = sems[waiter % crowd.names].clone();
            let hold = crowd.hold;
            thread::spawn(move || {
                let mut tally = Tally::default();
                while let Some(left) = stop.checked_duration_since(Instant::now()) {
                    let sem = sem
                        .clone()
                        .with_wait_policy(WaitPolicy::new().max_wait(left));
                    match sem.wait_acquire() {
                        Ok(permit) => {
                            let acquired = Instant::now();
                            thread::sleep(hold);
                            tally.held += acquired.elapsed();
                            tally.errors += u64::from(permit.release().is_err());
                            tally.acquisitions += 1;
                            thread::sleep(hold);
                        }
                        Err(Error::Timeout { .. }) => break,
                        Err(_) => {
                            tally.errors += 1;
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for handle in handles {
        tally.add(handle.join().expect("a waiter panicked"));
    }
    (tally, rss_before)
}

/// The async API: one tokio task per waiter on a multi-thread runtime with its default
/// worker count (one per core; `MEMSEM_BENCH_WORKERS` overrides it). Returns the tally and
/// VmRSS before the tasks.
fn on_tasks(address: &str, crowd: Crowd) -> (Tally, u64) {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // `MEMSEM_BENCH_WORKERS=N`: the runtime's worker count (default: one per core), to see
    // what limits the tasks.
    if let Some(workers) = std::env::var("MEMSEM_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.worker_threads(workers);
    }
    let runtime = builder.enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let client = crate::builder()
            .servers(address)
            .max_idle_connections(pool_size())
            .build_async()
            .await
            .expect("async memsem client");
        let sems: Vec<_> = (0..crowd.names)
            .map(|i| client.semaphore(&format!("bench-crowd-tasks-{i}")).unwrap())
            .collect();
        let rss_before = status("VmRSS");
        let stop = Instant::now() + crowd.run_for;
        let handles: Vec<_> = (0..crowd.waiters)
            .map(|waiter| {
                let sem = sems[waiter % crowd.names].clone();
                let hold = crowd.hold;
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    while let Some(left) = stop.checked_duration_since(Instant::now()) {
                        let sem = sem
                            .clone()
                            .with_wait_policy(WaitPolicy::new().max_wait(left));
                        match sem.wait_acquire().await {
                            Ok(permit) => {
                                let acquired = Instant::now();
                                tokio::time::sleep(hold).await;
                                tally.held += acquired.elapsed();
                                tally.errors += u64::from(permit.release().await.is_err());
                                tally.acquisitions += 1;
                                tokio::time::sleep(hold).await;
                            }
                            Err(Error::Timeout { .. }) => break,
                            Err(_) => {
                                tally.errors += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut tally = Tally::default();
        for handle in handles {
            tally.add(handle.await.expect("a waiter panicked"));
        }
        (tally, rss_before)
    })
}

pub fn tasks_vs_threads(address: &str, sizes: &Sizes) {
    let crowd = Crowd {
        waiters: sizes.crowd_waiters,
        names: sizes.crowd_names,
        hold: Duration::from_millis(1),
        run_for: sizes.crowd_for,
    };
    let secs = crowd.run_for.as_secs_f64();
    println!(
        "## 7. {} waiters as tokio tasks vs as threads, on {} names ({secs} s per row)\n",
        crowd.waiters, crowd.names
    );
    println!(
        "Each waiter loops on its name (waiter i on name i mod {}): wait_acquire with memsem's \
         default policy, hold {} ms, release, think {} ms. Each row runs in a child process of \
         its own; VmRSS is read before the waiters start, VmHWM (the peak) after they end; \
         threads is the most the process had (sampled every 5 ms); connections opened is the \
         server's total_connections delta. Max rate = names / hold; × max rate at its hold \
         divides by names / the hold as each side really slept it (tokio's timer rounds a 1 ms \
         sleep up to its next millisecond tick, a thread's sleep lasts about 1.1 ms), so that \
         the two sides compare what memsem does, not what their timers do.\n",
        crowd.names,
        crowd.hold.as_millis(),
        crowd.hold.as_millis(),
    );
    println!(
        "| waiters as | acq/s | × max rate | hold as slept ms | × max rate at its hold | commands/acq | connections opened | errors | threads | VmRSS before MiB | VmHWM MiB | KiB per waiter |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe().expect("this benchmark's path");
    for mode in ["threads", "tasks"] {
        let label = match mode {
            "threads" => format!("{} threads, blocking API", crowd.waiters),
            _ => format!("{} tokio tasks, async API", crowd.waiters),
        };
        let connections = || {
            stats(address)
                .get("total_connections")
                .copied()
                .unwrap_or(0)
        };
        let (before, connections_before) = (commands(address), connections());
        let output = Command::new(&exe)
            .arg("--crowd")
            .args([mode, address])
            .args(
                [
                    crowd.waiters as u128,
                    crowd.names as u128,
                    crowd.hold.as_micros(),
                    crowd.run_for.as_millis(),
                ]
                .map(|n| n.to_string()),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the crowd child");
        let commands = commands(address) - before;
        // Less the one each `stats` read above opens.
        let connections = (connections() - connections_before).saturating_sub(2);
        assert!(output.status.success(), "crowd {mode}: {}", output.status);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let figures: Vec<u64> = stdout
            .lines()
            .find_map(|line| line.strip_prefix("result "))
            .unwrap_or_else(|| panic!("crowd {mode}: no result in {stdout:?}"))
            .split_whitespace()
            .map(|w| w.parse().expect("a number"))
            .collect();
        let &[acquisitions, errors, held_ns, threads, rss_before, hwm] = figures.as_slice() else {
            panic!("crowd {mode}: unexpected result {stdout:?}");
        };
        let rate = acquisitions as f64 / secs;
        let max_rate = crowd.names as f64 / crowd.hold.as_secs_f64();
        let per_acquisition = |x: u64| {
            if acquisitions == 0 {
                0.0
            } else {
                x as f64 / acquisitions as f64
            }
        };
        let mib = |kb: u64| kb as f64 / 1024.0;
        let held = Duration::from_nanos(per_acquisition(held_ns) as u64);
        let max_rate_at_hold = if held.is_zero() {
            max_rate
        } else {
            crowd.names as f64 / held.as_secs_f64()
        };
        println!(
            "| {label} | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {connections} | {errors} | {threads} | {:.1} | {:.1} | {:.1} |",
            rate / max_rate,
            ms(held),
            rate / max_rate_at_hold,
            per_acquisition(commands),
            mib(rss_before),
            mib(hwm),
            hwm.saturating_sub(rss_before) as f64 / crowd.waiters as f64,
        );
    }
    println!();
}

//! Scenario 11 (issue 15): FIFO hand-off next to polling, against the physical limits
//! measured in the same run (a thread's 1 ms sleep, a memcached round trip).

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use memsem::{Fairness, WaitPolicy};

use crate::{Sizes, Times, contend_on_threads, median_us, ms, procs};

/// The physical limits of this machine right now.
pub struct Limits {
    /// What `thread::sleep(1 ms)` really lasts (median).
    pub sleep_1ms: Duration,
    /// One `mn` round trip on a raw socket (median).
    pub round_trip: Duration,
}

/// Measures a 1 ms sleep and a meta no-op round trip, `n` times each.
pub fn limits(address: &str, n: usize) -> Limits {
    let sleeps = (0..n)
        .map(|_| {
            let started = Instant::now();
            std::thread::sleep(Duration::from_millis(1));
            started.elapsed()
        })
        .collect();
    let stream = procs::connect(address).expect("connect to memcached");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the socket"));
    let mut writer = stream;
    let mut line = String::new();
    let trips = (0..n)
        .map(|_| {
            let started = Instant::now();
            writer.write_all(b"mn\r\n").expect("send mn");
            line.clear();
            reader.read_line(&mut line).expect("read MN");
            assert_eq!(line, "MN\r\n");
            started.elapsed()
        })
        .collect();
    Limits {
        sleep_1ms: Duration::from_secs_f64(median_us(sleeps) / 1e6),
        round_trip: Duration::from_secs_f64(median_us(trips) / 1e6),
    }
}

/// One row: `waiters` threads on a semaphore of `permits`.
struct Shape {
    waiters: usize,
    permits: u32,
    hold: Duration,
    think: Duration,
}

pub fn fifo_vs_polling(address: &str, sizes: &Sizes) {
    let limits = limits(address, sizes.limit_samples);
    let secs = sizes.contend_for.as_secs_f64();
    println!("## 11. Fair waiting: FIFO hand-off vs polling ({secs} s per row)\n");
    println!(
        "Physical limits measured in this run: `thread::sleep(1 ms)` lasts {:.3} ms (median), a \
         meta no-op round trip (`mn`, raw socket) {:.1} µs (median). The physical limit of a \
         1 ms hold is permits / {:.3} ms acquisitions per second: every hand-off costs at \
         least the real sleep. Each waiter loops as in 3 (wait_acquire, hold, release, think). \
         Longest wait ÷ (waiters × hold ÷ permits) is 1.0 for a perfect queue.\n",
        ms(limits.sleep_1ms),
        limits.round_trip.as_secs_f64() * 1e6,
        ms(limits.sleep_1ms),
    );
    println!(
        "| waiters | permits | hold | think | waiting | acq/s | × physical limit | commands/acq | Jain | longest wait ms | longest ÷ (waiters × hold ÷ permits) |"
    );
    println!("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    let client = crate::client(address).expect("memsem client");
    let ms1 = Duration::from_millis(1);
    // `MEMSEM_BENCH_FAIR_WAITERS=N`: another crowd size (the N-permit row gets N / 2).
    let waiters = std::env::var("MEMSEM_BENCH_FAIR_WAITERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(sizes.fair_waiters);
    let shapes = [
        Shape {
            waiters,
            permits: 1,
            hold: ms1,
            think: Duration::ZERO,
        },
        Shape {
            waiters,
            permits: 1,
            hold: ms1,
            think: ms1,
        },
        Shape {
            waiters: waiters / 2,
            permits: 8,
            hold: ms1,
            think: ms1,
        },
    ];
    for (run, shape) in shapes.iter().enumerate() {
        for fairness in [Fairness::Polling, Fairness::Fifo] {
            let sem = client
                .semaphore(&format!("bench-fair-{run}-{fairness:?}"))
                .and_then(|sem| sem.with_permits(shape.permits))
                .and_then(|sem| sem.with_fairness(fairness))
                .expect("a valid semaphore");
            let times = Times {
                hold: shape.hold,
                think: shape.think,
                stop: Instant::now() + sizes.contend_for,
            };
            let policy = WaitPolicy::new();
            let (log, commands) = contend_on_threads(address, &sem, shape.waiters, &policy, times);
            let count = log.acquisitions.len();
            let mut per_waiter = vec![0u64; shape.waiters];
            for a in &log.acquisitions {
                per_waiter[a.waiter] += 1;
            }
            let sum: f64 = per_waiter.iter().map(|&x| x as f64).sum();
            let squares: f64 = per_waiter.iter().map(|&x| (x as f64).powi(2)).sum();
            let jain = if squares > 0.0 {
                sum * sum / (shape.waiters as f64 * squares)
            } else {
                0.0
            };
            let rate = count as f64 / secs;
            let physical = f64::from(shape.permits) / limits.sleep_1ms.as_secs_f64()
                * (ms1.as_secs_f64() / shape.hold.as_secs_f64());
            let per_acquisition = if count > 0 {
                format!("{:.1}", commands as f64 / count as f64)
            } else {
                format!("{commands} total")
            };
            let queue_time = shape.waiters as f64 * ms(shape.hold) / f64::from(shape.permits);
            let label = match fairness {
                Fairness::Polling => "polling (memsem default policy)",
                Fairness::Fifo => "FIFO hand-off",
            };
            println!(
                "| {} | {} | {} ms | {} ms | {label} | {rate:.1} | {:.2} | {per_acquisition} | {jain:.2} | {:.0} | {:.2} |",
                shape.waiters,
                shape.permits,
                shape.hold.as_millis(),
                shape.think.as_millis(),
                rate / physical,
                ms(log.longest_wait),
                ms(log.longest_wait) / queue_time,
            );
        }
    }
    println!();
}

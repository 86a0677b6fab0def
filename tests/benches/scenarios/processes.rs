//! Scenario 6: contention on one name by separate processes (this executable again, with
//! `--worker`), next to the same row with threads.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memsem::{Fairness, WaitPolicy};

use crate::{
    Acquisition, Log, Row, Sizes, Times, commands, contend_on_threads, contention_header,
    report_contention, waiter_loop,
};

/// The wall clock, which every process shares, in nanoseconds since the epoch.
fn unix_ns(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos()
}

/// Translates between this process's `Instant`s and the shared wall clock.
struct Clock {
    instant: Instant,
    unix_ns: u128,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            unix_ns: unix_ns(SystemTime::now()),
        }
    }

    fn to_unix_ns(&self, at: Instant) -> u128 {
        self.unix_ns + at.duration_since(self.instant).as_nanos()
    }

    fn to_instant(&self, unix_ns: u128) -> Instant {
        match unix_ns.checked_sub(self.unix_ns) {
            Some(after) => self.instant + Duration::from_nanos(after as u64),
            None => self.instant - Duration::from_nanos((self.unix_ns - unix_ns) as u64),
        }
    }
}

/// The fairness named on a worker's command line.
fn fairness_named(name: &str) -> Fairness {
    match name {
        "fifo" => Fairness::Fifo,
        _ => Fairness::Polling,
    }
}

/// `--worker ADDRESS NAME HOLD_US THINK_US START_UNIX_NS STOP_UNIX_NS WAITER polling|fifo`:
/// one waiter of [`waiter_loop`] in its own process. Prints `acq ACQUIRED_NS RELEASING_NS`
/// per acquisition and `longest WAIT_NS`.
pub fn worker(args: &[String]) {
    let [
        address,
        name,
        hold_us,
        think_us,
        start_ns,
        stop_ns,
        waiter,
        fairness,
    ] = args
    else {
        panic!(
            "usage: --worker ADDRESS NAME HOLD_US THINK_US START_NS STOP_NS WAITER polling|fifo"
        );
    };
    let number = |s: &String| -> u128 { s.parse().expect("a number") };
    let clock = Clock::now();
    let sem = crate::client(address)
        .expect("memsem client")
        .semaphore(name)
        .and_then(|sem| sem.with_fairness(fairness_named(fairness)))
        .expect("a valid name");
    let start = clock.to_instant(number(start_ns));
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let times = Times {
        hold: Duration::from_micros(number(hold_us) as u64),
        think: Duration::from_micros(number(think_us) as u64),
        stop: clock.to_instant(number(stop_ns)),
    };
    let waiter = number(waiter) as usize;
    let log = Mutex::new(Log::default());
    waiter_loop(waiter, &sem, &WaitPolicy::new(), times, &log);
    let log = log.into_inner().expect("not poisoned");
    for a in &log.acquisitions {
        println!(
            "acq {} {}",
            clock.to_unix_ns(a.acquired),
            clock.to_unix_ns(a.releasing)
        );
    }
    println!("longest {}", log.longest_wait.as_nanos());
}

/// `waiters` worker processes on `name` until `run_for` after they are all started.
fn contend_in_processes(
    address: &str,
    name: &str,
    waiters: usize,
    hold: Duration,
    run_for: Duration,
    fairness: Fairness,
) -> (Log, u64) {
    let exe = std::env::current_exe().expect("this benchmark's path");
    let clock = Clock::now();
    // Time to start them all, so that they begin together.
    let start = clock.to_unix_ns(Instant::now() + Duration::from_millis(300));
    let stop = start + run_for.as_nanos();
    let before = commands(address);
    let children: Vec<_> = (0..waiters)
        .map(|waiter| {
            Command::new(&exe)
                .arg("--worker")
                .args([address, name])
                .args([hold.as_micros(), hold.as_micros(), start, stop].map(|n| n.to_string()))
                .arg(waiter.to_string())
                .arg(match fairness {
                    Fairness::Fifo => "fifo",
                    _ => "polling",
                })
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a worker process")
        })
        .collect();
    let mut log = Log::default();
    for (waiter, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().expect("a worker's output");
        assert!(
            output.status.success(),
            "worker {waiter}: {}",
            output.status
        );
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let words: Vec<u128> = line
                .split_whitespace()
                .skip(1)
                .map(|w| w.parse().expect("a number"))
                .collect();
            match (line.split_whitespace().next(), words.as_slice()) {
                (Some("acq"), &[acquired, releasing]) => log.acquisitions.push(Acquisition {
                    waiter,
                    acquired: clock.to_instant(acquired),
                    releasing: clock.to_instant(releasing),
                }),
                (Some("longest"), &[ns]) => {
                    log.longest_wait = log.longest_wait.max(Duration::from_nanos(ns as u64));
                }
                _ => panic!("worker {waiter}: unexpected line {line:?}"),
            }
        }
    }
    (log, commands(address) - before)
}

pub fn versus_threads(address: &str, sizes: &Sizes) {
    let waiters = sizes.process_waiters;
    let secs = sizes.contend_for.as_secs_f64();
    println!(
        "## 6. Contention with separate processes vs threads, polling and FIFO ({secs} s per row)\n"
    );
    println!(
        "As in 3 (think = hold), but each waiter is its own process with its own client and \
         connections (this benchmark executable again, `--worker`); times are compared on the \
         wall clock. FIFO waiters in one process hand each other their turns without a read; \
         in separate processes every turn is found by reading the server.\n"
    );
    contention_header();
    let client = crate::client(address).expect("memsem client");
    for &hold in sizes.holds {
        for fairness in [Fairness::Polling, Fairness::Fifo] {
            for in_processes in [false, true] {
                let name = format!(
                    "bench-processes-{}-{}-{fairness:?}",
                    hold.as_millis(),
                    if in_processes { "p" } else { "t" }
                );
                let (log, commands) = if in_processes {
                    let run_for = sizes.contend_for;
                    contend_in_processes(address, &name, waiters, hold, run_for, fairness)
                } else {
                    let sem = client
                        .semaphore(&name)
                        .and_then(|sem| sem.with_fairness(fairness))
                        .expect("a valid name");
                    let times = Times {
                        hold,
                        think: hold,
                        stop: Instant::now() + sizes.contend_for,
                    };
                    contend_on_threads(address, &sem, waiters, &WaitPolicy::new(), times)
                };
                let policy = match fairness {
                    Fairness::Fifo => "FIFO",
                    _ => "memsem default",
                };
                let row = Row {
                    waiters,
                    hold,
                    think: hold,
                    label: format!(
                        "{policy}, {waiters} {}",
                        if in_processes { "processes" } else { "threads" }
                    ),
                    secs,
                    commands,
                };
                report_contention(&row, &log);
            }
        }
    }
    println!();
}

//! Read-modify-write of a shared counter file under a memsem lock, many times: run several
//! of these processes at once and the final count is exact.
//!
//! ```text
//! cargo run --example counter -- SERVERS NAME FILE TIMES [POLL_MS]
//! ```
//!
//! While holding the lock it also creates `FILE.inside` with create-new semantics: if that
//! file already exists, another process is inside the critical section at the same time,
//! which is counted and reported as an overlap (exit status 3). At the end it prints
//! `rust worker: acquisitions N overlaps O`.
//!
//! Two optional environment variables make it contend with Perl's
//! Cache::Memcached::Semaphore (tests/perl/semaphore.pl): `MEMSEM_ROUTING`
//! (`ketama`, the default, `cache-memcached` or `twemproxy:HASH:DISTRIBUTION`) and
//! `MEMSEM_NAMESPACE`; `MEMSEM_PROTOCOL` (`classic` through a proxy) too.

use std::fs::{self, OpenOptions};
use std::process::ExitCode;
use std::time::Duration;

use memsem::{Client, WaitPolicy};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: counter SERVERS NAME FILE TIMES [POLL_MS]");
        return ExitCode::from(64);
    }
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(overlaps) => {
            eprintln!("{overlaps} overlapping critical sections");
            ExitCode::from(3)
        }
        Err(error) => {
            eprintln!("counter: {error}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> Result<u32, Box<dyn std::error::Error>> {
    let (servers, name, file) = (&args[0], &args[1], &args[2]);
    let times: u32 = args[3].parse()?;
    let poll_ms: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let policy = WaitPolicy::new()
        .poll_time(Duration::from_millis(poll_ms))
        .max_wait(Duration::from_secs(120));
    // A memcached the test just started: no lock-delay (it holds no earlier locks).
    let mut builder = Client::builder()
        .servers(servers)
        .lock_delay(Duration::ZERO);
    if let Ok(routing) = std::env::var("MEMSEM_ROUTING") {
        builder = builder.routing(routing.parse()?);
    }
    if let Ok(protocol) = std::env::var("MEMSEM_PROTOCOL") {
        builder = builder.protocol(protocol.parse()?);
    }
    if let Ok(namespace) = std::env::var("MEMSEM_NAMESPACE") {
        builder = builder.namespace(&namespace);
    }
    let sem = builder.build()?.semaphore(name)?.with_wait_policy(policy);
    let inside = format!("{file}.inside");
    let mut overlaps = 0;
    for _ in 0..times {
        let permit = sem.wait_acquire()?;
        let marker = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&inside);
        if marker.is_err() {
            overlaps += 1;
        }
        let count: u64 = fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        fs::write(file, (count + 1).to_string())?;
        if marker.is_ok() {
            fs::remove_file(&inside)?;
        }
        permit.release()?;
    }
    println!("rust worker: acquisitions {times} overlaps {overlaps}");
    Ok(overlaps)
}

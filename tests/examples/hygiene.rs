//! Many acquire/release cycles in a fresh process, reporting threads, file descriptors and
//! resident memory before and after (the hygiene test runs it; exit status 1 on growth).
//!
//! ```text
//! cargo run --example hygiene -- 127.0.0.1:11211 100000
//! ```

use std::process::ExitCode;
use std::time::Duration;

use memsem::Client;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cycles(client: &Client, name: &str, times: u64) -> Result<(), String> {
    for i in 0..times {
        // A new handle each time, fenced every other time, to catch per-handle leaks too.
        let mut sem = client.semaphore(name).map_err(|e| e.to_string())?;
        if i % 2 == 0 {
            sem = sem.with_fencing().map_err(|e| e.to_string())?;
        }
        let permit = sem.try_acquire().map_err(|e| format!("cycle {i}: {e}"))?;
        let permit = permit.ok_or(format!("cycle {i}: somebody else holds the lock"))?;
        permit.release().map_err(|e| format!("cycle {i}: {e}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:11211".into());
    let times: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    // A memcached the test just started: no lock-delay (it holds no earlier locks).
    let client = match Client::builder()
        .servers(&address)
        .lock_delay(Duration::ZERO)
        .io_timeout(Duration::from_secs(2))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("hygiene: {error}");
            return ExitCode::FAILURE;
        }
    };
    let name = format!("hygiene-{}", std::process::id());
    // Warm up: the pool's connection, allocator arenas, lazy statics.
    let measured = cycles(&client, &name, 1_000).and_then(|()| {
        let before = (threads(), fds(), rss_kib());
        cycles(&client, &name, times)?;
        Ok((before, (threads(), fds(), rss_kib())))
    });
    let (before, after) = match measured {
        Ok(figures) => figures,
        Err(error) => {
            eprintln!("hygiene: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "hygiene: {times} cycles; threads {} -> {}, fds {} -> {}, VmRSS {} KiB -> {} KiB",
        before.0, after.0, before.1, after.1, before.2, after.2
    );
    // Allocator noise is a few hundred KiB; a leak of even 50 bytes a cycle is 1 MiB here.
    if after.0 != before.0 || after.1 > before.1 || after.2 > before.2 + 1024 {
        eprintln!("hygiene: resources grew");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

//! Resource hygiene: many acquire/release cycles leave no growth in threads, file
//! descriptors (sockets) or resident memory. Measured in a child process running only
//! [`cycles_child`] (the test binary re-runs itself), so other tests' threads and sockets do
//! not blur the counts. Size: `MEMSEM_HYGIENE_CYCLES` (default 20,000; 100,000 for the long
//! run).

use std::process::Command;
use std::time::Duration;

use memsem::Client;

use crate::harness::{Memcached, unique};

const SERVER_VAR: &str = "MEMSEM_HYGIENE_SERVER";

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn cycles(client: &Client, name: &str, times: u64) {
    for i in 0..times {
        // A new handle each time, fenced every other time, to catch per-handle leaks too.
        let mut sem = client.semaphore(name).unwrap();
        if i % 2 == 0 {
            sem = sem.with_fencing().unwrap();
        }
        let permit = sem
            .try_acquire()
            .unwrap()
            .expect("nobody else uses this name");
        if let Err(error) = permit.release() {
            panic!("cycle {i}: {error:?}");
        }
    }
}

#[test]
fn acquire_release_cycles_leave_no_growth_in_threads_sockets_or_memory() {
    let server = Memcached::start();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "hygiene::cycles_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SERVER_VAR, server.address())
        .output()
        .expect("run the measuring child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // libtest may print the child's line after its own "test ... " prefix.
    for line in stdout
        .lines()
        .filter_map(|l| l.find("hygiene: ").map(|at| &l[at..]))
    {
        println!("{line}");
    }
    assert!(
        output.status.success() && stdout.contains("hygiene: "),
        "the measuring child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The measuring half of the test above; does nothing when run on its own.
#[test]
#[ignore = "run by acquire_release_cycles_leave_no_growth_in_threads_sockets_or_memory"]
fn cycles_child() {
    let Ok(address) = std::env::var(SERVER_VAR) else {
        return;
    };
    let times: u64 = std::env::var("MEMSEM_HYGIENE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let client = Client::builder()
        .servers(&address)
        .io_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let name = unique("hygiene");
    // Warm up: the pool's connection, allocator arenas, lazy statics.
    cycles(&client, &name, 1_000);
    let before = (threads(), fds(), rss_kib());
    cycles(&client, &name, times);
    let after = (threads(), fds(), rss_kib());
    println!(
        "hygiene: {times} cycles; threads {} -> {}, fds {} -> {}, VmRSS {} KiB -> {} KiB",
        before.0, after.0, before.1, after.1, before.2, after.2
    );
    assert_eq!(after.0, before.0, "threads grew");
    assert!(after.1 <= before.1, "file descriptors grew");
    // Allocator noise is a few hundred KiB; a leak of even 50 bytes a cycle is 1 MiB here.
    assert!(after.2 <= before.2 + 1024, "resident memory grew");
}

/// New TCP connections the server saw during 200 acquire/release cycles.
fn connections_for_200_cycles(fenced: bool) -> u64 {
    let server = Memcached::start();
    let client = server.client();
    let name = unique("connections");
    let mut raw = server.raw();
    let before = raw.stat("total_connections");
    for _ in 0..200 {
        let mut sem = client.semaphore(&name).unwrap();
        if fenced {
            sem = sem.with_fencing().unwrap();
        }
        sem.try_acquire().unwrap().expect("free").release().unwrap();
    }
    raw.stat("total_connections") - before
}

#[test]
fn plain_cycles_reuse_their_pooled_connection() {
    let opened = connections_for_200_cycles(false);
    println!("plain: 200 cycles opened {opened} connections");
    assert!(opened <= 2, "{opened} connections for 200 cycles");
}

#[test]
fn fenced_cycles_reuse_their_pooled_connection() {
    let opened = connections_for_200_cycles(true);
    println!("fenced: 200 cycles opened {opened} connections");
    assert!(opened <= 2, "{opened} connections for 200 cycles");
}

//! Resource hygiene: many acquire/release cycles leave no growth in threads, file
//! descriptors (sockets) or resident memory. Measured in a fresh process (the `hygiene`
//! example), so other tests' threads and sockets do not blur the counts. Size:
//! `MEMSEM_HYGIENE_CYCLES` (default 20,000; 100,000 for the long run).

use std::process::Command;

use crate::harness::{Memcached, unique};
use crate::processes::example;

#[test]
fn acquire_release_cycles_leave_no_growth_in_threads_sockets_or_memory() {
    let server = Memcached::start();
    let cycles = std::env::var("MEMSEM_HYGIENE_CYCLES").unwrap_or_else(|_| "20000".into());
    let output = Command::new(example("hygiene"))
        .args([server.address(), cycles])
        .output()
        .expect("run the measuring process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{}", stdout.trim());
    assert!(
        output.status.success() && stdout.contains("hygiene: "),
        "resources grew or a cycle failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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

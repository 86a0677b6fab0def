//! `memsem run --wait` waits like the library's `max_wait`: server errors are retried until
//! the limit, not returned after the first try.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::unique;

#[test]
fn bounded_wait_retries_an_unreachable_server_until_the_limit() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let address = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let out = Command::new(crate::harness::workspace_binary("memsem"))
        .args(["--servers", &address, "--connect-timeout", "300ms"])
        .args([
            "run",
            "--wait",
            "2s",
            "--poll",
            "100ms",
            &unique("cli-wait-down"),
        ])
        .args(["--", "true"])
        .env("MEMSEM_LOCK_DELAY", "0")
        .output()
        .expect("memsem runs");
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        waited >= Duration::from_secs(2),
        "gave up after {waited:?}: {stderr}"
    );
    assert!(stderr.contains("gave up waiting"), "{stderr}");
    assert!(stderr.contains(&address), "names the server: {stderr}");
    let attempts: u32 = stderr
        .split(" attempts)")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("an attempt count in {stderr}"));
    assert!(attempts > 1, "retried: {stderr}");
}

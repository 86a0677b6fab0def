//! Leases that end without a release: a holder killed with SIGKILL, a lock evicted by a full
//! cache.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memsem::{Error, LostReason, WaitPolicy};

use crate::harness::{Memcached, unique};
use crate::processes::example;

#[test]
fn holder_killed_with_sigkill_lets_the_next_waiter_in_within_ttl_plus_one_poll() {
    let server = Memcached::start();
    let name = unique("killed-holder");
    let ttl = Duration::from_secs(2);
    let poll = Duration::from_millis(100);
    let mut holder = Command::new(example("chaos"))
        .args(["hold", &server.address(), &name, "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held_since = Instant::now();
    let token = line
        .strip_prefix("held ")
        .unwrap_or_else(|| panic!("the holder said {line:?}"))
        .trim()
        .to_string();
    let key = format!("__lock__{name}");
    assert_eq!(server.raw().token(key.as_bytes()), Some(token.clone()));

    holder.kill().unwrap(); // SIGKILL: no destructor, no release
    holder.wait().unwrap();
    let killed = Instant::now();
    let waiter = server.semaphore(&name).with_wait_policy(
        WaitPolicy::new()
            .poll_time(poll)
            .jitter(0.0)
            .max_wait(Duration::from_secs(10)),
    );
    let permit = waiter
        .wait_acquire()
        .expect("the dead holder's lease ended");
    let after_kill = killed.elapsed();
    let after_acquire = held_since.elapsed();
    assert_ne!(permit.token(), token);
    // The lease runs from the holder's acquire; memcached counts whole seconds, so it ends
    // between TTL - 1 s and TTL after it.
    assert!(
        after_kill <= ttl + poll + Duration::from_millis(500),
        "waited {after_kill:?} after the kill"
    );
    assert!(
        after_acquire >= ttl - Duration::from_secs(1),
        "got in {after_acquire:?} after the holder acquired: before its lease ended"
    );
    println!("holder killed: next waiter in {after_kill:?} after the SIGKILL (TTL {ttl:?})");
    permit.release().unwrap();
}

/// Fills the server with items shaped like the lock (same key and value sizes, so the same
/// slab class) until the lock's key is gone, within `deadline`. Returns how many were written.
fn flood_until_gone(server: &Memcached, key: &[u8], deadline: Instant) -> u64 {
    let value_len = server.raw().get(key).expect("the lock is there").len();
    let mut stream = TcpStream::connect(server.address()).unwrap();
    let value = vec![b'v'; value_len];
    // Distinct from every key of other tests: they carry a hex suffix after a dash.
    let width = key.len() - 1;
    let mut written = 0u64;
    let mut probe = BufReader::new(TcpStream::connect(server.address()).unwrap());
    while present_without_bump(&mut probe, key) {
        assert!(
            Instant::now() < deadline,
            "the lock survived {written} other items"
        );
        let mut batch = Vec::new();
        for _ in 0..1000 {
            written += 1;
            batch.extend_from_slice(
                format!("set f{written:0width$} 0 0 {value_len} noreply\r\n").as_bytes(),
            );
            batch.extend_from_slice(&value);
            batch.extend_from_slice(b"\r\n");
        }
        stream.write_all(&batch).unwrap();
    }
    written
}

/// Whether `key` exists, asked with `mg <key> u` so that the check does not bump the item in
/// the LRU (a plain read would keep the lock alive).
fn present_without_bump(probe: &mut BufReader<TcpStream>, key: &[u8]) -> bool {
    let mut command = b"mg ".to_vec();
    command.extend_from_slice(key);
    command.extend_from_slice(b" u\r\n");
    probe.get_mut().write_all(&command).unwrap();
    let mut line = String::new();
    probe.read_line(&mut line).unwrap();
    match line.trim_end() {
        "HD" => true,
        "EN" => false,
        other => panic!("unexpected reply {other:?}"),
    }
}

#[test]
fn evicted_lock_is_reported_lost_by_refresh_and_release() {
    // `-m 1` alone is refused by memcached 1.6.18 (the 1 MB item size limit must be at most
    // half the memory); `-m 1 -I 512k` is the smallest cache it accepts.
    let server = Memcached::start_with(&["-m", "1", "-I", "512k"]);
    let name = unique("evicted");
    let sem = server
        .semaphore(&name)
        .with_ttl(Duration::from_secs(300))
        .unwrap();
    let mut first = sem.try_acquire().unwrap().expect("free");
    let second = sem.clone().with_ttl(Duration::from_secs(300)).unwrap();
    let key = format!("__lock__{name}");
    let written = flood_until_gone(
        &server,
        key.as_bytes(),
        Instant::now() + Duration::from_secs(60),
    );
    let evictions = server.raw().stat("evictions");
    println!("eviction: the lock went after {written} other items; evictions = {evictions}");
    assert!(evictions > 0, "the lock vanished without an eviction");

    let lost = first.refresh(Duration::from_secs(300)).unwrap_err();
    assert!(
        matches!(
            lost,
            Error::LockLost {
                reason: LostReason::Missing,
                ..
            }
        ),
        "{lost}"
    );
    assert!(!first.is_held().unwrap());
    let lost = first.release().unwrap_err();
    assert!(lost.is_lock_lost(), "{lost}");

    // Somebody else may take the lock now; the first holder's release touched nothing.
    let next = second
        .try_acquire()
        .unwrap()
        .expect("the evicted lock is free");
    assert!(next.is_held().unwrap());
    next.release().unwrap();
}

//! Scenario 9: a lock+unlock through each `memsem serve` gateway vs the library call, same
//! run, same server. The gateways are timed twice: from a minimal Rust client of the wire
//! protocol (the gateway's own cost) and from the Perl clients users run
//! (tests/perl/keyedmutex.pl, tests/perl/lock_server.pl: the cost they will see).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Sizes, median_us};

const KEYEDMUTEX_PL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/perl/keyedmutex.pl");
const LOCK_SERVER_PL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/perl/lock_server.pl");

/// A gateway process and the address it listens on; killed on drop.
struct Gateway(Child, String);

impl Gateway {
    fn start(address: &str, protocol: &str, listen: &[&str]) -> Option<Gateway> {
        let memsem = crate::cli::memsem_binary()?;
        let mut child = Command::new(memsem)
            .env("MEMSEM_LOCK_DELAY", "0")
            .args(["--servers", address, "serve", protocol])
            .args(listen)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut ready = String::new();
        BufReader::new(child.stderr.take()?)
            .read_line(&mut ready)
            .ok()?;
        let listening = ready.trim().rsplit(' ').next()?.to_string();
        Some(Gateway(child, listening))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `samples` timed runs of `pair` after a tenth as many untimed ones: the median in µs.
fn time_pairs(samples: usize, mut pair: impl FnMut()) -> f64 {
    for _ in 0..samples / 10 {
        pair();
    }
    let times: Vec<Duration> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            pair();
            started.elapsed()
        })
        .collect();
    median_us(times)
}

/// One keyedmutexd lock+release on an open connection. The release has no reply: the next
/// lock on the same connection is answered only after it.
fn keyed_pair(stream: &mut UnixStream) {
    stream.write_all(b"bench-gateway-km").expect("send key");
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).expect("read answer");
    assert_eq!(&answer, b"O", "uncontended");
    stream.write_all(b"R").expect("release");
}

/// One Lock::Server call on a fresh connection, as Lock::Server::Client makes it.
fn lock_server_call(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    let _ = stream.set_nodelay(true);
    stream
        .write_all(format!("GET /{path}\n\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("reply");
    line
}

/// A Perl client's `bench` mode: its median µs per pair.
fn perl_bench(script: &str, args: &[&str]) -> Result<f64, String> {
    let output = Command::new("perl")
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("perl not runnable: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .split_whitespace()
        .skip_while(|&w| w != "median_us")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!(
                "{stdout:?} {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}

pub fn lock_unlock(address: &str, sizes: &Sizes) {
    let n = sizes.acquires;
    println!("## 9. Lock+unlock through the gateways vs the library (median of {n}, µs)\n");
    let client = crate::client(address).expect("memsem client");
    let sem = client.semaphore("bench-gateway-lib").expect("a valid name");
    let library = time_pairs(n, || {
        let permit = sem.try_acquire().expect("memcached answers").expect("free");
        permit.release().expect("release");
    });
    println!("| path | client | µs per pair | × library |");
    println!("|---|---|---:|---:|");
    println!("| library: try_acquire + release | Rust, blocking | {library:.1} | 1.00 |");
    let row = |path: &str, who: &str, us: Result<f64, String>| match us {
        Ok(us) => println!("| {path} | {who} | {us:.1} | {:.2} |", us / library),
        Err(why) => println!("| {path} | {who} | n/a: {why} | |"),
    };
    // keyedmutexd on its usual unix socket, and once over TCP for the Perl client (which
    // leaves Nagle's algorithm on: the row shows that the gateway's quick ACK of a release
    // spares it the delayed-ACK wait).
    let socket = std::env::temp_dir().join(format!("memsem-bench-km-{}.sock", std::process::id()));
    let (Some(keyed), Some(locks)) = (
        Gateway::start(
            address,
            "keyedmutexd",
            &["--socket", socket.to_str().unwrap()],
        ),
        Gateway::start(address, "lock-server", &["--listen", "127.0.0.1:0"]),
    ) else {
        println!("| gateways | | n/a: the memsem binary is not built | |\n");
        return;
    };

    let mut stream = UnixStream::connect(&keyed.1).expect("connect keyedmutexd");
    let us = time_pairs(n, || keyed_pair(&mut stream));
    row(
        "keyedmutexd (unix socket): digest → O, R",
        "Rust, one connection",
        Ok(us),
    );
    let perl = perl_bench(
        KEYEDMUTEX_PL,
        &["bench", &keyed.1, "bench-gateway-km-perl", &n.to_string()],
    );
    row(
        "keyedmutexd (unix socket): digest → O, R",
        "KeyedMutex protocol (Perl)",
        perl,
    );

    let tcp = Gateway::start(address, "keyedmutexd", &["--listen", "127.0.0.1:0"]);
    let perl = tcp.as_ref().map_or_else(
        || Err("the gateway did not start".to_string()),
        |tcp| {
            perl_bench(
                KEYEDMUTEX_PL,
                &["bench", &tcp.1, "bench-gateway-km-tcp", &n.to_string()],
            )
        },
    );
    row(
        "keyedmutexd (TCP): digest → O, R",
        "KeyedMutex protocol (Perl)",
        perl,
    );

    let us = time_pairs(n, || {
        assert_eq!(lock_server_call(&locks.1, "PING").trim(), "1");
        assert_eq!(lock_server_call(&locks.1, "PING").trim(), "1");
    });
    row(
        "Lock::Server: PING + PING (the protocol's floor: no fleet)",
        "Rust, a connection per call",
        Ok(us),
    );
    let us = time_pairs(n, || {
        let granted = lock_server_call(&locks.1, "LOCK/bench-gateway-ls/me");
        assert_ne!(granted.trim(), "0", "uncontended");
        assert_eq!(
            lock_server_call(&locks.1, "UNLOCK/bench-gateway-ls/me").trim(),
            "1"
        );
    });
    row(
        "Lock::Server: LOCK + UNLOCK",
        "Rust, a connection per call",
        Ok(us),
    );
    let perl = perl_bench(
        LOCK_SERVER_PL,
        &[
            "bench",
            &locks.1,
            "bench-gateway-ls-perl",
            "me",
            &n.to_string(),
        ],
    );
    row(
        "Lock::Server: LOCK + UNLOCK",
        "Lock::Server::Client protocol (Perl)",
        perl,
    );
    println!();
}

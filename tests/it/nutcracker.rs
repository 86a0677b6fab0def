//! twemproxy (Debian package `nutcracker`, 0.5.0) as a real process in front of real
//! memcached processes: one nutcracker per test, with one pool per listen port.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::procs::free_port;

/// One pool of the configuration: its twemproxy settings and backends.
pub struct Pool {
    /// `hash:` (e.g. `fnv1a_64`).
    pub hash: String,
    /// `distribution:` (`ketama` or `modula`).
    pub distribution: String,
    /// Backends as twemproxy writes them: `host:port:weight` or `/path:weight`.
    pub servers: Vec<String>,
}

/// A nutcracker process; killed when dropped, also when the test panics.
pub struct Nutcracker {
    child: Child,
    config: PathBuf,
    /// `127.0.0.1:port` of each pool, in the order given.
    pub listen: Vec<String>,
}

impl Nutcracker {
    /// Writes a configuration with `pools` (never ejecting hosts: a lock must not move)
    /// and starts nutcracker, then waits until every pool answers `version`.
    pub fn start(pools: &[Pool]) -> Nutcracker {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let config = std::env::temp_dir().join(format!("memsem-{tag}.yml"));
        let mut yaml = String::new();
        let mut listen = Vec::new();
        for (index, pool) in pools.iter().enumerate() {
            let address = format!("127.0.0.1:{}", free_port("127.0.0.1"));
            yaml.push_str(&format!(
                "pool{index}:\n  listen: {address}\n  hash: {}\n  distribution: {}\n  \
                 auto_eject_hosts: false\n  timeout: 2000\n  servers:\n",
                pool.hash, pool.distribution
            ));
            for server in &pool.servers {
                yaml.push_str(&format!("   - {server}\n"));
            }
            listen.push(address);
        }
        std::fs::write(&config, yaml).expect("write the nutcracker configuration");
        let stats_port = free_port("127.0.0.1");
        let spawned = Command::new("nutcracker")
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-s", &stats_port.to_string(), "-v", "4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "nutcracker is not installed: install it with 'apt-get install -y nutcracker'"
            ),
            Err(e) => panic!("cannot start nutcracker: {e}"),
        };
        let mut proxy = Nutcracker {
            child,
            config,
            listen,
        };
        proxy.wait_ready();
        proxy
    }

    /// Waits until every pool answers `version` (forwarded to a backend), or panics with
    /// nutcracker's log when it exits or 10 s pass.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pending: Vec<String> = self.listen.clone();
        while !pending.is_empty() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut log = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut log);
                }
                panic!("nutcracker exited ({status}): {}", log.trim());
            }
            assert!(
                Instant::now() < deadline,
                "nutcracker pools {pending:?} did not answer within 10 s"
            );
            pending.retain(|address| !answers_version(address));
            if !pending.is_empty() {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Whether `address` answers `version` with a `VERSION ...` line.
fn answers_version(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"version\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("VERSION ")
}

/// Stores every key (value `1`) through the proxy at `address`, pipelined; panics unless
/// each answer is `STORED`.
pub fn set_all(address: &str, keys: &[Vec<u8>]) {
    let stream = TcpStream::connect(address).expect("connect to nutcracker");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let mut writer = stream.try_clone().expect("clone a TCP stream");
    let mut reader = BufReader::new(stream);
    for batch in keys.chunks(50) {
        let mut request = Vec::new();
        for key in batch {
            request.extend_from_slice(b"set ");
            request.extend_from_slice(key);
            request.extend_from_slice(b" 0 0 1\r\n1\r\n");
        }
        writer.write_all(&request).expect("send set");
        for key in batch {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read a set reply");
            assert_eq!(
                line,
                "STORED\r\n",
                "set {} through {address}",
                String::from_utf8_lossy(key)
            );
        }
    }
}

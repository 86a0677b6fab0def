//! memsem against Perl's Cache::Memcached::Semaphore protocol, end to end: Perl processes
//! (tests/perl/semaphore.pl, over a real Cache::Memcached) and memsem processes
//! (examples/counter.rs in `cache-memcached` routing with a namespace) take the same locks
//! on a weighted fleet of three real memcached processes.
//!
//! Needs `memcached`, `perl` and the Debian package `libcache-memcached-perl`; a missing one
//! fails the test with the package to install.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use memsem::routing::{Ring, ServerSpec};
use memsem::{Client, Routing};

use crate::harness::unique;
use crate::processes::example;

/// The counter example, checked to be built from the current source: `cargo test --test it`
/// alone does not rebuild examples, and a stale one (ketama, no namespace) would contend
/// for a different key.
pub fn counter_example() -> PathBuf {
    let binary = example("counter");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/counter.rs");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    assert!(
        modified(&binary) >= modified(Path::new(source)),
        "{} is older than examples/counter.rs: run `cargo test` (it builds the examples) or \
         `cargo build --examples` first",
        binary.display()
    );
    binary
}
use crate::procs::Memcached;

/// The Perl implementation of the Cache::Memcached::Semaphore protocol.
const SEMAPHORE_PL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/perl/semaphore.pl");

/// The namespace both sides are configured with: on the wire, never hashed.
const NAMESPACE: &str = "app:";

/// Three memcached processes weighted 1, 2, 3, and the list in `host:port:weight` form
/// that both Cache::Memcached (`[["h:p", w], ...]`) and memsem are given.
struct Fleet {
    servers: Vec<Memcached>,
    list: String,
}

impl Fleet {
    fn start() -> Fleet {
        let weights = [1, 2, 3];
        let servers: Vec<Memcached> = weights
            .iter()
            .map(|_| Memcached::start("127.0.0.1", None))
            .collect();
        let list = servers
            .iter()
            .zip(weights)
            .map(|(server, weight)| format!("{}:{weight}", server.address()))
            .collect::<Vec<_>>()
            .join(",");
        Fleet { servers, list }
    }

    fn client(&self) -> Client {
        crate::harness::builder()
            .servers(&self.list)
            .routing(Routing::CacheMemcached)
            .namespace(NAMESPACE)
            .build()
            .expect("a valid fleet")
    }

    /// One lock name per server (by Cache::Memcached's buckets), plus a UTF-8 one: the
    /// tests then cover every server of the fleet.
    fn names(&self) -> Vec<String> {
        let specs = ServerSpec::parse_list(&self.list).expect("a valid fleet");
        let ring = Ring::new(Routing::CacheMemcached, &specs).expect("a valid fleet");
        let mut names = Vec::new();
        let mut covered = vec![false; specs.len()];
        for i in 0.. {
            let name = format!("interop-{i}");
            let server = ring.server_for(format!("__lock__{name}").as_bytes());
            if !covered[server] {
                covered[server] = true;
                names.push(name);
            }
            if covered.iter().all(|&c| c) {
                break;
            }
        }
        names.push("interop-ключ-🔒".to_string());
        names
    }

    /// Which servers hold the wire key of lock `name` (asked directly with `mg`).
    fn holders_of(&self, name: &str) -> Vec<String> {
        let key = format!("{NAMESPACE}__lock__{name}").into_bytes();
        self.servers
            .iter()
            .filter(|server| server.holds(std::slice::from_ref(&key))[0])
            .map(Memcached::address)
            .collect()
    }
}

/// `perl semaphore.pl ARGS`, failing with the package to install when Perl or
/// Cache::Memcached is missing.
fn perl_command(args: &[&str]) -> Command {
    let mut command = Command::new("perl");
    command.arg(SEMAPHORE_PL).args(args);
    command
}

pub fn spawn_perl(args: &[&str], stdout: Stdio) -> Child {
    match perl_command(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("perl is not installed: install it with 'apt-get install -y perl'")
        }
        Err(e) => panic!("cannot run perl {SEMAPHORE_PL}: {e}"),
    }
}

/// Checks a finished Perl run; returns its stdout.
pub fn perl_succeeded(output: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        panic!(
            "{}",
            stderr.trim() // names the Debian package, libcache-memcached-perl
        );
    }
    assert!(
        output.status.success(),
        "perl {what} failed ({}): {}{}",
        output.status,
        stdout.trim(),
        stderr.trim()
    );
    stdout
}

pub fn run_perl(args: &[&str]) -> String {
    let output = spawn_perl(args, Stdio::piped())
        .wait_with_output()
        .expect("wait for perl");
    perl_succeeded(output, &args.join(" "))
}

/// A scratch directory removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `(acquisitions, overlaps)` from a worker's last line, `... acquisitions N ... overlaps O`.
pub fn worker_figures(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .rfind(|line| line.contains("acquisitions"))
        .unwrap_or_else(|| panic!("no summary line in worker output {stdout:?}"));
    let field = |name: &str| -> u64 {
        let mut words = line.split_whitespace();
        words.find(|&word| word == name);
        words
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (field("acquisitions"), field("overlaps"))
}

pub fn read_count(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .expect("a number in the counter file")
}

#[test]
fn perl_and_memsem_processes_share_locks_with_exact_counts_and_no_overlap() {
    let fleet = Fleet::start();
    let names = fleet.names();
    let scratch = Scratch::new("memsem-interop");
    let (perl_workers, rust_workers, iterations) = (2, 2, 150);

    // Every worker of every name at once: Perl and Rust take turns on each lock.
    let mut children = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let counter = scratch.path(&format!("{index}.count"));
        let counter_text = counter.to_str().expect("a UTF-8 temp path").to_string();
        for _ in 0..perl_workers {
            let child = spawn_perl(
                &[
                    "worker",
                    &fleet.list,
                    NAMESPACE,
                    name,
                    &iterations.to_string(),
                    &counter_text,
                    "2000",
                ],
                Stdio::piped(),
            );
            children.push(("perl", name.clone(), counter.clone(), child));
        }
        for _ in 0..rust_workers {
            let child = Command::new(counter_example())
                .args([
                    &fleet.list,
                    name,
                    &counter_text,
                    &iterations.to_string(),
                    "2",
                ])
                .env("MEMSEM_ROUTING", "cache-memcached")
                .env("MEMSEM_NAMESPACE", NAMESPACE)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the counter example");
            children.push(("rust", name.clone(), counter.clone(), child));
        }
    }

    let processes = children.len();
    let (mut acquisitions, mut overlaps) = (0, 0);
    let mut counters = Vec::new();
    for (side, name, counter, child) in children {
        let output = child.wait_with_output().expect("wait for a worker");
        let stdout = if side == "perl" {
            perl_succeeded(output, &format!("worker {name}"))
        } else {
            assert!(
                output.status.success(),
                "rust worker on {name} failed or overlapped ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let (acquired, overlapped) = worker_figures(&stdout);
        acquisitions += acquired;
        overlaps += overlapped;
        if !counters.contains(&(name.clone(), counter.clone())) {
            counters.push((name, counter));
        }
    }

    let expected = (perl_workers + rust_workers) as u64 * iterations;
    for (name, counter) in &counters {
        assert_eq!(
            read_count(counter),
            expected,
            "lock {name}: an increment was lost, so two holders overlapped"
        );
        assert!(
            fleet.holders_of(name).is_empty(),
            "lock {name} is still held after every worker released it"
        );
    }
    println!(
        "perl/memsem interop: {} names on weights 1,2,3, {processes} processes \
         ({perl_workers} Perl + {rust_workers} memsem per name), {acquisitions} acquisitions, \
         {overlaps} overlaps",
        names.len()
    );
    assert_eq!(acquisitions, expected * names.len() as u64);
    assert_eq!(overlaps, 0, "two holders were inside at the same time");
}

#[test]
fn perl_holder_blocks_memsem_until_perl_releases() {
    let fleet = Fleet::start();
    let client = fleet.client();
    let scratch = Scratch::new("memsem-interop-hold");
    for (index, name) in fleet.names().into_iter().enumerate() {
        let release = scratch.path(&format!("release-{index}"));
        let mut holder = spawn_perl(
            &[
                "hold",
                &fleet.list,
                NAMESPACE,
                &name,
                release.to_str().expect("a UTF-8 temp path"),
            ],
            Stdio::piped(),
        );
        // Keep reading its stdout to the end: Perl prints "released" last.
        let mut stdout = BufReader::new(holder.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read from perl");
        if !line.starts_with("held ") {
            let output = holder.wait_with_output().expect("wait for perl");
            perl_succeeded(output, "hold");
            panic!("perl hold printed {line:?}");
        }
        let token = line.trim_start_matches("held ").trim().to_string();

        let sem = client.semaphore(&name).expect("a valid name");
        assert!(
            sem.try_acquire().expect("memcached answers").is_none(),
            "memsem took {name} while Perl held it"
        );
        assert_eq!(
            fleet.holders_of(&name),
            vec![sem.server().to_string()],
            "Perl's lock {name} is not on the server memsem routes to"
        );
        let holder_info = sem.holder().expect("memcached answers").expect("held");
        assert!(token.starts_with(holder_info.token_prefix()));
        assert_eq!(holder_info.ttl(), None, "Perl's lock has no expiry");

        std::fs::write(&release, b"").expect("create the release file");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read from perl");
        let output = holder.wait_with_output().expect("wait for perl");
        perl_succeeded(output, "hold");
        assert_eq!(rest.trim(), "released");
        let permit = sem
            .try_acquire()
            .expect("memcached answers")
            .unwrap_or_else(|| panic!("memsem could not take {name} after Perl released it"));
        permit.release().expect("release");
        println!(
            "{name}: Perl held it on {}: memsem try_acquire got None, then took it after Perl released",
            sem.server()
        );
    }
}

#[test]
fn memsem_holder_blocks_perl_and_sits_where_cache_memcached_looks() {
    let fleet = Fleet::start();
    let client = fleet.client();
    for name in fleet.names() {
        let sem = client.semaphore(&name).expect("a valid name");
        let permit = sem
            .try_acquire()
            .expect("memcached answers")
            .expect("a fresh lock is free");

        assert_eq!(
            run_perl(&["try", &fleet.list, NAMESPACE, &name]).trim(),
            "busy",
            "Perl's add succeeded on {name} while memsem held it"
        );
        // Cache::Memcached picks the server memsem wrote to, and reads memsem's token there.
        let seen = run_perl(&["where", &fleet.list, NAMESPACE, &name]);
        // The value is memsem's token, then its holder record on the next line.
        let expected = format!("server {} value {}", sem.server(), permit.token());
        assert!(
            seen.trim() == expected || seen.starts_with(&format!("{expected}\n")),
            "Cache::Memcached looks for {name} elsewhere than memsem put it: {seen:?}"
        );
        assert_eq!(fleet.holders_of(&name), vec![sem.server().to_string()]);

        permit.release().expect("release");
        assert_eq!(
            run_perl(&["try", &fleet.list, NAMESPACE, &name]).trim(),
            "acquired",
            "Perl could not take {name} after memsem released it"
        );
        println!(
            "{name}: memsem held it on {}: Perl found it there, its add failed, then succeeded after release",
            sem.server()
        );
    }
}

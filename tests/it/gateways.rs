//! `memsem serve keyedmutexd` (here) and `memsem serve lock-server` (`lock_server`)
//! against a real memcached, with Perl clients that speak exactly the old protocols
//! (tests/perl/keyedmutex.pl, tests/perl/lock_server.pl) and raw sockets for bad input.
//! Needs `perl` (Digest::MD5 is part of it). Every wait is on an event: a readiness or log
//! line of the gateway, a client's output, a process exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use memsem::WaitPolicy;

use crate::harness::{Memcached, unique};

mod lock_server;

const KEYEDMUTEX_PL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/perl/keyedmutex.pl");
const LOCK_SERVER_PL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/perl/lock_server.pl");

/// The longest any awaited event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running gateway: its address and every line it wrote on stderr. Killed on drop.
struct Gateway {
    child: Child,
    address: String,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Gateway {
    /// Starts `memsem serve PROTOCOL ARGS --log-requests` over `servers` and waits for its
    /// readiness line.
    fn start(servers: &str, protocol: &str, args: &[&str]) -> Gateway {
        let mut child = Command::new(crate::harness::workspace_binary("memsem"))
            .env("MEMSEM_SERVERS", servers)
            // A fresh memcached refuses grants for the restart lock delay: not in these tests.
            .env("MEMSEM_LOCK_DELAY", "0")
            .env_remove("MEMSEM_NAMESPACE")
            .env_remove("MEMSEM_ROUTING")
            .args(["serve", protocol, "--log-requests"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("memsem starts");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        let mut gateway = Gateway {
            child,
            address: String::new(),
            log,
        };
        let ready = gateway.wait_for("listening on ", 1);
        gateway.address = ready.rsplit(' ').next().unwrap().to_string();
        gateway
    }

    fn keyedmutexd(server: &Memcached, args: &[&str]) -> Gateway {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Gateway::start(&server.address(), "keyedmutexd", &all)
    }

    fn lock_server(server: &Memcached, args: &[&str]) -> Gateway {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Gateway::start(&server.address(), "lock-server", &all)
    }

    /// Waits until `count` lines contain `needle`; the last of them.
    fn wait_for(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + PATIENCE;
        let (lines, changed) = &*self.log;
        let mut lines = lines.lock().unwrap();
        loop {
            let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
            if found.len() >= count {
                return found[count - 1].clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "gateway never logged {count}× {needle:?}; log:\n{}",
                lines.join("\n")
            );
            lines = changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the gateway to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the gateway did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn perl(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new("perl");
    command.arg(script).args(args);
    command
}

/// A Perl client in the background with piped stdin and stdout.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Client {
    fn spawn(script: &str, args: &[&str]) -> Client {
        let mut child = perl(script, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("perl runs");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Client {
            child,
            stdin,
            stdout,
        }
    }

    /// The next line the client prints (blocks until it does).
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    /// Lets a holding client go on (the barrier it waits on).
    fn go(&mut self) {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    /// Waits for the client to exit; everything else it printed and its exit code.
    fn finish(mut self) -> (String, Option<i32>) {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (rest, self.child.wait().unwrap().code())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keyedmutexd lock name of a Perl key: `md5_hex`, computed by Perl.
fn md5_hex(key: &str) -> String {
    let out = perl("-MDigest::MD5=md5_hex", &[])
        .args(["-e", "print md5_hex(shift)", key])
        .output()
        .expect("perl runs");
    String::from_utf8(out.stdout).unwrap()
}

/// A log of "enter PID"/"exit PID" lines (scratch file, removed on drop).
struct SectionLog(PathBuf);

impl SectionLog {
    fn new() -> SectionLog {
        SectionLog(std::env::temp_dir().join(unique("memsem-gateway-log")))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// How many critical sections, after checking that none overlapped.
    fn sections(&self) -> usize {
        let text = std::fs::read_to_string(&self.0).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() % 2, 0, "unfinished section:\n{text}");
        for pair in lines.chunks(2) {
            let inside = pair[0].strip_prefix("enter ");
            assert!(
                inside.is_some() && pair[1].strip_prefix("exit ") == inside,
                "overlapping critical sections: {pair:?}\n{text}"
            );
        }
        lines.len() / 2
    }
}

impl Drop for SectionLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends raw bytes to a gateway (then, with `end`, closes our side); what it answers
/// before closing.
fn raw_exchange(address: &str, bytes: &[u8], end: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    // A gateway may close while we still write (a huge line): that is an answer too.
    let _ = stream.write_all(bytes);
    if end {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn ls_call(gateway: &Gateway, path: &[&str]) -> String {
    let mut args = vec!["call", &gateway.address];
    args.extend_from_slice(path);
    let out = perl(LOCK_SERVER_PL, &args).output().expect("perl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

// ---------------------------------------------------------------- keyedmutexd

#[test]
fn keyedmutexd_clients_of_two_gateways_never_overlap() {
    let server = Memcached::start();
    let gateways = [
        Gateway::keyedmutexd(&server, &[]),
        Gateway::keyedmutexd(&server, &[]),
    ];
    let key = unique("km-contended");
    let log = SectionLog::new();
    let workers: Vec<Client> = (0..6)
        .map(|i| {
            let address = &gateways[i % 2].address;
            Client::spawn(KEYEDMUTEX_PL, &["work", address, &key, "15", log.path()])
        })
        .collect();
    for worker in workers {
        let (out, code) = worker.finish();
        assert_eq!(code, Some(0), "{out}");
        assert!(out.starts_with("owned 15 "), "{out}");
    }
    assert_eq!(log.sections(), 6 * 15);
}

#[test]
fn keyedmutexd_fifty_clients_one_owner_the_rest_released() {
    let server = Memcached::start();
    let gateways = [
        Gateway::keyedmutexd(&server, &[]),
        Gateway::keyedmutexd(&server, &[]),
    ];
    let key = unique("km-stampede");
    let name = md5_hex(&key);
    let mut owner = Client::spawn(KEYEDMUTEX_PL, &["hold", &gateways[0].address, &key]);
    assert_eq!(owner.line(), "O");
    // The lock is the memsem lock named by the digest's hex: the library sees the holder.
    assert!(server.semaphore(&name).try_acquire().unwrap().is_none());

    let waiters: Vec<Client> = (0..49)
        .map(|i| Client::spawn(KEYEDMUTEX_PL, &["hold", &gateways[i % 2].address, &key]))
        .collect();
    let waiting = format!("{name} waiting");
    gateways[0].wait_for(&waiting, 25);
    gateways[1].wait_for(&waiting, 24);
    owner.go();
    assert_eq!(owner.line(), "released");
    for mut waiter in waiters {
        assert_eq!(waiter.line(), "R");
        assert_eq!(waiter.finish().1, Some(0));
    }
    assert!(server.semaphore(&name).try_acquire().unwrap().is_some());
}

#[test]
fn keyedmutexd_client_killed_while_holding_frees_the_lock() {
    let server = Memcached::start();
    let gateway = Gateway::keyedmutexd(&server, &[]);
    let key = unique("km-killed");
    let name = md5_hex(&key);
    let mut holder = Client::spawn(KEYEDMUTEX_PL, &["hold", &gateway.address, &key]);
    assert_eq!(holder.line(), "O");
    let mut waiter = Client::spawn(KEYEDMUTEX_PL, &["hold", &gateway.address, &key]);
    gateway.wait_for(&format!("{name} waiting"), 1);

    holder.child.kill().unwrap();
    assert_eq!(waiter.line(), "R", "the connection close released the lock");
    gateway.wait_for(&format!("{name} closed while holding"), 1);
    let mut next = Client::spawn(KEYEDMUTEX_PL, &["hold", &gateway.address, &key]);
    assert_eq!(next.line(), "O");
    next.go();
    assert_eq!(next.line(), "released");
}

#[test]
fn keyedmutexd_lease_ends_by_ttl_when_the_gateway_dies() {
    let server = Memcached::start();
    let mut gateway = Gateway::keyedmutexd(&server, &["--ttl", "2s"]);
    let key = unique("km-gateway-dies");
    let name = md5_hex(&key);
    let mut holder = Client::spawn(KEYEDMUTEX_PL, &["hold", &gateway.address, &key]);
    assert_eq!(holder.line(), "O");
    gateway.signal(libc::SIGKILL);
    assert_eq!(gateway.exit_code(), None, "killed by a signal");
    // Nobody releases it now: the lease runs out (2 s TTL, no more refreshes).
    let freed = server
        .semaphore(&name)
        .with_wait_policy(
            WaitPolicy::new()
                .poll_time(Duration::from_millis(50))
                .max_wait(PATIENCE),
        )
        .wait_acquire()
        .expect("the lease ends by its TTL");
    freed.release().unwrap();
    // The client learns of the dead gateway when it releases.
    holder.go();
    assert_ne!(holder.finish().1, Some(0));
}

#[test]
fn keyedmutexd_bad_input_is_closed_and_leaks_no_lock() {
    let server = Memcached::start();
    let gateway =
        Gateway::keyedmutexd(&server, &["--max-connections", "3", "--idle-timeout", "1s"]);

    // A short key, then the client closes.
    assert_eq!(raw_exchange(&gateway.address, b"0123456789", true), b"");
    gateway.wait_for("short key (10 of 16 bytes)", 1);

    // A byte other than R while holding: closed, and the lock released.
    let digest = *b"0123456789abcdef";
    let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut stream = TcpStream::connect(&gateway.address).unwrap();
    stream.write_all(&digest).unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"O");
    stream.write_all(b"X").unwrap();
    let mut rest = Vec::new();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    gateway.wait_for("instead of R, closed", 1);
    gateway.wait_for(&format!("{name} released"), 1);
    assert!(server.semaphore(&name).try_acquire().unwrap().is_some());

    // An idle client is disconnected.
    assert_eq!(raw_exchange(&gateway.address, b"", false), b"");
    gateway.wait_for("idle, closed", 1);

    // Over the connection limit: closed at once, and logged.
    let open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&gateway.address).unwrap())
        .collect();
    let mut extra = TcpStream::connect(&gateway.address).unwrap();
    extra.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut nothing = Vec::new();
    let _ = extra.read_to_end(&mut nothing);
    assert!(nothing.is_empty());
    gateway.wait_for("connections already open", 1);
    drop(open);

    // Still serving.
    let mut client = Client::spawn(
        KEYEDMUTEX_PL,
        &["hold", &gateway.address, "after-bad-input"],
    );
    assert_eq!(client.line(), "O");
    client.go();
    assert_eq!(client.line(), "released");
}

#[test]
fn keyedmutexd_shutdown_releases_holders_and_closes_waiters() {
    let server = Memcached::start();
    let dir = std::env::temp_dir().join(unique("memsem-km-socket"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("keyedmutexd.sock");
    let mut gateway = Gateway::start(
        &server.address(),
        "keyedmutexd",
        &["--socket", socket.to_str().unwrap()],
    );
    let key = unique("km-shutdown");
    let name = md5_hex(&key);
    let mut holder = Client::spawn(KEYEDMUTEX_PL, &["hold", &gateway.address, &key]);
    assert_eq!(holder.line(), "O");
    let waiter = Client::spawn(KEYEDMUTEX_PL, &["hold", &gateway.address, &key]);
    gateway.wait_for(&format!("{name} waiting"), 1);

    gateway.signal(libc::SIGTERM);
    assert_eq!(gateway.exit_code(), Some(0));
    assert_eq!(
        waiter.finish().1,
        Some(5),
        "the waiter's connection was closed"
    );
    assert!(
        server.semaphore(&name).try_acquire().unwrap().is_some(),
        "released"
    );
    assert!(!socket.exists(), "the socket file is removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keyedmutexd_replaces_a_stale_socket_but_no_other_file() {
    let dir = std::env::temp_dir().join(unique("memsem-km-stale"));
    std::fs::create_dir_all(&dir).unwrap();
    // A socket file left by a dead server: nobody listens on it.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let gateway = Gateway::start(
        "127.0.0.1:1",
        "keyedmutexd",
        &["--socket", stale.to_str().unwrap()],
    );
    assert!(
        std::os::unix::net::UnixStream::connect(&stale).is_ok(),
        "listening there now"
    );
    // A live one is not taken over.
    let second = Command::new(crate::harness::workspace_binary("memsem"))
        .args([
            "--servers",
            "127.0.0.1:1",
            "serve",
            "keyedmutexd",
            "--socket",
        ])
        .arg(&stale)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(69));
    drop(gateway);
    // A regular file is never removed.
    let file = dir.join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let refused = Command::new(crate::harness::workspace_binary("memsem"))
        .args([
            "--servers",
            "127.0.0.1:1",
            "serve",
            "keyedmutexd",
            "--socket",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gateways_fail_closed_when_the_fleet_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("127.0.0.1:{port}");
    let keyed = Gateway::start(&nowhere, "keyedmutexd", &["--listen", "127.0.0.1:0"]);
    let holder = Client::spawn(KEYEDMUTEX_PL, &["hold", &keyed.address, "k"]);
    assert_eq!(holder.finish().1, Some(5), "no O: the connection is closed");
    keyed.wait_for("fleet error", 1);

    let locks = Gateway::start(&nowhere, "lock-server", &["--listen", "127.0.0.1:0"]);
    assert_eq!(ls_call(&locks, &["LOCK", "k", "me"]), "0");
    assert_eq!(ls_call(&locks, &["CHECK", "k"]), "0");
    assert_eq!(ls_call(&locks, &["PING"]), "1");
    locks.wait_for("answered 0", 2);
}

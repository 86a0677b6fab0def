//! Issue 12 §5: servers memsem cannot use — no meta protocol (twemproxy), authentication
//! (memcached -Y), TLS (memcached -Z), not a memcached at all (an HTTP server) — are refused
//! with a non-retryable error naming the likely cause: `wait_acquire` with the default policy
//! (wait forever) and `memsem run --wait 1h` stop at once, and nothing is written.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use memsem::{Error, Protocol, Refusal};

use crate::harness::{Raw, builder, unique, workspace_binary};
use crate::procs::{self, Memcached};

/// A server process of this test, killed on drop.
struct Process {
    child: Child,
    port: u16,
    _dir: Option<Scratch>,
}

impl Process {
    /// Starts `program args` (with `{port}` replaced by a free port) and waits until that
    /// port accepts.
    fn start(program: &str, args: &[String], dir: Option<Scratch>) -> Process {
        Process::start_on(procs::free_port("127.0.0.1"), program, args, dir)
    }

    fn start_on(port: u16, program: &str, args: &[String], dir: Option<Scratch>) -> Process {
        let args: Vec<String> = args
            .iter()
            .map(|arg| arg.replace("{port}", &port.to_string()))
            .collect();
        let child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} (install it with apt-get): {e}"));
        let process = Process {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // A local process binds its own port: a connect is a readiness check here.
        while TcpStream::connect(process.address()).is_err() {
            assert!(
                Instant::now() < deadline,
                "{program} did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(unique("memsem-refusals"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

/// `wait_acquire` with the default policy (wait forever) on `address`: its error, which must
/// come at once (the 30 s limit is a hang guard).
fn wait_acquire_error(address: &str) -> Error {
    wait_acquire_error_speaking(address, Protocol::Auto)
}

/// As [`wait_acquire_error`], with the dialect forced.
fn wait_acquire_error_speaking(address: &str, protocol: Protocol) -> Error {
    let client = builder()
        .servers(address)
        .protocol(protocol)
        .io_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let sem = client
        .semaphore(&unique("refused"))
        .unwrap()
        .with_info("delete victim")
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sem.wait_acquire().map(|permit| permit.forget()));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Err(error)) => error,
        Ok(Ok(_)) => panic!("acquired a lock on {address}"),
        Err(_) => panic!("wait_acquire kept retrying on {address}"),
    }
}

fn refused(error: &Error) -> Refusal {
    match error {
        Error::Refused { reason, .. } => *reason,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn a_proxy_is_refused_when_meta_commands_are_required_and_nothing_is_written() {
    // With the default `auto`, memsem speaks classic through the proxy (tests/it/proxies.rs);
    // asked for meta, it must refuse at once rather than retry or write.
    let backend = Memcached::start("127.0.0.1", None);
    let dir = Scratch::new();
    let config = format!(
        "pool:\n  listen: 127.0.0.1:{{port}}\n  hash: fnv1a_64\n  distribution: ketama\n  \
         timeout: 400\n  servers:\n   - {}:1\n",
        backend.address()
    );
    // nutcracker reads its listen port from the file: write it once the port is known.
    let port = procs::free_port("127.0.0.1");
    let config = dir.file(
        "nutcracker.yml",
        &config.replace("{port}", &port.to_string()),
    );
    let stats_port = procs::free_port("127.0.0.1").to_string();
    let proxy = Process::start_on(
        port,
        "nutcracker",
        &strings(&["-c", &config, "-s", &stats_port]),
        Some(dir),
    );
    Raw::connect(&backend.address()).set(b"victim", b"still here", 0);

    // With the meta dialect required (the default, auto, would speak classic to it).
    let error = wait_acquire_error_speaking(&proxy.address(), Protocol::Meta);
    assert_eq!(refused(&error), Refusal::NoMetaProtocol);
    assert!(!error.is_retryable());
    assert!(
        error
            .to_string()
            .contains("does not understand meta commands"),
        "{error}"
    );
    assert_eq!(
        Raw::connect(&backend.address()).get(b"victim"),
        Some(b"still here".to_vec())
    );

    let out = Command::new(workspace_binary("memsem"))
        .args(["--servers", &proxy.address(), "--lock-delay", "0"])
        .args(["--protocol", "meta"])
        .args(["run", "--wait", "1h", &unique("cli-refused"), "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(76), "{stderr}");
    assert!(stderr.contains("meta commands"), "{stderr}");
}

#[test]
fn a_server_that_wants_authentication_is_refused() {
    let dir = Scratch::new();
    let users = dir.file("users", "user:secret\n");
    let server = Process::start(
        "memcached",
        &strings(&[
            "-l",
            "127.0.0.1",
            "-p",
            "{port}",
            "-U",
            "0",
            "-u",
            "root",
            "-Y",
            &users,
        ]),
        Some(dir),
    );
    let error = wait_acquire_error(&server.address());
    assert_eq!(refused(&error), Refusal::AuthRequired);
    assert!(
        error.to_string().contains("requires authentication"),
        "{error}"
    );
}

#[test]
fn a_tls_only_server_is_refused() {
    let dir = Scratch::new();
    let key = dir.0.join("key.pem");
    let cert = dir.0.join("cert.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls = format!(
        "ssl_chain_cert={},ssl_key={}",
        cert.display(),
        key.display()
    );
    let server = Process::start(
        "memcached",
        &strings(&[
            "-l",
            "127.0.0.1",
            "-p",
            "{port}",
            "-U",
            "0",
            "-u",
            "root",
            "-Z",
            "-o",
            &tls,
        ]),
        Some(dir),
    );
    let error = wait_acquire_error(&server.address());
    assert_eq!(refused(&error), Refusal::TlsMismatch);
    assert!(error.to_string().contains("TLS"), "{error}");
}

#[test]
fn something_that_is_not_memcached_is_refused() {
    let server = Process::start(
        "python3",
        &strings(&["-m", "http.server", "{port}", "--bind", "127.0.0.1"]),
        None,
    );
    let error = wait_acquire_error(&server.address());
    assert_eq!(refused(&error), Refusal::NotMemcached);
}

//! Real memcached servers for the tests: containers built from Debian's memcached binary
//! (scripts/memcached-image.sh), plus a raw text-protocol connection to check what is
//! really stored.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use memsem::{Client, Semaphore};
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

pub const IMAGE: &str = "memsem-memcached";
pub const TAG: &str = "test";
pub const LABEL: &str = "memsem-test";

const HOW_TO_GET_DOCKER: &str = "the integration tests need a Docker engine and the local \
memcached image: run scripts/test.sh (it installs docker.io and memcached with apt, starts \
dockerd and builds the image), or by hand: apt-get install docker.io memcached && \
(dockerd &) && scripts/memcached-image.sh";

fn ensure_image() {
    static IMAGE_READY: Once = Once::new();
    IMAGE_READY.call_once(|| {
        let docker = Command::new("docker").arg("info").output();
        match docker {
            Ok(out) if out.status.success() => {}
            _ => panic!("Docker is not available: {HOW_TO_GET_DOCKER}"),
        }
        let inspect = Command::new("docker")
            .args(["image", "inspect", &format!("{IMAGE}:{TAG}")])
            .output()
            .expect("docker runs");
        if !inspect.status.success() {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/memcached-image.sh");
            let built = Command::new("bash")
                .arg(script)
                .status()
                .expect("bash runs");
            assert!(
                built.success(),
                "building the memcached image failed: {HOW_TO_GET_DOCKER}"
            );
        }
    });
}

/// One memcached in a container, removed on drop.
pub struct Memcached {
    container: Container<GenericImage>,
    pub port: u16,
}

impl Memcached {
    pub fn start() -> Memcached {
        Memcached::start_with(&[])
    }

    /// Starts memcached with extra arguments (for example `-m 1` for a tiny cache).
    pub fn start_with(args: &[&str]) -> Memcached {
        Memcached::launch(args, None)
    }

    /// Starts memcached on a fixed host port, so that it keeps its address across
    /// [`restart`](Self::restart).
    pub fn start_pinned() -> Memcached {
        // Below Linux's ephemeral range (32768-60999), so that busy clients' outgoing
        // connections cannot take the port while the container restarts.
        let port = (0..200)
            .map(|_| rand::random_range(20_000u16..30_000))
            .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
            .expect("a free port in 20000-29999");
        Memcached::launch(&[], Some(port))
    }

    /// Stops the server: connections are refused from now on.
    pub fn stop(&self) {
        docker(&["stop", "-t", "0", self.container.id()]);
    }

    /// Restarts the server process: memcached forgets every key.
    pub fn restart(&self) {
        docker(&["restart", "-t", "0", self.container.id()]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !answers(&self.address()) {
            assert!(
                std::time::Instant::now() < deadline,
                "memcached did not come back after a restart"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn launch(args: &[&str], pinned: Option<u16>) -> Memcached {
        ensure_image();
        let mut cmd = vec!["-vv", "-l", "0.0.0.0", "-p", "11211"];
        cmd.extend_from_slice(args);
        let mut request = GenericImage::new(IMAGE, TAG)
            .with_exposed_port(ContainerPort::Tcp(11211))
            .with_wait_for(WaitFor::message_on_stderr("server listening"))
            .with_cmd(cmd)
            .with_label(LABEL, "1");
        if let Some(port) = pinned {
            request = request.with_mapped_port(port, ContainerPort::Tcp(11211));
        }
        let container = request.start().unwrap_or_else(|e| {
            panic!("cannot start memcached container ({e}): {HOW_TO_GET_DOCKER}")
        });
        let port = container.get_host_port_ipv4(11211).expect("mapped port");
        Memcached { container, port }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client with short timeouts, so fault tests finish quickly.
    pub fn client(&self) -> Client {
        self.client_with_namespace("")
    }

    pub fn client_with_namespace(&self, namespace: &str) -> Client {
        builder()
            .servers(&self.address())
            .namespace(namespace)
            .io_timeout(Duration::from_millis(400))
            .connect_timeout(Duration::from_millis(400))
            .build()
            .expect("client")
    }

    /// A handle on the lock `name` through a fresh client with the test timeouts.
    pub fn semaphore(&self, name: &str) -> Semaphore {
        self.client().semaphore(name).expect("a valid lock name")
    }

    /// Freezes the server process (SIGSTOP through the cgroup freezer): connections are
    /// accepted by docker-proxy, nothing is answered.
    pub fn pause(&self) {
        docker(&["pause", self.container.id()]);
    }

    pub fn unpause(&self) {
        docker(&["unpause", self.container.id()]);
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(&self.address())
    }
}

/// A client builder for the tests: every test starts a fresh memcached, which the default
/// lock-delay would keep from granting locks; the tests of the lock-delay (safety.rs) set
/// their own.
pub fn builder() -> memsem::ClientBuilder {
    Client::builder().lock_delay(Duration::ZERO)
}

/// Whether a memcached answers `version` at `address` (a bare connect is not enough:
/// docker-proxy accepts connections while nothing listens behind it).
fn answers(address: &str) -> bool {
    let Ok(stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return false,
    };
    if writer.write_all(b"version\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("VERSION")
}

fn docker(args: &[&str]) {
    let status = Command::new("docker")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker runs");
    assert!(status.success(), "docker {args:?} failed");
}

/// A plain text-protocol connection, to look at and change the server from outside memsem.
pub struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    pub fn connect(address: &str) -> Raw {
        let stream = TcpStream::connect(address).expect("raw connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Raw {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("raw read");
        line.trim_end().to_string()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("raw write");
    }

    /// The value of `key`, or None.
    pub fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_with_ttl(key).map(|(value, _)| value)
    }

    /// The holder's token stored under `key` (the value up to its first newline), or None.
    pub fn token(&mut self, key: &[u8]) -> Option<String> {
        let value = self.get(key)?;
        let end = value
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(value.len());
        Some(String::from_utf8_lossy(&value[..end]).into_owned())
    }

    /// The value and remaining TTL (-1 = never) of `key`.
    pub fn get_with_ttl(&mut self, key: &[u8]) -> Option<(Vec<u8>, i64)> {
        let mut cmd = b"mg ".to_vec();
        cmd.extend_from_slice(key);
        cmd.extend_from_slice(b" v t\r\n");
        self.send(&cmd);
        let header = self.line();
        if header == "EN" {
            return None;
        }
        let mut parts = header.split(' ');
        assert_eq!(parts.next(), Some("VA"), "unexpected reply {header:?}");
        let len: usize = parts.next().unwrap().parse().unwrap();
        let ttl: i64 = parts
            .find_map(|flag| flag.strip_prefix('t'))
            .expect("ttl flag")
            .parse()
            .unwrap();
        let mut data = vec![0; len + 2];
        std::io::Read::read_exact(&mut self.reader, &mut data).unwrap();
        data.truncate(len);
        Some((data, ttl))
    }

    pub fn set(&mut self, key: &[u8], value: &[u8], ttl: u32) {
        let mut cmd = format!(
            "set {} 0 {ttl} {}\r\n",
            String::from_utf8_lossy(key),
            value.len()
        )
        .into_bytes();
        cmd.extend_from_slice(value);
        cmd.extend_from_slice(b"\r\n");
        self.send(&cmd);
        assert_eq!(self.line(), "STORED");
    }

    pub fn delete(&mut self, key: &[u8]) -> bool {
        let cmd = format!("delete {}\r\n", String::from_utf8_lossy(key));
        self.send(cmd.as_bytes());
        self.line() == "DELETED"
    }

    /// Waits until the `stats` counter `name` has grown by at least `by` from `from` (the
    /// event "the other clients have sent their requests"), for up to 20 s.
    pub fn wait_for_stat(&mut self, name: &str, from: u64, by: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.stat(name) < from + by {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not grow by {by} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A counter from `stats`.
    pub fn stat(&mut self, name: &str) -> u64 {
        self.send(b"stats\r\n");
        let mut found = None;
        loop {
            let line = self.line();
            if line == "END" {
                break;
            }
            let mut parts = line.split(' ');
            if parts.nth(1) == Some(name) {
                found = parts.next().map(|v| v.parse().unwrap());
            }
        }
        found.unwrap_or_else(|| panic!("no stat {name}"))
    }
}

/// A lock name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A binary of the workspace (`target/<profile>/<name>`), next to the `deps/` directory this
/// test binary runs from. scripts/test.sh builds them before the tests.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build --workspace` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Polls `condition` every 20 ms until it holds; fails the test naming `what` after 30 s (a
/// hang guard, not a timing claim). For events that have no notification to wait on: a
/// process gone, a key written by another process.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never happened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

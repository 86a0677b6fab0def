//! memcached as plain local processes (no Docker): for the tests that drive real client
//! libraries in other languages (routing agreement, Perl interop), which need servers on
//! known host/port pairs with weights.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A memcached process of this test; killed when dropped, also when the test panics.
pub struct Memcached {
    child: Child,
    pub host: String,
    pub port: u16,
    /// The unix socket it listens on instead of TCP (`memcached -s`), removed when dropped.
    pub socket: Option<PathBuf>,
}

impl Memcached {
    /// Starts `memcached -l host -p port -U 0 -m 64` on `port`, or on a free port when
    /// `None`, and waits until this very process answers (its `stats` pid matches). Retries
    /// while the address is taken, for up to 60 s.
    pub fn start(host: &str, port: Option<u16>) -> Memcached {
        Memcached::start_with(host, port, &[])
    }

    /// Starts memcached with extra command-line arguments (for example `-t 1`).
    pub fn start_with(host: &str, port: Option<u16>, extra: &[&str]) -> Memcached {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_failure = String::new();
        while Instant::now() < deadline {
            let port = port.unwrap_or_else(|| free_port(host));
            let spawned = Command::new("memcached")
                .args(["-l", host, "-p", &port.to_string(), "-U", "0", "-m", "64"])
                .args(extra)
                // Needed when the tests run as root; ignored otherwise.
                .args(["-u", "root"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                    "memcached is not installed: install it with 'apt-get install -y memcached'"
                ),
                Err(e) => panic!("cannot start memcached: {e}"),
            };
            let mut server = Memcached {
                child,
                host: host.to_string(),
                port,
                socket: None,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(failure) => {
                    last_failure = failure;
                    drop(server);
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!("memcached on {host}:{port:?} did not start within 60 s: {last_failure}");
    }

    /// Starts `memcached -s PATH -U 0 -m 64` on a fresh socket path in the temporary
    /// directory and waits until this very process answers.
    pub fn start_unix() -> Memcached {
        Memcached::start_unix_with(&[])
    }

    /// Starts memcached on a fresh unix socket with extra command-line arguments.
    pub fn start_unix_with(extra: &[&str]) -> Memcached {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "memsem-mc-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let child = Command::new("memcached")
            .arg("-s")
            .arg(&path)
            .args(["-U", "0", "-m", "64", "-u", "root"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start memcached -s: {e}"));
        let mut server = Memcached {
            child,
            host: path.to_string_lossy().into_owned(),
            port: 0,
            socket: Some(path),
        };
        if let Err(failure) = server.wait_ready() {
            panic!("memcached on {} did not start: {failure}", server.host);
        }
        server
    }

    /// A connection to this server, over TCP or its unix socket.
    fn connect(&self) -> io::Result<Conn> {
        match &self.socket {
            None => connect(&self.address()).map(Conn::Tcp),
            Some(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_write_timeout(Some(Duration::from_secs(5)))?;
                Ok(Conn::Unix(stream))
            }
        }
    }

    /// Waits until this process answers `stats` with its own pid.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                return Err(format!("memcached exited ({status}): {}", stderr.trim()));
            }
            // Another process's server may hold the address; then ours exits shortly.
            if let Ok(Some(pid)) = self.connect().and_then(stats_pid)
                && pid == self.child.id()
            {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "no answer from our memcached on {}",
            self.address()
        ))
    }

    pub fn address(&self) -> String {
        if self.socket.is_some() {
            self.host.clone()
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Which of `keys` this server holds, asked with pipelined meta gets (`mg <key>`).
    pub fn holds(&self, keys: &[Vec<u8>]) -> Vec<bool> {
        let stream = self
            .connect()
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.address()));
        let mut writer = stream.try_clone().expect("clone a stream");
        let mut reader = BufReader::new(stream);
        let mut held = Vec::with_capacity(keys.len());
        for batch in keys.chunks(100) {
            let mut request = Vec::new();
            for key in batch {
                request.extend_from_slice(b"mg ");
                request.extend_from_slice(key);
                request.extend_from_slice(b"\r\n");
            }
            writer.write_all(&request).expect("send mg");
            for key in batch {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read mg reply");
                held.push(match line.as_str() {
                    "HD\r\n" => true,
                    "EN\r\n" => false,
                    other => panic!(
                        "{}: unexpected reply {other:?} to mg {}",
                        self.address(),
                        String::from_utf8_lossy(key)
                    ),
                });
            }
        }
        held
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A stream to a memcached process: TCP or unix socket.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        match self {
            Conn::Tcp(stream) => stream.try_clone().map(Conn::Tcp),
            Conn::Unix(stream) => stream.try_clone().map(Conn::Unix),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(stream) => stream.read(buf),
            Conn::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(stream) => stream.write(buf),
            Conn::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(stream) => stream.flush(),
            Conn::Unix(stream) => stream.flush(),
        }
    }
}

pub fn connect(address: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// The pid a memcached server reports in `stats`.
fn stats_pid(mut stream: impl Read + Write) -> io::Result<Option<u32>> {
    stream.write_all(b"stats\r\n")?;
    let mut pid = None;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line == "END" {
            break;
        }
        if let Some(value) = line.strip_prefix("STAT pid ") {
            pid = value.trim().parse().ok();
        }
    }
    Ok(pid)
}

/// A port nobody listens on right now (a race with other processes is caught by the pid
/// check in `Memcached::wait_ready`).
pub fn free_port(host: &str) -> u16 {
    let listener = TcpListener::bind((host, 0))
        .unwrap_or_else(|e| panic!("cannot bind a free port on {host}: {e}"));
    listener.local_addr().expect("local address").port()
}

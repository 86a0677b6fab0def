//! Scenario 8: an uncontended acquire+release over TCP, a unix socket and TLS, each against
//! the raw floor on the same transport in the same run: one socket (or one rustls stream)
//! that writes `ms <key> 32 T60 ME` and `md <key>` and reads each reply, nothing else. Each
//! transport is measured twice: the blocking API against a blocking socket, and the tokio API
//! against a tokio socket (one task on a multi-thread runtime, both sides in the same task).
//! A second floor sends memsem's own bytes on the same socket: its lock value (token and
//! holder record, read back from the server), the `c` and `O` flags, and the CAS-checked
//! `md`: what is left between it and memsem is the client's own cost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memsem::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::procs::{Memcached, free_port};
use crate::{Sizes, median_us};

/// One raw connection: the floor's two round trips, replies read up to their line end.
struct Raw(Box<dyn ReadWrite>);

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// memsem's requests for a pair, byte for byte but the key: `ms <key> <len> T60 ME c O<n>`
/// with memsem's own lock value, then `md <key> C<cas> O<n+1>`.
struct Twin {
    value: Vec<u8>,
    opaque: u32,
    request: Vec<u8>,
}

impl Twin {
    const KEY: &str = "bench-floor-m";

    fn new(value: Vec<u8>) -> Twin {
        Twin {
            value,
            opaque: 0,
            request: Vec::with_capacity(256),
        }
    }

    fn add(&mut self) -> &[u8] {
        self.request.clear();
        let (key, len, opaque) = (Twin::KEY, self.value.len(), self.opaque);
        write!(self.request, "ms {key} {len} T60 ME c O{opaque}\r\n").expect("write");
        self.request.extend_from_slice(&self.value);
        self.request.extend_from_slice(b"\r\n");
        self.opaque = self.opaque.wrapping_add(1);
        &self.request
    }

    /// The delete for the add whose reply is `reply` (`HD c<cas> O<n>`).
    fn delete(&mut self, reply: &[u8]) -> &[u8] {
        assert!(reply.starts_with(b"HD"), "the twin floor's key was taken");
        let cas: u64 = std::str::from_utf8(reply)
            .expect("a text reply")
            .split_whitespace()
            .find_map(|word| word.strip_prefix('c')?.parse().ok())
            .expect("the CAS");
        self.request.clear();
        let (key, opaque) = (Twin::KEY, self.opaque);
        write!(self.request, "md {key} C{cas} O{opaque}\r\n").expect("write");
        self.opaque = self.opaque.wrapping_add(1);
        &self.request
    }
}

/// `mg <key> v`: the value in a reply, once it is all in `buf[..got]`.
fn value_in(buf: &[u8]) -> Option<Vec<u8>> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let header = std::str::from_utf8(&buf[..end]).expect("a text reply");
    let len: usize = header
        .strip_prefix("VA ")
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no value in {header:?}"));
    let start = end + 2;
    (buf.len() >= start + len + 2).then(|| buf[start..start + len].to_vec())
}

impl Raw {
    /// The value stored at `key`.
    fn value_of(&mut self, key: &str) -> Vec<u8> {
        self.0
            .write_all(format!("mg {key} v\r\n").as_bytes())
            .expect("send");
        self.0.flush().expect("flush");
        let (mut buf, mut got) = (vec![0u8; 4096], 0);
        loop {
            if let Some(value) = value_in(&buf[..got]) {
                return value;
            }
            let n = self.0.read(&mut buf[got..]).expect("reply");
            assert!(n > 0, "connection closed");
            got += n;
        }
    }

    fn twin_pair(&mut self, twin: &mut Twin) {
        let mut buf = [0u8; 64];
        self.round_trip(twin.add(), &mut buf);
        let reply = buf;
        self.round_trip(twin.delete(&reply), &mut buf);
        assert!(buf.starts_with(b"HD"), "the twin floor's delete failed");
    }

    fn round_trip(&mut self, request: &[u8], buf: &mut [u8]) {
        self.0.write_all(request).expect("send");
        self.0.flush().expect("flush");
        let mut got = 0;
        while !buf[..got].ends_with(b"\r\n") {
            let n = self.0.read(&mut buf[got..]).expect("reply");
            assert!(n > 0, "connection closed");
            got += n;
        }
    }

    fn pair(&mut self) {
        let mut buf = [0u8; 64];
        self.round_trip(
            b"ms bench-floor-t 32 T60 ME\r\n0123456789abcdef0123456789abcdef\r\n",
            &mut buf,
        );
        assert!(buf.starts_with(b"HD"), "the floor's key was taken");
        self.round_trip(b"md bench-floor-t\r\n", &mut buf);
    }
}

/// The floor on tokio: the same two round trips on a tokio socket (or tokio-rustls stream).
struct RawAsync(std::pin::Pin<Box<dyn AsyncReadWrite>>);

trait AsyncReadWrite: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> AsyncReadWrite for T {}

impl RawAsync {
    async fn value_of(&mut self, key: &str) -> Vec<u8> {
        let request = format!("mg {key} v\r\n");
        self.0.write_all(request.as_bytes()).await.expect("send");
        self.0.flush().await.expect("flush");
        let (mut buf, mut got) = (vec![0u8; 4096], 0);
        loop {
            if let Some(value) = value_in(&buf[..got]) {
                return value;
            }
            let n = self.0.read(&mut buf[got..]).await.expect("reply");
            assert!(n > 0, "connection closed");
            got += n;
        }
    }

    async fn twin_pair(&mut self, twin: &mut Twin) {
        let mut buf = [0u8; 64];
        self.round_trip(twin.add(), &mut buf).await;
        let reply = buf;
        self.round_trip(twin.delete(&reply), &mut buf).await;
        assert!(buf.starts_with(b"HD"), "the twin floor's delete failed");
    }

    async fn round_trip(&mut self, request: &[u8], buf: &mut [u8]) {
        self.0.write_all(request).await.expect("send");
        self.0.flush().await.expect("flush");
        let mut got = 0;
        while !buf[..got].ends_with(b"\r\n") {
            let n = self.0.read(&mut buf[got..]).await.expect("reply");
            assert!(n > 0, "connection closed");
            got += n;
        }
    }

    async fn pair(&mut self) {
        let mut buf = [0u8; 64];
        self.round_trip(
            b"ms bench-floor-t 32 T60 ME\r\n0123456789abcdef0123456789abcdef\r\n",
            &mut buf,
        )
        .await;
        assert!(buf.starts_with(b"HD"), "the floor's key was taken");
        self.round_trip(b"md bench-floor-t\r\n", &mut buf).await;
    }
}

/// `memcached -Z -t 1` with a certificate for 127.0.0.1 made by openssl, ready once it logs
/// "server listening"; and the CA file that trusts it.
struct TlsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = std::env::temp_dir().join(format!("memsem-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").expect("write");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stderr(Stdio::null())
                .status()
                .expect("openssl is installed");
            assert!(status.success(), "openssl {args:?}");
        };
        openssl(
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ]
            .iter()
            .chain(&[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=bench CA",
            ])
            .copied()
            .collect::<Vec<_>>(),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=bench",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "server.pem",
            "-extfile",
            "ext",
        ]);
        let port = free_port("127.0.0.1");
        let options = format!(
            "ssl_chain_cert={},ssl_key={}",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        let mut child = Command::new("memcached")
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-t",
                "1",
            ])
            .args(["-u", "root", "-vv", "-Z", "-o", &options])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start memcached -Z");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        while !line.contains("server listening") {
            line.clear();
            let n = std::io::BufRead::read_line(&mut stderr, &mut line).expect("memcached log");
            assert!(n > 0, "memcached -Z exited");
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        TlsServer { child, port, dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca()).expect("CA file") {
            roots.add(cert.expect("a certificate")).expect("a CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    fn raw(&self) -> Raw {
        let name = ServerName::try_from("127.0.0.1").expect("a name");
        let connection = rustls::ClientConnection::new(self.config(), name).expect("TLS");
        let socket = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        Raw(Box::new(rustls::StreamOwned::new(connection, socket)))
    }

    async fn raw_async(&self) -> RawAsync {
        let name = ServerName::try_from("127.0.0.1").expect("a name");
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        let connector = tokio_rustls::TlsConnector::from(self.config());
        let stream = connector.connect(name, socket).await.expect("TLS");
        RawAsync(Box::pin(stream))
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Medians in µs of one run: the raw floor, the raw floor with memsem's bytes, memsem.
type Medians = (f64, f64, f64);

/// Interleaved raw, twin and memsem pairs: the medians in µs.
fn measure(mut raw: Raw, client: &memsem::Client, n: usize) -> Medians {
    let warm = n / 10;
    let sem = client.semaphore("bench-transport").expect("a valid name");
    let permit = sem.try_acquire().expect("memcached answers").expect("free");
    let mut twin = Twin::new(raw.value_of("__lock__bench-transport"));
    permit.release().expect("release");
    let mut samples = [(); 3].map(|()| Vec::with_capacity(n));
    for i in 0..warm + n {
        // Each of the three in each place of the order in turn.
        let mut took = [Duration::ZERO; 3];
        for which in (0..3).map(|k| (k + i) % 3) {
            let started = Instant::now();
            match which {
                0 => raw.pair(),
                1 => raw.twin_pair(&mut twin),
                _ => {
                    let permit = sem.try_acquire().expect("memcached answers").expect("free");
                    permit.release().expect("release");
                }
            }
            took[which] = started.elapsed();
        }
        if i >= warm {
            for (samples, took) in samples.iter_mut().zip(took) {
                samples.push(took);
            }
        }
    }
    let [raw, twin, memsem] = samples.map(median_us);
    (raw, twin, memsem)
}

/// The same on tokio: raw and memsem pairs interleaved in one task of a multi-thread runtime
/// (one worker per core), the medians in µs.
async fn measure_async(
    mut raw: RawAsync,
    client: &memsem::Client<memsem::Tokio>,
    n: usize,
) -> Medians {
    let warm = n / 10;
    let sem = client.semaphore("bench-transport").expect("a valid name");
    let permit = sem.try_acquire().await.expect("answers").expect("free");
    let mut twin = Twin::new(raw.value_of("__lock__bench-transport").await);
    permit.release().await.expect("release");
    let mut samples = [(); 3].map(|()| Vec::with_capacity(n));
    for i in 0..warm + n {
        let mut took = [Duration::ZERO; 3];
        for which in (0..3).map(|k| (k + i) % 3) {
            let started = Instant::now();
            match which {
                0 => raw.pair().await,
                1 => raw.twin_pair(&mut twin).await,
                _ => {
                    let permit = sem
                        .try_acquire()
                        .await
                        .expect("memcached answers")
                        .expect("free");
                    permit.release().await.expect("release");
                }
            }
            took[which] = started.elapsed();
        }
        if i >= warm {
            for (samples, took) in samples.iter_mut().zip(took) {
                samples.push(took);
            }
        }
    }
    let [raw, twin, memsem] = samples.map(median_us);
    (raw, twin, memsem)
}

fn row(transport: &str, api: &str, (raw_us, twin_us, memsem_us): Medians) {
    println!(
        "| {transport} | {api} | {raw_us:.1} | {twin_us:.1} | {memsem_us:.1} | {:.2} | {:.2} |",
        memsem_us / raw_us,
        memsem_us / twin_us
    );
}

/// Runs `body` as one task of a multi-thread runtime (so that it runs on a worker thread, as
/// a service's handlers do) and waits for it.
fn on_runtime<T: Send + 'static>(body: impl Future<Output = T> + Send + 'static) -> T {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let task = runtime.spawn(body);
    runtime.block_on(task).expect("the measuring task panicked")
}

async fn async_client(servers: String, tls: Option<TlsConfig>) -> memsem::Client<memsem::Tokio> {
    let builder = crate::builder().servers(&servers);
    match tls {
        Some(tls) => builder.tls(tls),
        None => builder,
    }
    .build_async()
    .await
    .expect("async memsem client")
}

pub fn over_transports(sizes: &Sizes) {
    let n = sizes.pairs;
    println!("## 8. Uncontended acquire+release by transport (median of {n}, µs)\n");
    println!(
        "Each row has its own one-thread memcached (`-t 1`); the raw floor is one connection \
         writing a meta add (32-byte value) and a meta delete and reading each reply; the \
         second floor sends memsem's bytes on that connection (its lock value with the holder \
         record, `c` and `O` flags, `md` with the CAS); both interleaved with memsem's pairs in \
         the same run. Blocking rows: the blocking API and a blocking socket; tokio rows: the \
         async API and a tokio socket, in one task of a multi-thread runtime.\n"
    );
    println!(
        "| transport | API | raw add + delete | raw, memsem's bytes | memsem try_acquire + release | × raw | × raw, memsem's bytes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let client = |servers: &str, tls: Option<TlsConfig>| {
        let builder = crate::builder().servers(servers);
        match tls {
            Some(tls) => builder.tls(tls),
            None => builder,
        }
        .build()
        .expect("memsem client")
    };

    let tcp = Memcached::start_with("127.0.0.1", None, &["-t", "1"]);
    let socket = TcpStream::connect(tcp.address()).expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    row(
        "TCP",
        "blocking",
        measure(Raw(Box::new(socket)), &client(&tcp.address(), None), n),
    );
    let address = tcp.address();
    row(
        "TCP",
        "tokio",
        on_runtime(async move {
            let socket = tokio::net::TcpStream::connect(&address)
                .await
                .expect("connect");
            socket.set_nodelay(true).expect("nodelay");
            let client = async_client(address, None).await;
            measure_async(RawAsync(Box::pin(socket)), &client, n).await
        }),
    );
    drop(tcp);

    let unix = Memcached::start_unix_with(&["-t", "1"]);
    let socket = UnixStream::connect(Path::new(&unix.address())).expect("connect");
    row(
        "unix socket",
        "blocking",
        measure(Raw(Box::new(socket)), &client(&unix.address(), None), n),
    );
    let address = unix.address();
    row(
        "unix socket",
        "tokio",
        on_runtime(async move {
            let socket = tokio::net::UnixStream::connect(&address)
                .await
                .expect("connect");
            let client = async_client(address, None).await;
            measure_async(RawAsync(Box::pin(socket)), &client, n).await
        }),
    );
    drop(unix);

    let tls = TlsServer::start();
    let address = format!("127.0.0.1:{}", tls.port);
    let config = TlsConfig::new().ca_file(tls.ca());
    row(
        "TLS (rustls)",
        "blocking",
        measure(tls.raw(), &client(&address, Some(config.clone())), n),
    );
    let tls = Arc::new(tls);
    let server = Arc::clone(&tls);
    row(
        "TLS (rustls)",
        "tokio",
        on_runtime(async move {
            let raw = server.raw_async().await;
            let client = async_client(address, Some(config)).await;
            measure_async(raw, &client, n).await
        }),
    );
    drop(tls);
    println!();
}

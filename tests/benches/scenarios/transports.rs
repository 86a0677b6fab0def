//! Scenario 8: an uncontended acquire+release over TCP, a unix socket and TLS, each against
//! the raw floor on the same transport in the same run: one socket (or one rustls stream)
//! that writes `ms <key> 32 T60 ME` and `md <key>` and reads each reply, nothing else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use memsem::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::procs::{Memcached, free_port};
use crate::{Sizes, median_us};

/// One raw connection: the floor's two round trips, replies read up to their line end.
struct Raw(Box<dyn ReadWrite>);

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Raw {
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

    fn raw(&self) -> Raw {
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
        let name = ServerName::try_from("127.0.0.1").expect("a name");
        let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS");
        let socket = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        Raw(Box::new(rustls::StreamOwned::new(connection, socket)))
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Interleaved raw and memsem pairs: the medians in µs.
fn measure(mut raw: Raw, client: &memsem::Client, n: usize) -> (f64, f64) {
    let warm = n / 10;
    let sem = client.semaphore("bench-transport").expect("a valid name");
    let (mut raw_samples, mut memsem_samples) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..warm + n {
        let started = Instant::now();
        raw.pair();
        let raw_took = started.elapsed();
        let started = Instant::now();
        let permit = sem.try_acquire().expect("memcached answers").expect("free");
        permit.release().expect("release");
        let memsem_took = started.elapsed();
        if i >= warm {
            raw_samples.push(raw_took);
            memsem_samples.push(memsem_took);
        }
    }
    (median_us(raw_samples), median_us(memsem_samples))
}

fn row(transport: &str, (raw_us, memsem_us): (f64, f64)) {
    println!(
        "| {transport} | {raw_us:.1} | {memsem_us:.1} | {:.2} |",
        memsem_us / raw_us
    );
}

pub fn over_transports(sizes: &Sizes) {
    let n = sizes.pairs;
    println!("## 8. Uncontended acquire+release by transport (median of {n}, µs)\n");
    println!(
        "Each row has its own one-thread memcached (`-t 1`); the raw floor is one connection \
         writing a meta add and a meta delete and reading each reply, interleaved with memsem's \
         pairs in the same run.\n"
    );
    println!("| transport | raw add + delete | memsem try_acquire + release | × raw |");
    println!("|---|---:|---:|---:|");
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
        measure(Raw(Box::new(socket)), &client(&tcp.address(), None), n),
    );
    drop(tcp);

    let unix = Memcached::start_unix_with(&["-t", "1"]);
    let socket = UnixStream::connect(Path::new(&unix.address())).expect("connect");
    row(
        "unix socket",
        measure(Raw(Box::new(socket)), &client(&unix.address(), None), n),
    );
    drop(unix);

    let tls = TlsServer::start();
    let address = format!("127.0.0.1:{}", tls.port);
    let config = TlsConfig::new().ca_file(tls.ca());
    row(
        "TLS (rustls)",
        measure(tls.raw(), &client(&address, Some(config)), n),
    );
    println!();
}

//! Every kind of memcached fleet, against real memcached processes started here: a unix
//! socket (`-s`), TLS (`-Z`, with certificates made by `openssl` for each test, and mutual
//! TLS with `ssl_verify_mode=3`), ASCII auth (`-Y`), SASL (`-S`, refused with a clear
//! reason), TLS configured on one side only (refused as a mismatch, never "unavailable"),
//! and a restart under an async holder.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use memsem::{Client, ClientBuilder, Error, Refusal, TlsConfig, WaitPolicy};

use crate::harness::unique;
use crate::procs::{self, free_port};

/// A memcached process with extra flags, ready once it logs "server listening" (`-vv`):
/// the text probe of `procs::Memcached` cannot talk to TLS, auth or SASL servers.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(args: &[String], env: &[(&str, &Path)]) -> Server {
        let mut last = String::new();
        for _ in 0..20 {
            let port = free_port("127.0.0.1");
            let mut child = Command::new("memcached")
                .args(["-l", "127.0.0.1", "-p", &port.to_string()])
                .args(["-U", "0", "-m", "64", "-u", "root", "-vv"])
                .args(args)
                .envs(env.iter().map(|(name, value)| (*name, *value)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start memcached");
            let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
            let mut log = String::new();
            let ready = lines.by_ref().map_while(Result::ok).any(|line| {
                log.push_str(&line);
                log.push('\n');
                line.contains("server listening")
            });
            if ready {
                // -vv logs every connection: keep draining so memcached never blocks on it.
                std::thread::spawn(move || lines.for_each(drop));
                return Server { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = log;
        }
        panic!("memcached {args:?} did not start: {last}");
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, a server certificate for `localhost` / `127.0.0.1` and a client certificate, made
/// with `openssl` in a fresh directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(unique("memsem-pki"));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=memsem test CA",
        ]);
        std::fs::write(
            pki.path("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(pki.path("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for who in ["server", "client"] {
            pki.openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN=memsem test {who}"),
            ]);
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{who}.pem"),
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("openssl is installed (apt-get install -y openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `memcached -Z` with the server certificate; `mutual` asks for client certificates.
    fn server(&self, mutual: bool) -> Server {
        let mut options = format!(
            "ssl_chain_cert={},ssl_key={}",
            self.path("server.pem").display(),
            self.path("server.key").display()
        );
        if mutual {
            options.push_str(&format!(
                ",ssl_verify_mode=3,ssl_ca_cert={}",
                self.path("ca.pem").display()
            ));
        }
        Server::start(&["-Z".into(), "-o".into(), options], &[])
    }

    fn trusted(&self) -> TlsConfig {
        TlsConfig::new().ca_file(self.path("ca.pem"))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn builder(address: &str) -> ClientBuilder {
    Client::builder()
        .servers(address)
        .lock_delay(Duration::ZERO)
        .io_timeout(Duration::from_secs(2))
}

/// Two clients contend for one lock: one gets it, the other only after the release.
fn contend(first: &Client, second: &Client) {
    let name = unique("fleet-kind");
    let permit = first.semaphore(&name).unwrap().try_acquire().unwrap();
    let permit = permit.expect("the first client gets the lock");
    let other = second.semaphore(&name).unwrap();
    assert!(other.try_acquire().unwrap().is_none(), "held by the first");
    permit.release().unwrap();
    other
        .try_acquire()
        .unwrap()
        .expect("free after the release")
        .release()
        .unwrap();
}

/// A client that must be refused for `reason`, by `try_acquire` and at once by
/// `wait_acquire` (with a minute to wait, it would otherwise time out).
fn refused(client: &Client, reason: Refusal) {
    let sem = client
        .semaphore(&unique("refused"))
        .unwrap()
        .with_wait_policy(
            WaitPolicy::new()
                .max_wait(Duration::from_secs(60))
                .poll_time(Duration::from_millis(50)),
        );
    for error in [
        sem.try_acquire().unwrap_err(),
        sem.wait_acquire().unwrap_err(),
    ] {
        match &error {
            Error::Refused { reason: got, .. } => assert_eq!(*got, reason, "{error}"),
            other => panic!("expected a refusal ({reason:?}), got: {other}"),
        }
        assert!(!error.is_retryable(), "{error}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_unix_socket_server_grants_and_releases_locks_blocking_and_async() {
    let server = procs::Memcached::start_unix();
    let path = server.address();
    assert!(path.starts_with('/'), "{path}");
    contend(
        &builder(&path).build().unwrap(),
        &builder(&path).build().unwrap(),
    );
    let status = builder(&path).build().unwrap().ping().remove(0).1.unwrap();
    assert_eq!(
        (status.dialect(), status.tls(), status.auth()),
        ("meta", false, false)
    );
    runtime().block_on(async {
        let client = builder(&path).build_async().await.unwrap();
        let sem = client.semaphore(&unique("unix-async")).unwrap();
        let permit = sem.try_acquire().await.unwrap().expect("free");
        assert!(sem.try_acquire().await.unwrap().is_none());
        permit.release().await.unwrap();
    });
}

#[test]
fn tls_with_a_ca_file_grants_locks_and_ping_reports_it() {
    let pki = Pki::new();
    let server = pki.server(false);
    let tls = || {
        builder(&server.address())
            .tls(pki.trusted())
            .build()
            .unwrap()
    };
    contend(&tls(), &tls());
    let status = tls().ping().remove(0).1.unwrap();
    assert_eq!((status.dialect(), status.tls()), ("meta", true));
    assert!(status.version().starts_with("1.6"), "{}", status.version());
    runtime().block_on(async {
        let client = builder(&server.address())
            .tls(pki.trusted())
            .build_async()
            .await
            .unwrap();
        let sem = client.semaphore(&unique("tls-async")).unwrap();
        let permit = sem.try_acquire().await.unwrap().expect("free");
        assert!(sem.try_acquire().await.unwrap().is_none());
        permit.release().await.unwrap();
        assert!(client.ping().await.remove(0).1.unwrap().tls());
    });
}

#[test]
fn mutual_tls_grants_locks_with_the_client_certificate_and_refuses_without() {
    let pki = Pki::new();
    let server = pki.server(true);
    let with_cert = || {
        let tls = pki
            .trusted()
            .client_cert(pki.path("client.pem"), pki.path("client.key"));
        builder(&server.address()).tls(tls).build().unwrap()
    };
    contend(&with_cert(), &with_cert());
    let without = builder(&server.address())
        .tls(pki.trusted())
        .build()
        .unwrap();
    let error = without
        .semaphore(&unique("mtls"))
        .unwrap()
        .try_acquire()
        .unwrap_err();
    assert!(
        !error.is_retryable(),
        "a missing client certificate: {error}"
    );
}

#[test]
fn a_certificate_for_another_name_is_rejected_not_retried() {
    let pki = Pki::new();
    let server = pki.server(false);
    let client = builder(&server.address())
        .tls(pki.trusted().server_name("cache.example.com"))
        .build()
        .unwrap();
    let error = client
        .semaphore(&unique("tls-name"))
        .unwrap()
        .try_acquire()
        .unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
}

#[test]
fn a_plain_client_against_a_tls_server_is_refused_as_a_tls_mismatch() {
    let pki = Pki::new();
    let server = pki.server(false);
    refused(
        &builder(&server.address()).build().unwrap(),
        Refusal::TlsMismatch,
    );
}

#[test]
fn a_tls_client_against_a_plain_server_is_refused_as_a_tls_mismatch() {
    let server = procs::Memcached::start("127.0.0.1", None);
    let tls = TlsConfig::new().danger_accept_invalid_certs(true);
    refused(
        &builder(&server.address()).tls(tls).build().unwrap(),
        Refusal::TlsMismatch,
    );
    runtime().block_on(async {
        let tls = TlsConfig::new().danger_accept_invalid_certs(true);
        let client = builder(&server.address())
            .tls(tls)
            .build_async()
            .await
            .unwrap();
        let error = client
            .semaphore(&unique("tls-plain-async"))
            .unwrap()
            .try_acquire()
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Refused {
                    reason: Refusal::TlsMismatch,
                    ..
                }
            ),
            "{error}"
        );
    });
}

/// `memcached -Y` with one user, `locker:s3cret`.
fn auth_server() -> (Server, PathBuf) {
    let file = std::env::temp_dir().join(unique("memsem-auth"));
    std::fs::write(&file, "locker:s3cret\n").unwrap();
    (
        Server::start(&["-Y".into(), file.display().to_string()], &[]),
        file,
    )
}

#[test]
fn ascii_auth_with_the_right_password_grants_and_releases_locks() {
    let (server, file) = auth_server();
    let client = || {
        builder(&server.address())
            .auth("locker", "s3cret")
            .build()
            .unwrap()
    };
    contend(&client(), &client());
    let status = client().ping().remove(0).1.unwrap();
    assert_eq!((status.dialect(), status.auth()), ("meta", true));
    runtime().block_on(async {
        let client = builder(&server.address())
            .auth("locker", "s3cret")
            .build_async()
            .await
            .unwrap();
        let sem = client.semaphore(&unique("auth-async")).unwrap();
        let permit = sem.try_acquire().await.unwrap().expect("free");
        permit.release().await.unwrap();
    });
    let _ = std::fs::remove_file(file);
}

#[test]
fn ascii_auth_with_a_wrong_or_missing_password_is_refused_at_once() {
    let (server, file) = auth_server();
    refused(
        &builder(&server.address())
            .auth("locker", "wrong")
            .build()
            .unwrap(),
        Refusal::AuthFailed,
    );
    refused(
        &builder(&server.address()).build().unwrap(),
        Refusal::AuthRequired,
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn credentials_are_not_sent_to_a_server_that_does_not_ask_for_them() {
    let server = procs::Memcached::start("127.0.0.1", None);
    let client = builder(&server.address())
        .auth("locker", "s3cret")
        .build()
        .unwrap();
    contend(&client, &client);
    assert!(!client.ping().remove(0).1.unwrap().auth());
    // `set auth` on a server without auth would have stored the password under "auth".
    let mut raw = procs::connect(&server.address()).unwrap();
    raw.write_all(b"get auth\r\n").unwrap();
    let mut reply = [0u8; 5];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"END\r\n");
}

#[test]
fn a_sasl_only_server_is_refused_with_a_clear_reason() {
    let dir = std::env::temp_dir().join(unique("memsem-sasl"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("memcached.conf"),
        format!(
            "mech_list: plain\nsasldb_path: {}\n",
            dir.join("sasldb2").display()
        ),
    )
    .unwrap();
    let server = Server::start(&["-S".into()], &[("SASL_CONF_PATH", &dir)]);
    let client = builder(&server.address())
        .auth("locker", "s3cret")
        .build()
        .unwrap();
    refused(&client, Refusal::SaslOnly);
    let error = client.semaphore("sasl").unwrap().try_acquire().unwrap_err();
    assert!(error.to_string().contains("SASL"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_async_release_from_before_a_restart_reports_lock_lost_and_keeps_the_new_holder() {
    let first = procs::Memcached::start("127.0.0.1", None);
    let (address, port) = (first.address(), first.port);
    runtime().block_on(async {
        let name = unique("restart-async");
        let old = builder(&address).build_async().await.unwrap();
        let old_permit = old.semaphore(&name).unwrap().try_acquire().await.unwrap();
        let old_permit = old_permit.expect("free before the restart");
        drop(first); // killed: it comes back empty, its CAS values start again at 1
        let _second = procs::Memcached::start("127.0.0.1", Some(port));
        let new = builder(&address).build_async().await.unwrap();
        let sem = new.semaphore(&name).unwrap();
        let new_permit = sem
            .try_acquire()
            .await
            .unwrap()
            .expect("free after the restart");
        let error = old_permit.release().await.unwrap_err();
        assert!(error.is_lock_lost(), "{error}");
        assert!(
            new_permit.is_held().await.unwrap(),
            "the new holder keeps its lock"
        );
        new_permit.release().await.unwrap();
    });
}

/// `total_connections` from the server's `stats` (this connection included).
fn total_connections(address: &str) -> u64 {
    let mut stream = procs::connect(address).unwrap();
    stream.write_all(b"stats\r\n").unwrap();
    BufReader::new(stream)
        .lines()
        .map_while(Result::ok)
        .take_while(|line| line != "END")
        .find_map(|line| {
            line.strip_prefix("STAT total_connections ")
                .map(|n| n.parse().unwrap())
        })
        .expect("total_connections in stats")
}

#[test]
fn a_thousand_tasks_on_ten_names_share_a_few_connections() {
    let server = procs::Memcached::start("127.0.0.1", None);
    let address = server.address();
    let before = total_connections(&address);
    runtime().block_on(async {
        let client = builder(&address).build_async().await.unwrap();
        let tasks: Vec<_> = (0..1_000)
            .map(|i| {
                let sem = client
                    .semaphore(&format!("crowd-{}", i % 10))
                    .unwrap()
                    .with_wait_policy(
                        WaitPolicy::new()
                            .max_wait(Duration::from_secs(120))
                            .poll_time(Duration::from_millis(5)),
                    );
                tokio::spawn(async move {
                    let permit = sem.wait_acquire().await.unwrap();
                    permit.release().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    // Minus the connection that reads the second count.
    let opened = total_connections(&address) - before - 1;
    assert!(
        (1..=2).contains(&opened),
        "1,000 tasks opened {opened} connections"
    );
}

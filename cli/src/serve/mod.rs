//! `memsem serve`: drop-in gateways that speak an old lock server's wire protocol and keep
//! every lock on the memcached fleet as a memsem lock. Unchanged Perl clients keep working;
//! any number of gateways, on any machines, agree with each other and with library and CLI
//! users of the same lock names.
//!
//! - [`keyedmutexd`]: KeyedMutex 0.06's `keyedmutexd` (16-byte MD5 keys, `O`/`R` replies).
//! - [`lock_server`]: Lock::Server 1.75 (`GET /VERB/key/requester`, one reply line), with a
//!   FIFO queue kept on the fleet ([`queue`]).
//!
//! This module has what both share: the listener, the connection limit, shutdown on
//! SIGTERM/SIGINT (every connection is told through a [`Shutdown`] watch; waiters get their
//! protocol's failure answer and held locks are released before the process exits), and the
//! log lines on stderr.

mod keyedmutexd;
mod lock_server;
mod queue;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use memsem::{Client, ClientBuilder, Tokio};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::exit;

/// The protocols `memsem serve` speaks.
#[derive(Debug, Subcommand)]
pub enum Protocol {
    /// KeyedMutex's keyedmutexd: 16-byte MD5 key in, `O` (owned) or `R` (released) out
    #[command(after_help = keyedmutexd::HELP)]
    Keyedmutexd(keyedmutexd::KeyedArgs),
    /// Lock::Server: `GET /VERB/key/requester`, one reply line
    #[command(after_help = lock_server::HELP)]
    LockServer(lock_server::LockServerArgs),
}

/// Options every gateway takes.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Most connections served at once; more are closed at once (and logged)
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,

    /// Close a connection that sends no request for this long
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = seconds)]
    pub idle_timeout: Duration,

    /// Log every request and its answer on stderr (bad input and errors are always logged)
    #[arg(long)]
    pub log_requests: bool,
}

/// A duration: a number of seconds (`3`, `0.5`, as Lock::Server takes them) or `500ms`, `1m`.
pub fn seconds(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text}: not a duration (expected seconds like 3 or 0.5)"));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("{error} (expected seconds like 3, or a duration like 500ms)"))
}

/// A connection from a client: TCP or unix socket.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Acknowledges what was read at once, for a read that gets no reply (keyedmutexd's
    /// release): a client with Nagle's algorithm on (Perl's IO::Socket) otherwise holds its
    /// next request until the delayed ACK, about 40 ms later.
    fn ack_now(&self) {}
}

impl Conn for tokio::net::TcpStream {
    fn ack_now(&self) {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor owned by `self`, and a pointer to a c_int of the
        // length given. A failure only means a slower client.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

impl Conn for tokio::net::UnixStream {}

/// Where a gateway listens.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<(Box<dyn Conn>, String)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), peer.to_string()))
            }
            Listener::Unix(listener, path) => {
                let (stream, _) = listener.accept().await?;
                Ok((Box::new(stream), path.display().to_string()))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Listener::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "?".to_string(), |addr| addr.to_string()),
            Listener::Unix(_, path) => path.display().to_string(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds `host:port` (port 0 picks a free one; the readiness line says which).
async fn bind_tcp(address: &str) -> std::io::Result<Listener> {
    Ok(Listener::Tcp(TcpListener::bind(address).await?))
}

/// Binds a unix socket, replacing a stale socket file nobody listens on (never another
/// kind of file).
fn bind_unix(path: &std::path::Path) -> std::io::Result<Listener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another server listens on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    Ok(Listener::Unix(
        UnixListener::bind(path)?,
        path.to_path_buf(),
    ))
}

/// Tells every connection that the gateway is stopping.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Completes once shutdown has begun.
    pub async fn begun(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// What every connection of a gateway shares.
#[derive(Debug)]
pub struct Gateway {
    pub client: Client<Tokio>,
    pub options: ServeOptions,
    pub name: &'static str,
    stop: watch::Sender<bool>,
}

impl Gateway {
    /// Logs one request event (only with `--log-requests`).
    pub fn event(&self, text: std::fmt::Arguments<'_>) {
        if self.options.log_requests {
            eprintln!("memsem serve {}: {text}", self.name);
        }
    }

    /// Logs bad input, a fleet error or a lost lock (always).
    pub fn warn(&self, text: std::fmt::Arguments<'_>) {
        eprintln!("memsem serve {}: warning: {text}", self.name);
    }

    /// Starts the shutdown (the SHUTDOWN verb).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A handle that says when shutdown begins.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown(self.stop.subscribe())
    }
}

/// Runs `memsem serve PROTOCOL` until SIGTERM, SIGINT (or Lock::Server's SHUTDOWN); the exit
/// status.
pub fn run(builder: Result<ClientBuilder, memsem::Error>, protocol: Protocol) -> u8 {
    let builder = match builder {
        Ok(builder) => builder,
        Err(error) => return exit::report(&error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("memsem serve: cannot start the runtime: {error}");
            return exit::SOFTWARE;
        }
    };
    runtime.block_on(async move {
        let client = match builder.build_async().await {
            Ok(client) => client,
            Err(error) => return exit::report(&error),
        };
        match protocol {
            Protocol::Keyedmutexd(args) => keyedmutexd::serve(client, args).await,
            Protocol::LockServer(args) => lock_server::serve(client, args).await,
        }
    })
}

/// The accept loop: spawns `handle` for each connection within the limit, until a signal
/// or [`Gateway::stop`]; then tells every connection and waits for them to finish.
async fn accept_loop<H, Fut>(listener: Listener, gateway: Arc<Gateway>, handle: H) -> u8
where
    H: Fn(Box<dyn Conn>, String, Arc<Gateway>, Shutdown) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .and_then(|term| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map(|int| (term, int))
        });
    let (mut term, mut int) = match signals {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("memsem serve: cannot handle signals: {error}");
            return exit::SOFTWARE;
        }
    };
    // The readiness line: tests and supervisors wait for it.
    eprintln!(
        "memsem serve {}: listening on {}",
        gateway.name,
        listener.describe()
    );
    let limit = Arc::new(tokio::sync::Semaphore::new(gateway.options.max_connections));
    let mut connections = JoinSet::new();
    let mut shutdown = gateway.shutdown();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, peer)) => match Arc::clone(&limit).try_acquire_owned() {
                    Ok(slot) => {
                        let task = handle(conn, peer, Arc::clone(&gateway), gateway.shutdown());
                        connections.spawn(async move {
                            task.await;
                            drop(slot);
                        });
                    }
                    Err(_) => gateway.warn(format_args!(
                        "{peer}: closed: {} connections already open (--max-connections)",
                        gateway.options.max_connections
                    )),
                },
                Err(error) => {
                    gateway.warn(format_args!("accept failed: {error}"));
                    // Out of file descriptors, typically: give the others a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = shutdown.begun() => break,
        }
    }
    eprintln!("memsem serve {}: shutting down", gateway.name);
    gateway.stop();
    drop(listener);
    while connections.join_next().await.is_some() {}
    0
}

//! The [`Client`]: a handle on the fleet that hands out named locks; its builder.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::flavor::{Blocking, Flavor, block_on};
use crate::fleet::routing::Routing;
use crate::lock::lease::env_duration;
use crate::lock::semaphore::Semaphore;
use crate::wire::key::{self};
use crate::wire::transport::{Failure, Pong, Transport};

mod builder;

use crate::fleet::{Fleet, Target};
pub use builder::ClientBuilder;

/// A handle on a memcached fleet for locking. Cheap to clone (an `Arc` inside); clones share
/// the connection pools. `Send + Sync`.
///
/// # Examples
///
/// ```no_run
/// use memsem::Client;
///
/// let client = Client::connect("127.0.0.1:11211")?;
/// let report = client.semaphore("nightly-report")?;
/// if let Some(permit) = report.try_acquire()? {
///     // ... only one process in the fleet runs this at a time ...
///     permit.release()?;
/// }
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client<F: Flavor = Blocking> {
    pub(crate) inner: Arc<Fleet<F>>,
}

/// One server's answer to [`Client::ping`].
///
/// # Examples
///
/// ```no_run
/// let client = memsem::Client::connect("127.0.0.1:11211")?;
/// for (server, answer) in client.ping() {
///     if let Ok(status) = answer {
///         println!("{server}: memcached {} in {:?}", status.version(), status.round_trip());
///     }
/// }
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    round_trip: Duration,
    version: String,
    dialect: &'static str,
    tls: bool,
    auth: bool,
}

impl ServerStatus {
    /// How long a no-op round trip took on a pooled connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let (_, answer) = &client.ping()[0];
    /// assert!(answer.as_ref().unwrap().round_trip() < std::time::Duration::from_secs(1));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn round_trip(&self) -> Duration {
        self.round_trip
    }

    /// The server's version, as it reports it (`1.6.18`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let (_, answer) = &client.ping()[0];
    /// assert!(answer.as_ref().unwrap().version().starts_with("1."));
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The protocol dialect spoken with the server: `meta`, or `classic` for servers and
    /// proxies without meta commands.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let (_, answer) = &client.ping()[0];
    /// assert_eq!(answer.as_ref().unwrap().dialect(), "meta");
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn dialect(&self) -> &'static str {
        self.dialect
    }

    /// Whether the connection is TLS.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let (_, answer) = &client.ping()[0];
    /// assert!(!answer.as_ref().unwrap().tls());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether the connection authenticated (ASCII auth): the server asked, and accepted the
    /// credentials.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let (_, answer) = &client.ping()[0];
    /// assert!(!answer.as_ref().unwrap().auth());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn auth(&self) -> bool {
        self.auth
    }
}

impl<F: Flavor> Client<F> {
    /// A handle on the semaphore `name` (one permit, 60 s TTL, default [`WaitPolicy`](crate::WaitPolicy)).
    /// On the wire its key is `namespace + "__lock__" + name`, the key the Perl module
    /// Cache::Memcached::Semaphore uses, so Perl and Rust processes contend for the same lock.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an empty name, one with whitespace or control bytes, or one
    /// whose key would exceed memcached's 250 bytes. Nothing is sent to the server.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert!(client.semaphore("nightly-report").is_ok());
    /// assert!(client.semaphore("two words").is_err());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn semaphore(&self, name: &str) -> Result<Semaphore<F>> {
        let key = key::lock_key(&self.inner.namespace, name)?;
        let hashed = if self.inner.routing.hashes_namespace() {
            &key.wire
        } else {
            &key.routed
        };
        let index = self.inner.ring.server_for(hashed);
        let backend = Arc::clone(&self.inner.backends[index]);
        let cleanup = Arc::clone(&self.inner.cleanup[index]);
        Ok(Semaphore::new(Target {
            fleet: Arc::clone(&self.inner),
            name: name.to_string(),
            key,
            backend,
            cleanup,
        }))
    }

    /// The servers, `host:port`, in configured order.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211:5")?;
    /// assert_eq!(client.servers(), ["127.0.0.1:11211"]);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn servers(&self) -> Vec<&str> {
        self.inner.backends.iter().map(|b| b.address()).collect()
    }

    /// The routing in use.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// assert_eq!(client.routing(), memsem::Routing::Ketama);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn routing(&self) -> Routing {
        self.inner.routing
    }

    /// A lock held on a majority of **all** the client's servers (Redlock), instead of on
    /// the one server its key routes to: it survives the loss of a minority of servers. See
    /// [`QuorumLock`](crate::QuorumLock) for the algorithm and its limits.
    ///
    /// # Errors
    ///
    /// As [`semaphore`](Self::semaphore).
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211,127.0.0.1:11212,127.0.0.1:11213")?;
    /// let lock = client.quorum_lock("billing-run")?;
    /// assert_eq!(lock.voters(), 3);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn quorum_lock(&self, name: &str) -> Result<crate::lock::quorum::QuorumLock<F>> {
        let key = key::lock_key(&self.inner.namespace, name)?;
        Ok(crate::lock::quorum::QuorumLock::new(
            Arc::clone(&self.inner),
            name.to_string(),
            key.wire,
        ))
    }

    /// Pings every server (the shared body of both flavours' `ping`).
    async fn ping_all(&self) -> Vec<(String, Result<ServerStatus>)> {
        let mut answers = Vec::with_capacity(self.inner.backends.len());
        for backend in &self.inner.backends {
            let server = backend.address().to_string();
            let answer = backend.ping().await.map(|pong: Pong| ServerStatus {
                round_trip: pong.round_trip,
                version: pong.version,
                dialect: pong.dialect,
                tls: pong.tls,
                auth: pong.auth,
            });
            let answer = answer.map_err(|failure| match failure {
                Failure::Unavailable(source) | Failure::Ambiguous(source) => Error::Unavailable {
                    server: server.clone(),
                    source,
                },
                Failure::Protocol(detail) => Error::Protocol {
                    server: server.clone(),
                    detail,
                },
                Failure::Refused(reason) => Error::Refused {
                    server: server.clone(),
                    reason,
                },
            });
            answers.push((server, answer));
        }
        answers
    }
}

impl Client {
    /// Starts a [`ClientBuilder`].
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build()?;
    /// # let _ = client;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client for a server list (`host:port[:weight],...`) with every other setting at its
    /// default.
    ///
    /// Despite its name it opens no connection: it checks the list, and
    /// connections are opened on first use (a lock operation, or [`ping`](Client::ping) to
    /// check the servers now) and pooled. The name is kept for the peers that use it
    /// (`redis::Client::open` does the same).
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::connect("127.0.0.1:11211,127.0.0.1:11212")?;
    /// assert_eq!(client.servers().len(), 2);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn connect(servers: &str) -> Result<Client> {
        Client::builder().servers(servers).build()
    }

    /// A client configured from the environment: `MEMSEM_SERVERS` (required),
    /// `MEMSEM_NAMESPACE`, `MEMSEM_ROUTING` (`ketama`, `cache-memcached` or
    /// `twemproxy:HASH:DISTRIBUTION`), `MEMSEM_PROTOCOL` (`auto`, `meta` or `classic`),
    /// `MEMSEM_MAX_LEASE` and `MEMSEM_LOCK_DELAY` (durations such as `5m`, `30s`; `0` turns
    /// the lock-delay off); TLS with `MEMSEM_TLS=1`, `MEMSEM_TLS_CA`, `MEMSEM_TLS_CERT` and
    /// `MEMSEM_TLS_KEY` (PEM files; any of them turns TLS on); ASCII auth with
    /// `MEMSEM_USERNAME` and `MEMSEM_PASSWORD_FILE` (the password is the file's first line).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `MEMSEM_SERVERS` is unset, a password file cannot be
    /// read, only one of a user and a password file or of a certificate and a key is given,
    /// and as [`ClientBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// // MEMSEM_SERVERS=10.0.0.1:11211,10.0.0.2:11211 MEMSEM_NAMESPACE=app: ./my-job
    /// let client = memsem::Client::from_env()?;
    /// # let _ = client;
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn from_env() -> Result<Client> {
        let servers = std::env::var("MEMSEM_SERVERS").map_err(|_| {
            Error::InvalidConfig("MEMSEM_SERVERS is not set (host:port[:weight],...)".into())
        })?;
        let mut builder = Client::builder().servers(&servers);
        if let Ok(namespace) = std::env::var("MEMSEM_NAMESPACE") {
            builder = builder.namespace(&namespace);
        }
        if let Ok(routing) = std::env::var("MEMSEM_ROUTING") {
            builder = builder.routing(routing.parse()?);
        }
        if let Ok(protocol) = std::env::var("MEMSEM_PROTOCOL") {
            builder = builder.protocol(protocol.parse()?);
        }
        if let Ok(max_lease) = std::env::var("MEMSEM_MAX_LEASE") {
            builder = builder.max_lease(env_duration("MEMSEM_MAX_LEASE", &max_lease)?);
        }
        if let Ok(delay) = std::env::var("MEMSEM_LOCK_DELAY") {
            builder = builder.lock_delay(env_duration("MEMSEM_LOCK_DELAY", &delay)?);
        }
        builder.fleet_from_env()?.build()
    }

    /// Waits until the background clean-up has settled every lock this client could not
    /// confirm (an acquire or release whose reply was lost: read back, deleted while it
    /// holds this process's token), or until `timeout` passes. `true` when nothing is left
    /// unsettled. A short-lived process (a command-line tool) calls it before it exits,
    /// since the clean-up thread ends with the process.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// let _ = client.semaphore("job")?.try_acquire();
    /// if !client.wait_for_cleanup(Duration::from_secs(3)) {
    ///     eprintln!("a lock may stay held until its TTL ends");
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn wait_for_cleanup(&self, timeout: Duration) -> bool {
        self.inner.janitor.wait_settled(timeout)
    }

    /// Checks every server: one no-op round trip on the pool (timed), and the server's
    /// version: `(server, status or error)`. Lock::Server's PING, for every server.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let client = memsem::Client::connect("127.0.0.1:11211")?;
    /// for (server, answer) in client.ping() {
    ///     match answer {
    ///         Ok(status) => println!("{server}: up, {:?}, memcached {}", status.round_trip(), status.version()),
    ///         Err(error) => println!("{server}: {error}"),
    ///     }
    /// }
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn ping(&self) -> Vec<(String, Result<ServerStatus>)> {
        block_on(self.ping_all())
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Client<crate::flavor::Tokio> {
    /// Checks every server with one no-op round trip, as [`Client::ping`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// for (server, answer) in client.ping().await {
    ///     println!("{server}: {answer:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping(&self) -> Vec<(String, Result<ServerStatus>)> {
        self.ping_all().await
    }
}

//! The [`Client`]: a server list, its routing, a namespace, timeouts and connection pools.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::flavor::{Blocking, Flavor, block_on};
use crate::janitor::Janitor;
use crate::key::{self, LockKey};
use crate::memcached::{Backend, Failure, Timeouts, Transport};
use crate::routing::{Ring, Routing, ServerSpec};
use crate::semaphore::Semaphore;

/// Configures a [`Client`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | servers | none (at least one is required) |
/// | routing | [`Routing::Ketama`] |
/// | namespace | empty |
/// | connect timeout | 1 s |
/// | I/O timeout | 1 s, for a whole request and its reply |
/// | idle connections kept per server | 8 |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use memsem::{Client, Routing};
///
/// let client = Client::builder()
///     .servers("10.0.0.1:11211:2,10.0.0.2:11211")
///     .routing(Routing::CacheMemcached)
///     .namespace("app:")
///     .io_timeout(Duration::from_millis(300))
///     .build()?;
/// assert_eq!(client.servers(), ["10.0.0.1:11211", "10.0.0.2:11211"]);
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    servers: Vec<String>,
    routing: Routing,
    namespace: String,
    timeouts: Timeouts,
    max_idle: usize,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            servers: Vec::new(),
            routing: Routing::default(),
            namespace: String::new(),
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                io: Duration::from_secs(1),
            },
            max_idle: 8,
        }
    }
}

impl ClientBuilder {
    /// Adds servers: a comma-separated list of `host:port` or `host:port:weight` (the format
    /// of `MEMSEM_SERVERS`). May be called more than once; the order matters for routing.
    ///
    /// # Examples
    ///
    /// ```
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").servers("127.0.0.1:11212:3").build()?;
    /// assert_eq!(client.servers().len(), 2);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn servers(mut self, list: &str) -> ClientBuilder {
        self.servers.push(list.to_string());
        self
    }

    /// How keys are mapped to servers (default [`Routing::Ketama`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = memsem::Client::builder().routing(memsem::Routing::CacheMemcached);
    /// # let _ = builder;
    /// ```
    pub fn routing(mut self, routing: Routing) -> ClientBuilder {
        self.routing = routing;
        self
    }

    /// A prefix for every key on the wire, like Cache::Memcached's `namespace`. It is not
    /// hashed for routing.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = memsem::Client::builder().namespace("billing:");
    /// # let _ = builder;
    /// ```
    pub fn namespace(mut self, namespace: &str) -> ClientBuilder {
        self.namespace = namespace.to_string();
        self
    }

    /// How long connecting to a server may take (default 1 s).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = memsem::Client::builder().connect_timeout(std::time::Duration::from_millis(200));
    /// # let _ = builder;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeouts.connect = timeout;
        self
    }

    /// How long one request and its reply may take (default 1 s). A request that was sent
    /// but not answered in time is reconciled by reading the key back.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = memsem::Client::builder().io_timeout(std::time::Duration::from_millis(250));
    /// # let _ = builder;
    /// ```
    pub fn io_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeouts.io = timeout;
        self
    }

    /// How many idle connections to keep per server (default 8). Requests beyond that many
    /// at once dial extra connections that are closed when returned: a process with
    /// hundreds of concurrent waiters (threads or tasks) churns through thousands of
    /// connections a second with the default (BENCHMARKS.md, table 7). Raise it towards the
    /// number of concurrent requests, within what the servers accept (memcached's `-c`,
    /// 1,024 by default, shared by every client).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = memsem::Client::builder().max_idle_connections(2);
    /// # let _ = builder;
    /// ```
    pub fn max_idle_connections(mut self, max_idle: usize) -> ClientBuilder {
        self.max_idle = max_idle;
        self
    }

    /// Builds the client. Host names are resolved here; connections are made on first use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for no servers, a malformed or duplicate entry, a host that
    /// does not resolve or a zero timeout; [`Error::InvalidName`] for a namespace that cannot
    /// be part of a memcached key.
    ///
    /// # Examples
    ///
    /// ```
    /// let error = memsem::Client::builder().build().unwrap_err();
    /// assert!(matches!(error, memsem::Error::InvalidConfig(_)));
    /// ```
    pub fn build(self) -> Result<Client> {
        let (specs, ring) = self.check()?;
        let backends = self.blocking_backends(&specs)?;
        Ok(self.assemble(ring, backends.clone(), backends))
    }

    /// Builds a client for tokio (feature `tokio`): the same configuration, async
    /// operations. Host names are resolved here; connections are made on first use. A
    /// blocking connection pool per server is kept too, for the background clean-up thread.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), memsem::Error> {
    /// let client = memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
    /// assert_eq!(client.servers(), ["127.0.0.1:11211"]);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn build_async(self) -> Result<Client<crate::Tokio>> {
        let (specs, ring) = self.check()?;
        let cleanup = self.blocking_backends(&specs)?;
        let mut backends = Vec::with_capacity(specs.len());
        for spec in &specs {
            let backend = crate::memcached::AsyncBackend::new(spec, self.timeouts, self.max_idle)
                .await
                .map_err(Error::InvalidConfig)?;
            backends.push(Arc::new(backend));
        }
        Ok(self.assemble(ring, backends, cleanup))
    }

    /// Validates the configuration: the server list and its routing table.
    fn check(&self) -> Result<(Vec<ServerSpec>, Ring)> {
        let mut specs = Vec::new();
        for list in &self.servers {
            specs.extend(ServerSpec::parse_list(list)?);
        }
        if self.timeouts.connect.is_zero() || self.timeouts.io.is_zero() {
            return Err(Error::InvalidConfig("timeouts must be above zero".into()));
        }
        key::check_namespace(&self.namespace)?;
        let ring = Ring::new(self.routing, &specs)?;
        Ok((specs, ring))
    }

    fn blocking_backends(&self, specs: &[ServerSpec]) -> Result<Vec<Arc<Backend>>> {
        specs
            .iter()
            .map(|spec| Backend::new(spec, self.timeouts, self.max_idle).map(Arc::new))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::InvalidConfig)
    }

    fn assemble<F: Flavor>(
        self,
        ring: Ring,
        backends: Vec<Arc<F::Wire>>,
        cleanup: Vec<Arc<Backend>>,
    ) -> Client<F> {
        Client {
            inner: Arc::new(Inner {
                janitor: Janitor::new(),
                backends,
                cleanup,
                ring,
                routing: self.routing,
                namespace: self.namespace,
            }),
        }
    }
}

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
    inner: Arc<Inner<F>>,
}

#[derive(Debug)]
struct Inner<F: Flavor> {
    backends: Vec<Arc<F::Wire>>,
    /// Blocking connections to the same servers, for the clean-up thread.
    cleanup: Vec<Arc<Backend>>,
    ring: Ring,
    routing: Routing,
    namespace: String,
    janitor: Janitor,
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
}

/// A lock's key, bound to the server that holds it. Shared by a semaphore and its permits.
#[derive(Debug)]
pub(crate) struct Target<F: Flavor> {
    pub(crate) client: Client<F>,
    pub(crate) name: String,
    pub(crate) key: LockKey,
    pub(crate) backend: Arc<F::Wire>,
    /// A blocking connection to the same server, for the clean-up thread.
    pub(crate) cleanup: Arc<Backend>,
}

impl<F: Flavor> Target<F> {
    /// Gives a failure of this lock's server the lock's context.
    pub(crate) fn error(&self, operation: &'static str, failure: Failure) -> Error {
        let server = self.backend.address().to_string();
        match failure {
            Failure::Unavailable(source) => Error::Unavailable { server, source },
            Failure::Ambiguous(source) => Error::Ambiguous {
                server,
                operation,
                source,
            },
            Failure::Protocol(detail) => Error::Protocol { server, detail },
        }
    }

    pub(crate) fn janitor(&self) -> &Janitor {
        &self.client.inner.janitor
    }
}

impl<F: Flavor> Client<F> {
    pub(crate) fn backends(&self) -> &[Arc<F::Wire>] {
        &self.inner.backends
    }

    pub(crate) fn cleanup_backends(&self) -> &[Arc<Backend>] {
        &self.inner.cleanup
    }

    pub(crate) fn janitor(&self) -> &Janitor {
        &self.inner.janitor
    }

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
            client: self.clone(),
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

    /// Pings every server (the shared body of both flavours' `ping`).
    async fn ping_all(&self) -> Vec<(String, Result<ServerStatus>)> {
        let mut answers = Vec::with_capacity(self.inner.backends.len());
        for backend in &self.inner.backends {
            let server = backend.address().to_string();
            let answer = backend
                .ping()
                .await
                .map(|(round_trip, version)| ServerStatus {
                    round_trip,
                    version,
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
    /// `MEMSEM_NAMESPACE` and `MEMSEM_ROUTING` (`ketama` or `cache-memcached`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `MEMSEM_SERVERS` is unset, and as
    /// [`ClientBuilder::build`].
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
        builder.build()
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
    pub fn quorum_lock(&self, name: &str) -> Result<crate::QuorumLock> {
        let key = key::lock_key(&self.inner.namespace, name)?;
        Ok(crate::QuorumLock::new(
            self.clone(),
            name.to_string(),
            key.wire,
        ))
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
impl Client<crate::Tokio> {
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

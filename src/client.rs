//! The [`Client`]: a server list, its routing, a namespace, timeouts and connection pools.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::flavor::{Blocking, Flavor, block_on};
use crate::janitor::Janitor;
use crate::key::{self, LockKey};
use crate::lease::{DEFAULT_MAX_LEASE, Leases, env_duration};
use crate::memcached::{Failure, Pong, Timeouts, Transport};
use crate::routing::{Ring, Routing, ServerSpec};
use crate::semaphore::Semaphore;
use crate::wire::{Backend, Credentials, Settings, TlsConfig};

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
/// | TLS | off ([`tls`](ClientBuilder::tls)) |
/// | authentication | none ([`auth`](ClientBuilder::auth)) |
/// | protocol dialect | [`Protocol::Auto`](crate::Protocol::Auto) ([`protocol`](ClientBuilder::protocol)) |
/// | longest lease (`max_lease`) | 5 min ([`DEFAULT_MAX_LEASE`]) |
/// | lock-delay after a server restart | `max_lease` |
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
    tls: Option<TlsConfig>,
    auth: Option<Credentials>,
    protocol: crate::Protocol,
    max_lease: Duration,
    lock_delay: Option<Duration>,
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
            tls: None,
            auth: None,
            protocol: crate::Protocol::default(),
            max_lease: DEFAULT_MAX_LEASE,
            lock_delay: None,
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

    /// The longest lease (TTL) a lock of this client may be taken or refreshed with (default
    /// 5 min, [`DEFAULT_MAX_LEASE`]): a longer TTL is refused with
    /// [`Error::InvalidConfig`]. Keep leases short and refresh them for long work
    /// ([`Permit::keep_alive`](crate::Permit::keep_alive)); raise this only together with
    /// the lock-delay, which must cover every lease a server may have forgotten.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = memsem::Client::builder()
    ///     .servers("127.0.0.1:11211")
    ///     .max_lease(Duration::from_secs(60))
    ///     .build()?;
    /// assert!(client.semaphore("job")?.with_ttl(Duration::from_secs(61)).is_err());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn max_lease(mut self, max_lease: Duration) -> ClientBuilder {
        self.max_lease = max_lease;
        self
    }

    /// How long a memcached server that started (or restarted) recently grants no lock, by
    /// its own uptime (default: the `max_lease`). A restarted memcached has forgotten every
    /// lock, while their holders may still be running for up to one lease: the delay keeps
    /// the next holder out until those leases have surely ended, as Chubby's and Consul's
    /// lock-delay do. An acquire within it gets [`Error::LockDelay`] (and
    /// [`wait_acquire`](crate::Semaphore::wait_acquire) waits through it). The cost: after
    /// every restart (and for a freshly started server), no lock on it is granted for this
    /// long.
    ///
    /// [`Duration::ZERO`] turns the delay off: locks are granted at once after a restart,
    /// and a holder from before the restart can overlap with a new one until its next
    /// refresh or release tells it the lock was lost. Locks
    /// [`without_expiry`](crate::Semaphore::without_expiry) are not covered (their lease
    /// has no end).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = memsem::Client::builder().lock_delay(Duration::ZERO); // off
    /// # let _ = builder;
    /// ```
    pub fn lock_delay(mut self, lock_delay: Duration) -> ClientBuilder {
        self.lock_delay = Some(lock_delay);
        self
    }

    /// Speaks TLS to every server (memcached `-Z`), with these settings.
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = memsem::TlsConfig::new().ca_file("/etc/memcached/ca.pem");
    /// let builder = memsem::Client::builder().servers("cache1:11211").tls(tls);
    /// # let _ = builder;
    /// ```
    pub fn tls(mut self, tls: TlsConfig) -> ClientBuilder {
        self.tls = Some(tls);
        self
    }

    /// Authenticates every connection with ASCII auth (memcached `-Y`: the `set auth`
    /// exchange). The credentials are sent only to servers that ask for them, once per new
    /// connection; put TLS under them on an untrusted network.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = memsem::Client::builder().servers("cache1:11211").auth("locker", "s3cret");
    /// # let _ = builder;
    /// ```
    pub fn auth(mut self, user: &str, password: &str) -> ClientBuilder {
        self.auth = Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        });
        self
    }

    /// TLS and ASCII auth from `MEMSEM_TLS`, `MEMSEM_TLS_CA`, `MEMSEM_TLS_CERT`,
    /// `MEMSEM_TLS_KEY`, `MEMSEM_USERNAME` and `MEMSEM_PASSWORD_FILE` (see
    /// [`Client::from_env`]).
    fn fleet_from_env(mut self) -> Result<ClientBuilder> {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let on = var("MEMSEM_TLS")
            .is_some_and(|value| !matches!(value.to_str(), Some("0" | "false" | "no" | "off")));
        let (ca, cert, key) = (
            var("MEMSEM_TLS_CA"),
            var("MEMSEM_TLS_CERT"),
            var("MEMSEM_TLS_KEY"),
        );
        if on || ca.is_some() || cert.is_some() || key.is_some() {
            let mut tls = TlsConfig::new();
            if let Some(ca) = ca {
                tls = tls.ca_file(ca);
            }
            match (cert, key) {
                (Some(cert), Some(key)) => tls = tls.client_cert(cert, key),
                (None, None) => {}
                _ => {
                    return Err(Error::InvalidConfig(
                        "MEMSEM_TLS_CERT and MEMSEM_TLS_KEY go together".into(),
                    ));
                }
            }
            self = self.tls(tls);
        }
        match (var("MEMSEM_USERNAME"), var("MEMSEM_PASSWORD_FILE")) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(&file).map_err(|error| {
                    Error::InvalidConfig(format!(
                        "MEMSEM_PASSWORD_FILE {}: {error}",
                        std::path::Path::new(&file).display()
                    ))
                })?;
                let user = user.to_string_lossy();
                self = self.auth(&user, password.lines().next().unwrap_or(""));
            }
            (None, None) => {}
            _ => {
                return Err(Error::InvalidConfig(
                    "MEMSEM_USERNAME and MEMSEM_PASSWORD_FILE go together".into(),
                ));
            }
        }
        Ok(self)
    }

    /// Which dialect to speak: [`Protocol::Auto`](crate::Protocol::Auto) (the default: meta
    /// where the server has it, classic otherwise), `Meta` or `Classic` (for twemproxy,
    /// mcrouter and memcached before 1.6.13; see [`Protocol`](crate::Protocol) for what it
    /// costs).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::{Client, Protocol};
    ///
    /// // Through twemproxy: the proxy is the only server, it routes.
    /// let builder = Client::builder().servers("127.0.0.1:22121").protocol(Protocol::Classic);
    /// # let _ = builder;
    /// ```
    pub fn protocol(mut self, protocol: crate::Protocol) -> ClientBuilder {
        self.protocol = protocol;
        self
    }

    /// Builds the client. Host names are resolved here; connections are made on first use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for no servers, a malformed or duplicate entry, a host that
    /// does not resolve, a zero timeout, unreadable TLS files, or a user name or password
    /// that ASCII auth cannot carry (whitespace in the user, CR or LF anywhere); [`Error::InvalidName`] for a namespace that cannot
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
        let settings = self.settings()?;
        let backends = self.blocking_backends(&specs, &settings);
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
        let settings = self.settings()?;
        let cleanup = self.blocking_backends(&specs, &settings);
        let backends = specs
            .iter()
            .map(|spec| Arc::new(crate::wire::AsyncBackend::new(spec, settings.clone())))
            .collect();
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
        if self.max_lease.is_zero() {
            return Err(Error::InvalidConfig("max_lease must be above zero".into()));
        }
        key::check_namespace(&self.namespace)?;
        let ring = Ring::new(self.routing, &specs)?;
        for spec in &specs {
            use std::net::ToSocketAddrs;
            let crate::routing::Endpoint::Tcp { host, port } = spec.endpoint() else {
                continue;
            };
            if let Err(error) = (host, port).to_socket_addrs() {
                return Err(Error::InvalidConfig(format!(
                    "cannot use memcached server {}: {error}",
                    spec.address()
                )));
            }
        }
        Ok((specs, ring))
    }

    /// The transport settings shared by every server: TLS files read, credentials checked.
    fn settings(&self) -> Result<Settings> {
        let tls = match &self.tls {
            Some(tls) => Some(Arc::new(tls.connector().map_err(Error::InvalidConfig)?)),
            None => None,
        };
        if let Some(auth) = &self.auth {
            let bad = |text: &str| text.bytes().any(|b| b == b'\r' || b == b'\n');
            if auth.user.is_empty() || auth.user.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(Error::InvalidConfig(
                    "the auth user name must be non-empty, without whitespace".into(),
                ));
            }
            if bad(&auth.password) {
                return Err(Error::InvalidConfig(
                    "the auth password cannot contain CR or LF".into(),
                ));
            }
        }
        Ok(Settings {
            timeouts: self.timeouts,
            max_idle: self.max_idle,
            tls,
            auth: self.auth.clone().map(Arc::new),
            protocol: self.protocol,
        })
    }

    fn blocking_backends(&self, specs: &[ServerSpec], settings: &Settings) -> Vec<Arc<Backend>> {
        specs
            .iter()
            .map(|spec| Arc::new(Backend::new(spec, settings.clone())))
            .collect()
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
                leases: Leases {
                    max_lease: self.max_lease,
                    lock_delay: self.lock_delay.unwrap_or(self.max_lease),
                },
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
    leases: Leases,
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
            Failure::Refused(reason) => Error::Refused { server, reason },
        }
    }

    pub(crate) fn janitor(&self) -> &Janitor {
        &self.client.inner.janitor
    }

    pub(crate) fn leases(&self) -> Leases {
        self.client.inner.leases
    }
}

impl<F: Flavor> Client<F> {
    pub(crate) fn leases(&self) -> Leases {
        self.inner.leases
    }

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

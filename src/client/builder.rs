//! [`ClientBuilder`]: servers, TLS and authentication, routing, namespace, timeouts, leases.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::flavor::Flavor;
use crate::fleet::janitor::Janitor;
use crate::fleet::routing::{Ring, Routing, ServerSpec};
use crate::lock::lease::{DEFAULT_MAX_LEASE, Leases};
use crate::wire::key::{self};
use crate::wire::transport::Sweep;
use crate::wire::transport::Timeouts;
use crate::wire::{Address, Backend, Credentials, Settings, TlsConfig};

use super::Client;
use crate::fleet::Fleet;

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
    protocol: crate::wire::Protocol,
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
            protocol: crate::wire::Protocol::default(),
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
    pub(crate) fn fleet_from_env(mut self) -> Result<ClientBuilder> {
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
    pub fn protocol(mut self, protocol: crate::wire::Protocol) -> ClientBuilder {
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
        let cleanup = backends.iter().map(|b| Arc::clone(b) as Arc<dyn Sweep>);
        Ok(self.assemble(ring, backends.clone(), cleanup.collect()))
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
    pub async fn build_async(self) -> Result<Client<crate::flavor::Tokio>> {
        let (specs, ring) = self.check()?;
        let settings = self.settings()?;
        let cleanup = self.blocking_backends(&specs, &settings);
        let cleanup = cleanup.into_iter().map(|b| b as Arc<dyn Sweep>).collect();
        let backends = specs
            .iter()
            .map(|spec| {
                let (address, target) = (spec.address(), wire_address(spec));
                Arc::new(crate::wire::AsyncBackend::new(
                    address,
                    target,
                    settings.clone(),
                ))
            })
            .collect();
        Ok(self.assemble(ring, backends, cleanup))
    }

    /// Validates the configuration: the server list and its routing table.
    pub(crate) fn check(&self) -> Result<(Vec<ServerSpec>, Ring)> {
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
            let crate::fleet::routing::Endpoint::Tcp { host, port } = spec.endpoint() else {
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
    pub(crate) fn settings(&self) -> Result<Settings> {
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

    pub(crate) fn blocking_backends(
        &self,
        specs: &[ServerSpec],
        settings: &Settings,
    ) -> Vec<Arc<Backend>> {
        specs
            .iter()
            .map(|spec| {
                Arc::new(Backend::new(
                    spec.address(),
                    wire_address(spec),
                    settings.clone(),
                ))
            })
            .collect()
    }

    /// Builds a client over transports made by `wire` (the in-memory fake, in unit tests).
    #[cfg(any(test, feature = "test-util"))]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn build_over<F: Flavor>(
        self,
        wire: impl Fn(&ServerSpec) -> Arc<F::Wire>,
    ) -> Result<Client<F>>
    where
        F::Wire: Sweep,
    {
        let (specs, ring) = self.check()?;
        let backends: Vec<Arc<F::Wire>> = specs.iter().map(wire).collect();
        let cleanup = backends.iter().map(|b| Arc::clone(b) as Arc<dyn Sweep>);
        Ok(self.assemble(ring, backends.clone(), cleanup.collect()))
    }

    pub(crate) fn assemble<F: Flavor>(
        self,
        ring: Ring,
        backends: Vec<Arc<F::Wire>>,
        cleanup: Vec<Arc<dyn Sweep>>,
    ) -> Client<F> {
        Client {
            inner: Arc::new(Fleet {
                janitor: Janitor::new(),
                shared: Default::default(),
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

/// Where the transport dials a configured server.
fn wire_address(spec: &ServerSpec) -> Address {
    match spec.endpoint() {
        crate::fleet::routing::Endpoint::Tcp { host, port } => Address::Tcp {
            host: host.to_string(),
            port,
        },
        crate::fleet::routing::Endpoint::Unix(path) => Address::Unix(path.to_path_buf()),
    }
}

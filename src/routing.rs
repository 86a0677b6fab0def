//! Which server holds a lock: server lists and the key-to-server routing (pure, no I/O).
//!
//! A lock lives on exactly one memcached server. Every process that uses the lock, whether
//! it is written in Rust, Perl or Python, must pick the same server for it, or two holders
//! could each take "the" lock on a different server. This module reproduces, bit for bit,
//! the routing of the two families of clients found on existing memcached fleets:
//!
//! | [`Routing`] | routes like | choose it when the fleet is used by |
//! |---|---|---|
//! | [`Ketama`](Routing::Ketama) (default) | libmemcached with `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED` | pylibmc with `{"ketama_weighted": True}`, PHP/C/Perl clients built on libmemcached with weighted ketama, or nobody else yet |
//! | [`CacheMemcached`](Routing::CacheMemcached) | Perl `Cache::Memcached`, and `Cache::Memcached::Fast` in its default mode | Perl programs, for instance those using `Cache::Memcached::Semaphore` |
//!
//! # Ketama (libmemcached weighted ketama)
//!
//! Consistent hashing: each server owns about `160 × weight / total weight × servers`
//! points on a 32-bit circle, made from the MD5 of `"host-j"` (or `"host:port-j"` when the
//! port is not 11211). A key goes to the first point at or after the first 32 bits of its
//! own MD5. Adding or removing a server moves only the keys of that server (plus a few
//! others when weights are involved, as the point counts are rescaled), so this is the
//! mode to pick for a new fleet. The host text is hashed exactly as written:
//! `localhost:11211` and `127.0.0.1:11211` make different rings, so every client of the
//! fleet must spell the servers the same way, in the same order.
//!
//! # CacheMemcached (Perl Cache::Memcached buckets)
//!
//! Each server takes `weight` consecutive buckets, in list order, and a key goes to bucket
//! `((crc32(key) >> 16) & 0x7fff) % buckets`. Changing the list moves most keys, so it
//! only makes sense to share locks with Perl processes that route this way.
//!
//! # Unix-socket servers
//!
//! An entry starting with `/` is a unix-domain socket (`memcached -s PATH`), as in
//! Cache::Memcached: `/run/memcached.sock` or `/run/memcached.sock:3` with a weight. The
//! buckets of Cache::Memcached do not depend on addresses at all, and libmemcached gives a
//! socket port 0, so its ketama points are named `"PATH:0-j"`; memsem does the same
//! (checked against Cache::Memcached 1.30, Cache::Memcached::Fast 0.28 and libmemcached
//! 1.1.4 with real sockets in the integration tests).
//!
//! # What is hashed
//!
//! Only the key without the namespace: the namespace is prefixed on the wire but never
//! hashed, as in all the clients above (their defaults). With one server there is no
//! hashing at all; every key goes to it.
//!
//! # Dead servers: no rehash (fail closed)
//!
//! Some clients move the keys of an unreachable server to another one (Cache::Memcached
//! "rehashes", libmemcached can "auto-eject"). memsem never does: a [`Ring`] is a pure
//! function of the configured list, and a lock whose server is down cannot be taken
//! until the server is back. Rerouting would be unsafe for locks: a process that still
//! reaches the original server and a process that has given up on it would each hold
//! the lock, one on each server, and both would believe they own it. Failing closed
//! costs availability for the locks of that one server, never exclusion.
//!
//! # Examples
//!
//! ```
//! use memsem::routing::{Ring, Routing, ServerSpec};
//!
//! let servers = ServerSpec::parse_list("10.0.0.1:11211,10.0.0.2:11211:2")?;
//! let ring = Ring::new(Routing::Ketama, &servers)?;
//! let server = &servers[ring.server_for(b"__lock__nightly-report")];
//! println!("the lock lives on {}", server.address());
//! # Ok::<(), memsem::Error>(())
//! ```

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// The port libmemcached leaves out of ketama point names.
const MEMCACHED_DEFAULT_PORT: u16 = 11211;

/// libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`.
const KETAMA_POINTS_PER_SERVER: f32 = 160.0;

/// How a key is mapped to a server of the list.
///
/// See the [module documentation](self) for how each mode works and which to choose.
///
/// # Examples
///
/// ```
/// use memsem::routing::Routing;
///
/// let routing: Routing = "cache-memcached".parse()?;
/// assert_eq!(routing, Routing::CacheMemcached);
/// assert_eq!(routing.to_string(), "cache-memcached");
/// assert_eq!(Routing::default(), Routing::Ketama);
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Routing {
    /// libmemcached's weighted ketama (consistent hashing), as used by pylibmc's
    /// `ketama_weighted`. Written `ketama`.
    #[default]
    Ketama,
    /// Perl Cache::Memcached's CRC32 buckets (also Cache::Memcached::Fast's default).
    /// Written `cache-memcached`.
    CacheMemcached,
}

impl Routing {
    /// The name used in configuration: `ketama` or `cache-memcached`.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::Routing;
    ///
    /// assert_eq!(Routing::Ketama.as_str(), "ketama");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Ketama => "ketama",
            Routing::CacheMemcached => "cache-memcached",
        }
    }
}

impl fmt::Display for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Routing {
    type Err = Error;

    /// Parses `ketama` or `cache-memcached`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for any other text.
    fn from_str(s: &str) -> Result<Routing> {
        match s {
            "ketama" => Ok(Routing::Ketama),
            "cache-memcached" => Ok(Routing::CacheMemcached),
            other => Err(Error::InvalidConfig(format!(
                "unknown routing {other:?}: use ketama or cache-memcached"
            ))),
        }
    }
}

/// One memcached server of the list: host text as written, port and weight.
///
/// The host text matters for [`Routing::Ketama`], which hashes it: write it exactly as the
/// other clients of the fleet do. An IPv6 address is kept without its brackets
/// (`::1`): libmemcached is given that text and hashes it (checked against libmemcached
/// 1.1.4 in the integration tests).
///
/// # Examples
///
/// ```
/// use memsem::routing::ServerSpec;
///
/// let server: ServerSpec = "cache1.example.com:11211:3".parse()?;
/// assert_eq!(server.host(), "cache1.example.com");
/// assert_eq!(server.port(), 11211);
/// assert_eq!(server.weight(), 3);
/// assert_eq!(server, ServerSpec::new("cache1.example.com", 11211).with_weight(3));
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSpec {
    place: Place,
    weight: u32,
}

/// Where a [`ServerSpec`] listens (owned form of [`Endpoint`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Place {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// Where a server listens: a TCP host and port, or a unix-domain socket path.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use memsem::routing::{Endpoint, ServerSpec};
///
/// let tcp: ServerSpec = "10.0.0.1:11211".parse()?;
/// assert_eq!(tcp.endpoint(), Endpoint::Tcp { host: "10.0.0.1", port: 11211 });
/// let unix: ServerSpec = "/run/memcached/memcached.sock:2".parse()?;
/// assert_eq!(unix.endpoint(), Endpoint::Unix(Path::new("/run/memcached/memcached.sock")));
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A TCP server: host text as configured (an IPv6 address without brackets) and port.
    Tcp {
        /// Host name or address, as configured.
        host: &'a str,
        /// TCP port.
        port: u16,
    },
    /// A unix-domain socket (`memcached -s PATH`).
    Unix(&'a Path),
}

impl ServerSpec {
    /// A server with weight 1.
    ///
    /// Nothing is checked here; [`Ring::new`] rejects an empty host, port 0 or weight 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::ServerSpec;
    ///
    /// let server = ServerSpec::new("127.0.0.1", 11211);
    /// assert_eq!(server.weight(), 1);
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> ServerSpec {
        ServerSpec {
            place: Place::Tcp {
                host: host.into(),
                port,
            },
            weight: 1,
        }
    }

    /// A server listening on a unix-domain socket (`memcached -s PATH`), weight 1.
    ///
    /// Nothing is checked here; [`Ring::new`] rejects a path that is not absolute, not
    /// UTF-8, holds a control character or is too long for a socket address.
    ///
    /// Routing: Cache::Memcached's buckets do not depend on the address, and
    /// libmemcached's ketama names the points of a socket `"PATH:0-j"` (a socket has port
    /// 0 there), which [`Routing::Ketama`] reproduces.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::ServerSpec;
    ///
    /// let server = ServerSpec::unix("/run/memcached/memcached.sock");
    /// assert_eq!(server.address(), "/run/memcached/memcached.sock");
    /// assert_eq!(server.port(), 0);
    /// ```
    pub fn unix(path: impl Into<PathBuf>) -> ServerSpec {
        ServerSpec {
            place: Place::Unix(path.into()),
            weight: 1,
        }
    }

    /// Where the server listens.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::{Endpoint, ServerSpec};
    ///
    /// let server = ServerSpec::new("::1", 11211);
    /// assert_eq!(server.endpoint(), Endpoint::Tcp { host: "::1", port: 11211 });
    /// ```
    pub fn endpoint(&self) -> Endpoint<'_> {
        match &self.place {
            Place::Tcp { host, port } => Endpoint::Tcp { host, port: *port },
            Place::Unix(path) => Endpoint::Unix(path),
        }
    }

    /// The same server with another weight (a positive integer; [`Ring::new`] rejects 0).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::ServerSpec;
    ///
    /// let server = ServerSpec::new("127.0.0.1", 11211).with_weight(4);
    /// assert_eq!(server.weight(), 4);
    /// ```
    pub fn with_weight(mut self, weight: u32) -> ServerSpec {
        self.weight = weight;
        self
    }

    /// Host text as configured (an IPv6 address without brackets); for a unix-socket
    /// server, the socket path (lossily converted when it is not UTF-8, which
    /// [`Ring::new`] rejects anyway).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::ServerSpec;
    ///
    /// let server: ServerSpec = "[::1]:11211".parse()?;
    /// assert_eq!(server.host(), "::1");
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn host(&self) -> &str {
        match &self.place {
            Place::Tcp { host, .. } => host,
            Place::Unix(path) => path.to_str().unwrap_or(""),
        }
    }

    /// TCP port; 0 for a unix-socket server (as libmemcached records it).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::ServerSpec;
    ///
    /// assert_eq!(ServerSpec::new("localhost", 11311).port(), 11311);
    /// ```
    pub fn port(&self) -> u16 {
        match &self.place {
            Place::Tcp { port, .. } => *port,
            Place::Unix(_) => 0,
        }
    }

    /// Weight (a positive integer): the server's share of the keys.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::ServerSpec;
    ///
    /// assert_eq!(ServerSpec::new("localhost", 11211).weight(), 1);
    /// ```
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// `host:port` (`[host]:port` for an IPv6 address), or the socket path of a
    /// unix-socket server: the display form used in messages and reports.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::ServerSpec;
    ///
    /// assert_eq!(ServerSpec::new("127.0.0.1", 11211).address(), "127.0.0.1:11211");
    /// assert_eq!(ServerSpec::new("::1", 11211).address(), "[::1]:11211");
    /// assert_eq!(ServerSpec::unix("/tmp/mc.sock").address(), "/tmp/mc.sock");
    /// ```
    pub fn address(&self) -> String {
        match &self.place {
            Place::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Place::Tcp { host, port } => format!("{host}:{port}"),
            Place::Unix(path) => path.to_string_lossy().into_owned(),
        }
    }

    /// Parses a comma-separated list of `host:port[:weight]`, `[v6]:port[:weight]` and
    /// `/path/to.sock[:weight]` entries, the form used by `MEMSEM_SERVERS` and `--servers`.
    /// Spaces around entries are ignored. The order is kept: it is part
    /// of the routing, so list the servers in the same order as the fleet's other clients.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], naming the entry, when the list is empty, an entry is empty
    /// or malformed, a port or weight is 0 or out of range, a host is empty, or the same
    /// host and port appear twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::ServerSpec;
    ///
    /// let servers = ServerSpec::parse_list(
    ///     "10.0.0.1:11211, 10.0.0.2:11211:3, [::1]:11311, /run/mc.sock:2",
    /// )?;
    /// assert_eq!(servers.len(), 4);
    /// assert_eq!(servers[1].weight(), 3);
    /// assert_eq!(servers[2].address(), "[::1]:11311");
    /// assert_eq!(servers[3], ServerSpec::unix("/run/mc.sock").with_weight(2));
    ///
    /// assert!(ServerSpec::parse_list("").is_err());
    /// assert!(ServerSpec::parse_list("10.0.0.1:11211,10.0.0.1:11211:2").is_err());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn parse_list(list: &str) -> Result<Vec<ServerSpec>> {
        if list.trim().is_empty() {
            return Err(Error::InvalidConfig("the server list is empty".into()));
        }
        let servers = list
            .split(',')
            .enumerate()
            .map(|(index, entry)| {
                let entry = entry.trim();
                if entry.is_empty() {
                    Err(Error::InvalidConfig(format!(
                        "server list {list:?}: entry {} is empty",
                        index + 1
                    )))
                } else {
                    entry.parse()
                }
            })
            .collect::<Result<Vec<ServerSpec>>>()?;
        validate(&servers)?;
        Ok(servers)
    }
}

impl fmt::Display for ServerSpec {
    /// The parseable form: `host:port` (or the socket path), followed by `:weight` when
    /// the weight is not 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address())?;
        if self.weight != 1 {
            write!(f, ":{}", self.weight)?;
        }
        Ok(())
    }
}

impl FromStr for ServerSpec {
    type Err = Error;

    /// Parses `host:port` or `host:port:weight`; an IPv6 address goes in brackets
    /// (`[::1]:11211`, `[::1]:11211:3`). An entry starting with `/` is a unix socket
    /// (Cache::Memcached's convention): `/path/to.sock` or `/path/to.sock:weight`, where a
    /// `:` after the last `/` always introduces the weight.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], naming the entry, when it is malformed, the host is empty,
    /// or the port or weight is not a positive integer in range.
    fn from_str(s: &str) -> Result<ServerSpec> {
        let bad = |why: &str| {
            Error::InvalidConfig(format!(
                "bad server {s:?}: {why} (expected host:port[:weight], [v6]:port[:weight] \
                 or /path/to.sock[:weight])"
            ))
        };
        if s.starts_with('/') {
            let file = s.rsplit('/').next().unwrap_or_default();
            let (path, weight) = match file.split_once(':') {
                None => (s, 1),
                Some((_, weight)) => (
                    &s[..s.len() - weight.len() - 1],
                    parse_positive::<u32>(weight).ok_or_else(|| {
                        bad("the weight after the socket path must be a positive integer")
                    })?,
                ),
            };
            if let Some(why) = unix_path_problem(path) {
                return Err(bad(why));
            }
            return Ok(ServerSpec::unix(path).with_weight(weight));
        }
        let (host, rest) = if let Some(bracketed) = s.strip_prefix('[') {
            let (host, rest) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between '[' and ']'"));
            }
            let rest = rest
                .strip_prefix(':')
                .ok_or_else(|| bad("missing ':port' after ']'"))?;
            (host, rest)
        } else {
            if s.matches(':').count() > 2 {
                return Err(bad(
                    "too many ':' (an IPv6 address must be written in brackets, as [::1]:11211)",
                ));
            }
            let (host, rest) = s.split_once(':').ok_or_else(|| bad("missing ':port'"))?;
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            if host.contains(['[', ']']) {
                return Err(bad("misplaced '[' or ']'"));
            }
            if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("whitespace or control character in the host"));
            }
            (host, rest)
        };
        let (port, weight) = match rest.split_once(':') {
            None => (rest, None),
            Some((port, weight)) => (port, Some(weight)),
        };
        let port = parse_positive::<u16>(port)
            .ok_or_else(|| bad("the port must be an integer from 1 to 65535"))?;
        let weight = match weight {
            None => 1,
            Some(weight) => parse_positive::<u32>(weight)
                .ok_or_else(|| bad("the weight must be a positive integer"))?,
        };
        Ok(ServerSpec::new(host, port).with_weight(weight))
    }
}

/// Longest unix socket path (bytes) that fits `sockaddr_un.sun_path` with its NUL on Linux.
const MAX_UNIX_PATH: usize = 107;

/// Why `path` cannot be a memcached unix socket entry, if it cannot.
fn unix_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        Some("a unix socket path must be absolute (start with '/')")
    } else if path.ends_with('/') {
        Some("a unix socket path must name a file, not end with '/'")
    } else if path.chars().any(char::is_control) {
        Some("control character in the socket path")
    } else if path.contains(',') {
        Some("',' in the socket path (it separates the entries of a list)")
    } else if path.len() > MAX_UNIX_PATH {
        Some("the socket path is longer than 107 bytes, the limit of a unix socket address")
    } else {
        None
    }
}

/// Parses a decimal integer made of ASCII digits only (no sign, no spaces), above 0.
fn parse_positive<T: FromStr + PartialEq + Default>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|value| *value != T::default())
}

/// Checks a whole list: not empty, every entry usable, no host and port twice, and a total
/// weight that fits libmemcached's 32-bit sum.
fn validate(servers: &[ServerSpec]) -> Result<()> {
    if servers.is_empty() {
        return Err(Error::InvalidConfig("no memcached servers given".into()));
    }
    let mut total: u64 = 0;
    for (index, server) in servers.iter().enumerate() {
        if let Place::Unix(path) = &server.place {
            let problem = match path.to_str() {
                None => Some("the socket path is not valid UTF-8"),
                Some(path) => unix_path_problem(path),
            };
            if let Some(problem) = problem {
                return Err(Error::InvalidConfig(format!(
                    "server {} ({}): {problem}",
                    index + 1,
                    server.address()
                )));
            }
        } else if server.host().is_empty() {
            return Err(Error::InvalidConfig(format!(
                "server {} ({}): empty host",
                index + 1,
                server.address()
            )));
        }
        if matches!(server.place, Place::Tcp { port: 0, .. }) {
            return Err(Error::InvalidConfig(format!(
                "server {} ({}): port 0",
                index + 1,
                server.address()
            )));
        }
        if server.weight == 0 {
            return Err(Error::InvalidConfig(format!(
                "server {} ({}): weight 0, weights must be positive integers",
                index + 1,
                server.address()
            )));
        }
        if let Some(first) = servers[..index]
            .iter()
            .position(|other| other.place == server.place)
        {
            return Err(Error::InvalidConfig(format!(
                "server {} ({}) is listed twice (entries {} and {})",
                server.address(),
                server,
                first + 1,
                index + 1
            )));
        }
        total += u64::from(server.weight);
    }
    if total > u64::from(u32::MAX) {
        return Err(Error::InvalidConfig(format!(
            "the weights add up to {total}, more than {}",
            u32::MAX
        )));
    }
    Ok(())
}

/// The routing table of a server list: which server holds a key.
///
/// Building it does all the work (hashing the ketama points); [`server_for`](Ring::server_for)
/// is then a hash of the key and a binary search. A `Ring` never changes: it does not know
/// whether a server is up, and never moves keys away from a dead one (see the
/// [module documentation](self)).
///
/// # Examples
///
/// ```
/// use memsem::routing::{Ring, Routing, ServerSpec};
///
/// let servers = ServerSpec::parse_list("10.0.0.1:11211:1,10.0.0.2:11211:1,10.0.0.3:11211:3")?;
/// let ring = Ring::new(Routing::CacheMemcached, &servers)?;
/// assert_eq!(ring.server_for(b"foo"), 2);
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Clone)]
pub struct Ring {
    routing: Routing,
    servers: usize,
    table: Table,
}

#[derive(Clone)]
enum Table {
    /// One server: every key goes to index 0, nothing is hashed.
    Single,
    /// Cache::Memcached buckets, stored as the running sum of the weights: server `i`
    /// owns buckets `ends[i-1] .. ends[i]`.
    Buckets { ends: Vec<u64> },
    /// libmemcached weighted ketama points, sorted by (value, server).
    Ketama { points: Vec<Point> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    value: u32,
    server: u32,
}

impl Ring {
    /// Builds the table for `servers`, in this order, with `routing`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the list is empty, a server has an empty host, port 0
    /// or weight 0, the same host and port appear twice, or the weights add up to more
    /// than `u32::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::{Ring, Routing, ServerSpec};
    ///
    /// let servers = [
    ///     ServerSpec::new("10.0.0.1", 11211),
    ///     ServerSpec::new("10.0.0.2", 11211).with_weight(2),
    /// ];
    /// let ring = Ring::new(Routing::Ketama, &servers)?;
    /// assert!(ring.server_for(b"__lock__report") < 2);
    ///
    /// assert!(Ring::new(Routing::Ketama, &[]).is_err());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn new(routing: Routing, servers: &[ServerSpec]) -> Result<Ring> {
        validate(servers)?;
        let table = if servers.len() == 1 {
            Table::Single
        } else {
            match routing {
                Routing::Ketama => Table::Ketama {
                    points: ketama_points(servers),
                },
                Routing::CacheMemcached => Table::Buckets {
                    ends: servers
                        .iter()
                        .scan(0u64, |sum, server| {
                            *sum += u64::from(server.weight);
                            Some(*sum)
                        })
                        .collect(),
                },
            }
        };
        Ok(Ring {
            routing,
            servers: servers.len(),
            table,
        })
    }

    /// Index, in the configured list, of the server that holds `key`.
    ///
    /// `key` is the key **without** the namespace: the namespace is sent on the wire but
    /// never hashed. Any bytes are accepted; this never panics.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::{Ring, Routing, ServerSpec};
    ///
    /// let servers = ServerSpec::parse_list("127.0.0.2:11211,127.0.0.3:11211,127.0.0.4:11211")?;
    /// let ring = Ring::new(Routing::Ketama, &servers)?;
    /// let index = ring.server_for("__lock__nightly-report".as_bytes());
    /// println!("held by {}", servers[index].address());
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn server_for(&self, key: &[u8]) -> usize {
        match &self.table {
            Table::Single => 0,
            Table::Buckets { ends } => {
                let Some(&total) = ends.last() else { return 0 };
                bucket_owner(ends, u64::from(cmhash(key)) % total)
            }
            Table::Ketama { points } => {
                let hash = md5_word(key, 0);
                let at = points.partition_point(|point| point.value < hash);
                // Past the last point: wrap around to the first.
                let point = points.get(at).or_else(|| points.first());
                point.map_or(0, |point| point.server as usize)
            }
        }
    }

    /// The routing this table was built with.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::{Ring, Routing, ServerSpec};
    ///
    /// let ring = Ring::new(Routing::CacheMemcached, &[ServerSpec::new("localhost", 11211)])?;
    /// assert_eq!(ring.routing(), Routing::CacheMemcached);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn routing(&self) -> Routing {
        self.routing
    }

    /// How many servers the table routes to (the length of the configured list).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::{Ring, Routing, ServerSpec};
    ///
    /// let servers = ServerSpec::parse_list("a:11211,b:11211")?;
    /// assert_eq!(Ring::new(Routing::Ketama, &servers)?.server_count(), 2);
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn server_count(&self) -> usize {
        self.servers
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Ring");
        debug
            .field("routing", &self.routing)
            .field("servers", &self.servers);
        if let Table::Ketama { points } = &self.table {
            debug.field("points", &points.len());
        }
        debug.finish()
    }
}

/// Cache::Memcached's hash: the upper half of the CRC-32, cut to 15 bits (0..=32767).
fn cmhash(key: &[u8]) -> u32 {
    (crc32fast::hash(key) >> 16) & 0x7fff
}

/// The server owning bucket `bucket` when server `i` has `weight` consecutive buckets.
fn bucket_owner(ends: &[u64], bucket: u64) -> usize {
    ends.partition_point(|&end| end <= bucket)
        .min(ends.len().saturating_sub(1))
}

/// Bytes `4 * word .. 4 * word + 4` of MD5(`data`), read as a little-endian u32.
fn md5_word(data: &[u8], word: usize) -> u32 {
    let digest = Md5::digest(data);
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&digest[4 * word..4 * word + 4]);
    u32::from_le_bytes(bytes)
}

/// How many points libmemcached's weighted ketama gives a server: computed in IEEE single
/// precision like the C code (double precision gives other counts, e.g. for 1,3,7,7,7).
fn ketama_point_count(weight: u32, total_weight: u64, live_servers: usize) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let blocks = (pct * KETAMA_POINTS_PER_SERVER / 4.0 * live_servers as f32 + 1e-10_f32).floor();
    // `as` saturates; a block count is at most 40 × servers anyway.
    (blocks as u32).saturating_mul(4)
}

/// libmemcached's weighted ketama continuum, sorted by (value, server index).
fn ketama_points(servers: &[ServerSpec]) -> Vec<Point> {
    let total_weight: u64 = servers.iter().map(|s| u64::from(s.weight)).sum();
    let mut points = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let blocks = ketama_point_count(server.weight, total_weight, servers.len()) / 4;
        for block in 0..blocks {
            // A unix socket is "PATH:0-j": libmemcached gives sockets port 0.
            let name = if server.port() == MEMCACHED_DEFAULT_PORT {
                format!("{}-{block}", server.host())
            } else {
                format!("{}:{}-{block}", server.host(), server.port())
            };
            for word in 0..4 {
                points.push(Point {
                    value: md5_word(name.as_bytes(), word),
                    server: u32::try_from(index).unwrap_or(u32::MAX),
                });
            }
        }
    }
    points.sort_unstable();
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(weights: &[u32]) -> Vec<ServerSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| ServerSpec::new(format!("10.0.0.{}", i + 1), 11211).with_weight(w))
            .collect()
    }

    fn point_counts(weights: &[u32]) -> Vec<u32> {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        weights
            .iter()
            .map(|&w| ketama_point_count(w, total, weights.len()))
            .collect()
    }

    fn invalid_config_message(result: Result<impl fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidConfig(message)) => message,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    /// A deterministic spread of keys: ASCII, lock names and high bytes.
    fn keys(count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                let mut key = format!("__lock__job-{i}").into_bytes();
                if i % 3 == 0 {
                    key.push(0x80 | (i % 128) as u8);
                }
                key
            })
            .collect()
    }

    #[test]
    fn routing_parses_and_displays_its_names() {
        for routing in [Routing::Ketama, Routing::CacheMemcached] {
            assert_eq!(routing.to_string().parse::<Routing>().unwrap(), routing);
        }
        assert_eq!("ketama".parse::<Routing>().unwrap(), Routing::Ketama);
        let message = invalid_config_message("Ketama".parse::<Routing>());
        assert!(message.contains("\"Ketama\""), "{message}");
    }

    #[test]
    fn server_spec_parses_good_entries() {
        let plain: ServerSpec = "127.0.0.1:11211".parse().unwrap();
        assert_eq!(
            (plain.host(), plain.port(), plain.weight()),
            ("127.0.0.1", 11211, 1)
        );
        let weighted: ServerSpec = "cache.example.com:11311:7".parse().unwrap();
        assert_eq!(
            (weighted.host(), weighted.port(), weighted.weight()),
            ("cache.example.com", 11311, 7)
        );
        let v6: ServerSpec = "[::1]:11211".parse().unwrap();
        assert_eq!((v6.host(), v6.port(), v6.weight()), ("::1", 11211, 1));
        assert_eq!(v6.address(), "[::1]:11211");
        let v6w: ServerSpec = "[fe80::1]:11311:3".parse().unwrap();
        assert_eq!(
            (v6w.host(), v6w.port(), v6w.weight()),
            ("fe80::1", 11311, 3)
        );
        let max: ServerSpec = "h:65535:4294967295".parse().unwrap();
        assert_eq!((max.port(), max.weight()), (65535, u32::MAX));
    }

    #[test]
    fn server_spec_display_round_trips() {
        for text in ["127.0.0.1:11211", "h:1:5", "[::1]:11211", "[::1]:11211:3"] {
            let spec: ServerSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        let weight_one: ServerSpec = "h:1:1".parse().unwrap();
        assert_eq!(weight_one.to_string(), "h:1");
    }

    #[test]
    fn server_spec_rejects_bad_entries_naming_them() {
        for bad in [
            "",
            "localhost",
            "localhost:",
            ":11211",
            "localhost:0",
            "localhost:65536",
            "localhost:-1",
            "localhost:+80",
            "localhost: 80",
            "localhost:80:0",
            "localhost:80:-2",
            "localhost:80:1.5",
            "localhost:80:",
            "localhost:80:1:2",
            "localhost:port",
            "::1:11211",
            "[::1]",
            "[::1]11211",
            "[::1:11211",
            "[]:11211",
            "[not-v6]:11211",
            "[::1]:0",
            "[::1]:11211:0",
            "local host:11211",
            "a]:11211",
            "localhost:80:4294967296",
            "héllo\u{7}:1",
        ] {
            let message = invalid_config_message(bad.parse::<ServerSpec>());
            assert!(
                message.contains(&format!("{bad:?}")),
                "{bad:?}: message does not name the entry: {message}"
            );
        }
        let message = invalid_config_message("::1:11211".parse::<ServerSpec>());
        assert!(message.contains("brackets"), "{message}");
    }

    #[test]
    fn unix_socket_entries_parse_with_and_without_weight() {
        let plain: ServerSpec = "/run/memcached/mc.sock".parse().unwrap();
        assert_eq!(plain, ServerSpec::unix("/run/memcached/mc.sock"));
        assert_eq!(
            plain.endpoint(),
            Endpoint::Unix(Path::new("/run/memcached/mc.sock"))
        );
        assert_eq!(
            (plain.host(), plain.port(), plain.weight()),
            ("/run/memcached/mc.sock", 0, 1)
        );
        let weighted: ServerSpec = "/tmp/a:b/mc.sock:3".parse().unwrap();
        assert_eq!(
            weighted,
            ServerSpec::unix("/tmp/a:b/mc.sock").with_weight(3)
        );
        assert_eq!(weighted.address(), "/tmp/a:b/mc.sock");
        for text in ["/tmp/mc.sock", "/tmp/mc.sock:7", "/tmp/a:b/c"] {
            assert_eq!(text.parse::<ServerSpec>().unwrap().to_string(), text);
        }
        let list = ServerSpec::parse_list("/tmp/a.sock, 10.0.0.1:11211, /tmp/b.sock:2").unwrap();
        assert_eq!(
            list,
            vec![
                ServerSpec::unix("/tmp/a.sock"),
                ServerSpec::new("10.0.0.1", 11211),
                ServerSpec::unix("/tmp/b.sock").with_weight(2),
            ]
        );
    }

    #[test]
    fn unix_socket_entries_reject_bad_paths_and_weights() {
        let long = format!("/{}", "x".repeat(MAX_UNIX_PATH));
        for bad in [
            "/tmp/mc.sock:",
            "/tmp/mc.sock:0",
            "/tmp/mc.sock:x",
            "/tmp/mc.sock:-1",
            "/tmp/mc.sock:1:2",
            "/tmp/dir/",
            "/tmp/\u{1}mc.sock",
            long.as_str(),
        ] {
            let message = invalid_config_message(bad.parse::<ServerSpec>());
            assert!(message.contains(&format!("{bad:?}")), "{bad:?}: {message}");
        }
        let message = invalid_config_message(ServerSpec::parse_list("/tmp/a.sock,/tmp/a.sock:2"));
        assert!(message.contains("twice"), "{message}");
        for spec in [
            ServerSpec::unix("relative.sock"),
            ServerSpec::unix("/tmp/a,b.sock"),
            ServerSpec::unix(long.as_str()),
        ] {
            let message = invalid_config_message(Ring::new(Routing::Ketama, &[spec]));
            assert!(message.contains("server 1"), "{message}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::OsStr::from_bytes(b"/tmp/\xff.sock");
            let message =
                invalid_config_message(Ring::new(Routing::Ketama, &[ServerSpec::unix(path)]));
            assert!(message.contains("UTF-8"), "{message}");
        }
    }

    #[test]
    fn ketama_names_unix_socket_points_with_port_0() {
        // libmemcached records a socket with port 0 and names its points "PATH:0-j"
        // (checked against libmemcached 1.1.4 in the integration tests).
        let servers = [
            ServerSpec::unix("/tmp/a.sock"),
            ServerSpec::unix("/tmp/b.sock"),
        ];
        let points = ketama_points(&servers);
        assert!(points.contains(&Point {
            value: md5_word(b"/tmp/a.sock:0-0", 0),
            server: 0
        }));
        assert!(points.contains(&Point {
            value: md5_word(b"/tmp/b.sock:0-39", 3),
            server: 1
        }));
    }

    #[test]
    fn parse_list_keeps_order_and_trims_spaces() {
        let servers = ServerSpec::parse_list(" a:1 ,b:2:3,[::1]:4:2 ").unwrap();
        assert_eq!(
            servers,
            vec![
                ServerSpec::new("a", 1),
                ServerSpec::new("b", 2).with_weight(3),
                ServerSpec::new("::1", 4).with_weight(2),
            ]
        );
    }

    #[test]
    fn parse_list_rejects_empty_lists_entries_and_duplicates() {
        assert!(invalid_config_message(ServerSpec::parse_list("")).contains("empty"));
        assert!(invalid_config_message(ServerSpec::parse_list("  ")).contains("empty"));
        let message = invalid_config_message(ServerSpec::parse_list("a:1,,b:2"));
        assert!(message.contains("entry 2 is empty"), "{message}");
        let message = invalid_config_message(ServerSpec::parse_list("a:1,b:2,"));
        assert!(message.contains("entry 3 is empty"), "{message}");
        let message = invalid_config_message(ServerSpec::parse_list("a:1,b:x"));
        assert!(message.contains("\"b:x\""), "{message}");
        let message = invalid_config_message(ServerSpec::parse_list("a:1,b:2,a:1:5"));
        assert!(message.contains("a:1:5"), "{message}");
        assert!(message.contains("twice"), "{message}");
        // Same host on another port, or another host text for the same machine, is fine.
        assert!(ServerSpec::parse_list("a:1,a:2,127.0.0.1:1,localhost:1").is_ok());
    }

    #[test]
    fn parse_list_rejects_weights_that_overflow_32_bits() {
        let message = invalid_config_message(ServerSpec::parse_list("a:1:4294967295,b:1:1"));
        assert!(message.contains("add up"), "{message}");
    }

    #[test]
    fn ring_new_validates_hand_built_specs() {
        assert!(invalid_config_message(Ring::new(Routing::Ketama, &[])).contains("no memcached"));
        let cases = [
            (ServerSpec::new("", 11211), "empty host"),
            (ServerSpec::new("a", 0), "port 0"),
            (ServerSpec::new("a", 1).with_weight(0), "weight 0"),
        ];
        for (spec, expected) in cases {
            for routing in [Routing::Ketama, Routing::CacheMemcached] {
                let message =
                    invalid_config_message(Ring::new(routing, std::slice::from_ref(&spec)));
                assert!(message.contains(expected), "{message}");
            }
        }
        let twice = [
            ServerSpec::new("a", 1),
            ServerSpec::new("a", 1).with_weight(2),
        ];
        assert!(invalid_config_message(Ring::new(Routing::Ketama, &twice)).contains("twice"));
    }

    #[test]
    fn crc32_is_the_zlib_crc() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(cmhash(b"123456789"), (0xCBF4_3926 >> 16) & 0x7fff);
    }

    #[test]
    fn md5_words_are_little_endian() {
        // MD5("") = d41d8cd9 8f00b204 e9800998 ecf8427e
        assert_eq!(md5_word(b"", 0), 0xd98c_1dd4);
        assert_eq!(md5_word(b"", 1), 0x04b2_008f);
        assert_eq!(md5_word(b"", 2), 0x9809_80e9);
        assert_eq!(md5_word(b"", 3), 0x7e42_f8ec);
    }

    #[test]
    fn ketama_point_counts_match_libmemcached() {
        assert_eq!(point_counts(&[1, 1, 3]), [96, 96, 288]);
        assert_eq!(point_counts(&[1, 2, 3, 4, 5]), [52, 104, 160, 212, 264]);
        // Single precision: a double-precision model would give 32/96/... here.
        assert_eq!(point_counts(&[1, 3, 7, 7, 7]), [28, 92, 224, 224, 224]);
        assert_eq!(point_counts(&[1, 1, 1, 1]), [160; 4]);
        assert_eq!(point_counts(&[u32::MAX, 1]), [320, 0]);
    }

    #[test]
    fn ketama_ring_holds_the_counted_points_sorted() {
        let servers = specs(&[1, 3, 7, 7, 7]);
        let points = ketama_points(&servers);
        assert_eq!(points.len(), 28 + 92 + 224 * 3);
        assert!(points.windows(2).all(|pair| pair[0] <= pair[1]));
        for (index, expected) in [28, 92, 224, 224, 224].into_iter().enumerate() {
            let owned = points.iter().filter(|p| p.server as usize == index).count();
            assert_eq!(owned, expected);
        }
    }

    #[test]
    fn ketama_names_points_without_the_default_port() {
        let default_port = [ServerSpec::new("h", 11211), ServerSpec::new("i", 11211)];
        let points = ketama_points(&default_port);
        assert!(points.contains(&Point {
            value: md5_word(b"h-0", 2),
            server: 0
        }));
        assert!(points.contains(&Point {
            value: md5_word(b"i-39", 0),
            server: 1
        }));
        let other_port = [ServerSpec::new("h", 11311), ServerSpec::new("i", 11211)];
        let points = ketama_points(&other_port);
        assert!(points.contains(&Point {
            value: md5_word(b"h:11311-39", 3),
            server: 0
        }));
    }

    #[test]
    fn ketama_lookup_is_a_lower_bound_with_wrap_around() {
        let servers = specs(&[1, 1, 1]);
        let ring = Ring::new(Routing::Ketama, &servers).unwrap();
        let Table::Ketama { points } = &ring.table else {
            panic!("not a ketama table");
        };
        for key in keys(500) {
            let hash = md5_word(&key, 0);
            let expected = points
                .iter()
                .find(|p| p.value >= hash)
                .unwrap_or(&points[0])
                .server as usize;
            assert_eq!(ring.server_for(&key), expected);
        }
    }

    #[test]
    fn bucket_layout_repeats_each_server_weight_times_in_order() {
        let ring = Ring::new(Routing::CacheMemcached, &specs(&[1, 1, 3])).unwrap();
        let Table::Buckets { ends } = &ring.table else {
            panic!("not a bucket table");
        };
        let layout: Vec<usize> = (0..5).map(|b| bucket_owner(ends, b)).collect();
        assert_eq!(layout, [0, 1, 2, 2, 2]);
        for key in keys(500) {
            let expected = [0, 1, 2, 2, 2][cmhash(&key) as usize % 5];
            assert_eq!(ring.server_for(&key), expected);
        }
    }

    #[test]
    fn one_server_takes_every_key() {
        for routing in [Routing::Ketama, Routing::CacheMemcached] {
            let ring = Ring::new(routing, &specs(&[5])).unwrap();
            for key in keys(100) {
                assert_eq!(ring.server_for(&key), 0);
            }
        }
    }

    #[test]
    fn odd_keys_never_panic() {
        let long = vec![0xffu8; 100_000];
        for routing in [Routing::Ketama, Routing::CacheMemcached] {
            let ring = Ring::new(routing, &specs(&[1, 2, 3])).unwrap();
            for key in [&b""[..], b"\0", b"\xff\xfe", &long] {
                assert!(ring.server_for(key) < 3);
            }
        }
    }

    #[test]
    fn ketama_removing_a_server_moves_only_its_keys() {
        let servers = specs(&[1, 1, 1, 1, 1]);
        let before = Ring::new(Routing::Ketama, &servers).unwrap();
        let removed = 2;
        let mut remaining = servers.clone();
        remaining.remove(removed);
        let after = Ring::new(Routing::Ketama, &remaining).unwrap();
        // Index in `remaining` of each index in `servers`.
        let renumber = |index: usize| if index > removed { index - 1 } else { index };
        let (mut moved, mut orphaned) = (0, 0);
        let keys = keys(10_000);
        for key in &keys {
            let old = before.server_for(key);
            let new = after.server_for(key);
            if old == removed {
                orphaned += 1;
            } else if renumber(old) != new {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "keys of surviving servers moved");
        // The removed server held about a fifth of the keys.
        assert!((1_000..3_000).contains(&orphaned), "{orphaned}");
    }

    #[test]
    fn routing_spreads_keys_by_weight() {
        for routing in [Routing::Ketama, Routing::CacheMemcached] {
            let ring = Ring::new(routing, &specs(&[1, 1, 3])).unwrap();
            let mut counts = [0usize; 3];
            for key in keys(10_000) {
                counts[ring.server_for(&key)] += 1;
            }
            assert!(
                counts[2] > counts[0] * 2 && counts[2] > counts[1] * 2,
                "{routing}: {counts:?}"
            );
        }
    }
}

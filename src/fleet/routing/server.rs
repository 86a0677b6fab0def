//! Server entries: `host:port[:weight]`, `[v6]:port[:weight]` and `/path/to.sock[:weight]`.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

#[cfg(test)]
use super::{Ring, Routing};

/// One memcached server of the list: host text as written, port and weight.
///
/// The host text matters for [`Routing::Ketama`](super::Routing::Ketama), which hashes it: write it exactly as the
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
    /// Nothing is checked here; [`Ring::new`](super::Ring::new) rejects an empty host, port 0 or weight 0.
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
    /// Nothing is checked here; [`Ring::new`](super::Ring::new) rejects a path that is not absolute, not
    /// UTF-8, holds a control character or is too long for a socket address.
    ///
    /// Routing: Cache::Memcached's buckets do not depend on the address, and
    /// libmemcached's ketama names the points of a socket `"PATH:0-j"` (a socket has port
    /// 0 there), which [`Routing::Ketama`](super::Routing::Ketama) reproduces.
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

    /// The same server with another weight (a positive integer; [`Ring::new`](super::Ring::new) rejects 0).
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
    /// [`Ring::new`](super::Ring::new) rejects anyway).
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
pub(super) fn validate(servers: &[ServerSpec]) -> Result<()> {
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

#[cfg(test)]
mod tests;

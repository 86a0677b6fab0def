//! Which server holds a lock: server lists and the key-to-server routing (pure, no I/O).
//!
//! A lock lives on exactly one memcached server. Every process that uses the lock, whether
//! it is written in Rust, Perl or Python, must pick the same server for it, or two holders
//! could each take "the" lock on a different server. This module reproduces, bit for bit,
//! the routing of the two families of clients found on existing memcached fleets, and of
//! the twemproxy proxy:
//!
//! | [`Routing`] | routes like | choose it when the fleet is used by |
//! |---|---|---|
//! | [`Ketama`](Routing::Ketama) (default) | libmemcached with `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED` | pylibmc with `{"ketama_weighted": True}`, PHP/C/Perl clients built on libmemcached with weighted ketama, or nobody else yet |
//! | [`CacheMemcached`](Routing::CacheMemcached) | Perl `Cache::Memcached`, and `Cache::Memcached::Fast` in its default mode | Perl programs, for instance those using `Cache::Memcached::Semaphore` |
//! | [`Twemproxy`](Routing::Twemproxy) | twemproxy / nutcracker with the same `hash:` and `distribution:` | other processes reach the servers through twemproxy while this one goes to them directly |
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
//! # Twemproxy (going around a twemproxy pool)
//!
//! Written `twemproxy:HASH:DISTRIBUTION` (`MEMSEM_ROUTING`, `--routing`), with the pool's
//! settings: HASH one of `one_at_a_time`, `md5`, `crc16`, `crc32`, `crc32a`, `fnv1_64`,
//! `fnv1a_64`, `fnv1_32`, `fnv1a_32`, `hsieh`, `murmur`, `jenkins`; DISTRIBUTION `ketama`
//! or `modula` (`random` is refused: it places each request anywhere). `twemproxy` alone
//! is twemproxy's default, `twemproxy:fnv1a_64:ketama`. Give memsem the pool's `servers:`
//! list as twemproxy has it (same host text, ports and weights; `/path:weight` becomes
//! `/path:weight` too).
//!
//! - The proxy hashes the **whole key it receives**, so here the namespace is hashed
//!   too: use the namespace the proxy's other clients put before their keys.
//! - ketama: the same weighted continuum as libmemcached (points named `"host-j"` on port
//!   11211, `"host:port-j"` otherwise, `"/path:-j"` for a socket), looked up with the
//!   pool's hash instead of MD5.
//! - modula: `hash % total weight` over buckets laid out in twemproxy's server order,
//!   which is **sorted by name** (shorter names first), not the order of the list.
//! - Not reproduced: servers given a name in twemproxy's list (`host:port:weight name`,
//!   which renames the ketama points) and `hash_tag`.
//! - `crc32` is 15 bits wide: with `ketama` it puts nearly every key on one server, in
//!   twemproxy as in memsem.
//!
//! Checked key by key, for every hash with both distributions, against nutcracker 0.5.0
//! in front of real memcached processes (TCP, port 11211, unix sockets) in the integration
//! tests. Settings of the proxy that break lock safety are listed in the README.
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
//! With [`Ketama`](Routing::Ketama) and [`CacheMemcached`](Routing::CacheMemcached), only
//! the key without the namespace: the namespace is prefixed on the wire but never hashed,
//! as in the client libraries (their defaults). With [`Twemproxy`](Routing::Twemproxy),
//! the whole key, namespace included, as the proxy does. With one server there is no
//! hashing at all; every key goes to it.
//!
//! # Dead servers: no rehash (fail closed)
//!
//! Some clients move the keys of an unreachable server to another one (Cache::Memcached
//! "rehashes", libmemcached and twemproxy can "auto-eject"). memsem never does: a [`Ring`] is a pure
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
use std::str::FromStr;

use crate::error::{Error, Result};

mod ketama;
mod server;
mod twemproxy;

use ketama::Point;
pub use server::{Endpoint, ServerSpec};
pub use twemproxy::{TwemproxyDistribution, TwemproxyHash};

/// The port libmemcached and twemproxy leave out of ketama point names.
const MEMCACHED_DEFAULT_PORT: u16 = 11211;

/// How a key is mapped to a server of the list.
///
/// See the [module documentation](self) for how each mode works and which to choose.
///
/// # Examples
///
/// ```
/// use memsem::routing::{Routing, TwemproxyDistribution, TwemproxyHash};
///
/// let routing: Routing = "cache-memcached".parse()?;
/// assert_eq!(routing, Routing::CacheMemcached);
/// assert_eq!(routing.to_string(), "cache-memcached");
/// assert_eq!(Routing::default(), Routing::Ketama);
///
/// let routing: Routing = "twemproxy:md5:modula".parse()?;
/// assert_eq!(
///     routing,
///     Routing::Twemproxy {
///         hash: TwemproxyHash::Md5,
///         distribution: TwemproxyDistribution::Modula,
///     }
/// );
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
    /// twemproxy (nutcracker): its `hash:` and `distribution:` settings, over the whole
    /// key (namespace included), for processes that go to the servers directly while
    /// others go through the proxy. Written `twemproxy:HASH:DISTRIBUTION`, e.g.
    /// `twemproxy:fnv1a_64:ketama` (`twemproxy` alone means twemproxy's defaults,
    /// `fnv1a_64` and `ketama`).
    Twemproxy {
        /// The pool's `hash:`.
        hash: TwemproxyHash,
        /// The pool's `distribution:` (`random` cannot hold locks and is refused).
        distribution: TwemproxyDistribution,
    },
}

impl Routing {
    /// The name used in configuration: `ketama`, `cache-memcached` or
    /// `twemproxy:HASH:DISTRIBUTION`.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::Routing;
    ///
    /// assert_eq!(Routing::Ketama.as_str(), "ketama");
    /// let twemproxy: Routing = "twemproxy".parse()?;
    /// assert_eq!(twemproxy.as_str(), "twemproxy:fnv1a_64:ketama");
    /// # Ok::<(), memsem::Error>(())
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Ketama => "ketama",
            Routing::CacheMemcached => "cache-memcached",
            Routing::Twemproxy { hash, distribution } => {
                let [ketama, modula] = hash.routing_names();
                match distribution {
                    TwemproxyDistribution::Ketama => ketama,
                    TwemproxyDistribution::Modula => modula,
                }
            }
        }
    }

    /// Whether the namespace is part of the hashed key (twemproxy hashes the whole key it
    /// receives; the client libraries leave their namespace out).
    pub(crate) fn hashes_namespace(self) -> bool {
        matches!(self, Routing::Twemproxy { .. })
    }

    /// The hash that places `key` (used when there are two servers or more).
    fn key_hash(self, key: &[u8]) -> u32 {
        match self {
            Routing::Ketama => ketama::md5_word(key, 0),
            Routing::CacheMemcached => ketama::cmhash(key),
            // twemproxy hashes an empty key as 0 without calling the function.
            Routing::Twemproxy { .. } if key.is_empty() => 0,
            Routing::Twemproxy { hash, .. } => hash.hash(key),
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

    /// Parses `ketama`, `cache-memcached`, `twemproxy`, `twemproxy:HASH` or
    /// `twemproxy:HASH:DISTRIBUTION` (twemproxy's defaults: `fnv1a_64`, `ketama`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for any other text, an unknown twemproxy hash or
    /// distribution, and the `random` distribution (no lock can live on a random server).
    fn from_str(s: &str) -> Result<Routing> {
        let mut parts = s.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("ketama"), None, ..) => Ok(Routing::Ketama),
            (Some("cache-memcached"), None, ..) => Ok(Routing::CacheMemcached),
            (Some("twemproxy"), hash, distribution, None) => Ok(Routing::Twemproxy {
                hash: hash.map_or(Ok(TwemproxyHash::Fnv1a64), str::parse)?,
                distribution: distribution.map_or(Ok(TwemproxyDistribution::Ketama), str::parse)?,
            }),
            _ => Err(Error::InvalidConfig(format!(
                "unknown routing {s:?}: use ketama, cache-memcached or \
                 twemproxy[:HASH[:DISTRIBUTION]] (e.g. twemproxy:fnv1a_64:ketama)"
            ))),
        }
    }
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
    /// Buckets (Cache::Memcached, twemproxy's modula), stored as the running sum of the
    /// weights: server `owners[i]` owns buckets `ends[i-1] .. ends[i]`; a key goes to
    /// bucket `hash % total`. Cache::Memcached lays servers out in list order, twemproxy
    /// in the order of their names.
    Buckets { ends: Vec<u64>, owners: Vec<usize> },
    /// Weighted ketama points (libmemcached's or twemproxy's), sorted by (value, server).
    Ketama { points: Vec<Point> },
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
        server::validate(servers)?;
        let table = if servers.len() == 1 {
            Table::Single
        } else {
            // Buckets of the servers taken in `order` (indexes into `servers`).
            let buckets = |order: Vec<usize>| Table::Buckets {
                ends: order
                    .iter()
                    .scan(0u64, |sum, &index| {
                        *sum += u64::from(servers[index].weight());
                        Some(*sum)
                    })
                    .collect(),
                owners: order,
            };
            match routing {
                Routing::Ketama => Table::Ketama {
                    points: ketama::points(servers, ketama::libmemcached_point_name),
                },
                Routing::CacheMemcached => buckets((0..servers.len()).collect()),
                Routing::Twemproxy {
                    distribution: TwemproxyDistribution::Ketama,
                    ..
                } => Table::Ketama {
                    points: ketama::points(servers, twemproxy::point_name),
                },
                Routing::Twemproxy {
                    distribution: TwemproxyDistribution::Modula,
                    ..
                } => buckets(twemproxy::server_order(servers)),
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
    /// `key` is the key **without** the namespace for [`Routing::Ketama`] and
    /// [`Routing::CacheMemcached`] (the namespace is sent on the wire but not hashed), and
    /// the whole key as sent, namespace included, for [`Routing::Twemproxy`] (the proxy
    /// sees and hashes the whole key). Any bytes are accepted; this never panics.
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
        let hash = match self.table {
            Table::Single => return 0,
            _ => self.routing.key_hash(key),
        };
        match &self.table {
            Table::Single => 0,
            Table::Buckets { ends, owners } => {
                let Some(&total) = ends.last() else { return 0 };
                let position = bucket_owner(ends, u64::from(hash) % total);
                owners.get(position).copied().unwrap_or(0)
            }
            Table::Ketama { points } => ketama::lookup(points, hash),
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

/// The server owning bucket `bucket` when server `i` has `weight` consecutive buckets.
fn bucket_owner(ends: &[u64], bucket: u64) -> usize {
    ends.partition_point(|&end| end <= bucket)
        .min(ends.len().saturating_sub(1))
}

#[cfg(test)]
mod tests;

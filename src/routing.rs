//! Which server holds a lock: server lists and the key-to-server routing (pure, no I/O).
//!
//! STUB: being written in full by the routing work (issue 3). The public API below is the
//! contract the client relies on.

use std::str::FromStr;

use crate::error::{Error, Result};

/// How a key is mapped to a server of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Routing {
    /// libmemcached's weighted ketama (consistent hashing).
    #[default]
    Ketama,
    /// Perl Cache::Memcached's CRC32 buckets.
    CacheMemcached,
}

impl FromStr for Routing {
    type Err = Error;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    host: String,
    port: u16,
    weight: u32,
}

impl ServerSpec {
    /// A server with weight 1.
    pub fn new(host: impl Into<String>, port: u16) -> ServerSpec {
        ServerSpec {
            host: host.into(),
            port,
            weight: 1,
        }
    }
    /// The same server with another weight.
    pub fn with_weight(mut self, weight: u32) -> ServerSpec {
        self.weight = weight;
        self
    }
    /// Host text as configured.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Weight (a positive integer).
    pub fn weight(&self) -> u32 {
        self.weight
    }
    /// `host:port`, as used to connect and in error messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    /// Parses a comma-separated list of `host:port[:weight]` entries.
    pub fn parse_list(list: &str) -> Result<Vec<ServerSpec>> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl FromStr for ServerSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<ServerSpec> {
        let bad = || Error::InvalidConfig(format!("bad server {s:?}: expected host:port[:weight]"));
        let parts: Vec<&str> = s.split(':').collect();
        let (host, port, weight) = match parts.as_slice() {
            [h, p] => (h, p, "1"),
            [h, p, w] => (h, p, *w),
            _ => return Err(bad()),
        };
        let port = port.parse().map_err(|_| bad())?;
        let weight = weight.parse().map_err(|_| bad())?;
        Ok(ServerSpec {
            host: host.to_string(),
            port,
            weight,
        })
    }
}

/// The routing table of a server list.
#[derive(Debug, Clone)]
pub struct Ring {
    servers: usize,
}

impl Ring {
    /// Builds the table.
    pub fn new(_routing: Routing, servers: &[ServerSpec]) -> Result<Ring> {
        if servers.is_empty() {
            return Err(Error::InvalidConfig("no memcached servers given".into()));
        }
        Ok(Ring {
            servers: servers.len(),
        })
    }
    /// Index (in the configured list) of the server for `key` (without namespace).
    pub fn server_for(&self, key: &[u8]) -> usize {
        key.len() % self.servers
    }
}

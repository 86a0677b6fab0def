//! memsem's own transport: one stream type over TCP, unix sockets and TLS, a probe run once
//! on every new connection, and the dialects spoken on it, as pure codecs.
//!
//! - [`meta`]: the meta dialect, sans I/O (encode requests, parse replies incrementally).
//! - [`classic`]: the classic dialect (`add`/`gets`/`cas`/`incr`/`version`), sans I/O, for
//!   proxies and servers without meta commands.
//! - [`probe`]: the per-connection handshake (ASCII auth, `version`, `mn`, `stats`), sans I/O:
//!   the dialect, the version, the server's [`Epoch`](crate::wire::transport::Epoch), refusals.
//! - [`ops`]: the lock operations as requests and their answers, for every transport.
//! - [`stream`] and [`tls`]: dialing (blocking), [`TlsConfig`].
//! - [`sniff`]: second opinions when a probe met silence or a close (SASL-only? TLS-only?
//!   a proxy that drops meta commands? or just going away).
//! - [`conn`] and [`pool`]: a blocking connection and the per-server pool ([`Backend`]).
//! - `mux` and `pipeline` (feature `tokio`): a few multiplexed connections per server
//!   (`AsyncBackend`), driven by their callers (no task of their own).

use std::path::PathBuf;
use std::sync::Arc;

use crate::wire::transport::Timeouts;

pub(crate) mod classic;
mod conn;
#[cfg(any(test, feature = "test-util"))]
pub(crate) mod fake;
pub(crate) mod key;
pub(crate) mod meta;
#[cfg(feature = "tokio")]
mod mux;
mod ops;
#[cfg(feature = "tokio")]
mod pipeline;
mod pool;
pub(crate) mod probe;
pub(crate) mod record;
mod sniff;
mod stream;
mod tls;
pub(crate) mod token;
pub(crate) mod transport;

#[cfg(feature = "tokio")]
pub(crate) use mux::AsyncBackend;
pub(crate) use pool::Backend;
pub use tls::TlsConfig;

/// The dialect spoken on one connection, chosen by its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Meta commands (`ms`, `mg`, `md`, `ma`, `mn`): memcached ≥ 1.6.13.
    Meta,
    /// Classic commands (`add`, `gets`, `cas`, `incr`, `version`): older servers and proxies.
    Classic,
}

impl Dialect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dialect::Meta => "meta",
            Dialect::Classic => "classic",
        }
    }
}

/// Which dialect of memcached's text protocol memsem speaks with a server (`--protocol`,
/// `MEMSEM_PROTOCOL`, [`ClientBuilder::protocol`](crate::ClientBuilder::protocol)).
///
/// | | acquire, release, refresh | lost |
/// |---|---|---|
/// | meta | `ms … ME`, `md … C`, `ms … C`: 1 round trip each | — |
/// | classic | `add`+`gets`, `cas` (expired), `cas`+`gets`: 1 round trip each | the remaining-TTL readout; the restart epoch |
///
/// # Examples
///
/// ```
/// use memsem::Protocol;
///
/// let protocol: Protocol = "classic".parse()?;
/// assert_eq!(protocol, Protocol::Classic);
/// assert_eq!(Protocol::default(), Protocol::Auto);
/// assert_eq!(Protocol::Auto.to_string(), "auto");
/// assert!("binary".parse::<Protocol>().is_err());
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// Meta commands only: a server without them (memcached < 1.6.13, a proxy) is refused
    /// with [`Error::Refused`](crate::Error::Refused).
    Meta,
    /// Classic commands only (`add`, `gets`, `cas`, `incr`, `version`): what twemproxy and
    /// mcrouter pass. The probe sends nothing else (twemproxy closes the connection on
    /// meta commands and on `stats`), so no restart epoch is known.
    Classic,
    /// Meta when the server answers it and is memcached ≥ 1.6.13, classic otherwise
    /// (including a proxy that closes the connection on the meta probe).
    #[default]
    Auto,
}

impl Protocol {
    /// `meta`, `classic` or `auto`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(memsem::Protocol::Meta.as_str(), "meta");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Meta => "meta",
            Protocol::Classic => "classic",
            Protocol::Auto => "auto",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = crate::error::Error;

    /// Parses `meta`, `classic` or `auto`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for any other text.
    fn from_str(s: &str) -> Result<Protocol, crate::error::Error> {
        match s {
            "meta" => Ok(Protocol::Meta),
            "classic" => Ok(Protocol::Classic),
            "auto" => Ok(Protocol::Auto),
            other => Err(crate::error::Error::InvalidConfig(format!(
                "unknown protocol {other:?}: use meta, classic or auto"
            ))),
        }
    }
}

/// A user name and password for ASCII auth (`memcached -Y`).
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Everything a transport needs to dial and probe one server.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) timeouts: Timeouts,
    pub(crate) max_idle: usize,
    pub(crate) tls: Option<Arc<tls::Connector>>,
    pub(crate) auth: Option<Arc<Credentials>>,
    pub(crate) protocol: Protocol,
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    Tcp {
        host: String,
        port: u16,
    },
    #[allow(dead_code)] // dialed once server entries can name sockets
    Unix(PathBuf),
}

impl Address {
    /// The host name TLS verifies, unless overridden.
    pub(crate) fn host(&self) -> &str {
        match self {
            Address::Tcp { host, .. } => host,
            Address::Unix(_) => "localhost",
        }
    }
}

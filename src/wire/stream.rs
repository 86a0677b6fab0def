//! One blocking byte stream to a server: TCP (with `TCP_NODELAY`), a unix socket, or either
//! under TLS (rustls), with the connect and I/O time-outs set once at dial time.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use super::Address;
use super::tls::Connector;
use crate::wire::transport::Timeouts;

/// A socket, before TLS.
#[derive(Debug)]
pub(crate) enum Plain {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Plain {
    /// Dials `address`, trying each resolved address in turn.
    pub(crate) fn dial(address: &Address, timeouts: Timeouts) -> io::Result<Plain> {
        let plain = match address {
            Address::Tcp { host, port } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                let mut found = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeouts.connect) {
                        Ok(stream) => {
                            found = Some(stream);
                            break;
                        }
                        Err(error) => last = error,
                    }
                }
                let stream = found.ok_or(last)?;
                stream.set_nodelay(true)?;
                Plain::Tcp(stream)
            }
            #[cfg(unix)]
            Address::Unix(path) => Plain::Unix(UnixStream::connect(path)?),
            #[cfg(not(unix))]
            Address::Unix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "unix sockets need a unix system",
                ));
            }
        };
        plain.set_timeout(Some(timeouts.io))?;
        plain.set_write_timeout(Some(timeouts.io))?;
        Ok(plain)
    }

    pub(crate) fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Plain::Tcp(stream) => stream.set_read_timeout(timeout),
            #[cfg(unix)]
            Plain::Unix(stream) => stream.set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Plain::Tcp(stream) => stream.set_write_timeout(timeout),
            #[cfg(unix)]
            Plain::Unix(stream) => stream.set_write_timeout(timeout),
        }
    }

    /// Whether the peer has closed the connection or sent unasked-for bytes while it sat
    /// idle: such a connection is out of step and must not carry a request. One
    /// non-blocking peek, no wait.
    pub(crate) fn is_stale(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let fd = match self {
                Plain::Tcp(stream) => stream.as_raw_fd(),
                Plain::Unix(stream) => stream.as_raw_fd(),
            };
            let mut byte = 0u8;
            // SAFETY: `fd` is an open socket owned by `self` for the whole call, and the
            // buffer is one valid, writable byte.
            let n = unsafe {
                libc::recv(
                    fd,
                    (&raw mut byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                return !matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                );
            }
            true
        }
        #[cfg(not(unix))]
        false
    }
}

impl Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Plain::Tcp(stream) => stream.read(buf),
            #[cfg(unix)]
            Plain::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Plain {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Plain::Tcp(stream) => stream.write(buf),
            #[cfg(unix)]
            Plain::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's byte stream, plain or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(Plain),
    Tls(Box<StreamOwned<ClientConnection, Plain>>),
}

/// A failed dial: where it failed decides how it is reported.
#[derive(Debug)]
pub(crate) enum DialError {
    /// The socket could not be opened.
    Connect(io::Error),
    /// The TLS handshake failed.
    Tls(io::Error),
}

impl Stream {
    /// Dials and, with a connector, completes the TLS handshake.
    pub(crate) fn dial(
        address: &Address,
        timeouts: Timeouts,
        tls: Option<&Connector>,
    ) -> Result<Stream, DialError> {
        let plain = Plain::dial(address, timeouts).map_err(DialError::Connect)?;
        let Some(tls) = tls else {
            return Ok(Stream::Plain(plain));
        };
        let name = tls.name_for(address.host()).map_err(DialError::Tls)?;
        let connection = ClientConnection::new(std::sync::Arc::clone(&tls.config), name)
            .map_err(|error| DialError::Tls(io::Error::other(error)))?;
        let mut stream = StreamOwned::new(connection, plain);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(DialError::Tls)?;
        }
        Ok(Stream::Tls(Box::new(stream)))
    }

    fn plain(&self) -> &Plain {
        match self {
            Stream::Plain(plain) => plain,
            Stream::Tls(stream) => &stream.sock,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub(crate) fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.plain().set_timeout(Some(timeout))
    }

    pub(crate) fn is_stale(&self) -> bool {
        self.plain().is_stale()
    }

    /// Writes all of `bytes` (one `write` on a plain socket, one TLS record batch).
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(plain) => plain.write_all(bytes),
            Stream::Tls(stream) => {
                stream.write_all(bytes)?;
                stream.flush()
            }
        }
    }

    pub(crate) fn receive(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(plain) => plain.read(buf),
            Stream::Tls(stream) => match stream.read(buf) {
                // A peer that closes without close_notify: an end of file all the same.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

//! One blocking connection: dialed, probed once, then one write and one read (usually) per
//! batch of requests, with its buffers reused from one request to the next.

use std::io;
use std::time::{Duration, Instant};

use super::meta::Reply;
use super::ops::{Op, Session};
use super::probe::{self, Unusable};
use super::stream::{DialError, Stream};
use super::{Address, Dialect, Protocol, Settings, sniff};
use crate::error::Refusal;
use crate::wire::transport::{Failure, Outcome};

const READ_CHUNK: usize = 4096;

/// A connection that has passed its probe.
#[derive(Debug)]
pub(crate) struct Conn {
    io: Io,
    output: Vec<u8>,
    opaque: u32,
    /// The last request failed while being written, before any of it could be applied... or
    /// so the pool may assume for a connection the peer had closed while it sat idle.
    pub(crate) broke_on_send: bool,
    pub(crate) session: Session,
}

/// The stream and its input buffer.
#[derive(Debug)]
struct Io {
    stream: Stream,
    /// Bytes read and not yet parsed: `input[..filled]`.
    input: Vec<u8>,
    filled: usize,
    io_timeout: Duration,
}

fn unavailable(error: io::Error) -> Failure {
    Failure::Unavailable(Box::new(error))
}

/// How an I/O error after a request was written is reported: the request may have been
/// applied when it writes.
fn lost(writes: bool, error: io::Error) -> Failure {
    if writes {
        Failure::Ambiguous(Box::new(error))
    } else {
        unavailable(error)
    }
}

/// How a failed TLS handshake is reported: a plain server on the other end (it closes, or
/// answers text) is a mismatch; a certificate problem is a configuration error.
pub(crate) fn tls_failure(error: io::Error) -> Failure {
    let certificate =
        error.to_string().contains("certificate") || error.to_string().contains("Certificate");
    match error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => unavailable(error),
        io::ErrorKind::InvalidData
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
            if !certificate =>
        {
            Failure::Refused(Refusal::TlsMismatch)
        }
        _ => Failure::Protocol(format!("TLS handshake failed: {error}")),
    }
}

/// What a probe's reply says, as a failure of the connection. A plain connection closed
/// without a byte gets a second opinion ([`sniff::closed_at_hello`]): SASL-only, or TLS.
pub(crate) fn probe_failure(
    unusable: Unusable,
    tls: bool,
    address: &Address,
    settings: &Settings,
) -> Failure {
    match unusable {
        Unusable::Refused(refusal) => Failure::Refused(refusal),
        // A TLS connection that the server closes after the handshake is just closed.
        Unusable::Silent if tls => unavailable(io::ErrorKind::UnexpectedEof.into()),
        Unusable::Silent => sniff::closed_at_hello(address, settings),
        Unusable::Garbage(detail) => Failure::Protocol(detail),
    }
}

/// How a read error during the probe is reported: a reset before any byte is a close; a TLS
/// alert (a client certificate refused, say) is a configuration problem, not an outage.
pub(crate) fn probe_read_failure(error: io::Error, tls: bool) -> Option<Failure> {
    match error.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => None,
        io::ErrorKind::InvalidData if tls => Some(Failure::Protocol(format!("TLS: {error}"))),
        _ => Some(unavailable(error)),
    }
}

impl Conn {
    /// Dials `address` and runs the probe (with ASCII auth when `send_auth`).
    pub(crate) fn open(address: &Address, settings: &Settings, send_auth: bool) -> Outcome<Conn> {
        let stream = match Stream::dial(address, settings.timeouts, settings.tls.as_deref()) {
            Ok(stream) => stream,
            Err(DialError::Connect(error)) => return Err(unavailable(error)),
            Err(DialError::Tls(error)) if is_timeout(&error) => {
                return Err(sniff::silent_at_handshake(address, settings, error));
            }
            Err(DialError::Tls(error)) => return Err(tls_failure(error)),
        };
        let tls = stream.is_tls();
        let mut io = Io {
            stream,
            input: vec![0; READ_CHUNK],
            filled: 0,
            io_timeout: settings.timeouts.io,
        };
        let mut output = Vec::with_capacity(256);
        let auth = settings.auth.as_deref().filter(|_| send_auth);
        probe::hello(&mut output, auth, settings.protocol);
        let at = Instant::now();
        io.stream.send(&output).map_err(unavailable)?;
        let found = loop {
            let closed = match io.fill(at) {
                Ok(()) => false,
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => true,
                Err(error) if !tls && io.filled == 0 && is_timeout(&error) => {
                    return Err(sniff::silent_at_hello(address, settings, error));
                }
                Err(error) => match probe_read_failure(error, tls) {
                    None => true,
                    Some(failure) => return Err(failure),
                },
            };
            let input = &io.input[..io.filled];
            match probe::greeting(input, auth.is_some(), settings.protocol, closed) {
                Ok(Some(found)) => break found,
                Ok(None) => {}
                Err(unusable) if probe::retry_classic(settings.protocol, &unusable, tls) => {
                    let conn = Conn::open(address, &classic(settings), send_auth)?;
                    if settings.protocol == Protocol::Meta {
                        return Err(Failure::Refused(Refusal::NoMetaProtocol));
                    }
                    return Ok(conn);
                }
                Err(unusable) => return Err(probe_failure(unusable, tls, address, settings)),
            }
        };
        if probe::redial_classic(settings.protocol, &found) {
            return Conn::open(address, &classic(settings), send_auth);
        }
        // The uptime is counted from when its reply arrived (not from when the probe was
        // sent), so that the server's age is never overestimated and a lock-delay never cut
        // short.
        let heard = Instant::now();
        let dialect = probe::dialect(settings.protocol, &found).map_err(Failure::Refused)?;
        if found.closed {
            return Err(unavailable(io::ErrorKind::UnexpectedEof.into()));
        }
        io.filled = 0;
        Ok(Conn {
            io,
            output,
            opaque: 0,
            broke_on_send: false,
            session: Session::new(dialect, found, heard, tls),
        })
    }

    /// Whether the server closed the connection (or sent something) while it sat idle.
    pub(crate) fn is_stale(&self) -> bool {
        self.io.filled != 0 || self.io.stream.is_stale()
    }

    /// Sends `ops` in one write and hands each reply, in order, to `each` (its index and the
    /// reply). Any failure leaves the connection out of step: the caller drops it.
    pub(crate) fn run(
        &mut self,
        ops: &[Op<'_>],
        mut each: impl FnMut(usize, Reply<'_>) -> Outcome<()>,
    ) -> Outcome<()> {
        self.output.clear();
        let first = self.opaque;
        for (index, op) in ops.iter().enumerate() {
            let opaque = first.wrapping_add(index as u32);
            op.encode(self.session.dialect, &mut self.output, opaque)?;
        }
        self.opaque = first.wrapping_add(ops.len() as u32);
        let writes = ops.iter().any(Op::writes);
        let started = Instant::now();
        if let Err(error) = self.io.stream.send(&self.output) {
            self.broke_on_send = true;
            return Err(lost(writes, error));
        }
        let io = &mut self.io;
        let dialect = self.session.dialect;
        let mut parsed = 0;
        for (index, op) in ops.iter().enumerate() {
            let used = loop {
                match op.parse(dialect, &io.input[parsed..io.filled]) {
                    Ok(Some((reply, used))) => {
                        // Classic replies carry no token: they are matched by order alone.
                        if dialect == Dialect::Meta {
                            check_opaque(op, reply, first.wrapping_add(index as u32))?;
                        }
                        each(index, reply)?;
                        break used;
                    }
                    Ok(None) => {
                        // Keep only the unparsed bytes before reading more.
                        io.input.copy_within(parsed..io.filled, 0);
                        io.filled -= parsed;
                        parsed = 0;
                        io.fill(started).map_err(|error| lost(writes, error))?;
                    }
                    Err(garbage) => return Err(Failure::Protocol(garbage.0)),
                }
            };
            parsed += used;
        }
        io.input.copy_within(parsed..io.filled, 0);
        io.filled -= parsed;
        Ok(())
    }
}

/// The same settings with the classic probe (for a second dial in `auto`).
fn classic(settings: &Settings) -> Settings {
    Settings {
        protocol: Protocol::Classic,
        ..settings.clone()
    }
}

pub(crate) fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl Io {
    /// Reads more bytes into `input`, within the I/O time-out counted from `started`.
    /// An end of file is `UnexpectedEof`.
    fn fill(&mut self, started: Instant) -> io::Result<()> {
        let left = self
            .io_timeout
            .checked_sub(started.elapsed())
            .filter(|left| !left.is_zero())
            .ok_or(io::ErrorKind::TimedOut)?;
        let shortened = left < self.io_timeout;
        if shortened {
            self.stream.set_timeout(left)?;
        }
        if self.input.len() - self.filled < READ_CHUNK {
            self.input.resize(self.filled + READ_CHUNK, 0);
        }
        let read = self.stream.receive(&mut self.input[self.filled..]);
        if shortened {
            self.stream.set_timeout(self.io_timeout)?;
        }
        match read? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.filled += n;
                Ok(())
            }
        }
    }
}

/// A meta reply carries the opaque token of its request; anything else is out of step.
fn check_opaque(op: &Op<'_>, reply: Reply<'_>, expected: u32) -> Outcome<()> {
    match reply {
        Reply::Meta { opaque, .. } if op.echoes() && opaque != Some(expected) => {
            Err(Failure::Protocol(format!(
                "reply out of step: opaque {opaque:?}, expected {expected}"
            )))
        }
        _ => Ok(()),
    }
}

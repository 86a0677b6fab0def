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

/// How far past the I/O time-out a read may wait, so that the socket's time-out need not be
/// set again before every read: a read that starts this early in an exchange keeps the full
/// time-out.
const TIMEOUT_SLACK: Duration = Duration::from_millis(1);

/// A connection that has passed its probe.
#[derive(Debug)]
pub(crate) struct Conn {
    io: Io,
    output: Vec<u8>,
    opaque: u32,
    /// The last request failed while being written, before any of it could be applied... or
    /// so the pool may assume for a connection the peer had closed while it sat idle.
    pub(crate) broke_on_send: bool,
    /// The last request was written in full, then the peer closed (end of file, reset)
    /// before a single byte of its reply came: what a request written on a connection the
    /// server had already closed looks like (see [`Conn::needs_check`]).
    pub(crate) closed_unanswered: bool,
    /// When the last exchange completed (or the probe, for a new connection).
    last_used: Instant,
    pub(crate) session: Session,
}

/// How long after a complete exchange a pooled connection is taken as still open without
/// asking the kernel (see [`Conn::needs_check`]).
pub(crate) const TRUSTED_FOR: Duration = Duration::from_millis(1);

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
            closed_unanswered: false,
            last_used: heard,
            session: Session::new(dialect, found, heard, tls),
        })
    }

    /// Whether the server closed the connection (or sent something) while it sat idle.
    /// Costs one system call (a non-blocking peek).
    pub(crate) fn is_stale(&self) -> bool {
        self.io.filled != 0 || self.io.stream.is_stale()
    }

    /// Whether the connection must be checked with [`is_stale`](Self::is_stale) before it
    /// carries a request: `false` when its last exchange completed less than [`TRUSTED_FOR`]
    /// ago (and nothing unasked-for is buffered).
    ///
    /// Why skipping the peek then is safe. The peek guards against one thing: writing a
    /// request on a connection whose close by the server (a restart, say) has already reached
    /// us, where the missing reply would make the outcome of a write look unknown. It cannot
    /// guard against a close that arrives after it (that window exists with the peek too).
    /// Skipping it widens the window from the microseconds between peek and write to at most
    /// `TRUSTED_FOR` after a reply, and only on a connection busy enough to be reused that
    /// soon. What such a request meets is handled without the peek's help, by the pool: the
    /// exchange fails with the peer closed before any byte of the reply
    /// ([`closed_unanswered`](Self::closed_unanswered)), the pool drops its idle connections
    /// (a restart closed them all) and
    /// - a read or no-op is sent again on a new connection: it changes nothing;
    /// - a CAS-checked write guarded by the epoch of its CAS (release, refresh, cooldown) is
    ///   answered `Restarted` (what the peek would have led to) when the new connection meets
    ///   another incarnation of the server: nothing written to the old one can touch the new
    ///   one's items;
    /// - otherwise (an add, a counter, or the same incarnation) the failure stays
    ///   `Ambiguous`, which the lock logic settles already: an add is asked again with the
    ///   same token (a second add stores it, or finds the key and reads whose it is), a
    ///   CAS-checked write reads the key back.
    ///
    /// So lock safety does not rest on the peek: it spares those second round trips, and it
    /// still runs on every connection idle for longer, which is where a server's close (a
    /// restart, an idle time-out) is usually met.
    pub(crate) fn needs_check(&self, now: Instant) -> bool {
        self.io.filled != 0 || now.saturating_duration_since(self.last_used) >= TRUSTED_FOR
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
        let mut heard = false;
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
                        if let Err(error) = io.fill(started) {
                            self.closed_unanswered = !heard && is_closed(&error);
                            return Err(lost(writes, error));
                        }
                        heard = true;
                    }
                    Err(garbage) => return Err(Failure::Protocol(garbage.0)),
                }
            };
            parsed += used;
        }
        io.input.copy_within(parsed..io.filled, 0);
        io.filled -= parsed;
        self.last_used = Instant::now();
        Ok(())
    }
}

/// Whether a read error says the peer closed the connection.
fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
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
    /// Reads more bytes into `input`, within the I/O time-out counted from `started` (give
    /// or take [`TIMEOUT_SLACK`]). An end of file is `UnexpectedEof`.
    fn fill(&mut self, started: Instant) -> io::Result<()> {
        let left = self
            .io_timeout
            .checked_sub(started.elapsed())
            .filter(|left| !left.is_zero())
            .ok_or(io::ErrorKind::TimedOut)?;
        // The socket's own time-out is the whole I/O time-out, set at dial time; it is
        // shortened (two more system calls) only once the exchange has used a noticeable part
        // of it, not before every read.
        let shortened = left.saturating_add(TIMEOUT_SLACK) < self.io_timeout;
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

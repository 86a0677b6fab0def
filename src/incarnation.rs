//! Which incarnation of a memcached server answers, and whether it can be used at all: a
//! watch connection per server, probed once when it is opened (`stats` for the restart
//! epoch and uptime, `mn` for the meta protocol) and then only checked for being closed —
//! a restart closes every connection.
//!
//! Interim: the pooled connections of the `memcache` crate cannot carry this, so the watch
//! is a connection of its own next to the pool; memsem's own transport (src/wire/) probes
//! every connection it opens instead.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::memcached::{Epoch, Failure, Outcome, Refusal, Timeouts};

/// What the server said about itself, as of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Its incarnation; `None` when `stats` is not passed (a proxy).
    pub(crate) epoch: Option<Epoch>,
    /// How long it has been up; `None` when unknown.
    pub(crate) uptime: Option<Duration>,
}

impl Seen {
    /// How much longer a lock-delay of `delay` keeps this server from granting locks.
    pub(crate) fn delay_left(&self, delay: Duration) -> Option<Duration> {
        let uptime = self.uptime?;
        (uptime < delay).then(|| delay - uptime)
    }
}

/// The watch connection of one server.
#[derive(Debug)]
pub(crate) struct Watch {
    host: String,
    port: u16,
    timeouts: Timeouts,
    open: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    stream: TcpStream,
    seen: Seen,
    at: Instant,
}

impl Open {
    /// Whether the server still has this connection open (no round trip: a closed one
    /// reads as end of file).
    fn alive(&mut self) -> bool {
        let mut buffer = [0u8; 64];
        match self.stream.read(&mut buffer) {
            Err(error) => error.kind() == ErrorKind::WouldBlock,
            // End of file (0), or bytes nobody asked for: either way, probe afresh.
            Ok(0) | Ok(_) => false,
        }
    }

    fn seen_now(&self) -> Seen {
        Seen {
            epoch: self.seen.epoch,
            uptime: self.seen.uptime.map(|up| up + self.at.elapsed()),
        }
    }
}

impl Watch {
    pub(crate) fn new(host: &str, port: u16, timeouts: Timeouts) -> Watch {
        Watch {
            host: host.to_string(),
            port,
            timeouts,
            open: Mutex::new(None),
        }
    }

    /// The server's incarnation and uptime now; opens and probes a connection when the
    /// last one was closed.
    ///
    /// # Errors
    ///
    /// [`Failure::Unavailable`] when the server cannot be reached; [`Failure::Refused`] when
    /// it is not a memcached that memsem can use.
    pub(crate) fn current(&self) -> Outcome<Seen> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(watch) = open.as_mut()
            && watch.alive()
        {
            return Ok(watch.seen_now());
        }
        *open = None;
        let watch = self.probe()?;
        let seen = watch.seen_now();
        *open = Some(watch);
        Ok(seen)
    }

    fn probe(&self) -> Outcome<Open> {
        let unavailable = |error: std::io::Error| Failure::Unavailable(Box::new(error));
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(unavailable)?;
        let mut last = std::io::Error::new(ErrorKind::NotFound, "no address");
        for addr in addrs {
            match self.dial(&addr) {
                Ok(stream) => return self.greet(stream, &addr),
                Err(error) => last = error,
            }
        }
        Err(unavailable(last))
    }

    fn dial(&self, addr: &std::net::SocketAddr) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(addr, self.timeouts.connect)?;
        stream.set_read_timeout(Some(self.timeouts.io))?;
        stream.set_write_timeout(Some(self.timeouts.io))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Asks `stats` and `mn` on a new connection.
    fn greet(&self, mut stream: TcpStream, addr: &std::net::SocketAddr) -> Outcome<Open> {
        let unavailable = |error: std::io::Error| Failure::Unavailable(Box::new(error));
        stream.write_all(b"stats\r\n").map_err(unavailable)?;
        let stats = read_reply(&mut stream, |reply| {
            reply.ends_with(b"END\r\n") || (reply.ends_with(b"\r\n") && !reply.starts_with(b"STAT"))
        });
        // The uptime is counted from when its reply had come, so that it is never overstated.
        let mut at = Instant::now();
        let seen = match stats {
            Ok(stats) => parse_stats(&stats)?,
            Err(failure) if is_closed(&failure) => {
                // Closed or reset on `stats`: a TLS-only server, a proxy that does not pass
                // `stats` (twemproxy), or a server that is not ready (docker-proxy during a
                // restart). A TLS hello, then `version`, on new connections tell them apart.
                if self.speaks_tls(addr) {
                    return Err(Failure::Refused(Refusal::TlsMismatch));
                }
                stream = self.dial(addr).map_err(|_| failure)?;
                stream.write_all(b"version\r\n").map_err(unavailable)?;
                let version =
                    read_reply(&mut stream, |reply| reply.ends_with(b"\r\n")).map_err(|_| {
                        unavailable(std::io::Error::other("closed on `stats` and `version`"))
                    })?;
                if !version.starts_with(b"VERSION ") {
                    return Err(Failure::Refused(Refusal::NotMemcached));
                }
                // The server answers now. Only if `stats` still closes the connection is it
                // a proxy that does not pass it: a server that was merely starting (whose
                // uptime the lock-delay needs) answers it now.
                let mut again = self.dial(addr).map_err(unavailable)?;
                again.write_all(b"stats\r\n").map_err(unavailable)?;
                match read_reply(&mut again, |reply| {
                    reply.ends_with(b"END\r\n")
                        || (reply.ends_with(b"\r\n") && !reply.starts_with(b"STAT"))
                }) {
                    Ok(stats) => {
                        at = Instant::now();
                        stream = again;
                        parse_stats(&stats)?
                    }
                    Err(failure) if is_closed(&failure) => Seen {
                        epoch: None,
                        uptime: None,
                    },
                    Err(failure) => return Err(failure),
                }
            }
            Err(failure) => return Err(failure),
        };
        stream.write_all(b"mn\r\n").map_err(unavailable)?;
        let meta = match read_reply(&mut stream, |reply| reply.ends_with(b"\r\n")) {
            Ok(reply) => reply,
            // A proxy that closes the connection on meta commands (it closed on `stats` too,
            // so no epoch is known). A memcached that answered `stats` and closes now is
            // going away (a memcached without meta commands answers ERROR).
            Err(failure) if is_closed(&failure) && seen.epoch.is_none() => {
                return Err(Failure::Refused(Refusal::NoMetaProtocol));
            }
            Err(other) => return Err(other),
        };
        match meta.as_slice() {
            b"MN\r\n" => {}
            reply if reply.starts_with(b"ERROR") || reply.starts_with(b"CLIENT_ERROR") => {
                return Err(Failure::Refused(Refusal::NoMetaProtocol));
            }
            _ => return Err(Failure::Refused(Refusal::NotMemcached)),
        }
        stream.set_nonblocking(true).map_err(unavailable)?;
        Ok(Open { stream, seen, at })
    }
}

/// How far ahead of its real uptime memcached's `stats uptime` runs: it sets its start
/// time 2 s in the past (`process_started = time(0) - ITEM_UPDATE_INTERVAL - 2`, and
/// reports `current_time - ITEM_UPDATE_INTERVAL`), so a server started a moment ago says 2.
/// Subtracted, so that the lock-delay is never cut short.
const UPTIME_HEAD_START: Duration = Duration::from_secs(2);

/// A minimal TLS 1.2 ClientHello (one cipher suite, no extensions): a TLS server answers it
/// with a handshake (0x16) or alert (0x15) record; memcached waits for a line.
const CLIENT_HELLO: [u8; 50] = {
    let mut hello = [0u8; 50];
    let head = [0x16, 3, 1, 0, 0x2d, 1, 0, 0, 0x29, 3, 3];
    let mut i = 0;
    while i < head.len() {
        hello[i] = head[i];
        i += 1;
    }
    // 32 zero bytes of "random", then: no session id, one cipher suite, null compression.
    let tail = [0, 0, 2, 0xc0, 0x2f, 1, 0];
    let mut j = 0;
    while j < tail.len() {
        hello[43 + j] = tail[j];
        j += 1;
    }
    hello
};

impl Watch {
    /// Whether the server at `addr` answers a TLS hello with a TLS record.
    fn speaks_tls(&self, addr: &std::net::SocketAddr) -> bool {
        let Ok(mut stream) = self.dial(addr) else {
            return false;
        };
        let mut first = [0u8; 1];
        stream.write_all(&CLIENT_HELLO).is_ok()
            && stream.read_exact(&mut first).is_ok()
            && matches!(first[0], 0x15 | 0x16)
    }
}

/// The longest probe reply read (memcached's `stats` is about 3 KiB).
const MAX_REPLY: usize = 64 * 1024;

/// Reads until `done` says the reply is complete. A connection closed or reset before any
/// byte is reported as end of file, for `greet` to find out why.
fn read_reply(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Outcome<Vec<u8>> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while !done(&reply) {
        if reply.len() > MAX_REPLY {
            return Err(Failure::Refused(Refusal::NotMemcached));
        }
        match stream.read(&mut chunk) {
            // Something that answers and hangs up, but not as memcached does (HTTP).
            Ok(0) if !reply.is_empty() && !reply.starts_with(b"STAT ") => {
                return Err(Failure::Refused(Refusal::NotMemcached));
            }
            Ok(0) => {
                let error = std::io::Error::new(ErrorKind::UnexpectedEof, "closed by the server");
                return Err(Failure::Unavailable(Box::new(error)));
            }
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            // Reset before any byte: treated as closed (see `greet`).
            Err(error) if error.kind() == ErrorKind::ConnectionReset && reply.is_empty() => {
                let error = std::io::Error::new(ErrorKind::UnexpectedEof, error.to_string());
                return Err(Failure::Unavailable(Box::new(error)));
            }
            Err(error) => return Err(Failure::Unavailable(Box::new(error))),
        }
    }
    Ok(reply)
}

/// Whether a failure is the server closing the connection.
fn is_closed(failure: &Failure) -> bool {
    match failure {
        Failure::Unavailable(cause) => cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == ErrorKind::UnexpectedEof),
        _ => false,
    }
}

/// The epoch and uptime in a `stats` reply, or why the server cannot be used.
fn parse_stats(reply: &[u8]) -> Outcome<Seen> {
    if reply.starts_with(b"CLIENT_ERROR unauthenticated") {
        return Err(Failure::Refused(Refusal::AuthRequired));
    }
    if reply.starts_with(b"ERROR") {
        // A proxy that does not pass `stats`: the incarnation cannot be known.
        return Ok(Seen {
            epoch: None,
            uptime: None,
        });
    }
    if !reply.starts_with(b"STAT ") {
        return Err(Failure::Refused(Refusal::NotMemcached));
    }
    let text = String::from_utf8_lossy(reply);
    let stat = |name: &str| {
        text.lines().find_map(|line| {
            let mut parts = line.split(' ');
            (parts.next() == Some("STAT") && parts.next() == Some(name))
                .then(|| {
                    parts
                        .next()
                        .and_then(|value| value.trim().parse::<u64>().ok())
                })
                .flatten()
        })
    };
    let (pid, uptime, time) = (stat("pid"), stat("uptime"), stat("time"));
    let epoch = match (pid, uptime, time) {
        (Some(pid), Some(uptime), Some(time)) => Some(Epoch {
            started: time.saturating_sub(uptime),
            pid: u32::try_from(pid).unwrap_or(u32::MAX),
        }),
        _ => None,
    };
    Ok(Seen {
        epoch,
        uptime: uptime.map(|secs| Duration::from_secs(secs).saturating_sub(UPTIME_HEAD_START)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_give_the_epoch_and_uptime() {
        let reply = b"STAT pid 42\r\nSTAT uptime 9\r\nSTAT time 1000\r\nEND\r\n";
        let seen = parse_stats(reply).unwrap();
        assert_eq!(
            seen.epoch,
            Some(Epoch {
                started: 991,
                pid: 42
            })
        );
        assert_eq!(seen.uptime, Some(Duration::from_secs(7)));
        assert_eq!(
            seen.delay_left(Duration::from_secs(10)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(seen.delay_left(Duration::from_secs(7)), None);
    }

    #[test]
    fn what_is_not_a_usable_memcached_is_refused() {
        assert!(matches!(
            parse_stats(b"CLIENT_ERROR unauthenticated\r\n"),
            Err(Failure::Refused(Refusal::AuthRequired))
        ));
        assert!(matches!(
            parse_stats(b"HTTP/1.1 400 Bad Request\r\n"),
            Err(Failure::Refused(Refusal::NotMemcached))
        ));
        assert_eq!(parse_stats(b"ERROR\r\n").unwrap().epoch, None);
    }

    #[test]
    fn epochs_a_second_apart_are_the_same_incarnation() {
        let a = Epoch {
            started: 100,
            pid: 1,
        };
        assert!(a.is_same(&Epoch {
            started: 101,
            pid: 1
        }));
        assert!(!a.is_same(&Epoch {
            started: 102,
            pid: 1
        }));
        assert!(!a.is_same(&Epoch {
            started: 100,
            pid: 2
        }));
    }
}

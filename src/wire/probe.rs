//! The handshake every new connection runs before its first command, without I/O.
//!
//! One pipelined write: ASCII auth when configured (`set auth`), then `version`, `mn` (does
//! the server speak meta?) and `stats` (its pid, uptime and clock: the [`Epoch`]). The replies
//! are parsed as they arrive; what they say decides the connection's [`Dialect`], or refuses
//! the server for good ([`Refusal`]). Nothing that could change data is sent before the
//! probe has answered, so a server that does not speak meta never sees a meta write whose
//! value lines it would run as commands.

use std::time::Duration;

use super::meta::{Garbage, line, shown};
use super::{Credentials, Dialect, Protocol};
use crate::error::Refusal;
use crate::wire::transport::Epoch;

/// How far ahead of its real uptime memcached's `stats uptime` runs: it sets its start time
/// 2 s in the past (`process_started = time(0) - ITEM_UPDATE_INTERVAL - 2`), so a server
/// started a moment ago says 2. Subtracted, so that the lock-delay is never cut short.
const UPTIME_HEAD_START: Duration = Duration::from_secs(2);

/// The first memcached whose meta commands memsem relies on (CAS-checked `md` was reported
/// broken before it).
const FIRST_META: (u32, u32, u32) = (1, 6, 13);

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Greeting {
    pub(crate) version: String,
    /// `mn` answered `MN`.
    pub(crate) meta: bool,
    pub(crate) epoch: Option<Epoch>,
    /// The server's uptime when the connection was made.
    pub(crate) uptime: Option<Duration>,
    pub(crate) authenticated: bool,
    /// The server (or a proxy) closed the connection during the probe.
    pub(crate) closed: bool,
}

/// Why a probe did not produce a [`Greeting`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// The server cannot be used as configured.
    Refused(Refusal),
    /// Closed before a single byte came back.
    Silent,
    /// Bytes that make no sense after a text start.
    Garbage(String),
}

impl From<Garbage> for Unusable {
    fn from(garbage: Garbage) -> Unusable {
        Unusable::Garbage(garbage.0)
    }
}

/// Writes the probe: auth (when given), `version`, then `mn` and `stats` unless only the
/// classic dialect may be spoken (twemproxy closes the connection on both).
pub(crate) fn hello(out: &mut Vec<u8>, auth: Option<&Credentials>, protocol: Protocol) {
    if let Some(auth) = auth {
        let length = auth.user.len() + 1 + auth.password.len();
        out.extend_from_slice(format!("set auth 0 0 {length}\r\n").as_bytes());
        out.extend_from_slice(auth.user.as_bytes());
        out.push(b' ');
        out.extend_from_slice(auth.password.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"version\r\n");
    match protocol {
        Protocol::Meta | Protocol::Auto => out.extend_from_slice(b"mn\r\nstats\r\n"),
        Protocol::Classic => {}
    }
}

/// Reads the lines of a probe reply one by one.
struct Lines<'a> {
    buf: &'a [u8],
    at: usize,
    closed: bool,
}

enum Next<'a> {
    Line(&'a str),
    /// More bytes are needed.
    More,
    /// The peer closed the connection here.
    End,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Result<Next<'a>, Unusable> {
        let rest = &self.buf[self.at..];
        match line(rest) {
            Ok(Some((text, used))) => {
                self.at += used;
                Ok(Next::Line(text))
            }
            Ok(None) if self.closed && rest.is_empty() => Ok(Next::End),
            Ok(None) if self.closed => Err(Unusable::Garbage(format!(
                "connection closed inside a reply: {}",
                shown(rest)
            ))),
            Ok(None) => Ok(Next::More),
            Err(_) if self.at == 0 && !rest.first().is_some_and(u8::is_ascii_graphic) => {
                Err(Unusable::Refused(Refusal::TlsMismatch))
            }
            Err(_) if self.at == 0 => Err(Unusable::Refused(Refusal::NotMemcached)),
            Err(garbage) => Err(garbage.into()),
        }
    }
}

macro_rules! line_or {
    ($lines:expr, $end:expr) => {
        match $lines.next()? {
            Next::Line(text) => text,
            Next::More => return Ok(None),
            Next::End => $end,
        }
    };
}

/// Parses the probe's replies in `buf` (everything read so far; `closed` once the peer has
/// closed): `Ok(None)` while more bytes are needed.
pub(crate) fn greeting(
    buf: &[u8],
    auth_sent: bool,
    protocol: Protocol,
    closed: bool,
) -> Result<Option<Greeting>, Unusable> {
    if buf.first().is_some_and(|&b| !b.is_ascii_graphic()) {
        // A TLS alert or handshake record, not a text reply.
        return Err(Unusable::Refused(Refusal::TlsMismatch));
    }
    let mut lines = Lines { buf, at: 0, closed };
    let silent = |lines: &Lines<'_>| {
        if lines.at == 0 {
            Unusable::Silent
        } else {
            Unusable::Garbage("connection closed during the probe".into())
        }
    };
    let unauthenticated = if auth_sent {
        Refusal::AuthFailed
    } else {
        Refusal::AuthRequired
    };
    let mut authenticated = false;
    if auth_sent {
        let text = line_or!(lines, return Err(silent(&lines)));
        match text {
            "STORED" => authenticated = true,
            _ if text.starts_with("CLIENT_ERROR") => {
                return Err(Unusable::Refused(Refusal::AuthFailed));
            }
            _ => return Err(Unusable::Refused(Refusal::NotMemcached)),
        }
    }
    let text = line_or!(lines, return Err(silent(&lines)));
    let version = match text.strip_prefix("VERSION ") {
        Some(version) if !version.is_empty() && version.len() < 64 => version.to_string(),
        _ if text.starts_with("CLIENT_ERROR") => {
            return Err(Unusable::Refused(unauthenticated));
        }
        _ => return Err(Unusable::Refused(Refusal::NotMemcached)),
    };
    let mut found = Greeting {
        version,
        meta: false,
        epoch: None,
        uptime: None,
        authenticated,
        closed: false,
    };
    match protocol {
        Protocol::Meta | Protocol::Auto => {
            let text = line_or!(lines, {
                found.closed = true;
                return Ok(Some(found));
            });
            found.meta = text == "MN";
        }
        // Only `version` was sent.
        Protocol::Classic => return Ok(Some(found)),
    }
    let (mut pid, mut uptime, mut time) = (None, None, None);
    loop {
        let text = line_or!(lines, {
            found.closed = true;
            break;
        });
        if text == "END" {
            break;
        }
        let Some(stat) = text.strip_prefix("STAT ") else {
            // ERROR, CLIENT_ERROR...: no statistics through this server (a proxy).
            break;
        };
        let mut words = stat.splitn(2, ' ');
        let (name, value) = (words.next(), words.next().unwrap_or(""));
        match name {
            Some("pid") => pid = value.parse::<u32>().ok(),
            Some("uptime") => uptime = value.parse::<u64>().ok(),
            Some("time") => time = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    if let (Some(pid), Some(uptime), Some(time)) = (pid, uptime, time) {
        found.epoch = Some(Epoch {
            started: time.saturating_sub(uptime),
            pid,
        });
        found.uptime = Some(Duration::from_secs(uptime).saturating_sub(UPTIME_HEAD_START));
    }
    Ok(Some(found))
}

/// `1.6.18` → (1, 6, 18); `None` for a version that is not memcached's numbering.
fn numbers(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split(['.', '-', ' ']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    Some((major, minor, patch))
}

/// The dialect a connection speaks, given what its probe found.
pub(crate) fn dialect(protocol: Protocol, found: &Greeting) -> Result<Dialect, Refusal> {
    let recent = numbers(&found.version).is_none_or(|version| version >= FIRST_META);
    match protocol {
        Protocol::Meta | Protocol::Auto if found.meta && recent => Ok(Dialect::Meta),
        Protocol::Meta => Err(Refusal::NoMetaProtocol),
        Protocol::Classic | Protocol::Auto => Ok(Dialect::Classic),
    }
}

/// Whether a connection probed in `protocol` must be dialed again with the classic probe:
/// in `auto`, a peer that closed the connection on the meta probe without answering `mn`
/// (twemproxy does so on every meta command) can still be spoken to in classic.
pub(crate) fn redial_classic(protocol: Protocol, found: &Greeting) -> bool {
    protocol == Protocol::Auto && found.closed && !found.meta
}

/// Whether a probe that failed with `unusable` is worth one more dial with the classic
/// probe: without TLS, a peer that closed without a byte may be twemproxy, which drops the
/// whole pipelined probe, `version` included, once it meets `mn`. In `auto` the classic
/// connection is then used; in `meta` its answer proves the server lacks meta commands
/// ([`Refusal::NoMetaProtocol`](crate::Refusal::NoMetaProtocol), never retried). A TLS-only
/// server stays silent to the classic probe too, and is then reported as before.
pub(crate) fn retry_classic(protocol: Protocol, unusable: &Unusable, tls: bool) -> bool {
    protocol != Protocol::Classic && !tls && *unusable == Unusable::Silent
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &[u8] =
        b"STAT pid 4242\r\nSTAT uptime 7\r\nSTAT time 1700000010\r\nSTAT version 1.6.18\r\nEND\r\n";

    fn probe(reply: &[u8], auth_sent: bool, closed: bool) -> Result<Option<Greeting>, Unusable> {
        greeting(reply, auth_sent, Protocol::Meta, closed)
    }

    #[test]
    fn the_classic_probe_is_version_alone_and_auto_falls_back_to_classic() {
        let mut out = Vec::new();
        hello(&mut out, None, Protocol::Classic);
        assert_eq!(out, b"version\r\n");
        out.clear();
        hello(&mut out, None, Protocol::Auto);
        assert_eq!(out, b"version\r\nmn\r\nstats\r\n");

        let found = greeting(b"VERSION 0.5.0\r\n", false, Protocol::Classic, false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.version.as_str(), found.meta, found.epoch),
            ("0.5.0", false, None)
        );
        assert_eq!(dialect(Protocol::Classic, &found), Ok(Dialect::Classic));
        assert!(!redial_classic(Protocol::Classic, &found));

        // twemproxy: version answered (by a backend), then the connection closes on `mn`.
        let proxy = greeting(b"VERSION 1.6.18\r\n", false, Protocol::Auto, true)
            .unwrap()
            .unwrap();
        assert!(proxy.closed && !proxy.meta);
        assert!(redial_classic(Protocol::Auto, &proxy));
        assert!(!redial_classic(Protocol::Meta, &proxy));
        // twemproxy also drops a pipelined probe without answering `version`.
        assert!(retry_classic(Protocol::Auto, &Unusable::Silent, false));
        assert!(!retry_classic(Protocol::Auto, &Unusable::Silent, true));
        assert!(retry_classic(Protocol::Meta, &Unusable::Silent, false));
        assert!(!retry_classic(Protocol::Meta, &Unusable::Silent, true));
        assert!(!retry_classic(Protocol::Classic, &Unusable::Silent, false));

        // memcached 1.5: ERROR to `mn`, statistics answered: classic with an epoch.
        let mut old = b"VERSION 1.5.22\r\nERROR\r\n".to_vec();
        old.extend_from_slice(STATS);
        let found = greeting(&old, false, Protocol::Auto, false)
            .unwrap()
            .unwrap();
        assert_eq!(dialect(Protocol::Auto, &found), Ok(Dialect::Classic));
        assert!(found.epoch.is_some());
        // memcached 1.6.12 answers MN but its CAS-checked md is not trusted.
        let mut early = b"VERSION 1.6.12\r\nMN\r\n".to_vec();
        early.extend_from_slice(STATS);
        let found = greeting(&early, false, Protocol::Auto, false)
            .unwrap()
            .unwrap();
        assert_eq!(dialect(Protocol::Auto, &found), Ok(Dialect::Classic));
        let mut recent = b"VERSION 1.6.18\r\nMN\r\n".to_vec();
        recent.extend_from_slice(STATS);
        let found = greeting(&recent, false, Protocol::Auto, false)
            .unwrap()
            .unwrap();
        assert_eq!(dialect(Protocol::Auto, &found), Ok(Dialect::Meta));
    }

    #[test]
    fn the_probe_is_one_pipelined_write() {
        let mut out = Vec::new();
        let auth = Credentials {
            user: "alice".into(),
            password: "s3cret pass".into(),
        };
        hello(&mut out, Some(&auth), Protocol::Meta);
        assert_eq!(
            out,
            b"set auth 0 0 17\r\nalice s3cret pass\r\nversion\r\nmn\r\nstats\r\n"
        );
    }

    #[test]
    fn a_meta_server_gives_its_version_and_epoch() {
        let mut reply = b"VERSION 1.6.18\r\nMN\r\n".to_vec();
        reply.extend_from_slice(STATS);
        for cut in 0..reply.len() {
            assert_eq!(probe(&reply[..cut], false, false), Ok(None), "cut at {cut}");
        }
        let found = probe(&reply, false, false).unwrap().unwrap();
        assert_eq!(found.version, "1.6.18");
        assert!(found.meta && !found.closed && !found.authenticated);
        assert_eq!(
            found.epoch,
            Some(Epoch {
                started: 1_700_000_003,
                pid: 4242
            })
        );
        // memcached's uptime runs 2 s ahead of the real one.
        assert_eq!(found.uptime, Some(Duration::from_secs(5)));
        assert_eq!(dialect(Protocol::Meta, &found), Ok(Dialect::Meta));
    }

    #[test]
    fn auth_replies_decide_between_required_and_failed() {
        let mut reply = b"STORED\r\nVERSION 1.6.18\r\nMN\r\n".to_vec();
        reply.extend_from_slice(STATS);
        assert!(probe(&reply, true, false).unwrap().unwrap().authenticated);
        let rejected = b"CLIENT_ERROR unauthenticated\r\n";
        assert_eq!(
            probe(rejected, true, true),
            Err(Unusable::Refused(Refusal::AuthFailed))
        );
        assert_eq!(
            probe(rejected, false, true),
            Err(Unusable::Refused(Refusal::AuthRequired))
        );
    }

    #[test]
    fn servers_without_meta_are_refused() {
        let old = b"VERSION 1.5.22\r\nERROR\r\nSTAT pid 1\r\nEND\r\n";
        let found = probe(old, false, false).unwrap().unwrap();
        assert!(!found.meta);
        assert_eq!(
            dialect(Protocol::Meta, &found),
            Err(Refusal::NoMetaProtocol)
        );
        // A proxy that closes the connection on meta commands.
        let proxy = probe(b"VERSION 0.5.0\r\n", false, true).unwrap().unwrap();
        assert!(proxy.closed && !proxy.meta && proxy.epoch.is_none());
        assert_eq!(
            dialect(Protocol::Meta, &proxy),
            Err(Refusal::NoMetaProtocol)
        );
        // Meta answered, but by a memcached whose CAS-checked delete is unreliable.
        let early = probe(b"VERSION 1.6.12\r\nMN\r\nEND\r\n", false, false)
            .unwrap()
            .unwrap();
        assert_eq!(
            dialect(Protocol::Meta, &early),
            Err(Refusal::NoMetaProtocol)
        );
    }

    #[test]
    fn tls_and_strangers_are_told_apart() {
        assert_eq!(probe(b"", false, true), Err(Unusable::Silent));
        assert_eq!(
            probe(b"\x15\x03\x01\x00\x02\x02\x32", false, false),
            Err(Unusable::Refused(Refusal::TlsMismatch))
        );
        for banner in [
            &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\n",
        ] {
            assert_eq!(
                probe(banner, false, false),
                Err(Unusable::Refused(Refusal::NotMemcached)),
                "{banner:?}"
            );
        }
        assert_eq!(
            probe(b"ERROR\r\n", false, false),
            Err(Unusable::Refused(Refusal::NotMemcached))
        );
        assert!(matches!(
            probe(b"VERSION 1.6.18\r\nMN\r\nSTAT pid\xff\r\n", false, false),
            Err(Unusable::Garbage(_))
        ));
    }

    #[test]
    fn stats_without_pid_leave_the_epoch_unknown() {
        let found = probe(b"VERSION 1.6.18\r\nMN\r\nERROR\r\n", false, false)
            .unwrap()
            .unwrap();
        assert_eq!((found.epoch, found.uptime), (None, None));
    }
}

//! Second opinions, on a fresh plain connection, for a probe that got nothing useful: is the
//! server a SASL-only memcached (binary protocol), a TLS-only one (it answers a TLS hello),
//! or a plain one behind a TLS client? A server that is merely going away answers none of
//! them and stays retryable.

use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::stream::Stream;
use super::{Address, Settings};
use crate::error::Refusal;
use crate::wire::transport::Failure;

/// Reads up to `buf.len()` bytes, stopping at end of file or an error.
fn read_some(stream: &mut Stream, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match stream.receive(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}

/// Whether the server answers a plain text `version`, sent alone on a fresh connection.
fn answers_version(address: &Address, settings: &Settings) -> bool {
    let plain = (|| {
        let mut stream = Stream::dial(address, settings.timeouts, None).ok()?;
        stream.send(b"version\r\n").ok()?;
        let mut reply = [0u8; 8];
        Some(read_some(&mut stream, &mut reply) == reply.len() && &reply == b"VERSION ")
    })();
    plain == Some(true)
}

/// Whether the server has SASL on: it answers a binary "list SASL mechanisms" request
/// (magic 0x80, opcode 0x20) with success (magic 0x81, status 0). A memcached without SASL
/// answers "unknown command" (status 0x81); a TLS-only server answers nothing binary. A
/// SASL memcached (`-S`) ignores text commands, so the probe met silence or a close.
fn sasl_on(address: &Address, settings: &Settings) -> bool {
    let sasl = (|| {
        let mut stream = Stream::dial(address, settings.timeouts, None).ok()?;
        let mut request = [0u8; 24];
        request[0] = 0x80;
        request[1] = 0x20;
        stream.send(&request).ok()?;
        let mut reply = [0u8; 24];
        let got = read_some(&mut stream, &mut reply);
        Some(got == reply.len() && reply[0] == 0x81 && reply[1] == 0x20 && reply[6..8] == [0, 0])
    })();
    sasl == Some(true)
}

/// Whether the server answers a TLS ClientHello with a TLS record (a handshake or an alert:
/// content type 0x16 or 0x15).
fn speaks_tls(address: &Address, settings: &Settings) -> bool {
    let tls = (|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").ok()?;
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
        let mut hello = Vec::new();
        client.write_tls(&mut hello).ok()?;
        let mut stream = Stream::dial(address, settings.timeouts, None).ok()?;
        stream.send(&hello).ok()?;
        let mut reply = [0u8; 1];
        Some(read_some(&mut stream, &mut reply) == 1 && matches!(reply[0], 0x15 | 0x16))
    })();
    tls == Some(true)
}

/// Reads one reply line (without its CRLF); `None` when the peer closed first.
fn reply_line(stream: &mut Stream) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < 1024 {
        if read_some(stream, &mut byte) == 0 {
            return None;
        }
        line.push(byte[0]);
    }
    line.truncate(line.len().saturating_sub(2));
    Some(line)
}

/// Whether the server answers `version` but closes the connection at `mn` (twemproxy drops
/// a whole pipelined probe that holds a meta command). A server that answers both is fine
/// now (it was going away when probed): not a refusal.
fn drops_meta(address: &Address, settings: &Settings) -> bool {
    let dropped = (|| {
        let mut stream = Stream::dial(address, settings.timeouts, None).ok()?;
        stream.send(b"version\r\n").ok()?;
        if !reply_line(&mut stream)?.starts_with(b"VERSION ") {
            return Some(false);
        }
        stream.send(b"mn\r\n").ok()?;
        Some(match reply_line(&mut stream) {
            None => true,
            Some(line) => line == b"ERROR",
        })
    })();
    dropped == Some(true)
}

/// A plain server that closed the connection at our text probe without a byte: SASL-only,
/// a proxy that drops meta commands, TLS-only, or a server going away (shutting down,
/// restarting), which is only unavailable.
pub(crate) fn closed_at_hello(address: &Address, settings: &Settings) -> Failure {
    if answers_version(address, settings) && drops_meta(address, settings) {
        // A text server that answers `version` alone but drops `version` + `mn` without a
        // byte, twice: a proxy without meta commands (twemproxy), not a restarting server.
        Failure::Refused(Refusal::NoMetaProtocol)
    } else if sasl_on(address, settings) {
        Failure::Refused(Refusal::SaslOnly)
    } else if drops_meta(address, settings) {
        Failure::Refused(Refusal::NoMetaProtocol)
    } else if speaks_tls(address, settings) {
        Failure::Refused(Refusal::TlsMismatch)
    } else {
        let closed = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection right after connect",
        );
        Failure::Unavailable(Box::new(closed))
    }
}

/// A plain server that let our text probe time out without a byte: SASL-only servers stay
/// silent; otherwise the server is just not answering (paused, overloaded).
pub(crate) fn silent_at_hello(
    address: &Address,
    settings: &Settings,
    timeout: io::Error,
) -> Failure {
    if sasl_on(address, settings) {
        Failure::Refused(Refusal::SaslOnly)
    } else {
        Failure::Unavailable(Box::new(timeout))
    }
}

/// A TLS handshake that got no answer in time: a plain memcached waits for the end of a
/// line that a ClientHello may never contain. When the server answers a plain `version`,
/// TLS is configured against a plain server; otherwise the time-out stands.
pub(crate) fn silent_at_handshake(
    address: &Address,
    settings: &Settings,
    timeout: io::Error,
) -> Failure {
    if answers_version(address, settings) {
        Failure::Refused(Refusal::TlsMismatch)
    } else {
        Failure::Unavailable(Box::new(timeout))
    }
}

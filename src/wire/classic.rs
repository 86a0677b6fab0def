//! The classic dialect of memcached's text protocol (`add`, `set`, `cas`, `gets`, `incr`,
//! `version`), without I/O: requests are encoded into a caller's buffer, replies are parsed
//! from a byte buffer as they arrive. Spoken to servers and proxies without meta commands
//! (memcached < 1.6.13, twemproxy, mcrouter).
//!
//! Classic replies carry no opaque token and do not say which command they answer, so the
//! parser is told what it expects ([`Expect`]); a reply of another shape is [`Garbage`],
//! never guessed at. Values are length-prefixed in both directions: a value's bytes, CR
//! and LF included, are data and are never read as a command or as a reply line. Keys are
//! checked before anything is written (1 to 250 bytes, no whitespace or control bytes):
//! a server that rejects a storage command line does not always swallow the value that
//! follows, so a bad key must never reach it.

use super::meta::{self, BadKey, Garbage, Status, Store, check_key, shown};

/// The longest value accepted in a reply (memcached's default item size limit is 1 MiB).
const MAX_VALUE: usize = 16 << 20;
/// The longest reply line accepted (a `VALUE` line with a 250-byte key is about 300).
const MAX_LINE: usize = 1024;

/// An exptime that is an absolute Unix time in 1970 (above 30 days means absolute): a
/// `cas` with it replaces the item by one that has already expired, so the owner-checked
/// delete of the classic dialect. Unlike a negative exptime it passes twemproxy.
pub(crate) const EXPIRED: u32 = 30 * 24 * 3600 + 1;

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// `<command> <key> 0 <exptime> <len>[ <cas>]\r\n<value>\r\n`.
fn storage(
    out: &mut Vec<u8>,
    command: &[u8],
    key: &[u8],
    value: &[u8],
    exptime: u32,
    cas: Option<u64>,
) -> Result<(), BadKey> {
    check_key(key)?;
    if value.len() > MAX_VALUE {
        return Err(BadKey("value longer than 16 MiB"));
    }
    out.extend_from_slice(command);
    out.push(b' ');
    out.extend_from_slice(key);
    out.extend_from_slice(b" 0 ");
    number(out, exptime.into());
    out.push(b' ');
    number(out, value.len() as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        number(out, cas);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// `add <key> 0 <exptime> <len>` and the value: stores only when the key is absent.
pub(crate) fn add(out: &mut Vec<u8>, key: &[u8], value: &[u8], exptime: u32) -> Result<(), BadKey> {
    storage(out, b"add", key, value, exptime, None)
}

/// `set <key> 0 <exptime> <len>` and the value: stores whatever is there.
pub(crate) fn set(out: &mut Vec<u8>, key: &[u8], value: &[u8], exptime: u32) -> Result<(), BadKey> {
    storage(out, b"set", key, value, exptime, None)
}

/// `cas <key> 0 <exptime> <len> <cas>` and the value: stores only over the item with this
/// CAS. With [`EXPIRED`] it is an owner-checked delete.
pub(crate) fn cas(
    out: &mut Vec<u8>,
    key: &[u8],
    value: &[u8],
    exptime: u32,
    cas: u64,
) -> Result<(), BadKey> {
    storage(out, b"cas", key, value, exptime, Some(cas))
}

/// `gets <key> [<key> ...]`: values and CAS of the keys present. Keys given twice are
/// asked once.
pub(crate) fn gets(out: &mut Vec<u8>, keys: &[&[u8]]) -> Result<(), BadKey> {
    if keys.is_empty() {
        return Err(BadKey("gets without keys"));
    }
    for key in keys {
        check_key(key)?;
    }
    out.extend_from_slice(b"gets");
    for (index, key) in keys.iter().enumerate() {
        if !keys[..index].contains(key) {
            out.push(b' ');
            out.extend_from_slice(key);
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// `incr <key> <by>`: the new value, or `NOT_FOUND` when the counter is missing.
pub(crate) fn incr(out: &mut Vec<u8>, key: &[u8], by: u64) -> Result<(), BadKey> {
    check_key(key)?;
    out.extend_from_slice(b"incr ");
    out.extend_from_slice(key);
    out.push(b' ');
    number(out, by);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// `version`: the ping of the classic dialect (passes twemproxy).
pub(crate) fn version(out: &mut Vec<u8>) {
    out.extend_from_slice(b"version\r\n");
}

/// The kind of reply the request that was sent calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// `add`, `set`, `cas`: one status line.
    Store,
    /// `gets`: `VALUE` blocks up to `END`.
    Values,
    /// `incr`: a number or `NOT_FOUND`.
    Counter,
    /// `version`: `VERSION <text>`.
    Version,
}

/// One item of a `gets` reply, borrowing the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) flags: u32,
    pub(crate) cas: u64,
    pub(crate) data: &'a [u8],
}

/// One parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// `STORED`.
    Stored,
    /// `NOT_STORED`: an add found the key (or a cas/replace found none, on some servers).
    NotStored,
    /// `EXISTS`: the CAS did not match.
    Exists,
    /// `NOT_FOUND`: no such item (cas, incr).
    NotFound,
    /// The items found by `gets`, in the server's order (missing keys are left out).
    Values(Vec<Value<'a>>),
    /// The new value of a counter.
    Counter(u64),
    /// The text after `VERSION `.
    Version(&'a str),
    /// `ERROR`: the command is unknown.
    Unknown,
    /// `CLIENT_ERROR <message>`.
    ClientError(&'a str),
    /// `SERVER_ERROR <message>`.
    ServerError(&'a str),
}

/// An error line, whatever was expected.
fn error_reply(text: &str) -> Option<Reply<'_>> {
    if text == "ERROR" {
        return Some(Reply::Unknown);
    }
    if let Some(message) = text.strip_prefix("CLIENT_ERROR") {
        return Some(Reply::ClientError(message.trim_start()));
    }
    if let Some(message) = text.strip_prefix("SERVER_ERROR") {
        return Some(Reply::ServerError(message.trim_start()));
    }
    None
}

fn parse_number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, Garbage> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Garbage(format!("bad {what} {text:?} in reply")));
    }
    text.parse()
        .map_err(|_| Garbage(format!("bad {what} {text:?} in reply")))
}

/// Parses the first reply in `buf` to a request of kind `expect`: `Ok(None)` while more
/// bytes are needed, else the reply and how many bytes it used.
///
/// # Errors
///
/// [`Garbage`] for anything that is not a well-formed reply of that kind.
pub(crate) fn parse(expect: Expect, buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, Garbage> {
    if expect == Expect::Values {
        return values(buf);
    }
    let Some((bytes, used)) = line(buf)? else {
        return Ok(None);
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(Garbage(format!("non-text reply: {}", shown(bytes))));
    };
    if !text.is_ascii() {
        return Err(Garbage(format!("non-text reply: {}", shown(bytes))));
    }
    if let Some(error) = error_reply(text) {
        return Ok(Some((error, used)));
    }
    let unexpected = || {
        Err(Garbage(format!(
            "unexpected reply to a {expect:?} request: {}",
            shown(text.as_bytes())
        )))
    };
    let reply = match (expect, text) {
        (Expect::Store, "STORED") => Reply::Stored,
        (Expect::Store, "NOT_STORED") => Reply::NotStored,
        (Expect::Store, "EXISTS") => Reply::Exists,
        (Expect::Store | Expect::Counter, "NOT_FOUND") => Reply::NotFound,
        (Expect::Counter, digits) => Reply::Counter(parse_number(digits, "counter")?),
        (Expect::Version, text) => match text.strip_prefix("VERSION ") {
            Some(version) if !version.is_empty() => Reply::Version(version),
            _ => return unexpected(),
        },
        (Expect::Store | Expect::Values, _) => return unexpected(),
    };
    Ok(Some((reply, used)))
}

/// The first line of `buf` without its CRLF, and the bytes it spans; `None` while the line
/// is incomplete. Bytes 0x80-0xff are allowed (a `VALUE` line echoes a UTF-8 key), control
/// bytes are not.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, Garbage> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(Garbage(format!("reply line too long: {}", shown(buf))));
        }
        return Ok(None);
    };
    if end == 0 || buf[end - 1] != b'\r' || end > MAX_LINE {
        return Err(Garbage(format!("malformed reply line: {}", shown(buf))));
    }
    let text = &buf[..end - 1];
    if text.iter().any(|&b| b < b' ' || b == 0x7f) {
        return Err(Garbage(format!("control bytes in reply: {}", shown(buf))));
    }
    Ok(Some((text, end + 1)))
}

/// A reply other than `VALUE` blocks where they were expected: an error line or garbage.
fn not_values(text: &[u8]) -> Garbage {
    Garbage(format!("not a gets reply line: {}", shown(text)))
}

/// A decimal field of a `VALUE` line.
fn field<T: std::str::FromStr>(word: Option<&[u8]>, what: &str) -> Result<T, Garbage> {
    let text = word
        .and_then(|word| std::str::from_utf8(word).ok())
        .unwrap_or("");
    parse_number(text, what)
}

/// `VALUE <key> <flags> <len> <cas>\r\n<data>\r\n` blocks, then `END`; or an error line.
fn values(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, Garbage> {
    let mut items = Vec::new();
    let mut at = 0;
    loop {
        let Some((text, used)) = line(&buf[at..])? else {
            return Ok(None);
        };
        if text == b"END" {
            return Ok(Some((Reply::Values(items), at + used)));
        }
        if items.is_empty() {
            let error = std::str::from_utf8(text).ok().and_then(error_reply);
            if let Some(error) = error {
                return Ok(Some((error, used)));
            }
        }
        let Some(rest) = text.strip_prefix(b"VALUE ") else {
            return Err(not_values(text));
        };
        let mut words = rest.split(|&b| b == b' ');
        let key = words.next().unwrap_or_default();
        if check_key(key).is_err() {
            return Err(Garbage(format!("bad key in reply: {}", shown(key))));
        }
        let flags: u32 = field(words.next(), "flags")?;
        let length: usize = field(words.next(), "value length")?;
        let cas: u64 = field(words.next(), "CAS")?;
        if words.next().is_some() {
            return Err(not_values(text));
        }
        if length > MAX_VALUE {
            return Err(Garbage(format!("value of {length} bytes in reply")));
        }
        let start = at + used;
        let end = start + length + 2;
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(Garbage("value not followed by CRLF".into()));
        }
        items.push(Value {
            key,
            flags,
            cas,
            data: &buf[start..end - 2],
        });
        at = end;
    }
}

mod exchange;

pub(crate) use exchange::Exchange;
#[cfg(feature = "tokio")]
pub(crate) use exchange::OwnedExchange;

#[cfg(test)]
mod tests;

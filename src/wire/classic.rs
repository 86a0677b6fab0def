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

/// One lock operation in the classic dialect: the commands it sends (pipelined, one round
/// trip) and how their replies fold into one meta-shaped [`meta::Reply`], so the operation
/// layer reads both dialects alike.
///
/// | operation | commands | answer |
/// |---|---|---|
/// | store (add, set, cas) | `add`/`set`/`cas`, then `gets` | `HD` with the CAS read back, when the value read back is ours; `EX` when it is not (the item changed in between) |
/// | read | `gets` | `VA` (value, CAS, no TTL) or `EN` |
/// | owner-checked delete | `cas` with [`EXPIRED`] and an empty value | `HD`, `EX`, `NF` |
/// | counter | `add` of `initial - 1`, then `incr 1` | `VA` with the number |
/// | bump (FIFO queue counter) | `incr <delta>` | `VA` with the number, `NF` when missing |
/// | no-op | `version` | `MN` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exchange<'a> {
    Store {
        mode: Store,
        key: &'a [u8],
        value: &'a [u8],
        ttl: u32,
    },
    Read {
        key: &'a [u8],
    },
    DeleteIf {
        key: &'a [u8],
        cas: u64,
    },
    Increment {
        key: &'a [u8],
        initial: u64,
        ttl: u32,
    },
    /// `incr` alone: classic has no auto-create, so a missing counter answers `NF` and the
    /// transport creates it with an [`add`] (see `Transport::bump`).
    Bump {
        key: &'a [u8],
        delta: u64,
    },
    Noop,
}

/// A meta-shaped reply without flags.
fn status(status: Status) -> meta::Reply<'static> {
    meta::Reply::Meta {
        status,
        cas: None,
        ttl: None,
        opaque: None,
        data: b"",
    }
}

/// A classic error reply as the same meta error.
fn as_meta_error(reply: Reply<'_>) -> Option<meta::Reply<'_>> {
    match reply {
        Reply::Unknown => Some(meta::Reply::Unknown),
        Reply::ClientError(message) => Some(meta::Reply::ClientError(message)),
        Reply::ServerError(message) => Some(meta::Reply::ServerError(message)),
        _ => None,
    }
}

impl Exchange<'_> {
    /// Appends the commands of this operation to `out`; nothing when a key is refused.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), BadKey> {
        let start = out.len();
        let written = match *self {
            Exchange::Store {
                mode,
                key,
                value,
                ttl,
            } => match mode {
                Store::Add => add(out, key, value, ttl),
                Store::Set => set(out, key, value, ttl),
                Store::IfCas(old) => cas(out, key, value, ttl, old),
            }
            .and_then(|()| gets(out, &[key])),
            Exchange::Read { key } => gets(out, &[key]),
            Exchange::DeleteIf { key, cas: old } => cas(out, key, b"", EXPIRED, old),
            Exchange::Increment { key, initial, ttl } => {
                let below = initial.saturating_sub(1).to_string();
                add(out, key, below.as_bytes(), ttl).and_then(|()| incr(out, key, 1))
            }
            Exchange::Bump { key, delta } => incr(out, key, delta),
            Exchange::Noop => {
                version(out);
                Ok(())
            }
        };
        if written.is_err() {
            out.truncate(start);
        }
        written
    }

    /// Parses the replies of this operation at the start of `buf`: `Ok(None)` while more
    /// bytes are needed, else one meta-shaped reply and the bytes used. An error reply
    /// (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) is returned as soon as it is read, with the
    /// rest of the exchange left unread: the connection is out of step and must be dropped.
    ///
    /// # Errors
    ///
    /// [`Garbage`] for replies of the wrong shape, or a `gets` answering another key.
    pub(crate) fn parse<'b>(
        &self,
        buf: &'b [u8],
    ) -> Result<Option<(meta::Reply<'b>, usize)>, Garbage> {
        match *self {
            Exchange::Store { key, value, .. } => {
                let Some((first, used)) = parse(Expect::Store, buf)? else {
                    return Ok(None);
                };
                if let Some(error) = as_meta_error(first.clone()) {
                    return Ok(Some((error, used)));
                }
                let Some((read, more)) = parse(Expect::Values, &buf[used..])? else {
                    return Ok(None);
                };
                let total = used + more;
                if let Some(error) = as_meta_error(read.clone()) {
                    return Ok(Some((error, total)));
                }
                let item = single(key, &read)?;
                let reply = match first {
                    Reply::Stored => match item {
                        Some(item) if item.data == value => meta::Reply::Meta {
                            status: Status::Done,
                            cas: Some(item.cas),
                            ttl: None,
                            opaque: None,
                            data: b"",
                        },
                        // Stored, then changed or removed before the read: not ours now.
                        _ => status(Status::Exists),
                    },
                    Reply::NotStored => status(Status::NotStored),
                    Reply::Exists => status(Status::Exists),
                    Reply::NotFound => status(Status::NotFound),
                    other => return Err(Garbage(format!("store answered {other:?}"))),
                };
                Ok(Some((reply, total)))
            }
            Exchange::Read { key } => {
                let Some((read, used)) = parse(Expect::Values, buf)? else {
                    return Ok(None);
                };
                if let Some(error) = as_meta_error(read.clone()) {
                    return Ok(Some((error, used)));
                }
                let reply = match single(key, &read)? {
                    None => status(Status::Miss),
                    Some(item) => meta::Reply::Meta {
                        status: Status::Value,
                        cas: Some(item.cas),
                        ttl: None,
                        opaque: None,
                        data: item.data,
                    },
                };
                Ok(Some((reply, used)))
            }
            Exchange::DeleteIf { .. } => {
                let Some((reply, used)) = parse(Expect::Store, buf)? else {
                    return Ok(None);
                };
                let reply = match reply {
                    Reply::Stored => status(Status::Done),
                    Reply::NotStored => status(Status::NotStored),
                    Reply::Exists => status(Status::Exists),
                    Reply::NotFound => status(Status::NotFound),
                    other => as_meta_error(other)
                        .ok_or_else(|| Garbage("cas answered a value".into()))?,
                };
                Ok(Some((reply, used)))
            }
            Exchange::Increment { .. } => {
                let Some((first, used)) = parse(Expect::Store, buf)? else {
                    return Ok(None);
                };
                if let Some(error) = as_meta_error(first) {
                    return Ok(Some((error, used)));
                }
                let rest = &buf[used..];
                let Some((counted, more)) = parse(Expect::Counter, rest)? else {
                    return Ok(None);
                };
                let reply = match counted {
                    // The digits, as the meta `VA` data (the line without its CRLF).
                    Reply::Counter(_) => meta::Reply::Meta {
                        status: Status::Value,
                        cas: None,
                        ttl: None,
                        opaque: None,
                        data: &rest[..more - 2],
                    },
                    // Removed between the add and the increment.
                    Reply::NotFound => status(Status::NotFound),
                    other => as_meta_error(other)
                        .ok_or_else(|| Garbage("incr answered a value".into()))?,
                };
                Ok(Some((reply, used + more)))
            }
            Exchange::Bump { .. } => {
                let Some((counted, used)) = parse(Expect::Counter, buf)? else {
                    return Ok(None);
                };
                let reply = match counted {
                    // The digits, as the meta `VA` data (the line without its CRLF).
                    Reply::Counter(_) => meta::Reply::Meta {
                        status: Status::Value,
                        cas: None,
                        ttl: None,
                        opaque: None,
                        data: &buf[..used - 2],
                    },
                    Reply::NotFound => status(Status::NotFound),
                    other => as_meta_error(other)
                        .ok_or_else(|| Garbage("incr answered a value".into()))?,
                };
                Ok(Some((reply, used)))
            }
            Exchange::Noop => {
                let Some((reply, used)) = parse(Expect::Version, buf)? else {
                    return Ok(None);
                };
                let reply = match reply {
                    Reply::Version(_) => status(Status::Noop),
                    other => as_meta_error(other)
                        .ok_or_else(|| Garbage("version answered a value".into()))?,
                };
                Ok(Some((reply, used)))
            }
        }
    }
}

/// An [`Exchange`] owning its key and value, for a reader that outlives the request (the
/// tokio transport's reader task).
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedExchange {
    kind: Kind,
    key: Vec<u8>,
    value: Vec<u8>,
}

#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Store { mode: Store, ttl: u32 },
    Read,
    DeleteIf { cas: u64 },
    Increment { initial: u64, ttl: u32 },
    Bump { delta: u64 },
    Noop,
}

#[cfg(feature = "tokio")]
impl Exchange<'_> {
    /// The same exchange, owning its bytes.
    pub(crate) fn to_owned(self) -> OwnedExchange {
        let (kind, key, value): (Kind, &[u8], &[u8]) = match self {
            Exchange::Store {
                mode,
                key,
                value,
                ttl,
            } => (Kind::Store { mode, ttl }, key, value),
            Exchange::Read { key } => (Kind::Read, key, b""),
            Exchange::DeleteIf { key, cas } => (Kind::DeleteIf { cas }, key, b""),
            Exchange::Increment { key, initial, ttl } => {
                (Kind::Increment { initial, ttl }, key, b"")
            }
            Exchange::Bump { key, delta } => (Kind::Bump { delta }, key, b""),
            Exchange::Noop => (Kind::Noop, b"", b""),
        };
        OwnedExchange {
            kind,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }
}

#[cfg(feature = "tokio")]
impl OwnedExchange {
    /// The exchange, borrowing from this one.
    pub(crate) fn exchange(&self) -> Exchange<'_> {
        let (key, value) = (&self.key[..], &self.value[..]);
        match self.kind {
            Kind::Store { mode, ttl } => Exchange::Store {
                mode,
                key,
                value,
                ttl,
            },
            Kind::Read => Exchange::Read { key },
            Kind::DeleteIf { cas } => Exchange::DeleteIf { key, cas },
            Kind::Increment { initial, ttl } => Exchange::Increment { key, initial, ttl },
            Kind::Bump { delta } => Exchange::Bump { key, delta },
            Kind::Noop => Exchange::Noop,
        }
    }
}

/// The one item a single-key `gets` may answer, checked to be for `key`.
fn single<'b>(key: &[u8], read: &Reply<'b>) -> Result<Option<Value<'b>>, Garbage> {
    match read {
        Reply::Values(items) => match items.as_slice() {
            [] => Ok(None),
            [item] if item.key == key => Ok(Some(*item)),
            _ => Err(Garbage(format!("gets {} answered other keys", shown(key)))),
        },
        other => Err(Garbage(format!("gets answered {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(write: impl FnOnce(&mut Vec<u8>) -> Result<(), BadKey>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn parsed(expect: Expect, bytes: &[u8]) -> (Reply<'_>, usize) {
        parse(expect, bytes).unwrap().unwrap()
    }

    #[test]
    fn requests_are_encoded_with_length_prefixed_values() {
        assert_eq!(
            encoded(|o| add(o, b"__lock__a", b"tok\nmeta", 60)),
            "add __lock__a 0 60 8\r\ntok\nmeta\r\n"
        );
        assert_eq!(encoded(|o| set(o, b"k", b"", 0)), "set k 0 0 0\r\n\r\n");
        assert_eq!(
            encoded(|o| cas(o, b"k", b"v", EXPIRED, u64::MAX)),
            "cas k 0 2592001 1 18446744073709551615\r\nv\r\n"
        );
        assert_eq!(encoded(|o| gets(o, &[b"a", b"b", b"a"])), "gets a b\r\n");
        assert_eq!(encoded(|o| incr(o, b"f", 1)), "incr f 1\r\n");
        let mut out = Vec::new();
        version(&mut out);
        assert_eq!(out, b"version\r\n");
    }

    #[test]
    fn keys_that_could_split_a_command_are_refused_before_anything_is_written() {
        for key in [
            &b""[..],
            b"a b",
            b"a\r\nflush_all",
            b"a\nb",
            b"a\rb",
            b"a\tb",
            b"a\0",
            b"\x7f",
            &[b'k'; 251],
        ] {
            let mut out = Vec::new();
            assert!(add(&mut out, key, b"v", 1).is_err(), "{key:?}");
            assert!(set(&mut out, key, b"v", 1).is_err(), "{key:?}");
            assert!(cas(&mut out, key, b"v", 1, 1).is_err(), "{key:?}");
            assert!(gets(&mut out, &[b"ok", key]).is_err(), "{key:?}");
            assert!(incr(&mut out, key, 1).is_err(), "{key:?}");
            assert!(out.is_empty(), "{key:?} wrote {out:?}");
        }
        let mut out = Vec::new();
        assert!(gets(&mut out, &[]).is_err());
        assert!(add(&mut out, b"k", &vec![0; MAX_VALUE + 1], 1).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn a_value_holding_command_lines_is_data_both_ways() {
        let value = b"x\r\ndelete victim\r\nflush_all\r\nEND\r\nVALUE k 0 1 1\r\n";
        let mut out = Vec::new();
        add(&mut out, b"k", value, 10).unwrap();
        assert!(out.starts_with(format!("add k 0 10 {}\r\n", value.len()).as_bytes()));
        assert_eq!(&out[out.len() - value.len() - 2..out.len() - 2], value);
        let mut reply = format!("VALUE k 0 {} 7\r\n", value.len()).into_bytes();
        reply.extend_from_slice(value);
        reply.extend_from_slice(b"\r\nEND\r\nSTORED\r\n");
        let (Reply::Values(items), used) = parsed(Expect::Values, &reply) else {
            panic!("not values")
        };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].data, value);
        assert_eq!(items[0].cas, 7);
        assert_eq!(parsed(Expect::Store, &reply[used..]).0, Reply::Stored);
    }

    #[test]
    fn replies_are_parsed_by_the_kind_of_request() {
        for (text, reply) in [
            ("STORED", Reply::Stored),
            ("NOT_STORED", Reply::NotStored),
            ("EXISTS", Reply::Exists),
            ("NOT_FOUND", Reply::NotFound),
        ] {
            assert_eq!(
                parsed(Expect::Store, format!("{text}\r\n").as_bytes()).0,
                reply
            );
        }
        assert_eq!(parsed(Expect::Counter, b"42\r\n").0, Reply::Counter(42));
        assert_eq!(parsed(Expect::Counter, b"NOT_FOUND\r\n").0, Reply::NotFound);
        assert_eq!(
            parsed(Expect::Version, b"VERSION 1.4.25\r\n").0,
            Reply::Version("1.4.25")
        );
        assert_eq!(parsed(Expect::Values, b"END\r\nx").0, Reply::Values(vec![]));
        let (reply, used) = parsed(
            Expect::Values,
            b"VALUE a 0 3 11\r\nabc\r\nVALUE b 5 0 12\r\n\r\nEND\r\nrest",
        );
        assert_eq!(used, 44);
        assert_eq!(
            reply,
            Reply::Values(vec![
                Value {
                    key: b"a",
                    flags: 0,
                    cas: 11,
                    data: b"abc"
                },
                Value {
                    key: b"b",
                    flags: 5,
                    cas: 12,
                    data: b""
                },
            ])
        );
        for expect in [
            Expect::Store,
            Expect::Values,
            Expect::Counter,
            Expect::Version,
        ] {
            assert_eq!(parsed(expect, b"ERROR\r\n").0, Reply::Unknown);
            assert_eq!(
                parsed(expect, b"CLIENT_ERROR bad data chunk\r\n").0,
                Reply::ClientError("bad data chunk")
            );
            assert_eq!(
                parsed(expect, b"SERVER_ERROR out of memory\r\n").0,
                Reply::ServerError("out of memory")
            );
        }
    }

    #[test]
    fn a_utf8_key_comes_back_as_its_bytes() {
        let reply = "VALUE __lock__ロック 0 1 3\r\nx\r\nEND\r\n";
        let (Reply::Values(items), used) = parsed(Expect::Values, reply.as_bytes()) else {
            panic!("not values")
        };
        assert_eq!(used, reply.len());
        assert_eq!(items[0].key, "__lock__ロック".as_bytes());
        assert_eq!(items[0].data, b"x");
    }

    #[test]
    fn an_error_can_answer_a_gets_but_not_follow_a_value() {
        assert_eq!(
            parsed(Expect::Values, b"SERVER_ERROR busy\r\n").0,
            Reply::ServerError("busy")
        );
        assert!(parse(Expect::Values, b"VALUE k 0 1 1\r\nx\r\nERROR\r\n").is_err());
    }

    #[test]
    fn truncated_replies_ask_for_more_bytes() {
        let full = b"VALUE k 0 3 9\r\nabc\r\nVALUE j 0 1 10\r\nz\r\nEND\r\n";
        for cut in 0..full.len() {
            assert_eq!(
                parse(Expect::Values, &full[..cut]),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert!(parse(Expect::Values, full).unwrap().is_some());
        for (expect, full) in [
            (Expect::Store, &b"NOT_STORED\r\n"[..]),
            (Expect::Counter, b"123\r\n"),
            (Expect::Version, b"VERSION 1.6.18\r\n"),
        ] {
            for cut in 0..full.len() {
                assert_eq!(
                    parse(expect, &full[..cut]),
                    Ok(None),
                    "{expect:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn garbage_and_out_of_step_replies_are_errors() {
        let cases: [(Expect, &[u8]); 24] = [
            (Expect::Store, b"HTTP/1.1 400 Bad Request\r\n"),
            (Expect::Store, b"SSH-2.0-OpenSSH_9.2\r\n"),
            (Expect::Store, b"\x15\x03\x01\x00\x02\x02\x46\r\n"),
            (Expect::Store, b"STORED\n"),
            (Expect::Store, b"\n"),
            (Expect::Store, b"END\r\n"),
            (Expect::Store, b"HD\r\n"),
            (Expect::Store, b"stored\r\n"),
            (Expect::Store, b"42\r\n"),
            (Expect::Counter, b"STORED\r\n"),
            (Expect::Counter, b"-1\r\n"),
            (Expect::Counter, b"99999999999999999999999\r\n"),
            (Expect::Counter, b"+7\r\n"),
            (Expect::Version, b"VERSION\r\n"),
            (Expect::Version, b"STORED\r\n"),
            (Expect::Values, b"STORED\r\n"),
            (Expect::Values, b"VALUE k 0 2\r\nab\r\nEND\r\n"),
            (Expect::Values, b"VALUE k 0 2 1 x\r\nab\r\nEND\r\n"),
            (Expect::Values, b"VALUE k 0 2 1\r\nabcd\r\nEND\r\n"),
            (Expect::Values, b"VALUE k x 2 1\r\nab\r\nEND\r\n"),
            (Expect::Values, b"VALUE k 0 99999999999 1\r\n"),
            (Expect::Values, &[b'V'; 2000]),
            (Expect::Values, b"VALUE k\x01 0 1 1\r\nx\r\nEND\r\n"),
            (Expect::Store, "STÖRED\r\n".as_bytes()),
        ];
        for (expect, bad) in cases {
            assert!(parse(expect, bad).is_err(), "{expect:?} {bad:?}");
        }
    }

    fn exchange_bytes(exchange: Exchange<'_>) -> String {
        let mut out = Vec::new();
        exchange.encode(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn folded<'b>(exchange: Exchange<'_>, reply: &'b [u8]) -> meta::Reply<'b> {
        let (folded, used) = exchange.parse(reply).unwrap().unwrap();
        assert_eq!(used, reply.len(), "{exchange:?} left bytes unread");
        folded
    }

    fn meta_status(reply: meta::Reply<'_>) -> (Status, Option<u64>) {
        match reply {
            meta::Reply::Meta { status, cas, .. } => (status, cas),
            other => panic!("not a meta reply: {other:?}"),
        }
    }

    const ADD: Exchange<'static> = Exchange::Store {
        mode: Store::Add,
        key: b"__lock__a",
        value: b"tok",
        ttl: 60,
    };

    #[test]
    fn an_acquire_is_an_add_and_a_gets_in_one_write() {
        assert_eq!(
            exchange_bytes(ADD),
            "add __lock__a 0 60 3\r\ntok\r\ngets __lock__a\r\n"
        );
        let ours = b"STORED\r\nVALUE __lock__a 0 3 77\r\ntok\r\nEND\r\n";
        assert_eq!(meta_status(folded(ADD, ours)), (Status::Done, Some(77)));
        let taken = b"NOT_STORED\r\nVALUE __lock__a 0 5 76\r\nother\r\nEND\r\n";
        assert_eq!(meta_status(folded(ADD, taken)), (Status::NotStored, None));
        // Stored, then replaced or removed before the read: reported as not ours.
        let changed = b"STORED\r\nVALUE __lock__a 0 5 78\r\nother\r\nEND\r\n";
        assert_eq!(meta_status(folded(ADD, changed)), (Status::Exists, None));
        let gone = b"STORED\r\nEND\r\n";
        assert_eq!(meta_status(folded(ADD, gone)), (Status::Exists, None));
        // Every cut of the reply asks for more bytes.
        for cut in 0..ours.len() {
            assert_eq!(ADD.parse(&ours[..cut]), Ok(None), "cut at {cut}");
        }
        // A gets answering another key is out of step.
        let wrong = b"STORED\r\nVALUE __lock__b 0 3 77\r\ntok\r\nEND\r\n";
        assert!(ADD.parse(wrong).is_err());
        // An error stops the exchange at once.
        let (reply, used) = ADD
            .parse(b"SERVER_ERROR out of memory\r\nEND\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(reply, meta::Reply::ServerError("out of memory"));
        assert_eq!(used, 28);
    }

    #[test]
    fn refresh_release_read_counter_and_ping_map_to_meta_answers() {
        let refresh = Exchange::Store {
            mode: Store::IfCas(77),
            key: b"k",
            value: b"tok",
            ttl: 30,
        };
        assert_eq!(
            exchange_bytes(refresh),
            "cas k 0 30 3 77\r\ntok\r\ngets k\r\n"
        );
        assert_eq!(
            meta_status(folded(
                refresh,
                b"STORED\r\nVALUE k 0 3 80\r\ntok\r\nEND\r\n"
            )),
            (Status::Done, Some(80))
        );
        assert_eq!(
            meta_status(folded(refresh, b"EXISTS\r\nVALUE k 0 1 79\r\nx\r\nEND\r\n")),
            (Status::Exists, None)
        );
        assert_eq!(
            meta_status(folded(refresh, b"NOT_FOUND\r\nEND\r\n")),
            (Status::NotFound, None)
        );

        let release = Exchange::DeleteIf { key: b"k", cas: 80 };
        assert_eq!(exchange_bytes(release), "cas k 0 2592001 0 80\r\n\r\n");
        for (text, status) in [
            ("STORED", Status::Done),
            ("EXISTS", Status::Exists),
            ("NOT_FOUND", Status::NotFound),
        ] {
            let reply = format!("{text}\r\n");
            assert_eq!(
                meta_status(folded(release, reply.as_bytes())),
                (status, None)
            );
        }

        let read = Exchange::Read { key: b"k" };
        assert_eq!(exchange_bytes(read), "gets k\r\n");
        assert_eq!(
            folded(read, b"VALUE k 0 4 9\r\na\r\nb\r\nEND\r\n"),
            meta::Reply::Meta {
                status: Status::Value,
                cas: Some(9),
                ttl: None,
                opaque: None,
                data: b"a\r\nb"
            }
        );
        assert_eq!(meta_status(folded(read, b"END\r\n")), (Status::Miss, None));

        let fence = Exchange::Increment {
            key: b"f",
            initial: 1000,
            ttl: 2_592_000,
        };
        assert_eq!(
            exchange_bytes(fence),
            "add f 0 2592000 3\r\n999\r\nincr f 1\r\n"
        );
        for first in ["STORED", "NOT_STORED"] {
            let reply = format!("{first}\r\n1000\r\n");
            let meta::Reply::Meta { status, data, .. } = folded(fence, reply.as_bytes()) else {
                panic!("not a meta reply")
            };
            assert_eq!((status, data), (Status::Value, &b"1000"[..]));
        }

        let bump = Exchange::Bump {
            key: b"q",
            delta: 4_294_967_296,
        };
        assert_eq!(exchange_bytes(bump), "incr q 4294967296\r\n");
        let meta::Reply::Meta { status, data, .. } = folded(bump, b"8589934592\r\n") else {
            panic!("not a meta reply")
        };
        assert_eq!((status, data), (Status::Value, &b"8589934592"[..]));
        assert_eq!(
            meta_status(folded(bump, b"NOT_FOUND\r\n")),
            (Status::NotFound, None)
        );
        assert_eq!(bump.parse(b"85899"), Ok(None));

        assert_eq!(exchange_bytes(Exchange::Noop), "version\r\n");
        assert_eq!(
            meta_status(folded(Exchange::Noop, b"VERSION 0.5.0\r\n")),
            (Status::Noop, None)
        );
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn owned_exchanges_round_trip() {
        for exchange in [
            ADD,
            Exchange::Read { key: b"k" },
            Exchange::DeleteIf { key: b"k", cas: 3 },
            Exchange::Increment {
                key: b"f",
                initial: 9,
                ttl: 5,
            },
            Exchange::Bump {
                key: b"q",
                delta: 2,
            },
            Exchange::Noop,
        ] {
            assert_eq!(exchange.to_owned().exchange(), exchange);
        }
    }

    #[test]
    fn an_exchange_with_a_bad_key_writes_nothing() {
        let mut out = b"earlier".to_vec();
        let bad = Exchange::Store {
            mode: Store::Add,
            key: b"a b",
            value: b"v",
            ttl: 1,
        };
        assert!(bad.encode(&mut out).is_err());
        assert_eq!(out, b"earlier");
    }
}

//! The meta dialect of memcached's text protocol, without I/O: requests are encoded into a
//! caller's buffer, replies are parsed from a byte buffer as they arrive.
//!
//! Every request but `mn` carries an opaque token (`O<n>`) that the server echoes; the
//! connection checks it, so a reply can never be matched to the wrong request. Values are
//! length-prefixed (`ms <key> <len>`): a value's bytes, CR and LF included, are data and can
//! never be read as a command by a server that speaks meta. Keys are checked here, before
//! anything is written: 1 to 250 bytes, none of them whitespace or control bytes.

use std::fmt;

/// memcached's longest key.
pub(crate) const MAX_KEY: usize = 250;
/// The longest status line accepted before a reply is called garbage.
const MAX_LINE: usize = 1024;
/// The longest value accepted in a reply (memcached's default item size limit is 1 MiB).
const MAX_VALUE: usize = 16 << 20;

/// A request that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadKey(pub(crate) &'static str);

impl fmt::Display for BadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Checks that `key` can travel in a meta command as it is.
pub(crate) fn check_key(key: &[u8]) -> Result<(), BadKey> {
    if key.is_empty() {
        return Err(BadKey("empty key"));
    }
    if key.len() > MAX_KEY {
        return Err(BadKey("key longer than 250 bytes"));
    }
    if key.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(BadKey("key with whitespace or control bytes"));
    }
    Ok(())
}

fn number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn flag(out: &mut Vec<u8>, name: u8, n: u64) {
    out.push(b' ');
    out.push(name);
    number(out, n);
}

fn head(out: &mut Vec<u8>, command: &[u8], key: &[u8]) -> Result<(), BadKey> {
    check_key(key)?;
    out.extend_from_slice(command);
    out.push(b' ');
    out.extend_from_slice(key);
    Ok(())
}

fn tail(out: &mut Vec<u8>, opaque: u32) {
    flag(out, b'O', opaque.into());
    out.extend_from_slice(b"\r\n");
}

fn value(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a store treats an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    /// `ME`: only when the key is absent.
    Add,
    /// Whatever is there.
    Set,
    /// `C<cas>`: only over the item with this CAS.
    IfCas(u64),
}

/// `ms <key> <len> T<ttl> [ME|C<cas>] c O<opaque>` and the value: a store that returns the
/// new CAS.
pub(crate) fn store(
    out: &mut Vec<u8>,
    mode: Store,
    key: &[u8],
    data: &[u8],
    ttl: u32,
    opaque: u32,
) -> Result<(), BadKey> {
    head(out, b"ms", key)?;
    out.push(b' ');
    number(out, data.len() as u64);
    flag(out, b'T', ttl.into());
    match mode {
        Store::Add => out.extend_from_slice(b" ME"),
        Store::Set => {}
        Store::IfCas(cas) => flag(out, b'C', cas),
    }
    out.extend_from_slice(b" c");
    tail(out, opaque);
    value(out, data);
    Ok(())
}

/// `mg <key> v c t O<opaque>`: value, CAS and remaining TTL.
pub(crate) fn read(out: &mut Vec<u8>, key: &[u8], opaque: u32) -> Result<(), BadKey> {
    head(out, b"mg", key)?;
    out.extend_from_slice(b" v c t");
    tail(out, opaque);
    Ok(())
}

/// `md <key> C<cas> O<opaque>`: deletes only the item with this CAS.
pub(crate) fn delete_if(
    out: &mut Vec<u8>,
    key: &[u8],
    cas: u64,
    opaque: u32,
) -> Result<(), BadKey> {
    head(out, b"md", key)?;
    flag(out, b'C', cas);
    tail(out, opaque);
    Ok(())
}

/// `ma <key> N<ttl> J<initial> v O<opaque>`: increments a counter, creating it at `initial`
/// (and answering `initial`) when missing.
pub(crate) fn increment(
    out: &mut Vec<u8>,
    key: &[u8],
    initial: u64,
    ttl: u32,
    opaque: u32,
) -> Result<(), BadKey> {
    head(out, b"ma", key)?;
    flag(out, b'N', ttl.into());
    flag(out, b'J', initial);
    out.extend_from_slice(b" v");
    tail(out, opaque);
    Ok(())
}

/// `ma <key> v D<delta> [N<ttl> J<initial>] O<opaque>`: adds `delta` to a counter; with
/// `create`, a missing counter is created at `initial` (answering `initial`, the delta not
/// applied), else a missing counter answers `NF`.
pub(crate) fn bump(
    out: &mut Vec<u8>,
    key: &[u8],
    delta: u64,
    create: Option<(u64, u32)>,
    opaque: u32,
) -> Result<(), BadKey> {
    head(out, b"ma", key)?;
    out.extend_from_slice(b" v");
    flag(out, b'D', delta);
    if let Some((initial, ttl)) = create {
        flag(out, b'N', ttl.into());
        flag(out, b'J', initial);
    }
    tail(out, opaque);
    Ok(())
}

/// `mn`: a no-op, answered `MN`.
pub(crate) fn noop(out: &mut Vec<u8>) {
    out.extend_from_slice(b"mn\r\n");
}

/// What the server answered to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `HD`: done.
    Done,
    /// `NS`: not stored (an add found the key).
    NotStored,
    /// `EX`: the CAS did not match.
    Exists,
    /// `NF`: no such item.
    NotFound,
    /// `EN`: a read missed.
    Miss,
    /// `VA`: a value follows.
    Value,
    /// `MN`: the no-op.
    Noop,
}

/// One parsed reply, borrowing the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// A meta reply.
    Meta {
        status: Status,
        /// `c`: the CAS.
        cas: Option<u64>,
        /// `t`: seconds left, -1 for never.
        ttl: Option<i64>,
        /// `O`: the opaque token echoed.
        opaque: Option<u32>,
        /// The value of a `VA` reply.
        data: &'a [u8],
    },
    /// `ERROR`: the command is unknown (no meta protocol).
    Unknown,
    /// `CLIENT_ERROR <message>`.
    ClientError(&'a str),
    /// `SERVER_ERROR <message>`.
    ServerError(&'a str),
}

/// Bytes that are not a meta reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Garbage(pub(crate) String);

impl fmt::Display for Garbage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A short, printable view of bytes for an error message.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(48)]);
    format!("{text:?}")
}

/// The first line of `buf` without its CRLF, and the bytes it spans; `None` while the line is
/// incomplete.
pub(crate) fn line(buf: &[u8]) -> Result<Option<(&str, usize)>, Garbage> {
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
    if text.iter().any(|b| !(b' '..0x7f).contains(b)) {
        return Err(Garbage(format!("non-text reply: {}", shown(buf))));
    }
    // Checked above: printable ASCII.
    let text = std::str::from_utf8(text).map_err(|_| Garbage("non-text reply".into()))?;
    Ok(Some((text, end + 1)))
}

fn parse_number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, Garbage> {
    text.parse()
        .map_err(|_| Garbage(format!("bad {what} {text:?} in reply")))
}

/// Parses the first reply in `buf`: `Ok(None)` while more bytes are needed, else the reply and
/// how many bytes it used.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, Garbage> {
    let Some((text, used)) = line(buf)? else {
        return Ok(None);
    };
    if text == "ERROR" {
        return Ok(Some((Reply::Unknown, used)));
    }
    if let Some(message) = text.strip_prefix("CLIENT_ERROR") {
        return Ok(Some((Reply::ClientError(message.trim_start()), used)));
    }
    if let Some(message) = text.strip_prefix("SERVER_ERROR") {
        return Ok(Some((Reply::ServerError(message.trim_start()), used)));
    }
    let mut words = text.split(' ');
    let status = match words.next() {
        Some("HD") => Status::Done,
        Some("NS") => Status::NotStored,
        Some("EX") => Status::Exists,
        Some("NF") => Status::NotFound,
        Some("EN") => Status::Miss,
        Some("VA") => Status::Value,
        Some("MN") => Status::Noop,
        _ => {
            return Err(Garbage(format!(
                "not a meta reply: {}",
                shown(text.as_bytes())
            )));
        }
    };
    let mut length = None;
    if status == Status::Value {
        let size: usize = parse_number(words.next().unwrap_or(""), "value length")?;
        if size > MAX_VALUE {
            return Err(Garbage(format!("value of {size} bytes in reply")));
        }
        length = Some(size);
    }
    let (mut cas, mut ttl, mut opaque) = (None, None, None);
    for word in words {
        let Some(first) = word.chars().next() else {
            return Err(Garbage(format!("empty flag in {}", shown(text.as_bytes()))));
        };
        let rest = &word[first.len_utf8()..];
        match first {
            'c' => cas = Some(parse_number(rest, "CAS")?),
            't' => ttl = Some(parse_number(rest, "TTL")?),
            'O' => opaque = Some(parse_number(rest, "opaque")?),
            _ => {}
        }
    }
    let mut data: &[u8] = &[];
    let mut used = used;
    if let Some(size) = length {
        let end = used + size + 2;
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(Garbage("value not followed by CRLF".into()));
        }
        data = &buf[used..end - 2];
        used = end;
    }
    let reply = Reply::Meta {
        status,
        cas,
        ttl,
        opaque,
        data,
    };
    Ok(Some((reply, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(write: impl FnOnce(&mut Vec<u8>) -> Result<(), BadKey>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn requests_are_encoded_with_length_prefixed_values_and_opaque_tokens() {
        assert_eq!(
            encoded(|o| store(o, Store::Add, b"__lock__a", b"v\r\nx", 60, 7)),
            "ms __lock__a 4 T60 ME c O7\r\nv\r\nx\r\n"
        );
        assert_eq!(
            encoded(|o| store(o, Store::IfCas(42), b"k", b"", 0, 0)),
            "ms k 0 T0 C42 c O0\r\n\r\n"
        );
        assert_eq!(
            encoded(|o| store(o, Store::Set, b"k", b"1", 5, 1)),
            "ms k 1 T5 c O1\r\n1\r\n"
        );
        assert_eq!(encoded(|o| read(o, b"k", 9)), "mg k v c t O9\r\n");
        assert_eq!(
            encoded(|o| delete_if(o, b"k", u64::MAX, u32::MAX)),
            "md k C18446744073709551615 O4294967295\r\n"
        );
        assert_eq!(
            encoded(|o| increment(o, b"f", 100, 2592000, 3)),
            "ma f N2592000 J100 v O3\r\n"
        );
        assert_eq!(
            encoded(|o| bump(o, b"q", 4294967296, Some((4294967296, 86400)), 5)),
            "ma q v D4294967296 N86400 J4294967296 O5\r\n"
        );
        assert_eq!(encoded(|o| bump(o, b"q", 1, None, 6)), "ma q v D1 O6\r\n");
        let mut out = Vec::new();
        noop(&mut out);
        assert_eq!(out, b"mn\r\n");
    }

    #[test]
    fn keys_that_could_split_a_command_are_refused_before_anything_is_written() {
        for key in [
            &b""[..],
            b"a b",
            b"a\r\nflush_all",
            b"a\0",
            b"\x7f",
            &[b'k'; 251],
        ] {
            let mut out = Vec::new();
            assert!(read(&mut out, key, 1).is_err(), "{key:?}");
            assert!(store(&mut out, Store::Add, key, b"v", 1, 1).is_err());
            assert!(out.is_empty(), "{key:?} wrote {out:?}");
        }
        assert!(check_key(&[b'k'; 250]).is_ok());
        assert!(check_key("naïve".as_bytes()).is_ok());
    }

    #[test]
    fn replies_are_parsed_with_their_flags() {
        let (reply, used) = parse(b"HD c12 O7\r\nrest").unwrap().unwrap();
        assert_eq!(used, 11);
        assert_eq!(
            reply,
            Reply::Meta {
                status: Status::Done,
                cas: Some(12),
                ttl: None,
                opaque: Some(7),
                data: b""
            }
        );
        let (reply, used) = parse(b"VA 5 c3 t-1 O2\r\nab\r\nc\r\n").unwrap().unwrap();
        assert_eq!(used, 23);
        let Reply::Meta {
            status, data, ttl, ..
        } = reply
        else {
            panic!()
        };
        assert_eq!(
            (status, data, ttl),
            (Status::Value, &b"ab\r\nc"[..], Some(-1))
        );
        for (text, status) in [
            ("NS O1", Status::NotStored),
            ("EX", Status::Exists),
            ("NF O0", Status::NotFound),
            ("EN", Status::Miss),
            ("MN", Status::Noop),
        ] {
            let bytes = format!("{text}\r\n");
            let (Reply::Meta { status: got, .. }, _) = parse(bytes.as_bytes()).unwrap().unwrap()
            else {
                panic!()
            };
            assert_eq!(got, status);
        }
        assert_eq!(parse(b"ERROR\r\n").unwrap().unwrap().0, Reply::Unknown);
        assert_eq!(
            parse(b"CLIENT_ERROR unauthenticated\r\n")
                .unwrap()
                .unwrap()
                .0,
            Reply::ClientError("unauthenticated")
        );
        assert_eq!(
            parse(b"SERVER_ERROR out of memory\r\n").unwrap().unwrap().0,
            Reply::ServerError("out of memory")
        );
    }

    #[test]
    fn truncated_replies_ask_for_more_bytes() {
        let full = b"VA 3 c9 O4\r\nabc\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(full).unwrap().is_some());
    }

    #[test]
    fn garbage_is_an_error_not_a_reply() {
        for bad in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x15\x03\x01\x00\x02\x02\x46\r\n",
            b"HD\n",
            b"\n",
            b"VA x\r\n",
            b"VA 2\r\nabcd\r\n",
            b"HD cnope\r\n",
            b"VA 99999999999\r\n",
            &[b'H'; 2000],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_value_holding_command_lines_is_data() {
        let value = b"delete victim\r\nflush_all\r\nHD c1\r\n";
        let mut out = Vec::new();
        store(&mut out, Store::Add, b"k", value, 10, 1).unwrap();
        assert!(out.starts_with(b"ms k 33 T10 ME c O1\r\n"));
        assert!(out.ends_with(b"HD c1\r\n\r\n"));
        let mut reply = b"VA 33 c1 O1\r\n".to_vec();
        reply.extend_from_slice(value);
        reply.extend_from_slice(b"\r\nMN\r\n");
        let (Reply::Meta { data, .. }, used) = parse(&reply).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(data, value);
        let (next, _) = parse(&reply[used..]).unwrap().unwrap();
        assert!(matches!(
            next,
            Reply::Meta {
                status: Status::Noop,
                ..
            }
        ));
    }
}

//! Each lock operation as classic commands, and the classic replies read back as the meta
//! replies the transport expects (one table, below).

use super::*;

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
/// tokio transport parses a reply in whichever caller's poll reads it).
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

//! The lock operations as dialect requests, and what their replies mean, shared by the
//! blocking and the tokio transports.

use std::time::{Duration, Instant};

use super::meta::{self, Reply, Status, Store};
use super::probe::Greeting;
use super::{Dialect, classic};
use crate::error::Refusal;
use crate::wire::transport::{Added, Checked, Epoch, FENCE_TTL, Failure, Item, Outcome};

/// One request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
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
    },
    /// A counter's delta; see `Transport::bump` (classic sends the `incr` alone).
    Bump {
        key: &'a [u8],
        delta: u64,
        create: Option<(u64, u32)>,
    },
    Noop,
}

impl Op<'_> {
    /// Whether the request may change data (so a lost reply leaves its outcome unknown).
    pub(crate) fn writes(&self) -> bool {
        !matches!(self, Op::Read { .. } | Op::Noop)
    }

    /// Whether the reply echoes the opaque token.
    pub(crate) fn echoes(&self) -> bool {
        !matches!(self, Op::Noop)
    }

    /// The same request in the classic dialect.
    pub(crate) fn classic(&self) -> classic::Exchange<'_> {
        match *self {
            Op::Store {
                mode,
                key,
                value,
                ttl,
            } => classic::Exchange::Store {
                mode,
                key,
                value,
                ttl,
            },
            Op::Read { key } => classic::Exchange::Read { key },
            Op::DeleteIf { key, cas } => classic::Exchange::DeleteIf { key, cas },
            Op::Increment { key, initial } => classic::Exchange::Increment {
                key,
                initial,
                ttl: FENCE_TTL,
            },
            Op::Bump { key, delta, .. } => classic::Exchange::Bump { key, delta },
            Op::Noop => classic::Exchange::Noop,
        }
    }

    /// Parses this request's reply at the start of `buf`, in `dialect`: `Ok(None)` while
    /// more bytes are needed. A classic reply is folded into the meta shape.
    pub(crate) fn parse<'b>(
        &self,
        dialect: Dialect,
        buf: &'b [u8],
    ) -> Result<Option<(Reply<'b>, usize)>, meta::Garbage> {
        match dialect {
            Dialect::Meta => meta::parse(buf),
            Dialect::Classic => self.classic().parse(buf),
        }
    }

    /// Appends the request to `out`.
    pub(crate) fn encode(&self, dialect: Dialect, out: &mut Vec<u8>, opaque: u32) -> Outcome<()> {
        if dialect == Dialect::Classic {
            return self
                .classic()
                .encode(out)
                .map_err(|error| Failure::Protocol(format!("cannot send: {error}")));
        }
        let encoded = match *self {
            Op::Store {
                mode,
                key,
                value,
                ttl,
            } => meta::store(out, mode, key, value, ttl, opaque),
            Op::Read { key } => meta::read(out, key, opaque),
            Op::DeleteIf { key, cas } => meta::delete_if(out, key, cas, opaque),
            Op::Increment { key, initial } => meta::increment(out, key, initial, FENCE_TTL, opaque),
            Op::Bump { key, delta, create } => meta::bump(out, key, delta, create, opaque),
            Op::Noop => {
                meta::noop(out);
                Ok(())
            }
        };
        encoded.map_err(|error| Failure::Protocol(format!("cannot send: {error}")))
    }
}

/// What one connection's probe found, kept for its life.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) dialect: Dialect,
    pub(crate) version: String,
    pub(crate) epoch: Option<Epoch>,
    /// The server's uptime at `at`.
    uptime: Option<Duration>,
    at: Instant,
    pub(crate) tls: bool,
    pub(crate) auth: bool,
}

impl Session {
    pub(crate) fn new(dialect: Dialect, found: Greeting, at: Instant, tls: bool) -> Session {
        Session {
            dialect,
            version: found.version,
            epoch: found.epoch,
            uptime: found.uptime,
            at,
            tls,
            auth: found.authenticated,
        }
    }

    /// How much longer the lock-delay lasts on this server, by its uptime at connect plus the
    /// local monotonic time since; `None` when it is over (or the uptime is unknown).
    pub(crate) fn delayed(&self, lock_delay: Duration) -> Option<Duration> {
        let age = self.uptime? + self.at.elapsed();
        lock_delay.checked_sub(age).filter(|left| !left.is_zero())
    }

    /// Whether a CAS read from `epoch` must not be used on this connection.
    pub(crate) fn restarted_since(&self, epoch: Option<Epoch>) -> bool {
        match (epoch, self.epoch) {
            (None, _) => false,
            (Some(then), Some(now)) => !then.is_same(&now),
            (Some(_), None) => true,
        }
    }
}

/// A reply that is an error whatever was asked.
fn error_of(reply: Reply<'_>) -> Failure {
    match reply {
        Reply::Unknown => Failure::Refused(Refusal::NoMetaProtocol),
        Reply::ClientError(message) if message.starts_with("unauthenticated") => {
            Failure::Refused(Refusal::AuthRequired)
        }
        Reply::ClientError(message) => Failure::Protocol(format!("CLIENT_ERROR {message}")),
        Reply::ServerError(message) => {
            Failure::Unavailable(format!("SERVER_ERROR {message}").into())
        }
        Reply::Meta { status, .. } => Failure::Protocol(format!("unexpected reply {status:?}")),
    }
}

fn status(reply: Reply<'_>) -> Outcome<(Status, Option<u64>)> {
    match reply {
        Reply::Meta { status, cas, .. } => Ok((status, cas)),
        other => Err(error_of(other)),
    }
}

fn need_cas(cas: Option<u64>) -> Outcome<u64> {
    cas.ok_or_else(|| Failure::Protocol("store reply without the CAS that was asked for".into()))
}

/// The reply to an add.
pub(crate) fn added(reply: Reply<'_>, epoch: Option<Epoch>) -> Outcome<Added> {
    match status(reply)? {
        (Status::Done, cas) => Ok(Added::Stored {
            cas: need_cas(cas)?,
            epoch,
        }),
        (Status::NotStored | Status::Exists, _) => Ok(Added::Exists),
        (other, _) => Err(Failure::Protocol(format!("add answered {other:?}"))),
    }
}

/// The reply to an unconditional store.
pub(crate) fn stored(reply: Reply<'_>, epoch: Option<Epoch>) -> Outcome<Added> {
    match status(reply)? {
        (Status::Done, cas) => Ok(Added::Stored {
            cas: need_cas(cas)?,
            epoch,
        }),
        (other, _) => Err(Failure::Protocol(format!("set answered {other:?}"))),
    }
}

/// The reply to a CAS-checked store or delete.
pub(crate) fn checked(reply: Reply<'_>, wants_cas: bool) -> Outcome<Checked> {
    match status(reply)? {
        (Status::Done, cas) if wants_cas => Ok(Checked::Applied {
            cas: Some(need_cas(cas)?),
        }),
        (Status::Done, _) => Ok(Checked::Applied { cas: None }),
        (Status::Exists | Status::NotStored, _) => Ok(Checked::Mismatch),
        (Status::NotFound, _) => Ok(Checked::Missing),
        (other, _) => Err(Failure::Protocol(format!("unexpected status {other:?}"))),
    }
}

/// The reply to a read.
pub(crate) fn item(reply: Reply<'_>, epoch: Option<Epoch>) -> Outcome<Option<Item>> {
    match reply {
        Reply::Meta {
            status: Status::Miss,
            ..
        } => Ok(None),
        Reply::Meta {
            status: Status::Value,
            cas,
            ttl,
            data,
            ..
        } => Ok(Some(Item {
            value: data.to_vec(),
            cas: cas.ok_or_else(|| Failure::Protocol("read reply without CAS".into()))?,
            ttl: ttl.and_then(|ttl| u64::try_from(ttl).ok()),
            epoch,
        })),
        other => Err(match other {
            Reply::Meta { status, .. } => Failure::Protocol(format!("read answered {status:?}")),
            other => error_of(other),
        }),
    }
}

/// The reply to a counter increment.
pub(crate) fn counted(reply: Reply<'_>) -> Outcome<u64> {
    match reply {
        Reply::Meta {
            status: Status::Value,
            data,
            ..
        } => std::str::from_utf8(data)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                Failure::Protocol(format!("fence counter answered {}", meta::shown(data)))
            }),
        Reply::Meta { status, .. } => Err(Failure::Protocol(format!(
            "fence counter answered {status:?}"
        ))),
        other => Err(error_of(other)),
    }
}

/// The reply to a bump: the new value, `None` when the counter is missing.
pub(crate) fn bumped(reply: Reply<'_>) -> Outcome<Option<u64>> {
    match reply {
        Reply::Meta {
            status: Status::NotFound,
            ..
        } => Ok(None),
        other => counted(other).map(Some),
    }
}

/// The reply to the classic `add` that creates a missing counter: whether it was created.
/// Stored but changed before the read-back (`EX` in the classic fold) is created too: the
/// counter was bumped by another client right after our add.
pub(crate) fn created(reply: Reply<'_>) -> Outcome<bool> {
    match status(reply)? {
        (Status::Done | Status::Exists, _) => Ok(true),
        (Status::NotStored, _) => Ok(false),
        (other, _) => Err(Failure::Protocol(format!("counter add answered {other:?}"))),
    }
}

/// How many times a classic bump creates a counter that keeps vanishing (expired or
/// deleted between its `incr` and its `add`) before giving up.
pub(crate) const CREATE_TRIES: usize = 3;

/// The reply to a no-op.
pub(crate) fn noop(reply: Reply<'_>) -> Outcome<()> {
    match status(reply)? {
        (Status::Noop, _) => Ok(()),
        (other, _) => Err(Failure::Protocol(format!("mn answered {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: Status, cas: Option<u64>) -> Reply<'static> {
        Reply::Meta {
            status,
            cas,
            ttl: None,
            opaque: None,
            data: b"",
        }
    }

    #[test]
    fn replies_map_to_lock_outcomes() {
        let epoch = Some(Epoch { started: 5, pid: 1 });
        assert_eq!(
            added(meta(Status::Done, Some(3)), epoch).unwrap(),
            Added::Stored { cas: 3, epoch }
        );
        assert_eq!(
            added(meta(Status::NotStored, None), None).unwrap(),
            Added::Exists
        );
        assert!(matches!(
            added(meta(Status::Done, None), None),
            Err(Failure::Protocol(_))
        ));
        assert_eq!(
            checked(meta(Status::Exists, None), false).unwrap(),
            Checked::Mismatch
        );
        assert_eq!(
            checked(meta(Status::NotFound, None), true).unwrap(),
            Checked::Missing
        );
        assert!(matches!(
            added(Reply::Unknown, None),
            Err(Failure::Refused(Refusal::NoMetaProtocol))
        ));
        assert!(matches!(
            checked(Reply::ClientError("unauthenticated"), false),
            Err(Failure::Refused(Refusal::AuthRequired))
        ));
        let number = Reply::Meta {
            status: Status::Value,
            cas: None,
            ttl: None,
            opaque: None,
            data: b"17",
        };
        assert_eq!(counted(number).unwrap(), 17);
        assert_eq!(bumped(number).unwrap(), Some(17));
        assert_eq!(bumped(meta(Status::NotFound, None)).unwrap(), None);
        assert!(created(meta(Status::Done, Some(2))).unwrap());
        assert!(created(meta(Status::Exists, None)).unwrap());
        assert!(!created(meta(Status::NotStored, None)).unwrap());
    }

    #[test]
    fn sessions_apply_the_lock_delay_and_the_epoch_guard() {
        let found = Greeting {
            version: "1.6.18".into(),
            meta: true,
            epoch: Some(Epoch {
                started: 100,
                pid: 9,
            }),
            uptime: Some(Duration::from_secs(3)),
            authenticated: false,
            closed: false,
        };
        let session = Session::new(Dialect::Meta, found, Instant::now(), false);
        let left = session.delayed(Duration::from_secs(60)).unwrap();
        assert!(left <= Duration::from_secs(57) && left > Duration::from_secs(50));
        assert_eq!(session.delayed(Duration::from_secs(2)), None);
        assert_eq!(session.delayed(Duration::ZERO), None);
        assert!(!session.restarted_since(None));
        assert!(!session.restarted_since(Some(Epoch {
            started: 101,
            pid: 9
        })));
        assert!(session.restarted_since(Some(Epoch {
            started: 100,
            pid: 10
        })));
    }
}

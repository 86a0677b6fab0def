//! The two tasks of a multiplexed tokio connection: a writer that batches the queued
//! requests into one write and tells the reader what to expect, and a reader that parses
//! the replies in order (checking each meta reply's opaque token) and hands them to their
//! callers. Any failure ends the connection.

use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::classic;
use super::meta::{self, Reply, Status};
use crate::wire::transport::{Failure, Outcome};

/// The read buffer's initial size, and the write batch's.
pub(super) const READ_CHUNK: usize = 4096;

fn unavailable(error: io::Error) -> Failure {
    Failure::Unavailable(Box::new(error))
}

pub(super) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

pub(super) type Boxed = Pin<Box<dyn Duplex>>;

/// One reply, owned, for the caller's task.
#[derive(Debug)]
pub(super) enum Owned {
    Meta {
        status: Status,
        cas: Option<u64>,
        ttl: Option<i64>,
        data: Vec<u8>,
    },
    Unknown,
    ClientError(String),
    ServerError(String),
}

impl Owned {
    pub(super) fn of(reply: Reply<'_>) -> Owned {
        match reply {
            Reply::Meta {
                status,
                cas,
                ttl,
                data,
                ..
            } => Owned::Meta {
                status,
                cas,
                ttl,
                data: data.to_vec(),
            },
            Reply::Unknown => Owned::Unknown,
            Reply::ClientError(message) => Owned::ClientError(message.to_string()),
            Reply::ServerError(message) => Owned::ServerError(message.to_string()),
        }
    }

    pub(super) fn reply(&self) -> Reply<'_> {
        match self {
            Owned::Meta {
                status,
                cas,
                ttl,
                data,
            } => Reply::Meta {
                status: *status,
                cas: *cas,
                ttl: *ttl,
                opaque: None,
                data,
            },
            Owned::Unknown => Reply::Unknown,
            Owned::ClientError(message) => Reply::ClientError(message),
            Owned::ServerError(message) => Reply::ServerError(message),
        }
    }
}

pub(super) type Answer = Outcome<Vec<Owned>>;

/// A request queued on a lane.
pub(super) struct Job {
    pub(super) bytes: Vec<u8>,
    pub(super) expect: Expect,
}

/// What the reader waits for, in order.
pub(super) struct Expect {
    /// Each reply's opaque token (`None` for `mn`).
    pub(super) opaques: Vec<Option<u32>>,
    /// On a classic connection, each request's exchange (its replies carry no token and
    /// their shape depends on the request); empty on a meta connection.
    pub(super) classic: Vec<classic::OwnedExchange>,
    pub(super) writes: bool,
    pub(super) answer: oneshot::Sender<Answer>,
}

/// Writes queued requests, as many as are waiting in one write, and tells the reader what to
/// expect.
pub(super) async fn write_loop(
    mut writer: tokio::io::WriteHalf<Boxed>,
    mut queued: mpsc::UnboundedReceiver<Job>,
    expects: mpsc::UnboundedSender<Expect>,
) {
    let mut batch = Vec::with_capacity(READ_CHUNK);
    let mut waiting = Vec::new();
    while let Some(job) = queued.recv().await {
        batch.clear();
        batch.extend_from_slice(&job.bytes);
        waiting.push(job.expect);
        while let Ok(job) = queued.try_recv() {
            batch.extend_from_slice(&job.bytes);
            waiting.push(job.expect);
        }
        let written = async {
            writer.write_all(&batch).await?;
            writer.flush().await
        }
        .await;
        if let Err(error) = written {
            for expect in waiting.drain(..) {
                let error = io::Error::new(error.kind(), error.to_string());
                let _ = expect.answer.send(Err(if expect.writes {
                    Failure::Ambiguous(Box::new(error))
                } else {
                    unavailable(error)
                }));
            }
            return;
        }
        for expect in waiting.drain(..) {
            if expects.send(expect).is_err() {
                return;
            }
        }
    }
}

/// Reads replies in order and hands them to their callers. Any failure ends the connection:
/// the caller waiting gets it, the ones behind get a closed channel.
pub(super) async fn read_loop(
    mut reader: tokio::io::ReadHalf<Boxed>,
    mut expected: mpsc::UnboundedReceiver<Expect>,
) {
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    while let Some(expect) = expected.recv().await {
        match read_replies(&mut reader, &mut input, &expect).await {
            Ok(replies) => {
                let _ = expect.answer.send(Ok(replies));
            }
            Err(failure) => {
                let _ = expect.answer.send(Err(failure));
                return;
            }
        }
    }
}

async fn read_replies(
    reader: &mut tokio::io::ReadHalf<Boxed>,
    input: &mut Vec<u8>,
    expect: &Expect,
) -> Answer {
    let mut replies = Vec::with_capacity(expect.opaques.len());
    for (index, &opaque) in expect.opaques.iter().enumerate() {
        let exchange = expect
            .classic
            .get(index)
            .map(classic::OwnedExchange::exchange);
        let opaque = if exchange.is_some() { None } else { opaque };
        loop {
            let parsed = match exchange {
                Some(exchange) => exchange.parse(input),
                None => meta::parse(input),
            };
            match parsed {
                Ok(Some((reply, used))) => {
                    if let (Reply::Meta { opaque: got, .. }, Some(want)) = (reply, opaque)
                        && got != Some(want)
                    {
                        return Err(Failure::Protocol(format!(
                            "reply out of step: opaque {got:?}, expected {want}"
                        )));
                    }
                    replies.push(Owned::of(reply));
                    input.drain(..used);
                    break;
                }
                Ok(None) => {
                    let read = reader.read_buf(input).await;
                    let error = match read {
                        Ok(0) => io::Error::from(io::ErrorKind::UnexpectedEof),
                        Ok(_) => continue,
                        Err(error) => error,
                    };
                    return Err(if expect.writes {
                        Failure::Ambiguous(Box::new(error))
                    } else {
                        unavailable(error)
                    });
                }
                Err(garbage) => return Err(Failure::Protocol(garbage.0)),
            }
        }
    }
    Ok(replies)
}

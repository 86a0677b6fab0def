//! One multiplexed tokio connection, driven by its callers (no task of its own).
//!
//! A call appends its requests to the connection's output buffer and its place to the queue
//! of calls, in one step under the connection's lock, so the queue is in the order of the
//! bytes. Then, each time it is polled, the call makes whatever progress the socket allows:
//! it writes what is queued (its own requests and any queued meanwhile), reads what has
//! arrived and hands each reply, in order, to its call (checking each meta reply's opaque
//! token), waking that call's task. An uncontended request is thus written and read by its
//! own task, with no hand-off between tasks; under load, one write carries what was queued
//! and one read many replies.
//!
//! The socket remembers one task to wake per direction: the last call whose poll found it
//! not ready. When that call ends (answered or cancelled) while others still wait, it wakes
//! the first of them, which takes its place. Any failure (I/O, a reply out of step) breaks
//! the connection: every call still waiting is answered with it.
//!
//! The I/O time-out is one timer per connection (the watchdog), due when the oldest call
//! still unanswered has waited the time-out, and handed on like the socket's wake-ups. A
//! timer per call would be registered and removed on every request, and registering one
//! earlier than every other timer wakes the runtime's parked timer thread.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::classic;
use super::meta::{self, Reply, Status};
use crate::wire::transport::{Failure, Outcome};

/// The read buffer's growth step.
pub(super) const READ_CHUNK: usize = 4096;

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

/// What the replies to one call look like, in order.
pub(super) struct Expect {
    /// Each reply's opaque token (`None` for `mn`, and on a classic connection).
    pub(super) opaques: Opaques,
    /// On a classic connection, each request's exchange (its replies carry no token and
    /// their shape depends on the request); empty on a meta connection.
    pub(super) classic: Vec<classic::OwnedExchange>,
    /// Whether a request may change data (so a lost reply leaves its outcome unknown).
    pub(super) writes: bool,
}

/// The opaque tokens of a call's replies: one, without an allocation, or several.
pub(super) enum Opaques {
    One(Option<u32>),
    Many(Vec<Option<u32>>),
}

impl Opaques {
    fn len(&self) -> usize {
        match self {
            Opaques::One(_) => 1,
            Opaques::Many(opaques) => opaques.len(),
        }
    }

    fn get(&self, index: usize) -> Option<u32> {
        match self {
            Opaques::One(opaque) => *opaque,
            Opaques::Many(opaques) => opaques.get(index).copied().flatten(),
        }
    }
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Its caller waits for the answer.
    Waiting,
    /// Its caller is gone (cancelled): its replies are read and dropped.
    Abandoned,
}

/// One queued call.
struct Call {
    expect: Expect,
    /// When it was queued: it times out an I/O time-out later.
    queued_at: Instant,
    /// Where its bytes end, counted from the connection's first byte.
    ends_at: u64,
    /// The replies parsed so far.
    replies: Vec<Owned>,
    answer: Option<Answer>,
    waker: Option<Waker>,
    stage: Stage,
}

/// A connection's state, behind its lock.
struct State {
    /// `None` once the connection is broken (the socket is closed).
    stream: Option<Boxed>,
    /// Bytes read and not yet parsed: `input[..filled]`.
    input: Vec<u8>,
    filled: usize,
    /// Requests queued and not yet written: `output[written..]`.
    output: Vec<u8>,
    written: usize,
    /// Bytes written (or handed to TLS) and queued since the connection opened.
    sent: u64,
    queued: u64,
    /// A write finished and was not flushed yet (TLS).
    unflushed: bool,
    /// The calls not yet collected, in the order of their bytes; `calls[..answered]` have
    /// their answer.
    calls: VecDeque<Call>,
    /// The id of `calls[0]`; ids count calls from the connection's first.
    first: u64,
    answered: usize,
    next_opaque: u32,
    /// The calls whose task the socket wakes when it can read, write; the watchdog when due.
    reader: Option<u64>,
    writer: Option<u64>,
    timer: Option<u64>,
    /// Due when the oldest unanswered call times out (or earlier: it is then moved on).
    watchdog: Option<Pin<Box<tokio::time::Sleep>>>,
    io_timeout: Duration,
    broken: Option<io::ErrorKind>,
}

/// One connection's calls and socket.
pub(super) struct Pipeline {
    state: Mutex<State>,
}

impl Pipeline {
    /// A connection over `stream`; a call not answered within `io_timeout` breaks it.
    pub(super) fn new(stream: Boxed, io_timeout: Duration) -> Pipeline {
        Pipeline {
            state: Mutex::new(State {
                stream: Some(stream),
                input: vec![0; READ_CHUNK],
                filled: 0,
                output: Vec::with_capacity(READ_CHUNK),
                written: 0,
                sent: 0,
                queued: 0,
                unflushed: false,
                calls: VecDeque::new(),
                first: 0,
                answered: 0,
                next_opaque: 0,
                reader: None,
                writer: None,
                timer: None,
                watchdog: None,
                io_timeout,
                broken: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a call of `count` requests: `encode` appends them to the output, the first
    /// with opaque token `first` and the others with the following ones, and says what their
    /// replies look like. The call is sent and answered as the returned future is polled.
    pub(super) fn queue(
        &self,
        count: usize,
        encode: impl FnOnce(&mut Vec<u8>, u32) -> Outcome<Expect>,
    ) -> Outcome<Pending<'_>> {
        // The caller has just checked the connection with `is_broken` (which looks for a close
        // while idle): not again here.
        let mut state = self.lock();
        if let Some(kind) = state.broken {
            return Err(Failure::Unavailable(Box::new(io::Error::from(kind))));
        }
        let before = state.output.len();
        let first = state.next_opaque;
        let expect = match encode(&mut state.output, first) {
            Ok(expect) => expect,
            Err(failure) => {
                state.output.truncate(before);
                return Err(failure);
            }
        };
        state.next_opaque = first.wrapping_add(count as u32);
        state.queued += (state.output.len() - before) as u64;
        let id = state.first + state.calls.len() as u64;
        let replies = Vec::with_capacity(expect.opaques.len());
        let ends_at = state.queued;
        state.calls.push_back(Call {
            expect,
            queued_at: Instant::now(),
            ends_at,
            replies,
            answer: None,
            waker: None,
            stage: Stage::Waiting,
        });
        Ok(Pending {
            pipeline: self,
            id,
            done: false,
        })
    }

    /// Whether the connection is broken (no call can be queued on it), or was closed by the
    /// server while nothing was in flight.
    pub(super) fn is_broken(&self) -> bool {
        let mut state = self.lock();
        if state.calls.is_empty() {
            state.check_idle();
        }
        state.broken.is_some()
    }

    /// Breaks the connection: the calls still waiting are answered with `kind`.
    pub(super) fn close(&self, kind: io::ErrorKind) {
        let mut state = self.lock();
        state.fail(kind);
    }

    /// Polls call `id`: makes what progress the socket allows, then answers if it can.
    fn poll_call(&self, id: u64, cx: &mut Context<'_>) -> Poll<Answer> {
        let mut guard = self.lock();
        let state = &mut *guard;
        loop {
            let index = (id - state.first) as usize;
            if let Some(answer) = state.calls[index].answer.take() {
                state.collected(id);
                return Poll::Ready(answer);
            }
            if state.progress(id, cx) {
                continue;
            }
            if state.calls[index].answer.is_some() {
                continue;
            }
            if state.watch(id, cx) {
                state.fail(io::ErrorKind::TimedOut);
                continue;
            }
            let call = &mut state.calls[index];
            match &mut call.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
    }

    /// Call `id`'s future is dropped before its answer was collected.
    fn abandon(&self, id: u64) {
        let mut state = self.lock();
        let index = (id - state.first) as usize;
        if index < state.answered {
            state.collected(id);
            return;
        }
        let call = &mut state.calls[index];
        call.stage = Stage::Abandoned;
        call.waker = None;
        state.hand_over(id);
    }
}

impl State {
    /// Arms the watchdog for the oldest unanswered call and registers call `id`'s task with
    /// it; whether that call has timed out.
    fn watch(&mut self, id: u64, cx: &mut Context<'_>) -> bool {
        // No call waiting, or a time-out too long for the clock: nothing to watch.
        let Some(due) = self
            .calls
            .get(self.answered)
            .and_then(|oldest| oldest.queued_at.checked_add(self.io_timeout))
        else {
            return false;
        };
        let due = tokio::time::Instant::from_std(due);
        let watchdog = self
            .watchdog
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if watchdog.deadline() > due {
            watchdog.as_mut().reset(due);
        }
        loop {
            match watchdog.as_mut().poll(cx) {
                Poll::Pending => {
                    self.timer = Some(id);
                    return false;
                }
                Poll::Ready(()) if tokio::time::Instant::now() >= due => return true,
                // Due for a call answered since: moved on to the oldest one now (later, so
                // the runtime's timer thread need not be woken).
                Poll::Ready(()) => watchdog.as_mut().reset(due),
            }
        }
    }

    /// On a connection with nothing in flight: whether the server closed it (or sent
    /// something unasked-for) meanwhile, so that no request is written on it. Tokio keeps
    /// the socket's readiness as epoll last reported it: when nothing arrived, this read
    /// answers `Pending` without a system call.
    fn check_idle(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        if self.input.len() - self.filled < READ_CHUNK / 4 {
            self.input.resize(self.filled + READ_CHUNK, 0);
        }
        let mut buf = ReadBuf::new(&mut self.input[self.filled..]);
        match stream.as_mut().poll_read(&mut cx, &mut buf) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                self.fail(io::ErrorKind::UnexpectedEof);
            }
            Poll::Ready(Ok(())) => self.fail(io::ErrorKind::InvalidData),
            Poll::Ready(Err(error)) => self.fail(error.kind()),
        }
    }

    /// One round of writing and reading for call `id`; whether anything moved (so that
    /// another round may move more).
    fn progress(&mut self, id: u64, cx: &mut Context<'_>) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        let mut moved = false;
        if self.written < self.output.len() {
            match stream.as_mut().poll_write(cx, &self.output[self.written..]) {
                Poll::Ready(Ok(0)) => {
                    self.fail(io::ErrorKind::WriteZero);
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.sent += n as u64;
                    if self.written == self.output.len() {
                        self.output.clear();
                        self.written = 0;
                        self.unflushed = true;
                    }
                    moved = true;
                }
                Poll::Ready(Err(error)) => {
                    self.fail(error.kind());
                    return true;
                }
                Poll::Pending => self.writer = Some(id),
            }
        }
        if self.unflushed && self.output.is_empty() {
            match stream.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(error)) => {
                    self.fail(error.kind());
                    return true;
                }
                Poll::Pending => self.writer = Some(id),
            }
        }
        if self.answered < self.calls.len() {
            if self.input.len() - self.filled < READ_CHUNK / 4 {
                self.input.resize(self.filled + READ_CHUNK, 0);
            }
            let mut buf = ReadBuf::new(&mut self.input[self.filled..]);
            match stream.as_mut().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let read = buf.filled().len();
                    if read == 0 {
                        self.fail(io::ErrorKind::UnexpectedEof);
                        return true;
                    }
                    self.filled += read;
                    self.parse(id);
                    moved = true;
                }
                Poll::Ready(Err(error)) => {
                    self.fail(error.kind());
                    return true;
                }
                Poll::Pending => self.reader = Some(id),
            }
        }
        moved
    }

    /// Parses every complete reply in the input and hands each to its call.
    fn parse(&mut self, polling: u64) {
        let mut used = 0;
        while self.answered < self.calls.len() {
            let call = &mut self.calls[self.answered];
            let index = call.replies.len();
            let input = &self.input[used..self.filled];
            let parsed = match call.expect.classic.get(index) {
                Some(exchange) => exchange.exchange().parse(input),
                None => meta::parse(input),
            };
            let (reply, size) = match parsed {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(garbage) => return self.garble(Failure::Protocol(garbage.0), polling),
            };
            let want = call.expect.opaques.get(index);
            if let (Reply::Meta { opaque: got, .. }, Some(want)) = (reply, want)
                && got != Some(want)
            {
                let detail = format!("reply out of step: opaque {got:?}, expected {want}");
                return self.garble(Failure::Protocol(detail), polling);
            }
            call.replies.push(Owned::of(reply));
            used += size;
            if call.replies.len() == call.expect.opaques.len() {
                let replies = std::mem::take(&mut call.replies);
                self.answer(Ok(replies), polling);
            }
        }
        self.input.copy_within(used..self.filled, 0);
        self.filled -= used;
    }

    /// Answers the first unanswered call and wakes its task, unless it is the call being
    /// polled (`polling`), which is running and collects its answer right away: waking it
    /// would only poll its task once more for nothing.
    fn answer(&mut self, answer: Answer, polling: u64) {
        let id = self.first + self.answered as u64;
        let call = &mut self.calls[self.answered];
        self.answered += 1;
        if call.stage == Stage::Waiting {
            call.answer = Some(answer);
            let waker = call.waker.take();
            if let Some(waker) = waker.filter(|_| id != polling) {
                waker.wake();
            }
        }
    }

    /// A reply that is not the one expected: the call it was for gets `failure`, the rest of
    /// the connection breaks.
    fn garble(&mut self, failure: Failure, polling: u64) {
        self.answer(Err(failure), polling);
        self.fail(io::ErrorKind::InvalidData);
    }

    /// Breaks the connection: closes the socket and answers every call still waiting (a
    /// request not written in full was never applied; one written may have been).
    fn fail(&mut self, kind: io::ErrorKind) {
        self.broken.get_or_insert(kind);
        self.stream = None;
        self.watchdog = None;
        while self.answered < self.calls.len() {
            let call = &self.calls[self.answered];
            let error = io::Error::new(kind, "the connection to the server was lost");
            let failure = if call.ends_at <= self.sent && call.expect.writes {
                Failure::Ambiguous(Box::new(error))
            } else {
                Failure::Unavailable(Box::new(error))
            };
            self.answer(Err(failure), u64::MAX);
        }
    }

    /// Call `id` has its answer collected: it leaves the queue (with the collected and
    /// abandoned calls before it), and hands its place at the socket on.
    fn collected(&mut self, id: u64) {
        let index = (id - self.first) as usize;
        let call = &mut self.calls[index];
        call.stage = Stage::Abandoned;
        call.answer = None;
        call.waker = None;
        while self.answered > 0
            && self
                .calls
                .front()
                .is_some_and(|call| call.stage == Stage::Abandoned)
        {
            self.calls.pop_front();
            self.first += 1;
            self.answered -= 1;
        }
        self.hand_over(id);
    }

    /// When call `id` was the one the socket would wake, wakes the first call still waiting
    /// for its answer instead, so that somebody keeps the connection moving.
    fn hand_over(&mut self, id: u64) {
        let mut was_registered = false;
        for registered in [&mut self.reader, &mut self.writer, &mut self.timer] {
            if *registered == Some(id) {
                *registered = None;
                was_registered = true;
            }
        }
        if !was_registered {
            return;
        }
        let next = self
            .calls
            .iter_mut()
            .skip(self.answered)
            .find(|call| call.stage == Stage::Waiting);
        if let Some(waker) = next.and_then(|call| call.waker.as_ref()) {
            waker.wake_by_ref();
        }
    }
}

/// A queued call, answered when awaited.
pub(super) struct Pending<'a> {
    pipeline: &'a Pipeline,
    id: u64,
    done: bool,
}

impl Future for Pending<'_> {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let answer = self.pipeline.poll_call(self.id, cx);
        if answer.is_ready() {
            self.done = true;
        }
        answer
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pipeline.abandon(self.id);
        }
    }
}

//! Taking a lock from the command line: one try, a bounded wait or forever, with a live
//! status line on a terminal and an early way out on SIGINT/SIGTERM/SIGHUP.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use memsem::{Error, Holder, Permit, Semaphore, WaitPolicy};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::show::{StatusLine, describe};

/// What the supervising loops of `run` and `acquire` react to.
#[derive(Debug)]
pub enum Event {
    /// memsem received this signal.
    Signal(i32),
    /// The command ended (not yet reaped).
    Exited(std::io::Result<()>),
    /// The lease could not be kept: why.
    Lost(String),
}

/// The signals memsem passes on to its command (or that end a wait).
pub const FORWARDED: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Delivers SIGINT, SIGTERM and SIGHUP as [`Event::Signal`] from now on.
pub fn catch_signals(events: Sender<Event>) -> std::io::Result<()> {
    let mut signals = Signals::new(FORWARDED)?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if events.send(Event::Signal(signal)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// How an acquisition ended, short of an error.
pub enum Acquired {
    Permit(Permit),
    /// Still held when the wait ran out: by whom, as far as the server said.
    Busy(Option<Holder>),
    /// A signal ended the wait.
    Interrupted(i32),
}

/// Tries to take the lock until `limit` runs out (`None`: forever; zero: one try).
///
/// The first attempt's server error is returned at once (the configuration is likely wrong);
/// later ones are retried, and returned only if the wait runs out on them. A refused server
/// ([`Error::Refused`]) ends the wait at once; a server in its lock-delay is waited out.
pub fn acquire(
    sem: &Semaphore,
    limit: Option<Duration>,
    poll: Duration,
    events: &Receiver<Event>,
    quiet: bool,
) -> Result<Acquired, Error> {
    let started = Instant::now();
    let mut delays = WaitPolicy::new().poll_time(poll).delays();
    let mut line = StatusLine::new(!quiet);
    let mut last_error: Option<Error>;
    let mut holder: Option<(Instant, Option<Holder>)> = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match sem.try_acquire() {
            Ok(Some(permit)) => {
                line.clear();
                return Ok(Acquired::Permit(permit));
            }
            Ok(None) => last_error = None,
            // A server in its lock-delay is waited out like a held lock.
            Err(error @ Error::LockDelay { .. }) => last_error = Some(error),
            Err(error) if attempts == 1 || !(error.is_retryable() || is_transient(&error)) => {
                line.clear();
                return Err(error);
            }
            Err(error) => last_error = Some(error),
        }
        let waited = started.elapsed();
        let remaining = limit.map(|limit| limit.saturating_sub(waited));
        if remaining == Some(Duration::ZERO) {
            line.clear();
            if let Some(error) = last_error {
                return Err(error);
            }
            let holder = match holder {
                Some((at, holder)) if at.elapsed() < Duration::from_millis(500) => holder,
                _ => sem.holder().ok().flatten(),
            };
            return Ok(Acquired::Busy(holder));
        }
        if line.enabled {
            let stale = holder
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(1));
            if stale {
                holder = Some((Instant::now(), sem.holder().ok().flatten()));
            }
            let about = match (&last_error, &holder) {
                (Some(error), _) => format!("; {error}"),
                (None, Some((_, Some(holder)))) => format!("; held by {}", describe(holder)),
                _ => String::new(),
            };
            line.waiting(sem.name(), waited.as_secs(), &about);
        }
        let mut delay = delays.next().unwrap_or(poll);
        if let Some(remaining) = remaining {
            delay = delay.min(remaining);
        }
        match events.recv_timeout(delay) {
            Ok(Event::Signal(signal)) => {
                line.clear();
                return Ok(Acquired::Interrupted(signal));
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }
}

/// Server trouble worth another try while waiting.
fn is_transient(error: &Error) -> bool {
    matches!(error, Error::Ambiguous { .. } | Error::Protocol { .. })
}

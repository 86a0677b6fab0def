//! Taking a lock from the command line: one try, a bounded wait or forever, with a live
//! status line on a terminal and an early way out on SIGINT/SIGTERM/SIGHUP.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use memsem::{Error, Holder, Permit, Semaphore, WaitPolicy};
use signal_hook::consts::SIGINT;

use crate::events::{Event, Events};
use crate::show::{StatusLine, describe};

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
/// A bounded wait is the library's own ([`Semaphore::wait_acquire_with`] with
/// `max_wait = limit`): server errors worth retrying are retried until the limit, a refused
/// server ([`Error::Refused`]) ends the wait at once, a server in its lock-delay is waited
/// out. An endless wait does the same, except that a server error on the very first try is
/// returned at once (the configuration is likely wrong: do not hang forever on it). The
/// pauses between attempts repaint the status line and end the wait on a signal.
pub fn acquire(
    sem: &Semaphore,
    limit: Option<Duration>,
    poll: Duration,
    events: &mut Events,
    quiet: bool,
) -> Result<Acquired, Error> {
    if limit == Some(Duration::ZERO) {
        return Ok(match sem.try_acquire()? {
            Some(permit) => Acquired::Permit(permit),
            None => Acquired::Busy(sem.holder().ok().flatten()),
        });
    }
    let mut policy = WaitPolicy::new().poll_time(poll);
    match limit {
        Some(limit) => policy = policy.max_wait(limit),
        None => match sem.try_acquire() {
            Ok(Some(permit)) => return Ok(Acquired::Permit(permit)),
            Ok(None) | Err(Error::LockDelay { .. }) => {}
            Err(error) => return Err(error),
        },
    }
    let sem = sem.clone().with_wait_policy(policy);
    let mut line = StatusLine::new(!quiet);
    let mut holder: Option<(Instant, Option<Holder>)> = None;
    let mut signal = None;
    let outcome = sem.wait_acquire_with(|waiting| {
        if line.enabled {
            let stale = holder
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(1));
            if stale {
                holder = Some((Instant::now(), sem.holder().ok().flatten()));
            }
            let about = match (waiting.last_error(), &holder) {
                (Some(error), _) => format!("; {error}"),
                (None, Some((_, Some(holder)))) => format!("; held by {}", describe(holder)),
                _ => String::new(),
            };
            line.waiting(sem.name(), waiting.waited().as_secs(), &about);
        }
        match events.next(Some(waiting.delay())) {
            Some(Event::Signal(caught)) => {
                signal = Some(caught);
                ControlFlow::Break(())
            }
            Some(_) | None => ControlFlow::Continue(()),
        }
    });
    line.clear();
    match outcome {
        Ok(Some(permit)) => Ok(Acquired::Permit(permit)),
        Ok(None) => Ok(Acquired::Interrupted(signal.unwrap_or(SIGINT))),
        // Held all along: say by whom.
        Err(Error::Timeout {
            last_error: None, ..
        }) => {
            let holder = match holder {
                Some((at, holder)) if at.elapsed() < Duration::from_millis(500) => holder,
                _ => sem.holder().ok().flatten(),
            };
            Ok(Acquired::Busy(holder))
        }
        Err(error) => Err(error),
    }
}

//! How [`Semaphore::wait_acquire`](crate::Semaphore::wait_acquire) waits: the [`WaitPolicy`]
//! value and the one polling loop every wait runs ([`run`]: the semaphore, the keyed mutex,
//! the quorum lock and the command-line tool), with the clock, the pause between attempts
//! (sleep, cancellation, progress) and the attempt itself injected — backon's
//! `BlockingRetry` is the model.

use std::future::Future;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::flavor::Flavor;

mod policy;

pub use policy::{Delays, WaitPolicy};

/// Whether a failed attempt is worth another try inside the wait. Never
/// [`Error::Refused`]: a server that cannot be used will not become usable by waiting.
fn worth_retrying(error: &Error) -> bool {
    matches!(
        error,
        Error::Unavailable { .. }
            | Error::Ambiguous { .. }
            | Error::Protocol { .. }
            | Error::NoQuorum { .. }
            | Error::LockDelay { .. }
    )
}

/// What to do after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<T> {
    /// The attempt yielded its value: stop waiting.
    Done(T),
    /// Sleep this long, then attempt again.
    Sleep(Duration),
}

/// The bookkeeping of one wait by a [`WaitPolicy`], without any I/O or sleeping of its own
/// (the caller attempts and sleeps, blocking or async), so both flavours share it and tests
/// drive it with a fake clock.
#[derive(Debug)]
pub(crate) struct Waiter<'a> {
    name: &'a str,
    policy: &'a WaitPolicy,
    started: Instant,
    delays: Delays,
    attempts: u32,
    last_error: Option<Box<Error>>,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(name: &'a str, policy: &'a WaitPolicy, now: Instant) -> Waiter<'a> {
        Waiter {
            name,
            policy,
            started: now,
            delays: policy.delays(),
            attempts: 0,
            last_error: None,
        }
    }

    /// Takes in an attempt's outcome at `now`: done, sleep, or give up with
    /// [`Error::Timeout`] (or the attempt's error, when it is not worth retrying).
    pub(crate) fn after<T>(&mut self, outcome: Result<Option<T>>, now: Instant) -> Result<Next<T>> {
        self.attempts = self.attempts.saturating_add(1);
        match outcome {
            Ok(Some(value)) => return Ok(Next::Done(value)),
            Ok(None) => {}
            Err(error) if worth_retrying(&error) => self.last_error = Some(Box::new(error)),
            Err(error) => return Err(error),
        }
        let waited = now.saturating_duration_since(self.started);
        let mut delay = self.delays.next().unwrap_or(self.policy.poll_time);
        if let Some(max_wait) = self.policy.max_wait {
            if waited >= max_wait {
                return Err(Error::Timeout {
                    name: self.name.to_string(),
                    waited,
                    attempts: self.attempts,
                    last_error: self.last_error.take(),
                });
            }
            delay = delay.min(max_wait - waited);
        }
        Ok(Next::Sleep(delay))
    }

    /// Where the wait stands at `now`, before a pause of `delay`.
    fn waiting(&self, now: Instant, delay: Duration) -> Waiting<'_> {
        Waiting {
            waited: now.saturating_duration_since(self.started),
            attempts: self.attempts,
            delay,
            last_error: self.last_error.as_deref(),
        }
    }
}

/// Where a wait stands between two attempts: what a progress hook (such as
/// [`Semaphore::wait_acquire_with`](crate::Semaphore::wait_acquire_with)'s) is shown.
///
/// # Examples
///
/// ```no_run
/// use std::ops::ControlFlow;
/// let client = memsem::Client::connect("127.0.0.1:11211")?;
/// let permit = client.semaphore("deploy")?.wait_acquire_with(|waiting| {
///     eprintln!("waited {:?} ({} attempts)", waiting.waited(), waiting.attempts());
///     std::thread::sleep(waiting.delay());
///     ControlFlow::Continue(())
/// })?;
/// # let _ = permit;
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Waiting<'a> {
    waited: Duration,
    attempts: u32,
    delay: Duration,
    last_error: Option<&'a Error>,
}

impl<'a> Waiting<'a> {
    /// How long the wait has lasted so far.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// How many attempts were made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How long to pause before the next attempt (the policy's delay, cut short at
    /// `max_wait`).
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The last server error seen while waiting (cleared by nothing: the latest one stays),
    /// `None` while every attempt found the lock held.
    pub fn last_error(&self) -> Option<&'a Error> {
        self.last_error
    }
}

/// One attempt of a wait: `Ok(Some(value))` ends it, `Ok(None)` (busy) and the errors
/// worth retrying pause and try again.
pub(crate) trait Attempt {
    type Output;
    fn attempt(&mut self) -> impl Future<Output = Result<Option<Self::Output>>> + Send;
}

/// A closure returning an attempt's future, as an [`Attempt`].
pub(crate) struct Repeat<C>(pub(crate) C);

impl<T, C, Fut> Attempt for Repeat<C>
where
    C: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>> + Send,
{
    type Output = T;
    fn attempt(&mut self) -> impl Future<Output = Result<Option<T>>> + Send {
        (self.0)()
    }
}

/// What happens between two attempts: a pause, which may also end the wait
/// (`ControlFlow::Break`) and report progress.
pub(crate) trait Pause {
    /// Why a wait was ended early.
    type Stop;
    fn pause(
        &mut self,
        waiting: &Waiting<'_>,
    ) -> impl Future<Output = ControlFlow<Self::Stop>> + Send;
}

/// Sleeps the flavour's way (a thread sleep, or `tokio::time::sleep`); never ends a wait.
pub(crate) struct Sleep<F>(PhantomData<F>);

impl<F> Sleep<F> {
    pub(crate) fn new() -> Sleep<F> {
        Sleep(PhantomData)
    }
}

impl<F: Flavor> Pause for Sleep<F> {
    type Stop = std::convert::Infallible;
    fn pause(
        &mut self,
        waiting: &Waiting<'_>,
    ) -> impl Future<Output = ControlFlow<Self::Stop>> + Send {
        let sleep = F::sleep(waiting.delay);
        async move {
            sleep.await;
            ControlFlow::Continue(())
        }
    }
}

/// A caller's hook that does the pausing itself (it waits `delay`, or less when something
/// happens), and may end the wait.
pub(crate) struct Hook<H>(pub(crate) H);

impl<H: FnMut(&Waiting<'_>) -> ControlFlow<()>> Pause for Hook<H> {
    type Stop = ();
    fn pause(&mut self, waiting: &Waiting<'_>) -> impl Future<Output = ControlFlow<()>> + Send {
        std::future::ready((self.0)(waiting))
    }
}

/// The one wait loop: attempts until one yields a value, the policy gives up
/// ([`Error::Timeout`], or at once on an error not worth retrying), or `pause` ends the wait
/// (`Ok(Err(stop))`). Time is `F`'s clock.
pub(crate) async fn run<F: Flavor, A: Attempt, P: Pause>(
    name: &str,
    policy: &WaitPolicy,
    attempt: &mut A,
    pause: &mut P,
) -> Result<Result<A::Output, P::Stop>> {
    let mut waiter = Waiter::new(name, policy, F::now());
    loop {
        let outcome = attempt.attempt().await;
        let now = F::now();
        match waiter.after(outcome, now)? {
            Next::Done(value) => return Ok(Ok(value)),
            Next::Sleep(delay) => {
                if let ControlFlow::Break(stop) = pause.pause(&waiter.waiting(now, delay)).await {
                    return Ok(Err(stop));
                }
            }
        }
    }
}

/// The value of a wait that cannot be ended early.
pub(crate) fn settled<T>(outcome: Result<T, std::convert::Infallible>) -> T {
    match outcome {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LostReason;

    /// Drives a [`Waiter`] the way the semaphores do, with a fake clock that only moves
    /// when the loop sleeps: returns the outcome and the sleeps.
    fn poll<T>(
        policy: &WaitPolicy,
        mut attempt: impl FnMut() -> Result<Option<T>>,
    ) -> (Result<T>, Vec<Duration>) {
        let mut now = Instant::now();
        let mut waiter = Waiter::new("job", policy, now);
        let mut slept = Vec::new();
        loop {
            match waiter.after(attempt(), now) {
                Ok(Next::Done(value)) => return (Ok(value), slept),
                Ok(Next::Sleep(delay)) => {
                    slept.push(delay);
                    now += delay;
                }
                Err(error) => return (Err(error), slept),
            }
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn unavailable() -> Error {
        Error::Unavailable {
            server: "s:1".into(),
            source: "down".into(),
        }
    }

    #[test]
    fn gives_up_at_max_wait_with_a_final_attempt() {
        let policy = WaitPolicy::new()
            .max_wait(ms(250))
            .poll_time(ms(100))
            .jitter(0.0);
        let (outcome, slept) = poll::<()>(&policy, || Ok(None));
        let error = outcome.unwrap_err();
        assert_eq!(slept, [ms(100), ms(100), ms(50)]);
        match error {
            Error::Timeout {
                waited,
                attempts,
                last_error,
                ..
            } => {
                assert_eq!(waited, ms(250));
                assert_eq!(attempts, 4);
                assert!(last_error.is_none());
            }
            other => panic!("expected Timeout, got {other}"),
        }
    }

    #[test]
    fn returns_the_value_as_soon_as_an_attempt_yields_it() {
        let policy = WaitPolicy::new().poll_time(ms(10)).jitter(0.0);
        let mut calls = 0;
        let (outcome, slept) = poll(&policy, || {
            calls += 1;
            Ok((calls == 3).then_some("permit"))
        });
        assert_eq!(outcome.unwrap(), "permit");
        assert_eq!(slept, [ms(10), ms(10)]);
    }

    #[test]
    fn server_errors_are_retried_and_the_last_one_is_reported() {
        let policy = WaitPolicy::new()
            .max_wait(ms(30))
            .poll_time(ms(10))
            .jitter(0.0);
        let error = poll::<()>(&policy, || Err(unavailable())).0.unwrap_err();
        assert!(error.is_unavailable(), "{error}");
        let Error::Timeout {
            last_error: Some(last),
            attempts,
            ..
        } = error
        else {
            panic!("expected a Timeout carrying the last error");
        };
        assert_eq!(attempts, 4);
        assert!(matches!(*last, Error::Unavailable { .. }));
    }

    #[test]
    fn configuration_errors_end_the_wait_at_once() {
        let policy = WaitPolicy::new().poll_time(ms(10));
        let (outcome, slept) = poll::<()>(&policy, || {
            Err(Error::LockLost {
                name: "job".into(),
                reason: LostReason::Missing,
            })
        });
        assert!(outcome.unwrap_err().is_lock_lost());
        assert!(slept.is_empty());
    }

    #[test]
    fn a_refused_server_ends_the_wait_at_once() {
        let policy = WaitPolicy::new().poll_time(ms(10));
        let mut attempts = 0;
        let (outcome, slept) = poll::<()>(&policy, || {
            attempts += 1;
            Err(Error::Refused {
                server: "s:1".into(),
                reason: crate::error::Refusal::NoMetaProtocol,
            })
        });
        let error = outcome.unwrap_err();
        assert!(matches!(error, Error::Refused { .. }), "{error}");
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("meta commands"), "{error}");
        assert_eq!(attempts, 1);
        assert!(slept.is_empty());
    }

    #[test]
    fn the_lock_delay_is_waited_through() {
        let policy = WaitPolicy::new().poll_time(ms(10)).jitter(0.0);
        let mut calls = 0;
        let (outcome, slept) = poll(&policy, || {
            calls += 1;
            match calls {
                1 | 2 => Err(Error::LockDelay {
                    server: "s:1".into(),
                    remaining: ms(20),
                }),
                _ => Ok(Some("permit")),
            }
        });
        assert_eq!(outcome.unwrap(), "permit");
        assert_eq!(slept, [ms(10), ms(10)]);
    }

    /// The one loop with a caller's pause: it sees the progress, and can end the wait.
    #[test]
    fn a_pause_hook_sees_the_progress_and_can_end_the_wait() {
        let policy = WaitPolicy::new().poll_time(ms(10)).jitter(0.0);
        let mut calls = 0;
        let mut attempt = Repeat(|| {
            calls += 1;
            std::future::ready(match calls {
                1 => Err(unavailable()),
                _ => Ok(None::<()>),
            })
        });
        let mut seen = Vec::new();
        let mut pause = Hook(|waiting: &Waiting<'_>| {
            seen.push((
                waiting.attempts(),
                waiting.delay(),
                waiting.last_error().is_some(),
            ));
            match waiting.attempts() {
                3 => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        });
        let waited = crate::flavor::block_on(run::<crate::flavor::Blocking, _, _>(
            "job",
            &policy,
            &mut attempt,
            &mut pause,
        ));
        assert!(matches!(waited, Ok(Err(()))), "ended by the hook");
        assert_eq!(
            seen,
            [(1, ms(10), true), (2, ms(10), true), (3, ms(10), true)]
        );
    }
}

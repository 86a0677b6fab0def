//! The fake's time: a [`Clock`] moved by hand, and the [`Simulated`] flavour that reads and
//! advances the clock installed on the calling thread.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{FakeServer, lock};

/// A clock that moves only when told to (shared by clones).
#[derive(Clone)]
pub(crate) struct Clock(Arc<ClockState>);

struct ClockState {
    base: Instant,
    offset: Mutex<Duration>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Clock").field(&self.elapsed()).finish()
    }
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock(Arc::new(ClockState {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }))
    }

    /// How far the clock has been moved.
    pub(crate) fn elapsed(&self) -> Duration {
        *lock(&self.0.offset)
    }

    /// The current instant: the start plus [`elapsed`](Self::elapsed).
    pub(crate) fn now(&self) -> Instant {
        self.0.base + self.elapsed()
    }

    pub(crate) fn advance(&self, by: Duration) {
        *lock(&self.0.offset) += by;
    }

    /// Makes this the clock [`Simulated`] reads and advances on the calling thread.
    pub(crate) fn install(&self) {
        CURRENT.with(|current| *current.borrow_mut() = Some(self.clone()));
    }
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Clock>> = const { std::cell::RefCell::new(None) };
}

fn current() -> Option<Clock> {
    CURRENT.with(|current| current.borrow().clone())
}

/// The flavour of a client over [`FakeServer`]s: blocking, with time from the [`Clock`]
/// installed on the calling thread (real time when none is).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Simulated {}

impl crate::flavor::sealed::Sealed for Simulated {}

impl crate::flavor::Flavor for Simulated {
    type Wire = FakeServer;
    const BLOCKING: bool = true;

    async fn sleep(duration: Duration) {
        match current() {
            Some(clock) => clock.advance(duration),
            None => std::thread::sleep(duration),
        }
    }

    fn now() -> Instant {
        current().map_or_else(Instant::now, |clock| clock.now())
    }
}

//! The fake's time: a [`Clock`] moved by hand, installed on a thread for the `Simulated`
//! flavour to read and advance.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;

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

/// The clock installed on the calling thread, if any.
pub(crate) fn current() -> Option<Clock> {
    CURRENT.with(|current| current.borrow().clone())
}

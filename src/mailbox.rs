//! A one-letter mailbox that a thread or a task waits on with a time limit: how one part
//! of this process tells another something at once instead of letting it find out at its
//! next poll (a FIFO waiter its turn).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Holds at most one letter until its reader takes it.
#[derive(Debug)]
pub struct Mailbox<T> {
    state: Mutex<State<T>>,
    posted: Condvar,
}

#[derive(Debug)]
struct State<T> {
    letter: Option<T>,
    /// The task waiting, if a task is.
    waker: Option<Waker>,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            state: Mutex::new(State {
                letter: None,
                waker: None,
            }),
            posted: Condvar::new(),
        }
    }
}

impl<T> Mailbox<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // A reader or poster that panicked left a letter or nothing: both are usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves `letter` (replacing one not yet read when `replace` says so) and wakes the
    /// reader. Whether the letter was left.
    pub(crate) fn post(&self, letter: T, replace: impl FnOnce(&T) -> bool) -> bool {
        let waker = {
            let mut state = self.state();
            if let Some(old) = &state.letter
                && !replace(old)
            {
                return false;
            }
            state.letter = Some(letter);
            state.waker.take()
        };
        self.posted.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The letter, if one is there.
    pub(crate) fn take(&self) -> Option<T> {
        self.state().letter.take()
    }

    /// Blocks this thread until a letter comes (`Some`) or `timeout` passes (`None`).
    pub(crate) fn wait_blocking(&self, timeout: Duration) -> Option<T> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.state();
        loop {
            if let Some(letter) = state.letter.take() {
                return Some(letter);
            }
            let left = match deadline {
                Some(deadline) => deadline.checked_duration_since(Instant::now())?,
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return None;
            }
            state = self
                .posted
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A future ready with the letter when one comes, or with `None` when `timer` ends
    /// first.
    pub(crate) fn wait_with<S: Future<Output = ()>>(&self, timer: S) -> Receive<'_, T, S> {
        Receive {
            mailbox: self,
            timer: Box::pin(timer),
        }
    }
}

/// See [`Mailbox::wait_with`].
pub(crate) struct Receive<'a, T, S> {
    mailbox: &'a Mailbox<T>,
    timer: Pin<Box<S>>,
}

impl<T, S: Future<Output = ()>> Future for Receive<'_, T, S> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<T>> {
        {
            let mut state = self.mailbox.state();
            if let Some(letter) = state.letter.take() {
                state.waker = None;
                return Poll::Ready(Some(letter));
            }
            state.waker = Some(context.waker().clone());
        }
        match self.timer.as_mut().poll(context) {
            Poll::Ready(()) => {
                let mut state = self.mailbox.state();
                state.waker = None;
                // A letter that came while the timer ended is not lost: it is read now.
                Poll::Ready(state.letter.take())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T, S> Drop for Receive<'_, T, S> {
    fn drop(&mut self) {
        self.mailbox.state().waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_letter_posted_before_the_wait_is_read_at_once() {
        let mailbox = Mailbox::default();
        assert!(mailbox.post(7, |_| true));
        assert_eq!(mailbox.wait_blocking(Duration::from_secs(60)), Some(7));
        assert_eq!(mailbox.take(), None);
    }

    #[test]
    fn a_wait_without_a_letter_ends_at_its_limit() {
        let mailbox: Mailbox<u8> = Mailbox::default();
        assert_eq!(mailbox.wait_blocking(Duration::from_millis(1)), None);
        assert_eq!(pollster::block_on(mailbox.wait_with(async {})), None);
    }

    #[test]
    fn a_letter_wakes_a_waiting_thread() {
        let mailbox = Arc::new(Mailbox::default());
        let reader = {
            let mailbox = Arc::clone(&mailbox);
            std::thread::spawn(move || mailbox.wait_blocking(Duration::from_secs(600)))
        };
        mailbox.post("turn", |_| true);
        assert_eq!(reader.join().unwrap(), Some("turn"));
    }

    #[test]
    fn a_letter_wakes_a_waiting_task() {
        let mailbox = Arc::new(Mailbox::default());
        let (registered, go) = std::sync::mpsc::channel::<()>();
        let poster = {
            let mailbox = Arc::clone(&mailbox);
            std::thread::spawn(move || {
                go.recv().unwrap();
                mailbox.post(5, |_| true)
            })
        };
        // A timer that never ends, and that tells the poster to go the first time it is
        // polled: by then the task's waker is registered, so only the wake can end the wait.
        let mut registered = Some(registered);
        let timer = std::future::poll_fn(move |_| {
            if let Some(registered) = registered.take() {
                registered.send(()).unwrap();
            }
            Poll::<()>::Pending
        });
        assert_eq!(pollster::block_on(mailbox.wait_with(timer)), Some(5));
        assert!(poster.join().unwrap());
    }

    #[test]
    fn an_unread_letter_is_kept_unless_the_new_one_may_replace_it() {
        let mailbox = Mailbox::default();
        assert!(mailbox.post("recheck", |_| true));
        assert!(!mailbox.post("recheck again", |old| *old != "recheck"));
        assert!(mailbox.post("granted", |old| *old == "recheck"));
        assert_eq!(mailbox.take(), Some("granted"));
    }
}

//! Blocking or async: how a [`Client`](crate::Client) and its handles do their I/O.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::wire::Backend;
use crate::wire::transport::Transport;

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// How a [`Client`](crate::Client), its [`Semaphore`](crate::Semaphore)s and their
/// [`Permit`](crate::Permit)s do I/O: [`Blocking`] (the default type parameter, so
/// `Semaphore` means `Semaphore<Blocking>`), or `Tokio` (feature `tokio`), whose
/// operations have the same names and are `async`. The lock logic is the same code for both;
/// only the transport and the sleeping differ. Sealed: implemented by these two only.
///
/// # Examples
///
/// ```
/// use memsem::{Blocking, Semaphore};
///
/// fn takes_a_blocking_handle(_: &Semaphore<Blocking>) {}
/// let client = memsem::Client::connect("127.0.0.1:11211")?;
/// let sem: Semaphore = client.semaphore("job")?;
/// takes_a_blocking_handle(&sem);
/// # Ok::<(), memsem::Error>(())
/// ```
pub trait Flavor:
    sealed::Sealed + std::fmt::Debug + Clone + Copy + Send + Sync + Sized + 'static
{
    /// The transport to one server.
    #[doc(hidden)]
    type Wire: Transport;
    /// Whether operations block the calling thread (so `Drop` may release inline).
    #[doc(hidden)]
    const BLOCKING: bool;
    /// Sleeps between attempts.
    #[doc(hidden)]
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send;
    /// The clock waits are measured by (a manual one in the lock logic's unit tests).
    #[doc(hidden)]
    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }
    /// Waits up to `timeout` for a letter in `mailbox` (a FIFO waiter's turn, handed by a
    /// releaser of this process): a task races the mailbox against its sleep.
    #[doc(hidden)]
    fn receive<T: Send>(
        mailbox: &crate::mailbox::Mailbox<T>,
        timeout: Duration,
    ) -> impl Future<Output = Option<T>> + Send {
        mailbox.wait_with(Self::sleep(timeout))
    }
    /// Runs the requests to several servers at once (a quorum's votes): polled together,
    /// or for the blocking flavour one thread each.
    #[doc(hidden)]
    fn join_all<Fut>(futures: Vec<Fut>) -> impl Future<Output = Vec<Fut::Output>> + Send
    where
        Fut: Future + Send,
        Fut::Output: Send,
    {
        JoinAll::new(futures)
    }
}

/// Polls every future until all are done; their outputs in order.
struct JoinAll<Fut: Future> {
    futures: Vec<Option<std::pin::Pin<Box<Fut>>>>,
    outputs: Vec<Option<Fut::Output>>,
}

impl<Fut: Future> JoinAll<Fut> {
    fn new(futures: Vec<Fut>) -> JoinAll<Fut> {
        let outputs = futures.iter().map(|_| None).collect();
        JoinAll {
            futures: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
            outputs,
        }
    }
}

impl<Fut: Future> Unpin for JoinAll<Fut> {}

impl<Fut: Future> Future for JoinAll<Fut> {
    type Output = Vec<Fut::Output>;

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        for (slot, output) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(future) = slot
                && let Poll::Ready(value) = future.as_mut().poll(context)
            {
                *output = Some(value);
                *slot = None;
            }
        }
        if this.futures.iter().any(Option::is_some) {
            return Poll::Pending;
        }
        Poll::Ready(this.outputs.iter_mut().filter_map(Option::take).collect())
    }
}

/// Blocking I/O: every operation returns when it is done (the default flavour).
///
/// # Examples
///
/// ```
/// let client: memsem::Client<memsem::Blocking> = memsem::Client::connect("127.0.0.1:11211")?;
/// # let _ = client;
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub enum Blocking {}

impl sealed::Sealed for Blocking {}

impl Flavor for Blocking {
    type Wire = Backend;
    const BLOCKING: bool = true;

    async fn sleep(duration: Duration) {
        std::thread::sleep(duration);
    }

    /// The thread sleeps on the mailbox's condition variable.
    async fn receive<T: Send>(
        mailbox: &crate::mailbox::Mailbox<T>,
        timeout: Duration,
    ) -> Option<T> {
        mailbox.wait_blocking(timeout)
    }

    /// One thread per request, so that the round trips overlap.
    async fn join_all<Fut>(futures: Vec<Fut>) -> Vec<Fut::Output>
    where
        Fut: Future + Send,
        Fut::Output: Send,
    {
        std::thread::scope(|scope| {
            let handles: Vec<_> = futures
                .into_iter()
                .map(|future| scope.spawn(move || block_on(future)))
                .collect();
            handles
                .into_iter()
                .map(|handle| match handle.join() {
                    Ok(output) => output,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    }
}

/// Async I/O on tokio (feature `tokio`): the same operations, `async`. Build the client with
/// [`ClientBuilder::build_async`](crate::ClientBuilder::build_async).
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), memsem::Error> {
/// let client: memsem::Client<memsem::Tokio> =
///     memsem::Client::builder().servers("127.0.0.1:11211").build_async().await?;
/// let permit = client.semaphore("job")?.wait_acquire().await?;
/// permit.release().await?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug, Clone, Copy)]
pub enum Tokio {}

#[cfg(feature = "tokio")]
impl sealed::Sealed for Tokio {}

#[cfg(feature = "tokio")]
impl Flavor for Tokio {
    type Wire = crate::wire::AsyncBackend;
    const BLOCKING: bool = false;

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// The flavour of a client over in-memory fake servers (the lock logic's unit tests):
/// blocking, with time from the fake clock installed on the calling thread (real time when
/// none is).
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Simulated {}

#[cfg(any(test, feature = "test-util"))]
impl sealed::Sealed for Simulated {}

#[cfg(any(test, feature = "test-util"))]
impl Flavor for Simulated {
    type Wire = crate::wire::fake::FakeServer;
    const BLOCKING: bool = true;

    async fn sleep(duration: Duration) {
        match crate::wire::fake::clock::current() {
            Some(clock) => clock.advance(duration),
            None => std::thread::sleep(duration),
        }
    }

    fn now() -> std::time::Instant {
        crate::wire::fake::clock::current()
            .map_or_else(std::time::Instant::now, |clock| clock.now())
    }

    /// On the fake clock: the letter if one is there, else the clock moves on by `timeout`;
    /// on real time, as [`Blocking`].
    async fn receive<T: Send>(
        mailbox: &crate::mailbox::Mailbox<T>,
        timeout: Duration,
    ) -> Option<T> {
        match crate::wire::fake::clock::current() {
            Some(clock) => mailbox.take().or_else(|| {
                clock.advance(timeout);
                None
            }),
            None => mailbox.wait_blocking(timeout),
        }
    }
}

/// Runs a future on this thread to completion. The blocking flavour's futures complete on
/// their first poll: they are polled once with a no-op waker (nothing allocated); a future
/// that is still pending then is handed to `pollster`, which polls it again with a real one.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => pollster::block_on(future),
    }
}

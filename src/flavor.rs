//! Blocking or async: how a [`Client`](crate::Client) and its handles do their I/O.

use std::future::Future;
use std::time::Duration;

use crate::memcached::Transport;
use crate::wire::Backend;

mod sealed {
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

/// Runs a future on this thread to completion (the blocking flavour's futures complete on
/// their first poll).
pub(crate) use pollster::block_on;

//! memsem: distributed semaphores and mutexes on memcached.

mod client;
mod error;
mod janitor;
mod key;
mod memcached;
mod permit;
pub mod routing;
mod semaphore;
mod token;
mod wait;

pub use client::{Client, ClientBuilder};
pub use error::{Cause, Error, LostReason, Result};
pub use permit::Permit;
pub use routing::{Routing, ServerSpec};
pub use semaphore::{DEFAULT_TTL, Holder, MAX_INFO_BYTES, Semaphore};
pub use wait::{Delays, WaitPolicy};

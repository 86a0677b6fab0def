//! memsem: distributed semaphores and mutexes on memcached.

mod error;
pub mod routing;

pub use error::{Cause, Error, LostReason, Result};

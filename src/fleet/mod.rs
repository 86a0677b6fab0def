//! The fleet: the client's server set (connections per server, the routing table, the
//! namespace), the background clean-up, and a lock's key bound to its server.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::flavor::Flavor;
use crate::fleet::janitor::Janitor;
use crate::fleet::routing::{Ring, Routing};
use crate::wire::key::LockKey;
use crate::wire::transport::{Failure, Sweep, Transport};

pub(crate) mod janitor;
pub mod routing;

/// The lease settings a client gives its locks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leases {
    /// The longest TTL a lock may be taken or refreshed with.
    pub(crate) max_lease: Duration,
    /// How long a server that (re)started grants no lock; zero = off.
    pub(crate) lock_delay: Duration,
}

#[derive(Debug)]
/// The client's server set and what its locks share: connections (and the clean-up's), the
/// routing table, the namespace, the clean-up queue, the lease settings.
pub(crate) struct Fleet<F: Flavor> {
    pub(crate) backends: Vec<Arc<F::Wire>>,
    /// Blocking connections to the same servers, for the clean-up thread.
    pub(crate) cleanup: Vec<Arc<dyn Sweep>>,
    pub(crate) ring: Ring,
    pub(crate) routing: Routing,
    pub(crate) namespace: String,
    pub(crate) janitor: Janitor,
    pub(crate) leases: Leases,
    /// What the handles of one lock in this client share (a FIFO queue's local members).
    pub(crate) shared: Shared,
}

/// State shared by every handle of the same lock key in one client, whatever its type:
/// created by the first handle, dropped with the last.
#[derive(Debug, Default)]
pub(crate) struct Shared(
    std::sync::Mutex<std::collections::HashMap<Vec<u8>, std::sync::Weak<dyn Any + Send + Sync>>>,
);

impl Shared {
    /// The `T` of `key`, made by `make` when no live handle has one.
    pub(crate) fn get<T: Any + Send + Sync>(&self, key: &[u8], make: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(live) = map.get(key).and_then(std::sync::Weak::upgrade)
            && let Ok(found) = live.downcast::<T>()
        {
            return found;
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let made = Arc::new(make());
        let erased: Arc<dyn Any + Send + Sync> = made.clone();
        map.insert(key.to_vec(), Arc::downgrade(&erased));
        made
    }
}

impl<F: Flavor> Fleet<F> {
    pub(crate) fn leases(&self) -> Leases {
        self.leases
    }

    pub(crate) fn backends(&self) -> &[Arc<F::Wire>] {
        &self.backends
    }

    pub(crate) fn cleanup_backends(&self) -> &[Arc<dyn Sweep>] {
        &self.cleanup
    }

    pub(crate) fn janitor(&self) -> &Janitor {
        &self.janitor
    }
}

/// A lock's key, bound to the server that holds it. Shared by a semaphore and its permits.
#[derive(Debug)]
pub(crate) struct Target<F: Flavor> {
    pub(crate) fleet: Arc<Fleet<F>>,
    pub(crate) name: String,
    pub(crate) key: LockKey,
    pub(crate) backend: Arc<F::Wire>,
    /// A blocking connection to the same server, for the clean-up thread.
    pub(crate) cleanup: Arc<dyn Sweep>,
}

impl<F: Flavor> Target<F> {
    /// Gives a failure of this lock's server the lock's context.
    pub(crate) fn error(&self, operation: &'static str, failure: Failure) -> Error {
        let server = self.backend.address().to_string();
        match failure {
            Failure::Unavailable(source) => Error::Unavailable { server, source },
            Failure::Ambiguous(source) => Error::Ambiguous {
                server,
                operation,
                source,
            },
            Failure::Protocol(detail) => Error::Protocol { server, detail },
            Failure::Refused(reason) => Error::Refused { server, reason },
        }
    }

    pub(crate) fn janitor(&self) -> &Janitor {
        &self.fleet.janitor
    }

    pub(crate) fn leases(&self) -> Leases {
        self.fleet.leases
    }
}

//! Integration tests: one binary, every test against a real memcached.

mod ambiguous;
mod chaos;
mod cli;
mod fair;
mod faults;
mod fencing;
mod fleet;
mod harness;
mod hostile;
mod hygiene;
mod interop;
mod keepalive;
mod keyed;
mod lease_loss;
mod permits;
mod processes;
mod procs;
mod proxy;
mod quorum;
mod routing;
mod semaphore;
mod timeouts;
mod tokio_api;

//! Integration tests: one binary, every test against a real memcached.

mod ambiguous;
mod chaos;
mod cli;
mod faults;
mod fencing;
mod fleet;
mod guard;
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
mod refusals;
mod routing;
mod safety;
mod semaphore;
mod timeouts;
mod tokio_api;

//! Integration tests: one binary, every test against a real memcached.

mod ambiguous;
mod chaos;
mod cli;
mod faults;
mod fencing;
mod fleet;
mod fleet_kinds;
mod harness;
mod hostile;
mod hygiene;
mod interop;
mod keepalive;
mod keyed;
mod lease_loss;
mod nutcracker;
mod permits;
mod processes;
mod procs;
mod proxies;
mod proxy;
mod quorum;
mod routing;
mod safety;
mod semaphore;
mod timeouts;
mod tokio_api;

//! Integration tests: one binary, every test against a real memcached.

#[cfg(feature = "cli")]
mod cli;
mod faults;
mod fencing;
mod fleet;
mod harness;
mod interop;
mod keepalive;
mod keyed;
mod permits;
mod processes;
mod procs;
mod quorum;
mod routing;
mod semaphore;
#[cfg(feature = "tokio")]
mod tokio_api;

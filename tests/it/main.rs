//! Integration tests: one binary, every test against a real memcached.

#[cfg(feature = "cli")]
mod cli;
mod faults;
mod harness;
mod processes;
mod routing;
mod semaphore;

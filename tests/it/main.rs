//! Integration tests: one binary, every test against a real memcached.

mod cli;
mod faults;
mod harness;
mod processes;
mod routing;
mod semaphore;

//! Integration tests: one binary, every test against a real memcached.

mod faults;
mod harness;
mod interop;
mod processes;
mod procs;
mod routing;
mod semaphore;

//! Integration tests: one binary, every test against a real memcached.

mod harness;
mod semaphore;

//! Integration tests and benchmarks of memsem live in `it/` and `benches/`.

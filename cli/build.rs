//! Optionally links `memsem` as a position-dependent executable on Linux with glibc
//! (`MEMSEM_NO_PIE=1` when building).
//!
//! `memsem run` is paid for on every short job, and part of its start-up beyond a minimal
//! program is the dynamic loader relocating this executable: about 7 000 relative
//! relocations, and a copy-on-write fault for every page of `.data.rel.ro` and `.got` they
//! touch (about 11 of the ~190 page faults of `memsem run NAME -- true`). A fixed-address
//! executable has none, but its own image loses address randomisation. The default keeps
//! the PIE (the hardening distributions expect); builders who want the last tenth of a
//! millisecond can opt out.

fn main() {
    println!("cargo:rerun-if-env-changed=MEMSEM_NO_PIE");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let no_pie = std::env::var_os("MEMSEM_NO_PIE").is_some_and(|value| value != "0");
    if os == "linux" && env == "gnu" && no_pie {
        println!("cargo:rustc-link-arg-bin=memsem=-no-pie");
    }
}

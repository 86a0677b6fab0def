//! Links `memsem` as a position-dependent executable on Linux with glibc (`-no-pie`).
//!
//! `memsem run` is paid for on every short job, and most of its start-up beyond a minimal
//! program was the dynamic loader relocating this executable: about 7 000 relative
//! relocations, and a copy-on-write fault for every page of `.data.rel.ro` and `.got` they
//! touch (about 25 of the 200 page faults of `memsem run NAME -- true`). A fixed-address
//! executable has none: the linker resolves them. Shared libraries, the stack, the heap and
//! mmap stay randomised; only the executable's own image loses address randomisation, as Go
//! binaries do by default. Set `MEMSEM_PIE=1` when building to keep a PIE.

fn main() {
    println!("cargo:rerun-if-env-changed=MEMSEM_PIE");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let keep_pie = std::env::var_os("MEMSEM_PIE").is_some_and(|value| value != "0");
    if os == "linux" && env == "gnu" && !keep_pie {
        println!("cargo:rustc-link-arg-bin=memsem=-no-pie");
    }
}

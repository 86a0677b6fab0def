//! Scenario 5: what the `memsem` command costs a short job, next to `true` and `flock`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{Sizes, median_us};

/// The `memsem` binary of this build: cargo names it for benchmarks and tests (feature
/// `cli`, on by default); otherwise it sits next to `deps/`, where this executable is.
pub fn memsem_binary() -> Option<PathBuf> {
    let named = option_env!("CARGO_BIN_EXE_memsem").map(PathBuf::from);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("memsem")));
    named.into_iter().chain(beside).find(|path| path.is_file())
}

/// The std-only floor (tests/examples/floor_run.rs), built next to this benchmark by
/// `cargo build --release -p memsem-tests --examples`.
fn floor_binary() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join("floor_run")))
        .filter(|path| path.is_file())
}

/// The first `name` on the PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// Runs `command` once, to completion; its wall time.
fn run_once(program: &Path, args: &[&str]) -> std::time::Duration {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}): {}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    took
}

pub fn wall_time(address: &str, sizes: &Sizes) {
    let runs = sizes.cli_runs;
    println!("## 5. CLI: what a lock costs a short job (median wall time of {runs} runs, ms)\n");
    let Some(memsem) = memsem_binary() else {
        println!(
            "No `memsem` binary next to this benchmark: run `cargo build --release` first (the \
             binary needs the `cli` feature, on by default).\n"
        );
        return;
    };
    let Some(true_bin) = on_path("true") else {
        println!("No `true` on the PATH: skipped.\n");
        return;
    };
    let true_arg = true_bin.to_str().expect("a UTF-8 path");
    let scratch = std::env::temp_dir().join(format!("memsem-bench-{}.lock", std::process::id()));
    let lock_file = scratch.to_str().expect("a UTF-8 path");
    let flock = on_path("flock");
    let floor = floor_binary();

    type Case<'a> = (String, PathBuf, Vec<&'a str>);
    let mut cases: Vec<Case> = vec![
        (
            "memsem run NAME -- true".to_string(),
            memsem.clone(),
            // A memcached started by the benchmark: no lock-delay.
            vec![
                "--servers",
                address,
                "--lock-delay",
                "0",
                "run",
                "bench-cli",
                "--",
                true_arg,
            ],
        ),
        ("true".to_string(), true_bin.clone(), vec![]),
    ];
    if let Some(floor) = &floor {
        cases.push((
            "std-only floor: connect, add, spawn true, delete".to_string(),
            floor.clone(),
            vec![address, "bench-cli-floor", true_arg],
        ));
    }
    if let Some(flock) = &flock {
        cases.push((
            "flock LOCKFILE true".to_string(),
            flock.clone(),
            vec![lock_file, true_arg],
        ));
    }
    // Interleaved, so that a slow moment of the machine hits every command alike.
    let mut samples = vec![Vec::with_capacity(runs); cases.len()];
    for _ in 0..runs {
        for ((_, program, args), samples) in cases.iter().zip(&mut samples) {
            samples.push(run_once(program, args));
        }
    }
    let _ = std::fs::remove_file(&scratch);
    let medians: Vec<f64> = samples.into_iter().map(|s| median_us(s) / 1e3).collect();
    let true_ms = medians[1];
    let floor_ms = floor.as_ref().map(|_| medians[2]);
    println!("| command | ms (median) | − true, ms | × std-only floor |");
    println!("|---|---:|---:|---:|");
    for ((label, _, _), ms) in cases.iter().zip(&medians) {
        let ratio = floor_ms.map_or("".to_string(), |floor| format!("{:.2}", ms / floor));
        println!("| {label} | {ms:.2} | {:.2} | {ratio} |", ms - true_ms);
    }
    if floor.is_none() {
        println!(
            "| std-only floor | n/a: run `cargo build --release -p memsem-tests --examples` first | | |"
        );
    }
    if flock.is_none() {
        println!("| flock LOCKFILE true | n/a: no `flock` (util-linux) on the PATH | | |");
    }
    println!("\n`memsem`: {}\n", memsem.display());
}

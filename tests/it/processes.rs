//! Several OS processes contending for one lock.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Memcached, unique};

/// The path of an example binary built by `cargo test` (examples are built with the tests).
pub fn example(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let path = path.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (it builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

/// Runs an example to completion with `args`, fails the test with its output if it failed,
/// and returns what it printed on stdout (also printed, for `--nocapture`).
pub fn run_example(name: &str, args: &[&str]) -> String {
    let output = Command::new(example(name))
        .args(args)
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}");
    assert!(
        output.status.success(),
        "example {name} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn processes_incrementing_a_shared_counter_under_the_lock_lose_no_update() {
    let server = Memcached::start();
    let dir = std::env::temp_dir().join(unique("memsem-counter"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("count");
    let (processes, times) = (4, 200);
    let name = unique("counter");
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(example("counter"))
                .args([
                    &server.address(),
                    &name,
                    file.to_str().unwrap(),
                    &times.to_string(),
                    "2",
                ])
                .spawn()
                .expect("spawn counter")
        })
        .collect();
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "a counter process failed or saw an overlap: {status}"
        );
    }
    let count: u32 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        count,
        processes * times,
        "every increment under the lock survived"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn processes_sharing_n_permits_never_exceed_n_and_use_all_of_them() {
    let server = Memcached::start();
    let dir = std::env::temp_dir().join(unique("memsem-slots"));
    std::fs::create_dir_all(&dir).unwrap();
    let (processes, permits, times) = (5, 2, 30);
    let name = unique("slots");
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(example("slots"))
                .args([
                    &server.address(),
                    &name,
                    &permits.to_string(),
                    dir.to_str().unwrap(),
                    &times.to_string(),
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn slots worker")
        })
        .collect();
    let mut most = 0;
    for child in children {
        let output = child.wait_with_output().expect("slots worker ran");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: usize = stdout.trim().rsplit(' ').next().unwrap().parse().unwrap();
        most = most.max(seen);
    }
    println!(
        "{processes} processes x {times} acquisitions on {permits} permits: at most {most} inside at once"
    );
    assert!(
        most <= permits,
        "{most} processes inside with {permits} permits"
    );
    assert_eq!(most, permits, "all permits were usable");
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Several processes contend for one semaphore; each prints when it gets the lock, how long
//! it waited, and who held it meanwhile.
//!
//! ```text
//! cargo run --example demo                 # starts a local memcached by itself (and
//!                                          # installs it with apt-get when root)
//! MEMSEM_SERVERS=10.0.0.1:11211 cargo run --example demo
//! ```

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use memsem::{Client, WaitPolicy};

const WORKERS: usize = 4;
const ROUNDS: usize = 3;
const WORK: Duration = Duration::from_millis(300);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--worker") => worker(args.get(2).map(String::as_str).unwrap_or("?")),
        _ => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo: {error}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn parent() -> Result<()> {
    let mut server = None;
    let servers = match std::env::var("MEMSEM_SERVERS") {
        Ok(servers) => servers,
        Err(_) => {
            let (child, address) = start_memcached()?;
            server = Some(child);
            address
        }
    };
    println!("memsem demo: {WORKERS} processes, {ROUNDS} rounds each, on memcached {servers}");
    let exe = std::env::current_exe()?;
    let children: Vec<Child> = (1..=WORKERS)
        .map(|i| {
            let mut worker = Command::new(&exe);
            worker
                .args(["--worker", &i.to_string()])
                .env("MEMSEM_SERVERS", &servers);
            if server.is_some() {
                // The memcached started here holds no earlier locks: no restart lock-delay.
                worker.env("MEMSEM_LOCK_DELAY", "0");
            }
            worker.spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut failed = 0;
    for mut child in children {
        failed += usize::from(!child.wait()?.success());
    }
    if let Some(mut server) = server {
        let _ = server.kill();
        let _ = server.wait();
    }
    if failed > 0 {
        return Err(format!("{failed} worker(s) failed").into());
    }
    println!("done: every round ran alone.");
    Ok(())
}

fn worker(id: &str) -> Result<()> {
    let client = Client::from_env()?;
    let sem = client
        .semaphore("memsem-demo")?
        .with_ttl(Duration::from_secs(10))?
        .with_info(&format!("worker {id} (pid {})", std::process::id()))?
        .with_wait_policy(
            WaitPolicy::new()
                .poll_time(Duration::from_millis(50))
                .max_wait(Duration::from_secs(60)),
        );
    for round in 1..=ROUNDS {
        let holder = sem.holder()?.and_then(|h| h.info().map(str::to_string));
        let started = Instant::now();
        let permit = sem.wait_acquire()?;
        let waited = started.elapsed();
        let before = holder
            .map(|h| format!(" ({h} held it when it asked)"))
            .unwrap_or_default();
        println!("worker {id} round {round}: holds the lock after waiting {waited:.0?}{before}");
        std::thread::sleep(WORK); // the work that must not run twice at once
        permit.release()?;
        std::thread::sleep(WORK / 2); // work outside the lock: the others get their turn
    }
    Ok(())
}

/// Starts memcached on a free loopback port and waits until it answers; installs it first
/// when it is missing and this process may (root, with apt-get).
fn start_memcached() -> Result<(Child, String)> {
    let program = match find_program("memcached") {
        Some(program) => program,
        None => install_memcached()?,
    };
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address = format!("127.0.0.1:{port}");
    println!(
        "memsem demo: MEMSEM_SERVERS is unset; starting {} on {address}",
        program.display()
    );
    let mut command = Command::new(&program);
    command.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]);
    if is_root() {
        command.args(["-u", "root"]);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    // This memcached was just started here and holds no earlier locks: no lock-delay.
    let client = Client::builder()
        .servers(&address)
        .lock_delay(Duration::ZERO)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.ping().iter().any(|(_, answer)| answer.is_err()) {
        if Instant::now() > deadline {
            return Err("memcached did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, address))
}

/// Installs Debian's memcached package when this process is root and has apt-get, saying
/// what it runs; otherwise explains how to get a server.
fn install_memcached() -> Result<PathBuf> {
    let how = "install memcached (Debian/Ubuntu: `sudo apt-get install memcached`, \
               Fedora: `sudo dnf install memcached`, macOS: `brew install memcached`) \
               or point MEMSEM_SERVERS at a running server (host:port)";
    if !is_root() || find_program("apt-get").is_none() {
        return Err(format!("memcached was not found in PATH: {how}").into());
    }
    println!("memsem demo: memcached is not installed; installing it with apt-get:");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "memcached"][..],
    ] {
        println!("  apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !status.success() {
            return Err(format!("`apt-get {}` failed ({status}): {how}", args.join(" ")).into());
        }
    }
    find_program("memcached")
        .ok_or_else(|| format!("memcached is still not in PATH after apt-get: {how}").into())
}

/// The first file called `name` in PATH (and the sbin directories, where some
/// systems put daemons).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|file| file.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

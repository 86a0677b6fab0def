//! The worker process of the chaos test (tests/it/chaos.rs). Two modes:
//!
//! ```text
//! cargo run --example chaos -- loop SERVERS NAMES LOG UNTIL_MS TTL_SECS
//! cargo run --example chaos -- hold SERVERS NAME TTL_SECS
//! ```
//!
//! `loop` takes one of the comma-separated NAMES at random, acquires it (with fencing),
//! stays in the critical section for a few milliseconds (sometimes about a second,
//! refreshing the lease), then releases it, until the Unix time UNTIL_MS. Every step is one
//! line appended to LOG: `enter NAME TOKEN FENCE PID T SENT` (SENT: when the winning add was sent), `refresh NAME TOKEN PID T OUTCOME`,
//! `exit NAME TOKEN PID T`, `release NAME TOKEN PID T OUTCOME`, `timeout NAME PID T`,
//! `error NAME PID T KIND` (T in Unix nanoseconds). A careful holder leaves the critical
//! section as soon as a refresh reports the lock lost, or when its known lease is nearly over.
//!
//! `hold` acquires NAME, prints `held TOKEN` and sleeps until killed. `queue SERVERS NAME`
//! waits for NAME in FIFO mode (it draws a ticket while somebody holds it), then does the
//! same.
//!
//! `MEMSEM_FAIRNESS=fifo` makes `loop` wait in FIFO mode ([`memsem::Fairness::Fifo`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memsem::{Client, Error, Fairness, Permit, WaitPolicy};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("loop") if args.len() == 6 => run_loop(&args[1..]),
        Some("hold") if args.len() == 4 => hold(&args[1..]),
        Some("queue") if args.len() == 3 => queue(&args[1..]),
        _ => {
            eprintln!(
                "usage: chaos loop SERVERS NAMES LOG UNTIL_MS TTL_SECS | hold SERVERS NAME TTL_SECS \
                 | queue SERVERS NAME"
            );
            return ExitCode::from(64);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chaos: {error}");
            ExitCode::from(1)
        }
    }
}

type Failure = Box<dyn std::error::Error>;

/// The client of a worker. The lock-delay comes from `MEMSEM_LOCK_DELAY_MS` (the driver sets
/// it; default 0: the servers were just started by the test).
fn client(servers: &str) -> Result<Client, Error> {
    let delay_ms = std::env::var("MEMSEM_LOCK_DELAY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    Client::builder()
        .servers(servers)
        .lock_delay(Duration::from_millis(delay_ms))
        .io_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .build()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos())
}

fn kind(error: &Error) -> &'static str {
    match error {
        Error::LockLost { .. } => "lost",
        Error::Unavailable { .. } => "unavailable",
        Error::Ambiguous { .. } => "ambiguous",
        Error::Timeout { .. } => "timeout",
        Error::Protocol { .. } => "protocol",
        Error::LockDelay { .. } => "lock-delay",
        Error::Refused {
            reason: memsem::Refusal::TlsMismatch,
            ..
        } => "refused-tls",
        Error::Refused {
            reason: memsem::Refusal::NoMetaProtocol,
            ..
        } => "refused-meta",
        Error::Refused { .. } => "refused",
        _ => "other",
    }
}

fn run_loop(args: &[String]) -> Result<(), Failure> {
    let (servers, names, log) = (&args[0], &args[1], &args[2]);
    let until = UNIX_EPOCH + Duration::from_millis(args[3].parse()?);
    let ttl = Duration::from_secs(args[4].parse()?);
    let names: Vec<&str> = names.split(',').collect();
    let pid = std::process::id();
    let client = client(servers)?;
    let mut log = OpenOptions::new().create(true).append(true).open(log)?;
    // One write per record, so a SIGKILL never leaves half a line behind another one.
    let mut record = |line: String| log.write_all(format!("{line}\n").as_bytes());
    let policy = WaitPolicy::new()
        .poll_time(Duration::from_millis(10))
        .max_wait(Duration::from_secs(3));
    while SystemTime::now() < until {
        let name = names[rand::random_range(0..names.len())];
        let sem = client
            .semaphore(name)?
            .with_ttl(ttl)?
            .with_fencing()?
            .with_fairness(fairness())?
            .with_wait_policy(policy.clone());
        let mut permit = match sem.wait_acquire() {
            Ok(permit) => permit,
            Err(Error::Timeout { .. }) => {
                record(format!("timeout {name} {pid} {}", now_ns()))?;
                continue;
            }
            Err(error) => {
                record(format!("error {name} {pid} {} {}", now_ns(), kind(&error)))?;
                continue;
            }
        };
        let token = permit.token().to_string();
        let fence = permit.fence().unwrap_or(0);
        // When the winning add was sent, by the wall clock.
        let now = now_ns();
        let granted = now.saturating_sub(permit.acquired_at().elapsed().as_nanos());
        record(format!(
            "enter {name} {token} {fence} {pid} {now} {granted}"
        ))?;
        critical_section(&mut permit, ttl, |outcome| {
            record(format!(
                "refresh {name} {token} {pid} {} {outcome}",
                now_ns()
            ))
        })?;
        record(format!("exit {name} {token} {pid} {}", now_ns()))?;
        // After a lost refresh the release is still tried: it must say "lost" too.
        let outcome = match permit.release() {
            Ok(()) => "ok",
            Err(error) => kind(&error),
        };
        record(format!(
            "release {name} {token} {pid} {} {outcome}",
            now_ns()
        ))?;
    }
    Ok(())
}

/// Simulated work: mostly a few milliseconds, one time in ten about a second with a refresh
/// every 200 ms. Leaves early when a refresh finds the lock lost.
fn critical_section(
    permit: &mut Permit,
    ttl: Duration,
    mut record: impl FnMut(&'static str) -> std::io::Result<()>,
) -> Result<(), Failure> {
    if rand::random_range(0..10) > 0 {
        std::thread::sleep(Duration::from_millis(rand::random_range(1..6)));
        return Ok(());
    }
    let work = Duration::from_millis(rand::random_range(600..1200));
    let started = Instant::now();
    // The lease margin (memcached's whole seconds, clock drift), and half a second for a
    // step of this loop (a sleep and a refresh that may wait for a frozen server).
    let margin = memsem::lease_margin(ttl) + Duration::from_millis(500);
    while started.elapsed() < work {
        std::thread::sleep(Duration::from_millis(200));
        match permit.refresh(ttl) {
            Ok(()) => record("ok")?,
            Err(error) if error.is_lock_lost() => {
                record("lost")?;
                return Ok(());
            }
            Err(error) => record(kind(&error))?,
        }
        let left = permit.expires_at().map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        });
        if left < margin {
            record("expiring")?;
            break;
        }
    }
    Ok(())
}

/// The fairness `MEMSEM_FAIRNESS` asks for (`fifo`; anything else: polling).
fn fairness() -> Fairness {
    match std::env::var("MEMSEM_FAIRNESS").as_deref() {
        Ok("fifo") => Fairness::Fifo,
        _ => Fairness::Polling,
    }
}

fn queue(args: &[String]) -> Result<(), Failure> {
    let (servers, name) = (&args[0], &args[1]);
    let sem = client(servers)?
        .semaphore(name)?
        .with_fairness(Fairness::Fifo)?
        .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(60)));
    let permit = sem.wait_acquire()?;
    println!("held {}", permit.token());
    std::io::stdout().flush()?;
    let _token = permit.forget();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn hold(args: &[String]) -> Result<(), Failure> {
    let (servers, name) = (&args[0], &args[1]);
    let ttl = Duration::from_secs(args[2].parse()?);
    let sem = client(servers)?.semaphore(name)?.with_ttl(ttl)?;
    let permit = sem
        .try_acquire()?
        .ok_or("the lock is already held by somebody else")?;
    println!("held {}", permit.token());
    std::io::stdout().flush()?;
    let _token = permit.forget();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

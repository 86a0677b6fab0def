//! A worker for the N-permit test: takes one of PERMITS slots, records how many processes
//! are inside at once (one marker file each in DIR), and prints the most it saw.
//!
//! ```text
//! cargo run --example slots -- SERVERS NAME PERMITS DIR TIMES
//! ```

use std::time::Duration;

use memsem::{Client, WaitPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [servers, name, permits, dir, times] = args.as_slice() else {
        return Err("usage: slots SERVERS NAME PERMITS DIR TIMES".into());
    };
    // A memcached the test just started: no lock-delay (it holds no earlier locks).
    let sem = Client::builder()
        .servers(servers)
        .lock_delay(Duration::ZERO)
        .build()?
        .semaphore(name)?
        .with_permits(permits.parse()?)?
        .with_wait_policy(
            WaitPolicy::new()
                .poll_time(Duration::from_millis(3))
                .max_wait(Duration::from_secs(120)),
        );
    let marker = std::path::Path::new(dir).join(std::process::id().to_string());
    let mut most = 0;
    for _ in 0..times.parse::<u32>()? {
        let permit = sem.wait_acquire()?;
        std::fs::write(&marker, b"")?;
        most = most.max(std::fs::read_dir(dir)?.count());
        std::thread::sleep(Duration::from_millis(3)); // the work
        std::fs::remove_file(&marker)?;
        permit.release()?;
    }
    println!("most inside at once: {most}");
    Ok(())
}

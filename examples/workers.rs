//! A pool of N slots across machines (IPC::ConcurrencyLimit on memcached): each worker takes
//! a slot, keeps its lease alive while it works, writes with its fencing token, and an
//! operator can list the holders and clear stale ones.
//!
//! ```text
//! cargo run --example workers -- 127.0.0.1:11211
//! ```

use std::time::Duration;

use memsem::{Client, WaitPolicy};

fn main() -> Result<(), memsem::Error> {
    let servers = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11211".into());
    let client = Client::connect(&servers)?;
    let encoders = client
        .semaphore(&format!("encoders-{}", std::process::id()))?
        .with_permits(3)?
        .with_ttl(Duration::from_secs(5))?
        .with_fencing()?
        .with_wait_policy(
            WaitPolicy::new()
                .poll_time(Duration::from_millis(20))
                .max_wait(Duration::from_secs(30)),
        );

    let workers: Vec<_> = (1..=5)
        .map(|id| {
            let encoders = encoders.clone().with_info(&format!("worker {id}"));
            std::thread::spawn(move || -> Result<(), memsem::Error> {
                let encoders = encoders?;
                let permit = encoders.wait_acquire()?;
                let (slot, fence) = (permit.slot(), permit.fence().unwrap_or(0));
                println!("worker {id}: slot {slot}, fencing token {fence}");
                let held = permit.keep_alive(); // refreshed every TTL/3 while we work
                std::thread::sleep(Duration::from_millis(300));
                if held.is_lost() {
                    eprintln!("worker {id}: lost the slot, stopping");
                }
                held.release()
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(100));
    for holder in encoders.holders()? {
        println!(
            "  slot {} held by {} on {} (pid {}), {:?} left",
            holder.slot(),
            holder.info().unwrap_or("?"),
            holder.host().unwrap_or("?"),
            holder.pid().unwrap_or(0),
            holder.ttl().unwrap_or_default()
        );
    }
    for worker in workers {
        worker.join().expect("worker thread")?;
    }
    let reaped = encoders.reap_stale(Duration::from_secs(3600))?;
    println!("all done; {reaped} stale holders cleared");
    Ok(())
}

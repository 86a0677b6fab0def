//! A cache stampede stopped by the keyed mutex: 50 concurrent readers of a cold key cause
//! exactly one backend fetch. The others wait for it and read the cache.
//!
//! ```text
//! cargo run --example stampede -- 127.0.0.1:11211
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use memcache::exp::{MetaClient, Ttl};
use memsem::{Client, LockOrWait, WaitPolicy};

const READERS: usize = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let servers = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11211".into());
    // The application's own cache client; memsem only guards the recomputation.
    let cache = MetaClient::connect(servers.as_str())?;
    let key = format!("report:{}", std::process::id());
    // A stampede guard needs no lock-delay: two fetches after a memcached restart cost a
    // duplicate fetch, while the delay would stop every fetch for minutes.
    let guard = Client::builder()
        .servers(&servers)
        .lock_delay(Duration::ZERO)
        .build()?
        .semaphore(&key)?
        .with_ttl(Duration::from_secs(10))?
        .with_wait_policy(
            WaitPolicy::new()
                .poll_time(Duration::from_millis(20))
                .max_wait(Duration::from_secs(10)),
        );
    let fetches = Arc::new(AtomicU32::new(0));
    let start = Arc::new(Barrier::new(READERS));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (cache, guard, key, fetches, start) = (
                cache.clone(),
                guard.clone(),
                key.clone(),
                Arc::clone(&fetches),
                Arc::clone(&start),
            );
            std::thread::spawn(move || -> Result<String, memsem::Error> {
                start.wait(); // everybody misses at once
                loop {
                    let hit = cache.get(&key).send().ok().and_then(|r| r.value);
                    if let Some(value) = hit {
                        return Ok(String::from_utf8_lossy(&value).into_owned());
                    }
                    match guard.lock_or_wait()? {
                        LockOrWait::Acquired(permit) => {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200)); // the expensive query
                            let value = "the quarterly report".to_string();
                            let _ = cache.set(&key, &value).ttl(Ttl::secs(60)).send();
                            permit.release()?;
                            return Ok(value);
                        }
                        LockOrWait::Released => continue, // the holder filled the cache
                    }
                }
            })
        })
        .collect();
    let mut served = 0;
    for reader in readers {
        if reader.join().map_err(|_| "a reader panicked")?? == "the quarterly report" {
            served += 1;
        }
    }
    let fetches = fetches.load(Ordering::SeqCst);
    println!(
        "{READERS} concurrent readers of a cold key: {served} served, backend fetches: {fetches}"
    );
    if fetches != 1 {
        return Err(format!("expected exactly one backend fetch, saw {fetches}").into());
    }
    Ok(())
}

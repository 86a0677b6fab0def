//! The cache stampede, async: 200 concurrent tasks read a cold key; the keyed mutex lets one
//! fetch from the backend while the others wait for it and read the cache.
//!
//! ```text
//! cargo run --features tokio --example tokio_stampede -- 127.0.0.1:11211
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use memcache::exp::{AsyncMetaClient, Ttl};
use memsem::{Client, LockOrWait, WaitPolicy};

const TASKS: usize = 200;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let servers = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11211".into());
    let cache = AsyncMetaClient::connect(servers.as_str()).await?;
    let key = format!("report:async:{}", std::process::id());
    // A stampede guard needs no lock-delay: two fetches after a memcached restart cost a
    // duplicate fetch, while the delay would stop every fetch for minutes.
    let guard = Client::builder()
        .lock_delay(Duration::ZERO)
        .servers(&servers)
        .build_async()
        .await?
        .semaphore(&key)?
        .with_ttl(Duration::from_secs(10))?
        .with_wait_policy(
            WaitPolicy::new()
                .poll_time(Duration::from_millis(20))
                .max_wait(Duration::from_secs(10)),
        );
    let fetches = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (cache, guard, key, fetches, barrier) = (
                cache.clone(),
                guard.clone(),
                key.clone(),
                Arc::clone(&fetches),
                Arc::clone(&barrier),
            );
            tokio::spawn(async move {
                barrier.wait().await; // everybody misses at once
                loop {
                    if let Some(value) = cache.get(&key).send().await.ok().and_then(|r| r.value) {
                        return Ok::<_, memsem::Error>(value);
                    }
                    match guard.lock_or_wait().await? {
                        LockOrWait::Acquired(permit) => {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await; // the query
                            let value = b"the quarterly report".to_vec();
                            let _ = cache.set(&key, &value).ttl(Ttl::secs(60)).send().await;
                            permit.release().await?;
                            return Ok(value);
                        }
                        LockOrWait::Released => continue,
                    }
                }
            })
        })
        .collect();
    let mut served = 0;
    for task in tasks {
        if task.await?? == b"the quarterly report" {
            served += 1;
        }
    }
    let fetches = fetches.load(Ordering::SeqCst);
    println!(
        "{TASKS} concurrent tasks reading a cold key: {served} served, backend fetches: {fetches}"
    );
    if fetches != 1 {
        return Err(format!("expected exactly one backend fetch, saw {fetches}").into());
    }
    Ok(())
}

//! The cache stampede, async: 200 concurrent tasks read a cold key; the keyed mutex lets one
//! fetch from the backend while the others wait for it and read the cache.
//!
//! ```text
//! cargo run --features tokio --example tokio_stampede -- 127.0.0.1:11211
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use memsem::{Client, LockOrWait, WaitPolicy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TASKS: usize = 200;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let servers = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11211".into());
    // The application's own cache (a bare classic get/set here); memsem only guards the
    // recomputation.
    let cache = servers.split(',').next().unwrap_or_default().to_string();
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
                    if let Some(value) = cache_get(&cache, &key).await.ok().flatten() {
                        return Ok::<_, memsem::Error>(value);
                    }
                    match guard.lock_or_wait().await? {
                        LockOrWait::Acquired(permit) => {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await; // the query
                            let value = b"the quarterly report".to_vec();
                            let _ = cache_set(&cache, &key, &value, 60).await;
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

/// `get <key>` on a new connection: the cached value, if any.
async fn cache_get(server: &str, key: &str) -> std::io::Result<Option<Vec<u8>>> {
    let mut stream = TcpStream::connect(server).await?;
    stream
        .write_all(format!("get {key}\r\n").as_bytes())
        .await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    // VALUE <key> <flags> <bytes>, the data, END; or just END.
    let Some(length) = line.split_whitespace().nth(3) else {
        return Ok(None);
    };
    let length: usize = length.parse().map_err(std::io::Error::other)?;
    let mut data = vec![0; length + 2];
    reader.read_exact(&mut data).await?;
    data.truncate(length);
    Ok(Some(data))
}

/// `set <key>` on a new connection.
async fn cache_set(server: &str, key: &str, value: &[u8], ttl: u32) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(server).await?;
    let head = format!("set {key} 0 {ttl} {}\r\n", value.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(value).await?;
    stream.write_all(b"\r\n").await?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await?;
    Ok(())
}

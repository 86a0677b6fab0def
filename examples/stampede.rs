//! A cache stampede stopped by the keyed mutex: 50 concurrent readers of a cold key cause
//! exactly one backend fetch. The others wait for it and read the cache.
//!
//! ```text
//! cargo run --example stampede -- 127.0.0.1:11211
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use memsem::{Client, LockOrWait, WaitPolicy};

const READERS: usize = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let servers = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11211".into());
    // The application's own cache (a bare classic get/set here); memsem only guards the
    // recomputation.
    let cache = servers.split(',').next().unwrap_or_default().to_string();
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
                    let hit = cache_get(&cache, &key).ok().flatten();
                    if let Some(value) = hit {
                        return Ok(value);
                    }
                    match guard.lock_or_wait()? {
                        LockOrWait::Acquired(permit) => {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200)); // the expensive query
                            let value = "the quarterly report".to_string();
                            let _ = cache_set(&cache, &key, &value, 60);
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

/// `get <key>` on a new connection: the cached value, if any.
fn cache_get(server: &str, key: &str) -> std::io::Result<Option<String>> {
    let mut stream = TcpStream::connect(server)?;
    stream.write_all(format!("get {key}\r\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // VALUE <key> <flags> <bytes>, the data, END; or just END.
    let Some(length) = line.split_whitespace().nth(3) else {
        return Ok(None);
    };
    let length: usize = length.parse().map_err(std::io::Error::other)?;
    let mut data = vec![0; length + 2];
    reader.read_exact(&mut data)?;
    data.truncate(length);
    Ok(Some(String::from_utf8_lossy(&data).into_owned()))
}

/// `set <key>` on a new connection.
fn cache_set(server: &str, key: &str, value: &str, ttl: u32) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(server)?;
    let request = format!("set {key} 0 {ttl} {}\r\n{value}\r\n", value.len());
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(())
}

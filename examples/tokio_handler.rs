//! A tokio service whose request handler guards a critical section across machines: while
//! one task waits for the lock, the runtime keeps serving the others.
//!
//! ```text
//! cargo run --features tokio --example tokio_handler -- 127.0.0.1:11211
//! ```

use std::time::Duration;

use memsem::{Client, Error, Tokio, WaitPolicy};

/// A handler: regenerate the sitemap unless another machine is already at it.
async fn regenerate_sitemap(client: &Client<Tokio>, request: u32) -> Result<String, Error> {
    let sem = client
        .semaphore("sitemap")?
        .with_ttl(Duration::from_secs(30))?
        .with_wait_policy(
            WaitPolicy::new()
                .poll_time(Duration::from_millis(20))
                .max_wait(Duration::from_secs(5)),
        );
    let permit = sem.wait_acquire().await?;
    tokio::time::sleep(Duration::from_millis(50)).await; // the work, other tasks run meanwhile
    permit.release().await?;
    Ok(format!("request {request}: sitemap regenerated"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let servers = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11211".into());
    let client = Client::builder().servers(&servers).build_async().await?;
    let requests: Vec<_> = (1..=5)
        .map(|request| {
            let client = client.clone();
            tokio::spawn(async move { regenerate_sitemap(&client, request).await })
        })
        .collect();
    for request in requests {
        match request.await {
            Ok(Ok(line)) => println!("{line}"),
            Ok(Err(error)) => println!("failed: {error}"),
            Err(error) => println!("task failed: {error}"),
        }
    }
    Ok(())
}

//! A lock that survives losing a minority of memcached servers (Redlock).
//!
//! ```text
//! cargo run --example quorum -- 10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211
//! ```

use std::time::Duration;

fn main() -> Result<(), memsem::Error> {
    let servers = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11211".into());
    let client = memsem::Client::connect(&servers)?;
    let lock = client
        .quorum_lock("ledger-close")?
        .with_ttl(Duration::from_secs(10))?;
    match lock.try_acquire()? {
        Some(mut permit) => {
            println!(
                "held on {} of {} servers, valid for {:?}",
                permit.votes(),
                lock.voters(),
                permit.validity()
            );
            permit.refresh(Duration::from_secs(10))?;
            permit.release()?;
        }
        None => println!("somebody else holds a majority"),
    }
    Ok(())
}

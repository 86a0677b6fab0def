//! `memsem serve keyedmutexd`: KeyedMutex 0.06's daemon protocol, locks on the fleet.
//!
//! Per connection, one lock at a time: the client sends the 16 raw bytes of its key's MD5
//! digest; the gateway answers one byte, `O` when this client now owns the lock, or `R` when
//! another client held it and has let go meanwhile (the client then reads its cache instead
//! of computing). The owner sends `R` to release, or closes the connection. Then the next
//! 16 bytes may follow on the same connection.
//!
//! # On the fleet
//!
//! The digest's 32 lowercase hex characters are the memsem lock name: the lock of the Perl
//! key `"page:/home"` is the memsem lock `md5_hex("page:/home")`, so library users contend
//! for it with `client.semaphore(&md5_hex(key))` (or `Semaphore::lock_or_wait`), and every
//! gateway over the same servers (same routing and namespace) agrees with them. An owner's
//! lease (`--ttl`) is refreshed while its connection is open (every TTL/3); if the gateway
//! dies, the lock ends with its TTL. A waiter polls the holder record every `--poll` and
//! answers `R` as soon as the holder it first saw is gone (released, expired or replaced).
//!
//! Failure answers: bad input (a short key then close, a byte other than `R` while holding)
//! and an unreachable fleet close the connection — KeyedMutex's client reports an error —
//! and release whatever the connection held. Nothing is ever answered `O` without the lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use memsem::{AsyncKeepAlive, Client, Holder, Permit, Semaphore, Tokio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Conn, Gateway, ServeOptions, Shutdown, seconds};

pub const HELP: &str = "\
Every lock is the memsem lock named by the lowercase hex of the key's MD5 digest: library
users and other gateways over the same servers contend for the same locks. Example:
  memsem --servers mc1:11211,mc2:11211 serve keyedmutexd --socket /tmp/keyedmutexd.sock";

/// `memsem serve keyedmutexd` options.
#[derive(Debug, Args)]
pub struct KeyedArgs {
    /// Unix socket to listen on (KeyedMutex's default)
    #[arg(long, default_value = "/tmp/keyedmutexd.sock", value_name = "PATH")]
    pub socket: PathBuf,

    /// Listen on TCP `host:port` instead of the unix socket
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "socket")]
    pub listen: Option<String>,

    /// Lease of a held lock, refreshed while its client is connected; ends it if the gateway dies
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = seconds)]
    pub ttl: Duration,

    /// How often a waiter looks whether the holder let go
    #[arg(long, default_value = "10ms", value_name = "DURATION", value_parser = seconds)]
    pub poll: Duration,

    #[command(flatten)]
    pub options: ServeOptions,
}

/// Per-gateway settings every connection reads.
struct Settings {
    ttl: Duration,
    poll: Duration,
}

/// Runs the gateway; the exit status.
pub async fn serve(client: Client<Tokio>, args: KeyedArgs) -> u8 {
    if let Err(error) = client
        .semaphore("keyedmutexd")
        .and_then(|sem| sem.with_ttl(args.ttl))
    {
        return crate::exit::report(&error);
    }
    let listener = match &args.listen {
        Some(address) => super::bind_tcp(address).await,
        None => super::bind_unix(&args.socket),
    };
    let listener = match listener {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("memsem serve keyedmutexd: cannot listen: {error}");
            return crate::exit::UNAVAILABLE;
        }
    };
    let gateway = Arc::new(Gateway {
        client,
        options: args.options,
        name: "keyedmutexd",
        stop: tokio::sync::watch::channel(false).0,
    });
    let settings = Arc::new(Settings {
        ttl: args.ttl,
        poll: args.poll,
    });
    super::accept_loop(listener, gateway, move |conn, peer, gateway, shutdown| {
        connection(conn, peer, gateway, Arc::clone(&settings), shutdown)
    })
    .await
}

/// The lock name of a key digest: its lowercase hex.
pub fn lock_name(digest: &[u8; 16]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Serves one connection: keys one after the other, one lock at a time.
async fn connection(
    mut conn: Box<dyn Conn>,
    peer: String,
    gateway: Arc<Gateway>,
    settings: Arc<Settings>,
    mut shutdown: Shutdown,
) {
    while let Some(digest) = next_key(&mut conn, &peer, &gateway, &mut shutdown).await {
        let name = lock_name(&digest);
        let sem = match gateway.client.semaphore(&name) {
            Ok(sem) => sem.with_ttl(settings.ttl),
            Err(error) => Err(error),
        };
        let got = match sem {
            Ok(sem) => lock_or_wait(&sem, &mut conn, &gateway, &settings, &mut shutdown).await,
            Err(error) => Err(error),
        };
        let keep_going = match got {
            Ok(Got::Owned(permit)) => {
                gateway.event(format_args!("{peer} {name} owned"));
                let held = permit.keep_alive();
                match conn.write_all(b"O").await {
                    Ok(()) => hold(&mut conn, held, &peer, &name, &gateway, &mut shutdown).await,
                    Err(_) => {
                        release(held, &peer, &name, &gateway).await;
                        false
                    }
                }
            }
            Ok(Got::Released) => {
                gateway.event(format_args!("{peer} {name} released by another"));
                conn.write_all(b"R").await.is_ok()
            }
            Ok(Got::Gone) => false,
            Err(error) => {
                gateway.warn(format_args!("{peer} {name}: closed, fleet error: {error}"));
                false
            }
        };
        if !keep_going {
            return;
        }
    }
}

/// Reads the next 16-byte key; `None` when the client closes, is idle too long, sends a
/// short key, or the gateway stops.
async fn next_key(
    conn: &mut Box<dyn Conn>,
    peer: &str,
    gateway: &Gateway,
    shutdown: &mut Shutdown,
) -> Option<[u8; 16]> {
    let mut digest = [0u8; 16];
    let mut filled = 0;
    let deadline = tokio::time::Instant::now() + gateway.options.idle_timeout;
    while filled < digest.len() {
        tokio::select! {
            read = conn.read(&mut digest[filled..]) => match read {
                Ok(0) if filled == 0 => return None,
                Ok(0) => {
                    gateway.warn(format_args!("{peer}: short key ({filled} of 16 bytes), closed"));
                    return None;
                }
                Ok(read) => filled += read,
                Err(error) => {
                    gateway.warn(format_args!("{peer}: read failed: {error}"));
                    return None;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                gateway.event(format_args!("{peer}: idle, closed"));
                return None;
            }
            _ = shutdown.begun() => return None,
        }
    }
    Some(digest)
}

/// What a connection got for its key.
enum Got {
    Owned(Permit<Tokio>),
    Released,
    /// The client left (or sent bytes) while waiting, or the gateway stops.
    Gone,
}

/// Takes the lock, or waits until the holder first seen lets go (KeyedMutex's semantics,
/// as `Semaphore::lock_or_wait`), watching the client and the shutdown meanwhile.
async fn lock_or_wait(
    sem: &Semaphore<Tokio>,
    conn: &mut Box<dyn Conn>,
    gateway: &Gateway,
    settings: &Settings,
    shutdown: &mut Shutdown,
) -> Result<Got, memsem::Error> {
    if let Some(permit) = sem.try_acquire().await? {
        return Ok(Got::Owned(permit));
    }
    let Some(first) = sem.holder().await? else {
        return Ok(Got::Released);
    };
    gateway.event(format_args!("{} waiting", sem.name()));
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.poll) => {}
            read = conn.read(&mut byte) => {
                if !matches!(read, Ok(0)) {
                    gateway.warn(format_args!("{}: bytes sent while waiting, closed", sem.name()));
                }
                return Ok(Got::Gone);
            }
            _ = shutdown.begun() => return Ok(Got::Gone),
        }
        match sem.holder().await? {
            Some(now) if same_holder(&now, &first) => {}
            _ => return Ok(Got::Released),
        }
    }
}

/// Whether two reads show the same holding (not a later holder of the same lock).
fn same_holder(a: &Holder, b: &Holder) -> bool {
    a.slot() == b.slot()
        && a.token_prefix() == b.token_prefix()
        && a.acquired_at() == b.acquired_at()
}

/// Keeps the lock until the client sends `R` or closes (or the gateway stops); releases
/// it. Whether the connection may go on with another key.
async fn hold(
    conn: &mut Box<dyn Conn>,
    held: AsyncKeepAlive,
    peer: &str,
    name: &str,
    gateway: &Gateway,
    shutdown: &mut Shutdown,
) -> bool {
    let mut byte = [0u8; 1];
    let since = Instant::now();
    let keep_going = tokio::select! {
        read = conn.read(&mut byte) => match read {
            Ok(1) if byte[0] == b'R' => {
                conn.ack_now();
                true
            }
            Ok(0) => {
                gateway.event(format_args!("{peer} {name} closed while holding"));
                false
            }
            Ok(_) => {
                gateway.warn(format_args!("{peer} {name}: byte {:#04x} instead of R, closed", byte[0]));
                false
            }
            Err(error) => {
                gateway.warn(format_args!("{peer} {name}: read failed: {error}"));
                false
            }
        },
        _ = held.lost() => {
            gateway.warn(format_args!(
                "{peer} {name}: lease lost after {} ({}), closed",
                crate::show::human(since.elapsed()),
                held.lost_reason().map(|why| why.to_string()).unwrap_or_default()
            ));
            return false;
        }
        _ = shutdown.begun() => false,
    };
    release(held, peer, name, gateway).await && keep_going
}

/// Gives the lock back; whether that worked.
async fn release(held: AsyncKeepAlive, peer: &str, name: &str, gateway: &Gateway) -> bool {
    match held.release().await {
        Ok(()) => {
            gateway.event(format_args!("{peer} {name} released"));
            true
        }
        Err(error) => {
            gateway.warn(format_args!("{peer} {name}: release failed: {error}"));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_name_is_the_lowercase_hex_digest() {
        let digest = [
            0x00, 0x01, 0xab, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0,
            0xb0, 0xc0,
        ];
        assert_eq!(lock_name(&digest), "0001abff102030405060708090a0b0c0");
    }
}

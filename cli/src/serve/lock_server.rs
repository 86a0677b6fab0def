//! `memsem serve lock-server`: Lock::Server 1.75's protocol, locks on the fleet.
//!
//! The client opens a TCP connection, sends one request line `GET /VERB/KEY[/REQUESTER]`,
//! optional header lines and an empty line, and reads one reply line ending in `\n`:
//!
//! | request | reply |
//! |---|---|
//! | `CHECK/KEY` | `1` if locked and not timed out, else `0` |
//! | `LOCK/KEY/R` | the expiry (Unix time, with microseconds) once granted, in FIFO order, waiting up to `--lock-attempt-timeout`; `0` on time-out or if `R` already holds or waits for `KEY` |
//! | `UNLOCK/KEY/R` | `1` if `R` held it (the next in line gets it), else `0` |
//! | `VERIFY/KEY/R` | `1` if `R` holds it and it has not timed out, else `0` |
//! | `PING` | `1` |
//! | `SHUTDOWN` | `1` and stops, only with `--allow-shutdown`; else `0` |
//!
//! `KEY` is the memsem lock name, taken verbatim (so library users contend for the lock
//! `KEY`); how the queue and the grants live on the fleet is in [`super::queue`].
//!
//! Bad input — not a `GET` line, an unknown verb, a missing or extra path part, a key or
//! requester with spaces, control bytes or more than 200 bytes, a request above 8 KiB —
//! is answered `0` and logged; so is an unreachable fleet (fail closed). A client that sends
//! nothing for `--idle-timeout` is disconnected.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use memsem::{Client, Tokio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::queue::Locks;
use super::{Conn, Gateway, ServeOptions, Shutdown, seconds};

pub const HELP: &str = "\
Every lock is the memsem lock named by the key: library users and other gateways over the
same servers contend for the same locks; LOCK requests queue in FIFO order across gateways.
Example:
  memsem --servers mc1:11211,mc2:11211 serve lock-server --listen 0.0.0.0:8004";

/// The longest request (request line and headers) read.
const MAX_REQUEST: usize = 8192;
/// The longest key or requester.
const MAX_PART: usize = 200;

/// `memsem serve lock-server` options.
#[derive(Debug, Args)]
pub struct LockServerArgs {
    /// TCP `host:port` to listen on (port 0: any free port, printed on stderr)
    #[arg(long, default_value = "127.0.0.1:8004", value_name = "HOST:PORT")]
    pub listen: String,

    /// A lock ends this long after it was granted, even if never unlocked (seconds)
    #[arg(long, default_value = "3", value_name = "SECONDS", value_parser = seconds)]
    pub lock_timeout: Duration,

    /// How long a LOCK request waits in line before it is answered 0 (seconds)
    #[arg(long, default_value = "4", value_name = "SECONDS", value_parser = seconds)]
    pub lock_attempt_timeout: Duration,

    /// Obey the SHUTDOWN request
    #[arg(long)]
    pub allow_shutdown: bool,

    /// How often a waiting LOCK looks at the queue
    #[arg(long, default_value = "5ms", value_name = "DURATION", value_parser = seconds)]
    pub poll: Duration,

    #[command(flatten)]
    pub options: ServeOptions,
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Check(&'a str),
    Lock(&'a str, &'a str),
    Unlock(&'a str, &'a str),
    Verify(&'a str, &'a str),
    Ping,
    Shutdown,
}

/// Runs the gateway; the exit status.
pub async fn serve(client: Client<Tokio>, args: LockServerArgs) -> u8 {
    if args.lock_timeout.is_zero() {
        eprintln!("memsem serve lock-server: --lock-timeout must be above 0");
        return crate::exit::USAGE;
    }
    // The lease of a lock: refused here, not at every LOCK, if the client's limits forbid it.
    if let Err(error) = client
        .semaphore("lock-server")
        .and_then(|sem| sem.with_ttl(args.lock_timeout + Duration::from_secs(1)))
    {
        return crate::exit::report(&error);
    }
    let listener = match super::bind_tcp(&args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "memsem serve lock-server: cannot listen on {}: {error}",
                args.listen
            );
            return crate::exit::UNAVAILABLE;
        }
    };
    let mut locks = Locks::new(
        client.clone(),
        args.lock_timeout,
        args.lock_attempt_timeout,
        args.poll,
    );
    locks.log_requests = args.options.log_requests;
    let locks = Arc::new(locks);
    let gateway = Arc::new(Gateway {
        client,
        options: args.options,
        name: "lock-server",
        stop: tokio::sync::watch::channel(false).0,
    });
    let allow_shutdown = args.allow_shutdown;
    let served = Arc::clone(&locks);
    let status = super::accept_loop(
        listener,
        Arc::clone(&gateway),
        move |conn, peer, gateway, shutdown| {
            connection(
                conn,
                peer,
                gateway,
                Arc::clone(&served),
                allow_shutdown,
                shutdown,
            )
        },
    )
    .await;
    let released = locks.release_granted().await;
    eprintln!("memsem serve lock-server: stopped ({released} held locks released)");
    status
}

/// Serves one connection: one request, one reply line.
async fn connection(
    mut conn: Box<dyn Conn>,
    peer: String,
    gateway: Arc<Gateway>,
    locks: Arc<Locks>,
    allow_shutdown: bool,
    mut shutdown: Shutdown,
) {
    let raw = tokio::select! {
        raw = read_request(&mut conn) => raw,
        _ = tokio::time::sleep(gateway.options.idle_timeout) => {
            gateway.event(format_args!("{peer}: idle, closed"));
            return;
        }
        _ = shutdown.begun() => Err("the gateway is stopping"),
    };
    let parsed = raw.as_deref().map_err(|why| *why).and_then(parse);
    let answer = match parsed {
        Ok(request) => {
            let mut byte = [0u8; 1];
            tokio::select! {
                answer = execute(&request, &locks, &gateway, allow_shutdown, &mut shutdown) => {
                    gateway.event(format_args!("{peer} {request:?} -> {answer}"));
                    answer
                }
                _ = conn.read(&mut byte) => {
                    gateway.event(format_args!("{peer} {request:?}: client left"));
                    return;
                }
            }
        }
        Err(why) => {
            gateway.warn(format_args!("{peer}: bad request: {why}"));
            "0".to_string()
        }
    };
    let _ = conn.write_all(format!("{answer}\n").as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Reads up to the empty line that ends the headers (or the end of input), at most
/// [`MAX_REQUEST`] bytes; the request line.
async fn read_request(conn: &mut Box<dyn Conn>) -> Result<String, &'static str> {
    let mut buffer = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = header_end(&buffer) {
            buffer.truncate(end);
            break;
        }
        if buffer.len() > MAX_REQUEST {
            return Err("request longer than 8 KiB");
        }
        match conn.read(&mut chunk).await {
            Ok(0) if buffer.contains(&b'\n') => break,
            Ok(0) => return Err("connection closed before a request line"),
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(_) => return Err("read failed"),
        }
    }
    let line_end = buffer
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(buffer.len());
    let line = &buffer[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8(line.to_vec()).map_err(|_| "request line is not UTF-8")
}

/// Where the header block ends (just before its empty line), if it has.
fn header_end(buffer: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (at, &byte) in buffer.iter().enumerate() {
        if byte == b'\n' {
            let line = &buffer[line_start..at];
            if (line.is_empty() || line == b"\r") && line_start > 0 {
                return Some(line_start);
            }
            line_start = at + 1;
        }
    }
    None
}

/// Parses a request line `GET /VERB/KEY[/REQUESTER][ HTTP/1.x]`.
pub fn parse(line: &str) -> Result<Request<'_>, &'static str> {
    let mut words = line.split(' ');
    if words.next() != Some("GET") {
        return Err("not a GET request line");
    }
    let path = words.next().ok_or("no path")?;
    match words.next() {
        None => {}
        Some(version) if version.starts_with("HTTP/") && words.next().is_none() => {}
        Some(_) => return Err("spaces in the path"),
    }
    let path = path
        .strip_prefix('/')
        .ok_or("the path does not start with /")?;
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[1..] {
        check_part(part)?;
    }
    match parts.as_slice() {
        ["PING"] => Ok(Request::Ping),
        ["SHUTDOWN"] => Ok(Request::Shutdown),
        ["CHECK", key] => Ok(Request::Check(key)),
        ["LOCK", key, who] => Ok(Request::Lock(key, who)),
        ["UNLOCK", key, who] => Ok(Request::Unlock(key, who)),
        ["VERIFY", key, who] => Ok(Request::Verify(key, who)),
        [
            "PING" | "SHUTDOWN" | "CHECK" | "LOCK" | "UNLOCK" | "VERIFY",
            ..,
        ] => Err("wrong number of path parts for the verb"),
        _ => Err("unknown verb"),
    }
}

/// Checks a key or requester: 1 to 200 bytes, no whitespace or control bytes.
fn check_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("empty key or requester");
    }
    if part.len() > MAX_PART {
        return Err("key or requester longer than 200 bytes");
    }
    if part.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("whitespace or control characters in a key or requester");
    }
    Ok(())
}

/// Runs a request; the reply line (without its `\n`).
async fn execute(
    request: &Request<'_>,
    locks: &Locks,
    gateway: &Gateway,
    allow_shutdown: bool,
    shutdown: &mut Shutdown,
) -> String {
    let flag = |held: bool| if held { "1" } else { "0" }.to_string();
    let outcome = match *request {
        Request::Ping => return "1".into(),
        Request::Shutdown if allow_shutdown => {
            gateway.stop();
            return "1".into();
        }
        Request::Shutdown => {
            gateway.warn(format_args!("SHUTDOWN refused: no --allow-shutdown"));
            return "0".into();
        }
        Request::Check(key) => locks.check(key).await.map(flag),
        Request::Verify(key, who) => locks.verify(key, who).await.map(flag),
        Request::Unlock(key, who) => locks.unlock(key, who).await.map(flag),
        Request::Lock(key, who) => locks
            .lock_key(key, who, shutdown)
            .await
            .map(|granted| granted.map_or_else(|| "0".into(), |expires| format!("{expires:.6}"))),
    };
    outcome.unwrap_or_else(|error| {
        gateway.warn(format_args!("{request:?}: answered 0: {error}"));
        "0".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_verbs() {
        assert_eq!(parse("GET /PING"), Ok(Request::Ping));
        assert_eq!(parse("GET /SHUTDOWN HTTP/1.0"), Ok(Request::Shutdown));
        assert_eq!(parse("GET /CHECK/k"), Ok(Request::Check("k")));
        assert_eq!(parse("GET /LOCK/k/me"), Ok(Request::Lock("k", "me")));
        assert_eq!(parse("GET /UNLOCK/k/me"), Ok(Request::Unlock("k", "me")));
        assert_eq!(
            parse("GET /VERIFY/k/me HTTP/1.1"),
            Ok(Request::Verify("k", "me"))
        );
    }

    #[test]
    fn rejects_bad_requests() {
        for bad in [
            "",
            "garbage",
            "POST /PING",
            "GET PING",
            "GET /FROB/k/me",
            "GET /LOCK/k",
            "GET /LOCK/k/me/extra",
            "GET /LOCK//me",
            "GET /LOCK/k e/me",
            "GET /LOCK/k\u{1}/me",
            "GET /CHECK/k\u{7f}",
            "GET /PING/x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&format!("GET /CHECK/{}", "k".repeat(201))).is_err());
    }

    #[test]
    fn finds_the_end_of_the_headers() {
        assert_eq!(header_end(b"GET /PING\n\n"), Some(10));
        assert_eq!(header_end(b"GET /PING\r\nHost: x\r\n\r\n"), Some(20));
        assert_eq!(header_end(b"GET /PING\n"), None);
        assert_eq!(header_end(b"\n\n"), Some(1));
    }
}

//! A TCP proxy in front of a real memcached that misbehaves on command: requests always reach
//! the server, replies are passed, held back, replaced by garbage, dripped, cut short or
//! followed by a hang-up. Switching back to [`Mode::Pass`] makes it a good server again, so a
//! test can check that a client is not desynchronised by what came before.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Replies are forwarded as they come.
    Pass,
    /// Replies are held back until the mode changes, then forwarded (late replies).
    Hold,
    /// Each reply is replaced by a line of garbage.
    Garbage,
    /// Each reply is replaced by a value header announcing 1 GiB, then nothing.
    Oversized,
    /// Each reply is replaced by an endless line sent one byte every 50 ms.
    Drip,
    /// Half of each reply is forwarded, the rest held back until the mode changes.
    Truncate,
    /// Each reply is forwarded, then the connection is closed.
    ReplyThenClose,
    /// A blackhole: requests are dropped and nothing is answered (new connections are
    /// accepted all the same), until the mode changes.
    Blackhole,
    /// Replies pass until a connection carries a meta store (`ms`, an acquire); from then on
    /// every reply, on every connection, is held back until the mode changes: the store is
    /// applied, its reply lost, and nothing can be read back meanwhile.
    HoldAfterStore,
    /// The next reply is forwarded, then its connection is closed (as a restart would close
    /// it) and the mode goes back to `Pass`.
    CloseAfterReply,
}

impl Mode {
    fn from_u8(value: u8) -> Mode {
        [
            Mode::Pass,
            Mode::Hold,
            Mode::Garbage,
            Mode::Oversized,
            Mode::Drip,
            Mode::Truncate,
            Mode::ReplyThenClose,
            Mode::Blackhole,
            Mode::HoldAfterStore,
            Mode::CloseAfterReply,
        ][usize::from(value)]
    }
}

pub struct Proxy {
    address: String,
    mode: Arc<AtomicU8>,
    /// A meta store went through since the mode was last set.
    stored: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to the memcached at `upstream`, in [`Mode::Pass`].
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let stored = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_string();
        let shared = Arc::clone(&mode);
        let shared_stored = Arc::clone(&stored);
        // The threads end when the test process does; each connection's threads end when
        // either side closes.
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (to_server, from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                let requests_mode = Arc::clone(&shared);
                let stored = Arc::clone(&shared_stored);
                let seen = Arc::clone(&shared_stored);
                thread::spawn(move || pipe(from_client, to_server, &requests_mode, &seen));
                let mode = Arc::clone(&shared);
                thread::spawn(move || replies(server, client, &mode, &stored));
            }
        });
        Proxy {
            address,
            mode,
            stored,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn set(&self, mode: Mode) {
        self.stored.store(false, Ordering::SeqCst);
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(mode: &AtomicU8) -> Mode {
        Mode::from_u8(mode.load(Ordering::SeqCst))
    }
}

/// Requests: forwarded, except into a blackhole. Notes in `stored` when one was a meta store.
fn pipe(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8, stored: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if Proxy::mode(mode) == Mode::Blackhole {
            continue;
        }
        if buf[..n].starts_with(b"ms ") || buf[..n].windows(4).any(|w| w == b"\nms ") {
            stored.store(true, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Waits until the mode is no longer `mode`.
fn wait_out(mode: &AtomicU8, current: Mode) {
    while Proxy::mode(mode) == current {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Replies: passed through the current mode.
fn replies(mut server: TcpStream, mut client: TcpStream, mode: &AtomicU8, stored: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let reply = &buf[..n];
        let ok = match Proxy::mode(mode) {
            Mode::Pass => client.write_all(reply).is_ok(),
            Mode::Hold => {
                wait_out(mode, Mode::Hold);
                client.write_all(reply).is_ok()
            }
            Mode::Garbage => client
                .write_all(b"\x00\xffNOT MEMCACHED AT ALL\r\n")
                .is_ok(),
            Mode::Oversized => client.write_all(b"VA 1073741824 c1 t-1\r\n").is_ok(),
            Mode::Drip => {
                while Proxy::mode(mode) == Mode::Drip {
                    if client.write_all(b"A").is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                false
            }
            Mode::Truncate => {
                let half = reply.len() / 2;
                let _ = client.write_all(&reply[..half]);
                wait_out(mode, Mode::Truncate);
                false
            }
            Mode::ReplyThenClose => {
                let _ = client.write_all(reply);
                false
            }
            Mode::Blackhole => true,
            Mode::HoldAfterStore if stored.load(Ordering::SeqCst) => {
                wait_out(mode, Mode::HoldAfterStore);
                client.write_all(reply).is_ok()
            }
            Mode::HoldAfterStore => client.write_all(reply).is_ok(),
            Mode::CloseAfterReply => {
                let _ = client.write_all(reply);
                mode.store(Mode::Pass as u8, Ordering::SeqCst);
                false
            }
        };
        if !ok {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

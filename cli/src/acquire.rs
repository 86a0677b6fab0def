//! Taking a lock from the command line: one try, a bounded wait or forever, with a live
//! status line on a terminal and an early way out on SIGINT/SIGTERM/SIGHUP.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use memsem::{Error, Holder, MAX_INFO_BYTES, Permit, Semaphore, WaitPolicy};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What the supervising loops of `run` and `acquire` react to.
#[derive(Debug)]
pub enum Event {
    /// memsem received this signal.
    Signal(i32),
    /// The command ended (not yet reaped).
    Exited(std::io::Result<()>),
    /// The lease could not be kept: why.
    Lost(String),
}

/// The signals memsem passes on to its command (or that end a wait).
pub const FORWARDED: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Delivers SIGINT, SIGTERM and SIGHUP as [`Event::Signal`] from now on.
pub fn catch_signals(events: Sender<Event>) -> std::io::Result<()> {
    let mut signals = Signals::new(FORWARDED)?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if events.send(Event::Signal(signal)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// How an acquisition ended, short of an error.
pub enum Acquired {
    Permit(Permit),
    /// Still held when the wait ran out: by whom, as far as the server said.
    Busy(Option<Holder>),
    /// A signal ended the wait.
    Interrupted(i32),
}

/// Tries to take the lock until `limit` runs out (`None`: forever; zero: one try).
///
/// The first attempt's server error is returned at once (the configuration is likely wrong);
/// later ones are retried, and returned only if the wait runs out on them. A refused server
/// ([`Error::Refused`]) ends the wait at once; a server in its lock-delay is waited out.
pub fn acquire(
    sem: &Semaphore,
    limit: Option<Duration>,
    poll: Duration,
    events: &Receiver<Event>,
    quiet: bool,
) -> Result<Acquired, Error> {
    let started = Instant::now();
    let mut delays = WaitPolicy::new().poll_time(poll).delays();
    let mut line = StatusLine::new(!quiet && std::io::stderr().is_terminal());
    let mut last_error: Option<Error>;
    let mut holder: Option<(Instant, Option<Holder>)> = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match sem.try_acquire() {
            Ok(Some(permit)) => {
                line.clear();
                return Ok(Acquired::Permit(permit));
            }
            Ok(None) => last_error = None,
            // A server in its lock-delay is waited out like a held lock.
            Err(error @ Error::LockDelay { .. }) => last_error = Some(error),
            Err(error) if attempts == 1 || !(error.is_retryable() || is_transient(&error)) => {
                line.clear();
                return Err(error);
            }
            Err(error) => last_error = Some(error),
        }
        let waited = started.elapsed();
        let remaining = limit.map(|limit| limit.saturating_sub(waited));
        if remaining == Some(Duration::ZERO) {
            line.clear();
            if let Some(error) = last_error {
                return Err(error);
            }
            let holder = match holder {
                Some((at, holder)) if at.elapsed() < Duration::from_millis(500) => holder,
                _ => sem.holder().ok().flatten(),
            };
            return Ok(Acquired::Busy(holder));
        }
        if line.enabled {
            let stale = holder
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(1));
            if stale {
                holder = Some((Instant::now(), sem.holder().ok().flatten()));
            }
            let about = match (&last_error, &holder) {
                (Some(error), _) => format!("; {error}"),
                (None, Some((_, Some(holder)))) => format!("; held by {}", describe(holder)),
                _ => String::new(),
            };
            line.show(&format!(
                "memsem: waiting for lock {} ({}s){about}",
                sem.name(),
                waited.as_secs()
            ));
        }
        let mut delay = delays.next().unwrap_or(poll);
        if let Some(remaining) = remaining {
            delay = delay.min(remaining);
        }
        match events.recv_timeout(delay) {
            Ok(Event::Signal(signal)) => {
                line.clear();
                return Ok(Acquired::Interrupted(signal));
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }
}

/// Server trouble worth another try while waiting.
fn is_transient(error: &Error) -> bool {
    matches!(error, Error::Ambiguous { .. } | Error::Protocol { .. })
}

/// One line about the holder: its info (or token prefix) and the time left.
pub fn describe(holder: &Holder) -> String {
    let who = match holder.info() {
        Some(info) => printable(info),
        None => format!("token {}…", holder.token_prefix()),
    };
    match holder.ttl() {
        Some(ttl) => format!("{who} (expires in {})", humantime::format_duration(ttl)),
        None => format!("{who} (never expires)"),
    }
}

/// `text` with control characters (newlines, escapes) shown as spaces.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The default holder information: `host=HOST pid=PID cmd=COMMAND`, at most
/// [`MAX_INFO_BYTES`], on one line (a command's line breaks become spaces).
pub fn default_info(pid: u32, command: &str) -> String {
    let mut info = format!(
        "host={} pid={pid} cmd={}",
        printable(&hostname()),
        printable(command)
    );
    if info.len() > MAX_INFO_BYTES {
        let mut end = MAX_INFO_BYTES;
        while !info.is_char_boundary(end) {
            end -= 1;
        }
        info.truncate(end);
    }
    info
}

/// This machine's name, or `unknown`.
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return "unknown".into();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// A line on stderr repainted in place; does nothing when disabled.
struct StatusLine {
    enabled: bool,
    shown: bool,
    last: String,
}

impl StatusLine {
    fn new(enabled: bool) -> StatusLine {
        StatusLine {
            enabled,
            shown: false,
            last: String::new(),
        }
    }

    fn show(&mut self, text: &str) {
        if self.enabled && !(self.shown && self.last == text) {
            self.last = text.to_string();
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K{text}");
            let _ = stderr.flush();
            self.shown = true;
        }
    }

    fn clear(&mut self) {
        if self.shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_info_names_host_pid_and_command_within_the_limit() {
        let info = default_info(42, "backup --all");
        assert!(info.starts_with("host="), "{info}");
        assert!(info.ends_with(" pid=42 cmd=backup --all"), "{info}");
        let long = default_info(1, &"é".repeat(2000));
        assert!(long.len() <= MAX_INFO_BYTES);
        let lines = default_info(7, "sh -c 'a\r\nb'");
        assert!(!lines.contains(['\r', '\n']), "{lines}");
    }

    #[test]
    fn printable_hides_control_characters() {
        assert_eq!(printable("a\nb\x1b[1m"), "a b [1m");
    }
}

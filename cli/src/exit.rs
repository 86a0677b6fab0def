//! Exit statuses (sysexits.h where one fits), the one mapping from a library error to a
//! status, and how an error is told: one line on stderr, or a JSON object on stdout with
//! `--json`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use memsem::Error;
use serde_json::json;

/// `status`: the lock is held; `verify`, `release`, `refresh`: the token does not hold it.
pub const NO: u8 = 1;
/// EX_USAGE: bad arguments or configuration.
pub const USAGE: u8 = 64;
/// EX_UNAVAILABLE: a memcached server could not be reached.
pub const UNAVAILABLE: u8 = 69;
/// EX_SOFTWARE: something memsem itself could not do (waiting on the command failed).
pub const SOFTWARE: u8 = 70;
/// EX_TEMPFAIL: the lock was not acquired, or was lost while the command ran.
pub const TEMPFAIL: u8 = 75;
/// EX_PROTOCOL: the server answered with something that is not memcached, or cannot be used
/// (no meta protocol, wants authentication or TLS).
pub const PROTOCOL: u8 = 76;
/// The command was found but could not be executed (as in the shell).
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found (as in the shell).
pub const NOT_FOUND: u8 = 127;

/// The exit statuses, as `--help` and the man page show them (README.md has the same list).
pub const HELP: &str = "\
Exit statuses (the same for every command):
  0        success (run: the command's own status)
  1        status: the lock is held or cooling down; verify, release, refresh: the token
           does not hold the lock
  64       bad arguments or configuration (also holder info with a line break, a --ttl
           above --max-lease or too short for --kill-after)
  69       a memcached server is unreachable or did not answer (named on stderr); an
           acquire whose reply was lost is settled before memsem exits
  70       memsem itself failed (signal handling, waiting for the command)
  75       the lock was not acquired (held, see --conflict-exit-code, or the server is in
           its lock-delay), or was lost while the command ran (the command is stopped
           before the lease can end; also when found lost at the release)
  76       a server answered with something that is not memcached, or cannot be used (no
           meta protocol, wants authentication or TLS)
  126/127  the command could not be executed / was not found
  128+N    the command (or memsem while waiting) was killed by signal N";

static JSON: AtomicBool = AtomicBool::new(false);
static LOCK: OnceLock<String> = OnceLock::new();

/// The lock this invocation is about: errors that do not name it say it first.
pub fn set_lock(name: &str) {
    let _ = LOCK.set(name.to_string());
}

/// From now on, errors are told as JSON objects on stdout (`--json`).
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Whether errors go out as JSON on stdout.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The exit status for an error, after telling it (see [`tell`]).
pub fn report(error: &Error) -> u8 {
    let code = code(error);
    let text = chain(error);
    match LOCK.get() {
        Some(name) if !text.contains(name.as_str()) => {
            tell(kind(error), &format!("lock {name}: {text}"), code);
        }
        _ => tell(kind(error), &text, code),
    }
    code
}

/// Tells a failure: `memsem: MESSAGE` on stderr, or with `--json` one object on stdout:
/// `{"error": MESSAGE, "kind": KIND, "exit_code": CODE}`.
pub fn tell(kind: &str, message: &str, code: u8) {
    if json() {
        println!(
            "{}",
            json!({ "error": message, "kind": kind, "exit_code": code })
        );
    } else {
        eprintln!("memsem: {message}");
    }
}

/// The exit status for an error: one mapping for every command.
pub fn code(error: &Error) -> u8 {
    match error {
        Error::InvalidName { .. } | Error::InvalidConfig(_) => USAGE,
        Error::Protocol { .. } | Error::Refused { .. } => PROTOCOL,
        Error::LockLost { .. } => NO,
        Error::Timeout {
            last_error: Some(last),
            ..
        } if !matches!(**last, Error::LockLost { .. }) => code(last),
        Error::Unavailable { .. } | Error::Ambiguous { .. } | Error::NoQuorum { .. } => UNAVAILABLE,
        _ => TEMPFAIL,
    }
}

/// A short machine-readable name for the error, for `--json`.
pub fn kind(error: &Error) -> &'static str {
    match error {
        Error::InvalidName { .. } | Error::InvalidConfig(_) => "usage",
        Error::Unavailable { .. } => "unavailable",
        Error::Ambiguous { .. } => "ambiguous",
        Error::LockLost { .. } => "lost",
        Error::Timeout { .. } => "timeout",
        Error::NoQuorum { .. } => "no_quorum",
        Error::Protocol { .. } => "protocol",
        Error::Refused { .. } => "refused",
        Error::LockDelay { .. } => "lock_delay",
        _ => "error",
    }
}

/// The error and its causes joined by `: `, each said once (a cause whose text is already
/// in the line, as some libraries repeat their source in their message, is left out).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// The exit status the shell would give for a process killed by `signal`.
pub fn for_signal(signal: i32) -> u8 {
    128u8.saturating_add(u8::try_from(signal).unwrap_or(127))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An error that repeats its source in its own message, as some libraries do.
    #[derive(Debug)]
    struct Repeating(std::io::Error);

    impl std::fmt::Display for Repeating {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "i/o error: {}", self.0)
        }
    }

    impl std::error::Error for Repeating {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn unavailable() -> Error {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        Error::Unavailable {
            server: "127.0.0.1:1".into(),
            source: Box::new(Repeating(refused)),
        }
    }

    #[test]
    fn the_chain_says_each_cause_once() {
        let line = chain(&unavailable());
        assert_eq!(
            line,
            "memcached server 127.0.0.1:1 is unavailable: i/o error: refused"
        );
    }

    #[test]
    fn one_mapping_for_every_error() {
        let timeout = |last_error| Error::Timeout {
            name: "x".into(),
            waited: Duration::from_secs(1),
            attempts: 3,
            last_error,
        };
        let protocol = Error::Protocol {
            server: "s".into(),
            detail: "garbage".into(),
        };
        assert_eq!(code(&unavailable()), UNAVAILABLE);
        assert_eq!(code(&protocol), PROTOCOL);
        assert_eq!(code(&timeout(None)), TEMPFAIL);
        assert_eq!(code(&timeout(Some(Box::new(unavailable())))), UNAVAILABLE);
        assert_eq!(code(&timeout(Some(Box::new(protocol)))), PROTOCOL);
        assert_eq!(code(&Error::InvalidConfig("no".into())), USAGE);
    }

    #[test]
    fn the_help_lists_every_status_memsem_uses() {
        for status in [
            NO,
            USAGE,
            UNAVAILABLE,
            SOFTWARE,
            TEMPFAIL,
            PROTOCOL,
            CANNOT_EXECUTE,
            NOT_FOUND,
        ] {
            let listed = HELP.lines().any(|line| {
                let first = line.trim_start().split(' ').next().unwrap_or_default();
                line.starts_with("  ") && first.split('/').any(|code| code == status.to_string())
            });
            assert!(listed, "{status} missing");
        }
    }
}

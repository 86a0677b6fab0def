//! Exit statuses (sysexits.h where one fits) and how a library error maps to one.

use memsem::Error;

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

/// The exit status for an error, after printing it as one line on stderr.
pub fn report(error: &Error) -> u8 {
    eprintln!("memsem: {error}");
    code(error)
}

/// The exit status for an error.
pub fn code(error: &Error) -> u8 {
    match error {
        Error::InvalidName { .. } | Error::InvalidConfig(_) => USAGE,
        Error::Unavailable { .. } | Error::Ambiguous { .. } => UNAVAILABLE,
        Error::Protocol { .. } | Error::Refused { .. } => PROTOCOL,
        Error::LockLost { .. } => NO,
        Error::Timeout { .. } if error.is_unavailable() => UNAVAILABLE,
        _ => TEMPFAIL,
    }
}

/// The exit status the shell would give for a process killed by `signal`.
pub fn for_signal(signal: i32) -> u8 {
    128u8.saturating_add(u8::try_from(signal).unwrap_or(127))
}

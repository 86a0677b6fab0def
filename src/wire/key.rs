//! Lock names and the memcached keys they become.

use crate::error::{Error, Result};

/// memcached's limit on a key, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 250;

/// The prefix Cache::Memcached::Semaphore puts before every lock name.
pub(crate) const LOCK_PREFIX: &str = "__lock__";

/// A lock's key: what is hashed to pick the server, and what is sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockKey {
    /// `"__lock__" + name`: routed without the namespace, like the Perl clients do.
    pub(crate) routed: Vec<u8>,
    /// `namespace + "__lock__" + name`: the key on the wire.
    pub(crate) wire: Vec<u8>,
}

/// Why bytes cannot be part of a memcached text key, if they cannot.
fn unsafe_bytes(text: &str) -> Option<&'static str> {
    if text
        .bytes()
        .any(|b| b == b' ' || b == b'\t' || b == b'\r' || b == b'\n')
    {
        return Some("it contains whitespace, which cannot travel in a memcached key");
    }
    if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Some("it contains control bytes, which cannot travel in a memcached key");
    }
    None
}

/// Checks a namespace (may be empty).
pub(crate) fn check_namespace(namespace: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidName {
        name: namespace.to_string(),
        reason,
    };
    if let Some(reason) = unsafe_bytes(namespace) {
        return Err(invalid(reason));
    }
    if namespace.len() + LOCK_PREFIX.len() >= MAX_KEY_BYTES {
        return Err(invalid(
            "the namespace leaves no room for a lock name in 250 bytes",
        ));
    }
    Ok(())
}

/// Builds the key of the lock `name` under `namespace` (already checked), or says why the
/// name cannot be one.
pub(crate) fn lock_key(namespace: &str, name: &str) -> Result<LockKey> {
    let invalid = |reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if let Some(reason) = unsafe_bytes(name) {
        return Err(invalid(reason));
    }
    let routed = format!("{LOCK_PREFIX}{name}").into_bytes();
    let mut wire = namespace.as_bytes().to_vec();
    wire.extend_from_slice(&routed);
    if wire.len() > MAX_KEY_BYTES {
        return Err(invalid(
            "namespace + \"__lock__\" + name is longer than memcached's 250-byte key limit",
        ));
    }
    Ok(LockKey { routed, wire })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_namespace_then_perl_prefix_then_name() {
        let key = lock_key("app:", "nightly").unwrap();
        assert_eq!(key.wire, b"app:__lock__nightly");
        assert_eq!(key.routed, b"__lock__nightly");
    }

    #[test]
    fn utf8_names_are_kept_as_bytes() {
        let key = lock_key("", "grüße").unwrap();
        assert_eq!(key.wire, "__lock__grüße".as_bytes());
    }

    #[test]
    fn unsafe_names_are_rejected_with_a_reason() {
        for name in ["", "a b", "x\r\nflush_all", "nul\0byte", "tab\t", "del\x7f"] {
            let error = lock_key("", name).unwrap_err();
            assert!(
                matches!(error, Error::InvalidName { .. }),
                "{name:?}: {error}"
            );
        }
    }

    #[test]
    fn length_limit_counts_namespace_and_prefix() {
        let fits = "n".repeat(MAX_KEY_BYTES - LOCK_PREFIX.len() - 4);
        assert!(lock_key("app:", &fits).is_ok());
        let too_long = format!("{fits}x");
        assert!(lock_key("app:", &too_long).is_err());
    }

    #[test]
    fn namespace_must_be_safe_and_short() {
        assert!(check_namespace("").is_ok());
        assert!(check_namespace("app:").is_ok());
        assert!(check_namespace("a b").is_err());
        assert!(check_namespace(&"n".repeat(243)).is_err());
    }
}

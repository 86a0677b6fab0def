//! The random value that says who holds a lock.

use std::fmt;

use crate::error::{Error, Result};

/// A holder's identity: 128 random bits as 32 lowercase hex characters, the same shape as the
/// Perl module's MD5 tokens. A lock is released, refreshed or cooled down only by the holder
/// of its token; memcached's CAS is only the fast path.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl Token {
    /// A fresh random token. The first of the process comes straight from the operating
    /// system (one getrandom call; the thread's generator should that fail): a process that
    /// draws one token, as `memsem run` does, is thus spared seeding the thread's ChaCha
    /// generator, whose start-up probes the CPU (`cpuid`, about 12 µs each in a virtual
    /// machine). Later ones come from the thread's generator: no system call per acquire.
    pub(crate) fn generate() -> Token {
        use std::sync::atomic::{AtomicBool, Ordering};
        static DRAWN: AtomicBool = AtomicBool::new(false);
        let value = if DRAWN.swap(true, Ordering::Relaxed) {
            rand::random::<u128>()
        } else {
            use rand::TryRng;
            let mut bytes = [0u8; 16];
            match rand::rngs::SysRng.try_fill_bytes(&mut bytes) {
                Ok(()) => u128::from_le_bytes(bytes),
                Err(_) => rand::random::<u128>(),
            }
        };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(32);
        for nibble in (0..32).rev() {
            text.push(char::from(HEX[((value >> (nibble * 4)) & 0xf) as usize]));
        }
        Token(text)
    }

    /// A token given back by a user (for example on the command line): 1 to 64 printable
    /// ASCII characters without spaces.
    pub(crate) fn parse(text: &str) -> Result<Token> {
        let printable = text.bytes().all(|b| b.is_ascii_graphic());
        if text.is_empty() || text.len() > 64 || !printable {
            return Err(Error::InvalidConfig(
                "a token is 1 to 64 printable ASCII characters without spaces".into(),
            ));
        }
        Ok(Token(text.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a stored lock value belongs to this token: the value is the token, optionally
    /// followed by a newline and holder information.
    pub(crate) fn owns(&self, value: &[u8]) -> bool {
        let token = self.0.as_bytes();
        value == token || (value.starts_with(token) && value.get(token.len()) == Some(&b'\n'))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a whole token: it is the capability to release the lock.
        let shown: String = self.0.chars().take(4).collect();
        write!(f, "Token({shown}…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_32_hex_and_distinct() {
        let a = Token::generate();
        let b = Token::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn owns_exact_value_or_value_with_holder_info() {
        let t = Token::parse("abc").unwrap();
        assert!(t.owns(b"abc"));
        assert!(t.owns(b"abc\nhost=x"));
        assert!(!t.owns(b"abcd"));
        assert!(!t.owns(b"ab"));
        assert!(!t.owns(b""));
    }

    #[test]
    fn debug_hides_the_token() {
        let t = Token::parse("0123456789abcdef").unwrap();
        assert_eq!(format!("{t:?}"), "Token(0123…)");
    }

    #[test]
    fn parse_rejects_unsafe_text() {
        for bad in ["", "a b", "a\r\nflush_all", &"x".repeat(65)] {
            assert!(Token::parse(bad).is_err(), "{bad:?}");
        }
    }
}

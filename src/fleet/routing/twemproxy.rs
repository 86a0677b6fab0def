//! twemproxy (nutcracker) routing: its `hash:` functions and `distribution:` modes, bit
//! for bit as nutcracker 0.5.0 computes them (src/hashkit/ of twitter/twemproxy).
//!
//! The C code reads key bytes as plain `char`, which is signed on x86-64: where a byte is
//! widened before use (fnv*, one_at_a_time, hsieh's last byte) a byte ≥ 0x80 counts as
//! `0xFFFFFF00 | byte`. The functions below do the same, so keys with UTF-8 or other high
//! bytes route as the proxy routes them (checked against the real nutcracker in the
//! integration tests).

use std::fmt;
use std::str::FromStr;

use super::ServerSpec;
use super::ketama::{cmhash, md5_word};
use crate::error::{Error, Result};

/// A byte as C's signed `char` widened to 32 bits.
fn signed(byte: u8) -> u32 {
    byte as i8 as i32 as u32
}

macro_rules! twemproxy_hashes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// twemproxy's `hash:` setting: the function applied to the whole key.
        ///
        /// # Examples
        ///
        /// ```
        /// use memsem::routing::TwemproxyHash;
        ///
        /// let hash: TwemproxyHash = "fnv1a_64".parse()?;
        /// assert_eq!(hash, TwemproxyHash::Fnv1a64);
        /// assert_eq!(hash.as_str(), "fnv1a_64");
        /// # Ok::<(), memsem::Error>(())
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum TwemproxyHash {
            $($(#[$doc])* $variant,)*
        }

        impl TwemproxyHash {
            /// Every hash function, in twemproxy's order.
            pub const ALL: &'static [TwemproxyHash] = &[$(TwemproxyHash::$variant,)*];

            /// The name used in twemproxy's configuration, e.g. `fnv1a_64`.
            ///
            /// # Examples
            ///
            /// ```
            /// use memsem::routing::TwemproxyHash;
            ///
            /// assert_eq!(TwemproxyHash::OneAtATime.as_str(), "one_at_a_time");
            /// ```
            pub fn as_str(self) -> &'static str {
                match self {
                    $(TwemproxyHash::$variant => $name,)*
                }
            }

            /// `twemproxy:HASH:ketama` and `twemproxy:HASH:modula`.
            pub(super) fn routing_names(self) -> [&'static str; 2] {
                match self {
                    $(TwemproxyHash::$variant => [
                        concat!("twemproxy:", $name, ":ketama"),
                        concat!("twemproxy:", $name, ":modula"),
                    ],)*
                }
            }
        }
    };
}

twemproxy_hashes! {
    /// Bob Jenkins' one-at-a-time hash (`one_at_a_time`).
    OneAtATime => "one_at_a_time",
    /// The first 4 bytes of the MD5 digest, little-endian (`md5`).
    Md5 => "md5",
    /// CRC-16/XMODEM, as twemproxy keeps it in a 32-bit word (`crc16`).
    Crc16 => "crc16",
    /// Cache::Memcached's 15-bit CRC-32 (`crc32`).
    Crc32 => "crc32",
    /// The full zlib CRC-32 (`crc32a`).
    Crc32a => "crc32a",
    /// FNV-1, 64-bit, cut to 32 bits (`fnv1_64`).
    Fnv164 => "fnv1_64",
    /// twemproxy's "FNV-1a 64" (computed in 32 bits; twemproxy's default) (`fnv1a_64`).
    Fnv1a64 => "fnv1a_64",
    /// FNV-1, 32-bit (`fnv1_32`).
    Fnv132 => "fnv1_32",
    /// FNV-1a, 32-bit (`fnv1a_32`).
    Fnv1a32 => "fnv1a_32",
    /// Paul Hsieh's SuperFastHash (`hsieh`).
    Hsieh => "hsieh",
    /// MurmurHash2 with twemproxy's length-derived seed (`murmur`).
    Murmur => "murmur",
    /// Bob Jenkins' lookup3 `hashlittle` (`jenkins`).
    Jenkins => "jenkins",
}

impl TwemproxyHash {
    /// The hash of `key` (non-empty; twemproxy hashes an empty key as 0 without calling
    /// the function).
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::TwemproxyHash;
    ///
    /// assert_eq!(TwemproxyHash::Crc32a.hash(b"123456789"), 0xCBF4_3926);
    /// ```
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            TwemproxyHash::OneAtATime => one_at_a_time(key),
            TwemproxyHash::Md5 => md5_word(key, 0),
            TwemproxyHash::Crc16 => crc16(key),
            TwemproxyHash::Crc32 => cmhash(key),
            TwemproxyHash::Crc32a => crc32fast::hash(key),
            TwemproxyHash::Fnv164 => fnv1_64(key),
            TwemproxyHash::Fnv1a64 => fnv1a_64(key),
            TwemproxyHash::Fnv132 => fnv1_32(key),
            TwemproxyHash::Fnv1a32 => fnv1a_32(key),
            TwemproxyHash::Hsieh => hsieh(key),
            TwemproxyHash::Murmur => murmur(key),
            TwemproxyHash::Jenkins => jenkins(key),
        }
    }
}

impl fmt::Display for TwemproxyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TwemproxyHash {
    type Err = Error;

    /// Parses a twemproxy hash name (`md5`, `fnv1a_64`, `one_at_a_time`, ...).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an unknown name, listing the known ones.
    fn from_str(s: &str) -> Result<TwemproxyHash> {
        TwemproxyHash::ALL
            .iter()
            .copied()
            .find(|hash| hash.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = TwemproxyHash::ALL.iter().map(|h| h.as_str()).collect();
                Error::InvalidConfig(format!(
                    "unknown twemproxy hash {s:?}: use one of {}",
                    known.join(", ")
                ))
            })
    }
}

/// twemproxy's `distribution:` setting. `random` is refused: it sends each request to any
/// server, so a lock taken on one could be "free" on another.
///
/// # Examples
///
/// ```
/// use memsem::routing::TwemproxyDistribution;
///
/// assert_eq!("modula".parse::<TwemproxyDistribution>()?, TwemproxyDistribution::Modula);
/// assert!("random".parse::<TwemproxyDistribution>().is_err());
/// # Ok::<(), memsem::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TwemproxyDistribution {
    /// Weighted consistent hashing (`ketama`, twemproxy's default): 160 points per server
    /// scaled by weight, named `"host-j"` (port 11211) or `"host:port-j"`, the key's hash
    /// looked up on the continuum.
    Ketama,
    /// `hash % total weight` over the servers repeated `weight` times in list order
    /// (`modula`).
    Modula,
}

impl TwemproxyDistribution {
    /// The name used in twemproxy's configuration: `ketama` or `modula`.
    ///
    /// # Examples
    ///
    /// ```
    /// use memsem::routing::TwemproxyDistribution;
    ///
    /// assert_eq!(TwemproxyDistribution::Ketama.as_str(), "ketama");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            TwemproxyDistribution::Ketama => "ketama",
            TwemproxyDistribution::Modula => "modula",
        }
    }
}

impl fmt::Display for TwemproxyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TwemproxyDistribution {
    type Err = Error;

    /// Parses `ketama` or `modula`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for `random` (no lock can live on a random server) and any
    /// other text.
    fn from_str(s: &str) -> Result<TwemproxyDistribution> {
        match s {
            "ketama" => Ok(TwemproxyDistribution::Ketama),
            "modula" => Ok(TwemproxyDistribution::Modula),
            "random" => Err(Error::InvalidConfig(
                "twemproxy distribution \"random\" sends each request to any server, so two \
                 processes would take one lock on different servers: locks need ketama or \
                 modula"
                    .into(),
            )),
            other => Err(Error::InvalidConfig(format!(
                "unknown twemproxy distribution {other:?}: use ketama or modula"
            ))),
        }
    }
}

/// The name twemproxy gives a server (when its configuration gives none): `"host"` on
/// port 11211, `"host:port"` otherwise; a unix socket entry `/path:weight` has no port and
/// keeps the `:` that preceded its weight: `"/path:"`.
fn server_name(server: &ServerSpec) -> String {
    match server.endpoint() {
        super::Endpoint::Unix(_) => format!("{}:", server.host()),
        super::Endpoint::Tcp { host, port } if port == super::MEMCACHED_DEFAULT_PORT => {
            host.to_string()
        }
        super::Endpoint::Tcp { host, port } => format!("{host}:{port}"),
    }
}

/// twemproxy's ketama point names: `"NAME-j"`.
pub(super) fn point_name(server: &ServerSpec, block: u32) -> String {
    format!("{}-{block}", server_name(server))
}

/// The order in which twemproxy keeps a pool's servers: it sorts them by name (shorter
/// names first, then byte by byte) when it checks them for duplicates, and modula counts
/// its buckets in that order. Returns indexes into `servers`.
pub(super) fn server_order(servers: &[ServerSpec]) -> Vec<usize> {
    let names: Vec<String> = servers.iter().map(server_name).collect();
    let mut order: Vec<usize> = (0..servers.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (names[a].as_bytes(), names[b].as_bytes());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    });
    order
}

fn one_at_a_time(key: &[u8]) -> u32 {
    let mut value: u32 = 0;
    for &byte in key {
        value = value.wrapping_add(signed(byte));
        value = value.wrapping_add(value << 10);
        value ^= value >> 6;
    }
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0100_0000_01b3;
const FNV_32_INIT: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

fn fnv1_64(key: &[u8]) -> u32 {
    let mut hash = FNV_64_INIT;
    for &byte in key {
        hash = hash.wrapping_mul(FNV_64_PRIME);
        hash ^= byte as i8 as i64 as u64;
    }
    hash as u32
}

/// twemproxy's fnv1a_64 runs in 32 bits: the low halves of the 64-bit basis and prime.
fn fnv1a_64(key: &[u8]) -> u32 {
    let mut hash = FNV_64_INIT as u32;
    for &byte in key {
        hash ^= signed(byte);
        hash = hash.wrapping_mul(FNV_64_PRIME as u32);
    }
    hash
}

fn fnv1_32(key: &[u8]) -> u32 {
    let mut hash = FNV_32_INIT;
    for &byte in key {
        hash = hash.wrapping_mul(FNV_32_PRIME);
        hash ^= signed(byte);
    }
    hash
}

fn fnv1a_32(key: &[u8]) -> u32 {
    let mut hash = FNV_32_INIT;
    for &byte in key {
        hash ^= signed(byte);
        hash = hash.wrapping_mul(FNV_32_PRIME);
    }
    hash
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), table-driven; the 32-bit register
/// is never cut back to 16 bits, so bits above 16 come out too, as in twemproxy.
fn crc16(key: &[u8]) -> u32 {
    const TABLE: [u16; 256] = {
        let mut table = [0u16; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = (i as u16) << 8;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc: u32 = 0;
    for &byte in key {
        crc = (crc << 8) ^ u32::from(TABLE[(((crc >> 8) ^ u32::from(byte)) & 0xff) as usize]);
    }
    crc
}

/// Two bytes as a little-endian 16-bit number (hsieh's `get16bits` on x86-64).
fn get16(bytes: &[u8]) -> u32 {
    u32::from(bytes[0]) | (u32::from(bytes[1]) << 8)
}

fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut hash: u32 = 0;
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        hash = hash.wrapping_add(get16(&chunk[0..2]));
        let tmp = (get16(&chunk[2..4]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    match chunks.remainder() {
        [a, b, c] => {
            hash = hash.wrapping_add(get16(&[*a, *b]));
            hash ^= hash << 16;
            hash ^= signed(*c) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        [a, b] => {
            hash = hash.wrapping_add(get16(&[*a, *b]));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        [a] => {
            hash = hash.wrapping_add(u32::from(*a));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}

fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    // The length as C's size_t cut to 32 bits.
    let length = key.len() as u32;
    let seed = 0xdead_beef_u32.wrapping_mul(length);
    let mut h = seed ^ length;
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// Bob Jenkins' lookup3 `hashlittle` with initial value 13 (twemproxy reads aligned words
/// on little-endian machines, which gives the same result as this byte-wise version).
fn jenkins(key: &[u8]) -> u32 {
    let mut a = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(13);
    let (mut b, mut c) = (a, a);
    let word = |bytes: &[u8]| -> u32 {
        bytes
            .iter()
            .enumerate()
            .fold(0u32, |word, (i, &byte)| word | (u32::from(byte) << (8 * i)))
    };
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        // mix(a, b, c)
        a = a.wrapping_sub(c);
        a ^= c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a);
        b ^= a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b);
        c ^= b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c);
        a ^= c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a);
        b ^= a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b);
        c ^= b.rotate_left(4);
        b = b.wrapping_add(a);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    a = a.wrapping_add(word(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(&rest[8..]));
    }
    // final(a, b, c)
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

#[cfg(test)]
mod tests;

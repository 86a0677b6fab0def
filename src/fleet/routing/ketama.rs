//! Consistent-hashing continuums (libmemcached's and twemproxy's weighted ketama) and the
//! hash building blocks they share with Cache::Memcached's buckets.

use md5::{Digest, Md5};

use super::ServerSpec;

/// libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA` (twemproxy's `KETAMA_POINTS_PER_SERVER`).
const KETAMA_POINTS_PER_SERVER: f32 = 160.0;

/// One point of a continuum: a 32-bit position and the index of the server owning it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Point {
    pub(super) value: u32,
    pub(super) server: u32,
}

/// Cache::Memcached's hash: the upper half of the CRC-32, cut to 15 bits (0..=32767).
/// twemproxy's `crc32` hash is the same function.
pub(super) fn cmhash(key: &[u8]) -> u32 {
    (crc32fast::hash(key) >> 16) & 0x7fff
}

/// Bytes `4 * word .. 4 * word + 4` of MD5(`data`), read as a little-endian u32.
pub(super) fn md5_word(data: &[u8], word: usize) -> u32 {
    let digest = Md5::digest(data);
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&digest[4 * word..4 * word + 4]);
    u32::from_le_bytes(bytes)
}

/// How many points weighted ketama gives a server: computed in IEEE single precision like
/// the C code of libmemcached and twemproxy (double precision gives other counts, e.g.
/// for 1,3,7,7,7).
pub(super) fn point_count(weight: u32, total_weight: u64, live_servers: usize) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let blocks = (pct * KETAMA_POINTS_PER_SERVER / 4.0 * live_servers as f32 + 1e-10_f32).floor();
    // `as` saturates; a block count is at most 40 × servers anyway.
    (blocks as u32).saturating_mul(4)
}

/// A weighted ketama continuum, sorted by (value, server index): for each server,
/// [`point_count`] points, four per MD5 of the name `point_name(server, block)`.
pub(super) fn points(
    servers: &[ServerSpec],
    point_name: impl Fn(&ServerSpec, u32) -> String,
) -> Vec<Point> {
    let total_weight: u64 = servers.iter().map(|s| u64::from(s.weight())).sum();
    let mut points = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let blocks = point_count(server.weight(), total_weight, servers.len()) / 4;
        for block in 0..blocks {
            let name = point_name(server, block);
            for word in 0..4 {
                points.push(Point {
                    value: md5_word(name.as_bytes(), word),
                    server: u32::try_from(index).unwrap_or(u32::MAX),
                });
            }
        }
    }
    points.sort_unstable();
    points
}

/// The server owning the first point at or after `hash`, wrapping around past the last.
pub(super) fn lookup(points: &[Point], hash: u32) -> usize {
    let at = points.partition_point(|point| point.value < hash);
    let point = points.get(at).or_else(|| points.first());
    point.map_or(0, |point| point.server as usize)
}

/// libmemcached's point names: `"host-j"` on port 11211, `"host:port-j"` otherwise, and
/// `"PATH:0-j"` for a unix socket (libmemcached gives sockets port 0).
pub(super) fn libmemcached_point_name(server: &ServerSpec, block: u32) -> String {
    if server.port() == super::MEMCACHED_DEFAULT_PORT {
        format!("{}-{block}", server.host())
    } else {
        format!("{}:{}-{block}", server.host(), server.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(weights: &[u32]) -> Vec<ServerSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| ServerSpec::new(format!("10.0.0.{}", i + 1), 11211).with_weight(w))
            .collect()
    }

    fn point_counts(weights: &[u32]) -> Vec<u32> {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        weights
            .iter()
            .map(|&w| point_count(w, total, weights.len()))
            .collect()
    }

    fn ketama_points(servers: &[ServerSpec]) -> Vec<Point> {
        points(servers, libmemcached_point_name)
    }

    #[test]
    fn crc32_is_the_zlib_crc() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(cmhash(b"123456789"), (0xCBF4_3926 >> 16) & 0x7fff);
    }

    #[test]
    fn md5_words_are_little_endian() {
        // MD5("") = d41d8cd9 8f00b204 e9800998 ecf8427e
        assert_eq!(md5_word(b"", 0), 0xd98c_1dd4);
        assert_eq!(md5_word(b"", 1), 0x04b2_008f);
        assert_eq!(md5_word(b"", 2), 0x9809_80e9);
        assert_eq!(md5_word(b"", 3), 0x7e42_f8ec);
    }

    #[test]
    fn ketama_point_counts_match_libmemcached() {
        assert_eq!(point_counts(&[1, 1, 3]), [96, 96, 288]);
        assert_eq!(point_counts(&[1, 2, 3, 4, 5]), [52, 104, 160, 212, 264]);
        // Single precision: a double-precision model would give 32/96/... here.
        assert_eq!(point_counts(&[1, 3, 7, 7, 7]), [28, 92, 224, 224, 224]);
        assert_eq!(point_counts(&[1, 1, 1, 1]), [160; 4]);
        assert_eq!(point_counts(&[u32::MAX, 1]), [320, 0]);
    }

    #[test]
    fn ketama_ring_holds_the_counted_points_sorted() {
        let servers = specs(&[1, 3, 7, 7, 7]);
        let points = ketama_points(&servers);
        assert_eq!(points.len(), 28 + 92 + 224 * 3);
        assert!(points.windows(2).all(|pair| pair[0] <= pair[1]));
        for (index, expected) in [28, 92, 224, 224, 224].into_iter().enumerate() {
            let owned = points.iter().filter(|p| p.server as usize == index).count();
            assert_eq!(owned, expected);
        }
    }

    #[test]
    fn ketama_names_points_without_the_default_port() {
        let default_port = [ServerSpec::new("h", 11211), ServerSpec::new("i", 11211)];
        let points = ketama_points(&default_port);
        assert!(points.contains(&Point {
            value: md5_word(b"h-0", 2),
            server: 0
        }));
        assert!(points.contains(&Point {
            value: md5_word(b"i-39", 0),
            server: 1
        }));
        let other_port = [ServerSpec::new("h", 11311), ServerSpec::new("i", 11211)];
        let points = ketama_points(&other_port);
        assert!(points.contains(&Point {
            value: md5_word(b"h:11311-39", 3),
            server: 0
        }));
    }

    #[test]
    fn ketama_names_unix_socket_points_with_port_0() {
        // libmemcached records a socket with port 0 and names its points "PATH:0-j"
        // (checked against libmemcached 1.1.4 in the integration tests).
        let servers = [
            ServerSpec::unix("/tmp/a.sock"),
            ServerSpec::unix("/tmp/b.sock"),
        ];
        let points = ketama_points(&servers);
        assert!(points.contains(&Point {
            value: md5_word(b"/tmp/a.sock:0-0", 0),
            server: 0
        }));
        assert!(points.contains(&Point {
            value: md5_word(b"/tmp/b.sock:0-39", 3),
            server: 1
        }));
    }
}

//! memsem's routing against the real client libraries: keys are stored through
//! Cache::Memcached, Cache::Memcached::Fast and libmemcached (Perl, tests/routing/agree.pl)
//! into real memcached processes, then every server is asked which keys it holds, and
//! `Ring::server_for` must name that server for every key.
//!
//! Needs `memcached`, `perl` and the Debian packages `libcache-memcached-perl`,
//! `libcache-memcached-fast-perl` and `libmemcached-libmemcached-perl`; a missing one fails
//! the test with the package to install.

use std::collections::HashSet;
use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use memsem::routing::{Endpoint, Ring, Routing, ServerSpec};

use crate::procs::Memcached;

/// The Perl helper that stores keys through a real client library.
const AGREE_PL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/routing/agree.pl");

/// Serialises the tests of this process that bind port 11211 on 127.0.0.2-4. Other
/// processes are handled by checking the pid of the server that answers.
pub static PORT_11211: Mutex<()> = Mutex::new(());

/// Deterministic pseudo-random numbers (xorshift64*), so failures can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// About 3,000 distinct memcached text keys: ASCII, long (up to 200 bytes), UTF-8, raw
/// high bytes 0x80-0xff and `__lock__` names. No whitespace or control bytes.
pub fn test_keys() -> Vec<Vec<u8>> {
    const WORDS: &[&str] = &[
        "report", "nightly", "job", "cron", "user:42", "batch/7", "a.b-c_d", "X", "#", "%2F",
    ];
    const UTF8: &[&str] = &[
        "é",
        "ü",
        "ß",
        "Ω",
        "ж",
        "日本",
        "語",
        "ロック",
        "🔒",
        "ñ",
        "€",
        "a",
        "-",
        "1",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut keys: Vec<Vec<u8>> = [
        "foo",
        "a",
        "__lock__",
        "__lock__nightly-report",
        "é",
        "__lock__日本語のロック",
        "🔒",
    ]
    .iter()
    .map(|key| key.as_bytes().to_vec())
    .collect();
    keys.push(vec![b'x'; 200]);
    keys.push(vec![0xff; 200]);
    keys.push(vec![0x80]);
    for i in 0..3_000 {
        let mut key = Vec::new();
        if i % 4 == 0 {
            key.extend_from_slice(b"__lock__");
        }
        let length = match i % 10 {
            0..=5 => 1 + rng.below(40),
            _ => 1 + rng.below(200),
        };
        match (i / 4) % 4 {
            // ASCII printable, no space.
            0 => (0..length).for_each(|_| key.push(0x21 + rng.below(0x7e - 0x21 + 1) as u8)),
            // Words, as lock names tend to be.
            1 => {
                while key.len() < length {
                    key.extend_from_slice(rng.pick(WORDS).as_bytes());
                }
            }
            // UTF-8 text.
            2 => {
                while key.len() < length {
                    key.extend_from_slice(rng.pick(UTF8).as_bytes());
                }
            }
            // Raw bytes, half of them 0x80-0xff (not valid UTF-8 in general).
            _ => (0..length).for_each(|_| {
                key.push(if rng.below(2) == 0 {
                    0x21 + rng.below(0x7e - 0x21 + 1) as u8
                } else {
                    0x80 + rng.below(0x80) as u8
                })
            }),
        }
        key.truncate(200);
        keys.push(key);
    }
    for key in &keys {
        assert!(!key.is_empty() && key.len() <= 250, "bad test key length");
        assert!(
            key.iter().all(|&b| b > 0x20 && b != 0x7f),
            "test key with whitespace or control byte"
        );
    }
    let mut seen = HashSet::new();
    keys.retain(|key| seen.insert(key.clone()));
    keys
}

/// The real client libraries driven by agree.pl.
#[derive(Debug, Clone, Copy)]
enum Library {
    CacheMemcached,
    CacheMemcachedFast,
    Libmemcached,
}

impl Library {
    fn name(self) -> &'static str {
        match self {
            Library::CacheMemcached => "cache-memcached",
            Library::CacheMemcachedFast => "cache-memcached-fast",
            Library::Libmemcached => "libmemcached",
        }
    }

    /// The memsem routing that must agree with this library.
    fn routing(self) -> Routing {
        match self {
            Library::CacheMemcached | Library::CacheMemcachedFast => Routing::CacheMemcached,
            Library::Libmemcached => Routing::Ketama,
        }
    }
}

const ALL_LIBRARIES: [Library; 3] = [
    Library::Libmemcached,
    Library::CacheMemcached,
    Library::CacheMemcachedFast,
];

/// Stores `keys` through the real `library` into `servers`.
fn store_with(library: Library, servers: &[ServerSpec], keys: &[Vec<u8>], tag: &str) {
    let list: Vec<String> = servers
        .iter()
        .map(|s| match s.endpoint() {
            Endpoint::Tcp { host, port } => format!("{host}:{port}:{}", s.weight()),
            Endpoint::Unix(path) => format!("{}:{}", path.display(), s.weight()),
        })
        .collect();
    let key_file = KeyFile::write(tag, keys);
    let output = Command::new("perl")
        .arg(AGREE_PL)
        .arg(library.name())
        .arg(list.join(","))
        .arg(&key_file.0)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("perl is not installed: install it with 'apt-get install -y perl'")
        }
        Err(e) => panic!("cannot run perl {AGREE_PL}: {e}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}): {}{}",
        library.name(),
        output.status,
        stdout.trim(),
        stderr.trim()
    );
}

/// A temporary file of hex-encoded keys, removed when dropped.
struct KeyFile(PathBuf);

impl KeyFile {
    fn write(tag: &str, keys: &[Vec<u8>]) -> KeyFile {
        let path =
            std::env::temp_dir().join(format!("memsem-routing-{}-{tag}.hex", std::process::id()));
        let mut text = String::new();
        for key in keys {
            for byte in key {
                text.push_str(&format!("{byte:02x}"));
            }
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write the key file");
        KeyFile(path)
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where a scenario's servers listen: `(host, fixed port or None for a free one, weight)`;
/// the host [`UNIX`] starts a server on a fresh unix socket instead.
type Layout<'a> = &'a [(&'a str, Option<u16>, u32)];

/// The layout host that stands for a unix-socket server.
const UNIX: &str = "unix";

/// For each library: fresh servers, keys stored by the library, every key looked up on
/// every server, and compared with memsem's `Ring`. Panics unless 100% agree.
fn check_agreement(scenario: &str, layout: Layout<'_>, libraries: &[Library]) {
    let keys = test_keys();
    for &library in libraries {
        let servers: Vec<Memcached> = layout
            .iter()
            .map(|&(host, port, _)| match host {
                UNIX => Memcached::start_unix(),
                host => Memcached::start(host, port),
            })
            .collect();
        let specs: Vec<ServerSpec> = servers
            .iter()
            .zip(layout)
            .map(|(server, &(_, _, weight))| match &server.socket {
                Some(path) => ServerSpec::unix(path).with_weight(weight),
                None => ServerSpec::new(server.host.clone(), server.port).with_weight(weight),
            })
            .collect();
        store_with(
            library,
            &specs,
            &keys,
            &format!("{scenario}-{}", library.name()),
        );

        let held: Vec<Vec<bool>> = servers.iter().map(|server| server.holds(&keys)).collect();
        let ring = Ring::new(library.routing(), &specs).expect("a valid server list");
        let mut per_server = vec![0usize; servers.len()];
        let mut agreed = 0;
        let mut disagreements = Vec::new();
        for (k, key) in keys.iter().enumerate() {
            let holders: Vec<usize> = (0..servers.len()).filter(|&s| held[s][k]).collect();
            let [actual] = holders[..] else {
                panic!(
                    "{scenario}/{}: key {} is on servers {holders:?}, expected exactly one",
                    library.name(),
                    hex(key)
                );
            };
            per_server[actual] += 1;
            let predicted = ring.server_for(key);
            if predicted == actual {
                agreed += 1;
            } else if disagreements.len() < 10 {
                disagreements.push(format!("{} on {actual}, memsem says {predicted}", hex(key)));
            }
        }
        println!(
            "routing agreement: scenario {scenario}, library {} vs memsem {}: {agreed}/{} keys agree, keys per server {per_server:?}",
            library.name(),
            library.routing(),
            keys.len(),
        );
        assert_eq!(
            agreed,
            keys.len(),
            "{scenario}/{}: memsem disagrees on {} keys, for instance {disagreements:#?}",
            library.name(),
            keys.len() - agreed
        );
        assert!(
            per_server.iter().all(|&count| count > 0),
            "{scenario}/{}: a server got no keys at all, the scenario proves little: {per_server:?}",
            library.name()
        );
    }
}

pub fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn local(weights: &[u32]) -> Vec<(&'static str, Option<u16>, u32)> {
    weights.iter().map(|&w| ("127.0.0.1", None, w)).collect()
}

#[test]
fn routing_agrees_with_real_libraries_for_weights_1_1_3() {
    check_agreement("weights-1-1-3", &local(&[1, 1, 3]), &ALL_LIBRARIES);
}

#[test]
fn routing_agrees_with_real_libraries_for_weights_1_3_7_7_7() {
    check_agreement(
        "weights-1-3-7-7-7",
        &local(&[1, 3, 7, 7, 7]),
        &ALL_LIBRARIES,
    );
}

#[test]
fn routing_agrees_with_real_libraries_for_weights_1_2_3_4_5() {
    check_agreement(
        "weights-1-2-3-4-5",
        &local(&[1, 2, 3, 4, 5]),
        &ALL_LIBRARIES,
    );
}

#[test]
fn routing_agrees_with_real_libraries_for_four_equal_servers() {
    check_agreement("four-equal", &local(&[1, 1, 1, 1]), &ALL_LIBRARIES);
}

#[test]
fn routing_agrees_with_real_libraries_on_default_port_11211() {
    let _only_us = PORT_11211
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let layout = [
        ("127.0.0.2", Some(11211), 1),
        ("127.0.0.3", Some(11211), 1),
        ("127.0.0.4", Some(11211), 1),
    ];
    check_agreement("port-11211", &layout, &ALL_LIBRARIES);
}

/// libmemcached hashes the IPv6 host text without brackets (`::1:PORT-j`), which is what
/// `ServerSpec` keeps from `[::1]:PORT`. Only libmemcached is checked here: for the Perl
/// clients' buckets the host text plays no part.
#[test]
fn routing_agrees_with_libmemcached_on_ipv6_loopback() {
    let layout = [("::1", None, 1), ("::1", None, 2), ("::1", None, 1)];
    check_agreement("ipv6-1-2-1", &layout, &[Library::Libmemcached]);
}

/// Unix-socket entries (`memcached -s`): Cache::Memcached and ::Fast take `"/path"`
/// entries (their buckets ignore the address), libmemcached names a socket's ketama points
/// `"PATH:0-j"`. Mixed with a TCP server, weights 1,2,1.
#[test]
fn routing_agrees_with_real_libraries_on_unix_sockets() {
    let layout = [(UNIX, None, 1), (UNIX, None, 2), ("127.0.0.1", None, 1)];
    check_agreement("unix-1-2-1", &layout, &ALL_LIBRARIES);
    let layout = [(UNIX, None, 1), (UNIX, None, 1), (UNIX, None, 1)];
    check_agreement("unix-equal", &layout, &ALL_LIBRARIES);
}

#[test]
fn stopped_server_is_not_rerouted_ring_is_pure() {
    let keys = test_keys();
    let mut servers: Vec<Option<Memcached>> = (0..5)
        .map(|_| Some(Memcached::start("127.0.0.1", None)))
        .collect();
    let specs: Vec<ServerSpec> = servers
        .iter()
        .flatten()
        .zip([1, 3, 7, 7, 7])
        .map(|(server, weight)| {
            ServerSpec::new(server.host.clone(), server.port).with_weight(weight)
        })
        .collect();
    for routing in [Routing::Ketama, Routing::CacheMemcached] {
        let ring = Ring::new(routing, &specs).expect("a valid server list");
        let before: Vec<usize> = keys.iter().map(|key| ring.server_for(key)).collect();
        let stopped = 2;
        assert!(
            before.contains(&stopped),
            "the stopped server must own keys"
        );

        // Kill one memcached process and make sure it is really gone.
        let address = specs[stopped].address();
        if let Some(server) = servers[stopped].take() {
            drop(server);
        }
        assert!(
            TcpStream::connect(&address).is_err(),
            "{address} still accepts connections"
        );

        // Neither the existing table nor a new one moves the dead server's keys.
        let rebuilt = Ring::new(routing, &specs).expect("a valid server list");
        for (k, key) in keys.iter().enumerate() {
            assert_eq!(
                ring.server_for(key),
                before[k],
                "{routing}: key {}",
                hex(key)
            );
            assert_eq!(
                rebuilt.server_for(key),
                before[k],
                "{routing}: key {}",
                hex(key)
            );
        }
        let orphaned = before.iter().filter(|&&s| s == stopped).count();
        println!(
            "{routing}: {orphaned} of {} keys stay on the stopped server {address} (no rehash)",
            keys.len()
        );
    }
}

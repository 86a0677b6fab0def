//! memsem and twemproxy (nutcracker 0.5.0): routing like the proxy when going around it
//! (`Routing::Twemproxy`), checked key by key against the real nutcracker in front of real
//! memcached processes.
//!
//! Needs `memcached` and the Debian package `nutcracker`; a missing one fails the test with
//! the package to install.

use memsem::routing::{Ring, Routing, ServerSpec, TwemproxyDistribution, TwemproxyHash};

use crate::nutcracker::{self, Nutcracker, Pool};
use crate::procs::Memcached;
use crate::routing::{PORT_11211, hex, test_keys};

/// Keys per pool: the first ones of the routing tests' set (ASCII, words, UTF-8, raw high
/// bytes), each prefixed with its pool's tag, which twemproxy hashes with the rest.
const KEYS_PER_POOL: usize = 400;

/// The keys stored through pool `index`: `"p<index>:" + key`, as a namespace would be.
fn pool_keys(index: usize) -> Vec<Vec<u8>> {
    test_keys()
        .into_iter()
        .take(KEYS_PER_POOL)
        .map(|key| {
            let mut prefixed = format!("p{index}:").into_bytes();
            prefixed.extend_from_slice(&key);
            prefixed
        })
        .collect()
}

/// A backend as twemproxy's configuration writes it.
fn twemproxy_entry(spec: &ServerSpec) -> String {
    match spec.endpoint() {
        memsem::Endpoint::Tcp { host, port } => format!("{host}:{port}:{}", spec.weight()),
        memsem::Endpoint::Unix(path) => format!("{}:{}", path.display(), spec.weight()),
    }
}

/// For each routing: a nutcracker pool with that hash and distribution over `servers`
/// (`specs` are the same servers with their weights); keys are stored through the proxy,
/// each backend says which keys it holds, and `Ring::server_for` must name it for every
/// key. Panics unless 100% agree.
fn check_agreement(
    scenario: &str,
    servers: &[Memcached],
    specs: &[ServerSpec],
    routings: &[Routing],
) {
    let pools: Vec<Pool> = routings
        .iter()
        .map(|routing| {
            let Routing::Twemproxy { hash, distribution } = *routing else {
                panic!("not a twemproxy routing: {routing}");
            };
            Pool {
                hash: hash.to_string(),
                distribution: distribution.to_string(),
                servers: specs.iter().map(twemproxy_entry).collect(),
            }
        })
        .collect();
    let proxy = Nutcracker::start(&pools);
    let keys: Vec<Vec<Vec<u8>>> = (0..pools.len()).map(pool_keys).collect();
    for (index, address) in proxy.listen.iter().enumerate() {
        nutcracker::set_all(address, &keys[index]);
    }
    for (index, routing) in routings.iter().enumerate() {
        let held: Vec<Vec<bool>> = servers.iter().map(|s| s.holds(&keys[index])).collect();
        let ring = Ring::new(*routing, specs).expect("a valid server list");
        let mut per_server = vec![0usize; servers.len()];
        let mut disagreements = Vec::new();
        for (k, key) in keys[index].iter().enumerate() {
            let holders: Vec<usize> = (0..servers.len()).filter(|&s| held[s][k]).collect();
            let [actual] = holders[..] else {
                panic!(
                    "{scenario}/{routing}: key {} is on servers {holders:?}, expected exactly one",
                    hex(key)
                );
            };
            per_server[actual] += 1;
            let predicted = ring.server_for(key);
            if predicted != actual {
                disagreements.push(format!("{} on {actual}, memsem says {predicted}", hex(key)));
            }
        }
        println!(
            "twemproxy agreement: scenario {scenario}, {routing}: {}/{} keys agree, keys per server {per_server:?}",
            KEYS_PER_POOL - disagreements.len(),
            KEYS_PER_POOL
        );
        assert!(
            disagreements.is_empty(),
            "{scenario}/{routing}: memsem disagrees with nutcracker on {} keys, for instance {:#?}",
            disagreements.len(),
            &disagreements[..disagreements.len().min(10)]
        );
        // crc32 is 15 bits wide (0..32767): on a 32-bit ketama circle every key lands on
        // the first point or two, as in the proxy itself. Every other pair spreads keys.
        let degenerate = matches!(
            routing,
            Routing::Twemproxy {
                hash: TwemproxyHash::Crc32,
                distribution: TwemproxyDistribution::Ketama
            }
        );
        assert!(
            degenerate || per_server.iter().all(|&count| count > 0),
            "{scenario}/{routing}: a server got no keys, the scenario proves little: {per_server:?}"
        );
    }
}

fn twemproxy(hashes: &[TwemproxyHash], distributions: &[TwemproxyDistribution]) -> Vec<Routing> {
    let mut routings = Vec::new();
    for &hash in hashes {
        for &distribution in distributions {
            routings.push(Routing::Twemproxy { hash, distribution });
        }
    }
    routings
}

const BOTH: [TwemproxyDistribution; 2] =
    [TwemproxyDistribution::Ketama, TwemproxyDistribution::Modula];

/// Every hash × ketama and modula, three backends weighted 1, 2, 1 on free ports (ketama
/// points named `"host:port-j"`). The list is in descending name order: twemproxy sorts a
/// pool's servers by name, and modula counts its buckets in that order.
#[test]
fn twemproxy_routing_agrees_with_nutcracker_for_every_hash_and_distribution() {
    let mut servers: Vec<Memcached> = (0..3)
        .map(|_| Memcached::start("127.0.0.1", None))
        .collect();
    servers.sort_by_key(|server| std::cmp::Reverse(server.address()));
    let specs: Vec<ServerSpec> = servers
        .iter()
        .zip([1, 2, 1])
        .map(|(server, weight)| {
            ServerSpec::new(server.host.clone(), server.port).with_weight(weight)
        })
        .collect();
    check_agreement(
        "weights-1-2-1",
        &servers,
        &specs,
        &twemproxy(TwemproxyHash::ALL, &BOTH),
    );
}

/// Backends on port 11211: twemproxy, like libmemcached, names their ketama points
/// `"host-j"` without the port.
#[test]
fn twemproxy_routing_agrees_with_nutcracker_on_default_port_11211() {
    let _only_us = PORT_11211
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let servers: Vec<Memcached> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|host| Memcached::start(host, Some(11211)))
        .collect();
    let specs: Vec<ServerSpec> = servers
        .iter()
        .map(|server| ServerSpec::new(server.host.clone(), server.port))
        .collect();
    let hashes = [
        TwemproxyHash::Md5,
        TwemproxyHash::Fnv1a64,
        TwemproxyHash::Murmur,
    ];
    check_agreement(
        "port-11211",
        &servers,
        &specs,
        &twemproxy(&hashes, &[TwemproxyDistribution::Ketama]),
    );
}

/// Unix-socket backends (`/path:weight` in twemproxy's list): their ketama points are
/// named `"/path:-j"`, the `:` before the weight kept.
#[test]
fn twemproxy_routing_agrees_with_nutcracker_on_unix_sockets() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start_unix()).collect();
    let specs: Vec<ServerSpec> = servers
        .iter()
        .zip([2, 1, 1])
        .map(|(server, weight)| {
            ServerSpec::unix(server.socket.clone().expect("a unix socket")).with_weight(weight)
        })
        .collect();
    let hashes = [
        TwemproxyHash::Md5,
        TwemproxyHash::Fnv1a64,
        TwemproxyHash::OneAtATime,
    ];
    check_agreement("unix-2-1-1", &servers, &specs, &twemproxy(&hashes, &BOTH));
}

//! memsem and twemproxy (nutcracker 0.5.0): routing like the proxy when going around it
//! (`Routing::Twemproxy`), checked key by key against the real nutcracker in front of real
//! memcached processes, and real Perl Cache::Memcached::Semaphore clients going through the
//! proxy while memsem goes around it.
//!
//! Needs `memcached`, `perl`, and the Debian packages `nutcracker` and
//! `libcache-memcached-perl`; a missing one fails the test with the package to install.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use memsem::routing::{Ring, Routing, ServerSpec, TwemproxyDistribution, TwemproxyHash};

use crate::interop::{
    Scratch, counter_example, perl_succeeded, read_count, spawn_perl, worker_figures,
};
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

/// The namespace every side puts before its keys: twemproxy hashes it with the rest.
const NAMESPACE: &str = "app:";

/// The pool's settings, for nutcracker and for memsem going around it.
const POOL_HASH: TwemproxyHash = TwemproxyHash::Fnv1a64;

fn pool_routing() -> Routing {
    Routing::Twemproxy {
        hash: POOL_HASH,
        distribution: TwemproxyDistribution::Ketama,
    }
}

/// Two memcached backends behind one nutcracker pool (`fnv1a_64`, `ketama`, no ejection).
struct ProxiedFleet {
    backends: Vec<Memcached>,
    proxy: Nutcracker,
    /// The backends as memsem and twemproxy list them, `host:port:weight`.
    list: String,
}

impl ProxiedFleet {
    fn start() -> ProxiedFleet {
        let backends: Vec<Memcached> = (0..2)
            .map(|_| Memcached::start("127.0.0.1", None))
            .collect();
        let entries: Vec<String> = backends
            .iter()
            .map(|server| format!("{}:1", server.address()))
            .collect();
        let proxy = Nutcracker::start(&[Pool {
            hash: POOL_HASH.to_string(),
            distribution: "ketama".into(),
            servers: entries.clone(),
        }]);
        ProxiedFleet {
            backends,
            proxy,
            list: entries.join(","),
        }
    }

    /// The proxy as a one-server list for semaphore.pl.
    fn proxy_list(&self) -> String {
        format!("{}:1", self.proxy.listen[0])
    }

    /// memsem going straight to the backends, routing like the pool.
    fn direct_client(&self, routing: Routing) -> memsem::Client {
        crate::harness::builder()
            .servers(&self.list)
            .routing(routing)
            .namespace(NAMESPACE)
            // Fresh backends: the default lock-delay would keep them from granting locks.
            .lock_delay(std::time::Duration::ZERO)
            .build()
            .expect("a valid fleet")
    }

    /// Lock names: two on each backend by the pool's routing, one of which memsem's
    /// default ketama would send to the other backend, and a UTF-8 one.
    fn names(&self) -> Vec<String> {
        let specs = ServerSpec::parse_list(&self.list).expect("a valid fleet");
        let pool = Ring::new(pool_routing(), &specs).expect("a valid fleet");
        let ketama = Ring::new(Routing::Ketama, &specs).expect("a valid fleet");
        let mut names = Vec::new();
        // (backend, whether ketama disagrees) pairs still wanted.
        let mut wanted = vec![(0, false), (0, true), (1, false), (1, true)];
        for i in 0.. {
            let name = format!("proxied-{i}");
            let wire = format!("{NAMESPACE}__lock__{name}");
            let server = pool.server_for(wire.as_bytes());
            let differs = ketama.server_for(format!("__lock__{name}").as_bytes()) != server;
            if let Some(at) = wanted.iter().position(|&w| w == (server, differs)) {
                wanted.remove(at);
                names.push(name);
            }
            if wanted.is_empty() {
                break;
            }
        }
        names.push("proxied-ключ-🔒".to_string());
        names
    }

    /// Which backends hold the wire key of lock `name` (asked directly with `mg`).
    fn holders_of(&self, name: &str) -> Vec<String> {
        let key = format!("{NAMESPACE}__lock__{name}").into_bytes();
        self.backends
            .iter()
            .filter(|server| server.holds(std::slice::from_ref(&key))[0])
            .map(Memcached::address)
            .collect()
    }
}

/// A Perl holder going through nutcracker blocks memsem going around it with the pool's
/// routing, on the backend the proxy chose; with memsem's default ketama routing the
/// same lock is taken a second time on the other backend for some names (the double
/// holder this routing exists to prevent).
#[test]
fn perl_holder_through_nutcracker_blocks_memsem_direct_with_twemproxy_routing() {
    let fleet = ProxiedFleet::start();
    let routed = fleet.direct_client(pool_routing());
    let naive = fleet.direct_client(Routing::Ketama);
    let scratch = Scratch::new("memsem-proxied-hold");
    let mut double_holders = 0;
    for (index, name) in fleet.names().into_iter().enumerate() {
        let release = scratch.path(&format!("release-{index}"));
        let mut holder = spawn_perl(
            &[
                "hold",
                &fleet.proxy_list(),
                NAMESPACE,
                &name,
                release.to_str().expect("a UTF-8 temp path"),
            ],
            Stdio::piped(),
        );
        let mut stdout = BufReader::new(holder.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read from perl");
        if !line.starts_with("held ") {
            let output = holder.wait_with_output().expect("wait for perl");
            perl_succeeded(output, "hold");
            panic!("perl hold printed {line:?}");
        }

        let sem = routed.semaphore(&name).expect("a valid name");
        assert_eq!(
            fleet.holders_of(&name),
            vec![sem.server().to_string()],
            "nutcracker put Perl's lock {name} elsewhere than memsem's twemproxy routing"
        );
        assert!(
            sem.try_acquire().expect("memcached answers").is_none(),
            "memsem (twemproxy routing) took {name} while Perl held it through the proxy"
        );
        let naive_sem = naive.semaphore(&name).expect("a valid name");
        if naive_sem.server() != sem.server() {
            let permit = naive_sem
                .try_acquire()
                .expect("memcached answers")
                .expect("the other backend has no such key");
            double_holders += 1;
            permit.release().expect("release");
        }

        std::fs::write(&release, b"").expect("create the release file");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read from perl");
        perl_succeeded(holder.wait_with_output().expect("wait for perl"), "hold");
        assert_eq!(rest.trim(), "released");
        let permit = sem
            .try_acquire()
            .expect("memcached answers")
            .unwrap_or_else(|| panic!("memsem could not take {name} after Perl released it"));
        permit.release().expect("release");
    }
    println!(
        "through nutcracker vs around it: twemproxy routing blocked on every name; \
         ketama routing would have made {double_holders} double holders"
    );
    assert!(
        double_holders >= 2,
        "the names were chosen so that ketama disagrees on two"
    );
}

/// Perl Cache::Memcached::Semaphore workers through nutcracker, memsem workers through
/// nutcracker (classic dialect) and memsem workers going straight to the backends
/// (twemproxy routing, same namespace) increment shared counters under the same locks:
/// exact counts, no overlap.
#[test]
fn perl_and_memsem_through_nutcracker_and_memsem_around_it_never_overlap() {
    let fleet = ProxiedFleet::start();
    let names = fleet.names();
    let scratch = Scratch::new("memsem-proxied");
    let (perl_workers, rust_workers, iterations) = (2, 2, 100);
    let proxy_list = fleet.proxy_list();
    let routing = pool_routing().to_string();

    let mut children = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let counter = scratch.path(&format!("{index}.count"));
        let counter_text = counter.to_str().expect("a UTF-8 temp path").to_string();
        for _ in 0..perl_workers {
            let child = spawn_perl(
                &[
                    "worker",
                    &proxy_list,
                    NAMESPACE,
                    name,
                    &iterations.to_string(),
                    &counter_text,
                    "2000",
                ],
                Stdio::piped(),
            );
            children.push((
                "perl through nutcracker",
                name.clone(),
                counter.clone(),
                child,
            ));
        }
        for _ in 0..rust_workers {
            let child = Command::new(counter_example())
                .args([
                    &fleet.list,
                    name,
                    &counter_text,
                    &iterations.to_string(),
                    "2",
                ])
                .env("MEMSEM_ROUTING", &routing)
                .env("MEMSEM_NAMESPACE", NAMESPACE)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the counter example");
            children.push(("memsem direct", name.clone(), counter.clone(), child));
        }
        for _ in 0..rust_workers {
            let child = Command::new(counter_example())
                .args([
                    &fleet.proxy.listen[0],
                    name,
                    &counter_text,
                    &iterations.to_string(),
                    "2",
                ])
                .env("MEMSEM_PROTOCOL", "classic")
                .env("MEMSEM_NAMESPACE", NAMESPACE)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the counter example");
            children.push((
                "memsem through nutcracker",
                name.clone(),
                counter.clone(),
                child,
            ));
        }
    }

    let processes = children.len();
    let (mut acquisitions, mut overlaps) = (0, 0);
    let mut counters: Vec<(String, PathBuf)> = Vec::new();
    for (side, name, counter, child) in children {
        let output = child.wait_with_output().expect("wait for a worker");
        let stdout = if side.starts_with("perl") {
            perl_succeeded(output, &format!("worker {name}"))
        } else {
            assert!(
                output.status.success(),
                "{side} worker on {name} failed or overlapped ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let (acquired, overlapped) = worker_figures(&stdout);
        acquisitions += acquired;
        overlaps += overlapped;
        if !counters.iter().any(|(n, _)| *n == name) {
            counters.push((name, counter));
        }
    }
    let expected = (perl_workers + 2 * rust_workers) as u64 * iterations;
    for (name, counter) in &counters {
        assert_eq!(
            read_count(counter),
            expected,
            "lock {name}: an increment was lost, so two holders overlapped"
        );
        assert!(
            fleet.holders_of(name).is_empty(),
            "lock {name} is still held after every worker released it"
        );
    }
    println!(
        "perl through nutcracker, memsem through nutcracker (classic), memsem direct \
         ({routing}): {} names, {processes} processes, {acquisitions} acquisitions, \
         {overlaps} overlaps",
        names.len()
    );
    assert_eq!(acquisitions, expected * names.len() as u64);
    assert_eq!(overlaps, 0, "two holders were inside at the same time");
}

/// Deletes `key` straight on a backend (`delete`), as an eviction would drop it.
fn delete_on(server: &Memcached, key: &[u8]) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.address()).expect("connect to memcached");
    let mut request = b"delete ".to_vec();
    request.extend_from_slice(key);
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).expect("send delete");
    let mut reply = [0u8; 64];
    let read = stream.read(&mut reply).expect("read the delete reply");
    assert_eq!(&reply[..read], b"DELETED\r\n");
}

/// memsem through nutcracker: `--protocol classic`, and `auto`, which finds out that the
/// proxy closes the connection on meta commands. Every lock operation, each name on the
/// backend the proxy routes it to, checked on the backends themselves; memsem going around
/// the proxy (meta, twemproxy routing) sees the same locks.
#[test]
fn memsem_through_nutcracker_speaks_classic_for_every_lock_operation() {
    let fleet = ProxiedFleet::start();
    let specs = ServerSpec::parse_list(&fleet.list).expect("a valid fleet");
    let ring = Ring::new(pool_routing(), &specs).expect("a valid fleet");
    let direct = fleet.direct_client(pool_routing());
    for protocol in [memsem::Protocol::Classic, memsem::Protocol::Auto] {
        let client = crate::harness::builder()
            .servers(&fleet.proxy.listen[0])
            .protocol(protocol)
            .namespace(NAMESPACE)
            .build()
            .expect("a valid client");
        let pings = client.ping();
        let status = pings[0].1.as_ref().expect("nutcracker answers");
        assert_eq!(status.dialect(), "classic", "{protocol}");

        for name in fleet.names() {
            let wire = format!("{NAMESPACE}__lock__{name}").into_bytes();
            let backend = specs[ring.server_for(&wire)].address();
            let sem = client
                .semaphore(&name)
                .and_then(|sem| sem.with_ttl(std::time::Duration::from_secs(30)))
                .expect("a valid name");

            // Acquire: on the backend the proxy routes to; a second acquire fails, from
            // here and from around the proxy.
            let mut permit = sem
                .try_acquire()
                .expect("nutcracker answers")
                .expect("a fresh lock is free");
            assert_eq!(
                fleet.holders_of(&name),
                vec![backend.clone()],
                "{protocol} {name}"
            );
            assert!(sem.try_acquire().expect("nutcracker answers").is_none());
            let around = direct.semaphore(&name).expect("a valid name");
            assert!(around.try_acquire().expect("memcached answers").is_none());
            // Read: the holder, without its remaining TTL (classic cannot tell).
            let holder = sem.holder().expect("nutcracker answers").expect("held");
            assert!(permit.token().starts_with(holder.token_prefix()));
            assert_eq!(holder.ttl(), None);
            assert!(permit.is_held().expect("nutcracker answers"));
            // Refresh (CAS-checked), then release (CAS-checked expiry).
            permit
                .refresh(std::time::Duration::from_secs(60))
                .expect("refresh through the proxy");
            assert!(permit.is_held().expect("nutcracker answers"));
            permit.release().expect("release through the proxy");
            assert!(
                fleet.holders_of(&name).is_empty(),
                "{protocol} {name} still held"
            );

            // Cooldown: the key stays, nobody gets the lock.
            let permit = sem.try_acquire().expect("answers").expect("free again");
            permit
                .release_with_cooldown(std::time::Duration::from_secs(30))
                .expect("cooldown through the proxy");
            assert_eq!(fleet.holders_of(&name), vec![backend.clone()]);
            assert!(sem.try_acquire().expect("answers").is_none());
            assert!(around.try_acquire().expect("answers").is_none());

            // Steal after waiting (the unsafe force of the Perl module).
            let stealer = sem.clone().with_wait_policy(
                memsem::WaitPolicy::new()
                    .max_wait(std::time::Duration::from_millis(100))
                    .steal_after_wait(true),
            );
            let mut stolen = stealer.wait_acquire().expect("steal through the proxy");
            assert!(stolen.is_held().expect("answers"));

            // A lock removed under its holder is reported lost, never recreated.
            delete_on(&fleet.backends[ring.server_for(&wire)], &wire);
            let lost = stolen.refresh(std::time::Duration::from_secs(30));
            assert!(
                matches!(lost, Err(ref error) if error.is_lock_lost()),
                "{protocol} {name}: {lost:?}"
            );
            assert!(fleet.holders_of(&name).is_empty());
        }
    }
}

/// The classic dialect against memcached 1.6.18 itself (`Protocol::Classic` forced):
/// contention, counting permits (several slots read in one round trip) and fencing
/// numbers (`add` + `incr`).
#[test]
fn classic_mode_on_memcached_itself_takes_permits_and_fences() {
    let server = Memcached::start("127.0.0.1", None);
    let client = crate::harness::builder()
        .servers(&server.address())
        .protocol(memsem::Protocol::Classic)
        .build()
        .expect("a valid client");
    let pings = client.ping();
    assert_eq!(pings[0].1.as_ref().expect("up").dialect(), "classic");

    let sem = client
        .semaphore("classic-slots")
        .and_then(|sem| sem.with_permits(3))
        .expect("a valid name");
    let permits: Vec<_> = (0..3)
        .map(|_| sem.try_acquire().expect("answers").expect("a free slot"))
        .collect();
    let mut slots: Vec<u32> = permits.iter().map(|permit| permit.slot()).collect();
    slots.sort_unstable();
    assert_eq!(slots, [1, 2, 3]);
    assert!(sem.try_acquire().expect("answers").is_none());
    assert_eq!(sem.holders().expect("answers").len(), 3);
    for permit in permits {
        permit.release().expect("release");
    }
    assert!(sem.holders().expect("answers").is_empty());

    let fenced = client
        .semaphore("classic-fenced")
        .and_then(|sem| sem.with_fencing())
        .expect("a valid name");
    let first = fenced.try_acquire().expect("answers").expect("free");
    let a = first.fence().expect("a fence number");
    first.release().expect("release");
    let second = fenced.try_acquire().expect("answers").expect("free");
    let b = second.fence().expect("a fence number");
    second.release().expect("release");
    assert!(b > a, "fence numbers must grow: {a} then {b}");
}

/// The tokio transport through nutcracker in `auto`: it too falls back to classic.
#[test]
fn tokio_client_through_nutcracker_falls_back_to_classic() {
    let fleet = ProxiedFleet::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let client = crate::harness::builder()
            .servers(&fleet.proxy.listen[0])
            .namespace(NAMESPACE)
            .build_async()
            .await
            .expect("a valid client");
        let pings = client.ping().await;
        assert_eq!(pings[0].1.as_ref().expect("up").dialect(), "classic");
        for name in fleet.names() {
            let sem = client.semaphore(&name).expect("a valid name");
            let mut permit = sem
                .try_acquire()
                .await
                .expect("nutcracker answers")
                .expect("free");
            assert_eq!(fleet.holders_of(&name).len(), 1);
            assert!(sem.try_acquire().await.expect("answers").is_none());
            permit
                .refresh(std::time::Duration::from_secs(30))
                .await
                .expect("refresh");
            permit.release().await.expect("release");
            assert!(fleet.holders_of(&name).is_empty());
        }
    });
}

/// The `memsem` binary through nutcracker: `ping` names the dialect `auto` chose, `run`
/// holds the lock on the backend the proxy routes to, and a bad `--protocol` is a usage
/// error.
#[test]
fn memsem_cli_through_nutcracker_pings_classic_and_runs_a_command() {
    let fleet = ProxiedFleet::start();
    let memsem = || {
        let mut command = Command::new(crate::harness::workspace_binary("memsem"));
        command
            .env("MEMSEM_SERVERS", &fleet.proxy.listen[0])
            .env("MEMSEM_NAMESPACE", NAMESPACE)
            .env("MEMSEM_LOCK_DELAY", "0")
            .env_remove("MEMSEM_ROUTING")
            .env_remove("MEMSEM_PROTOCOL");
        command
    };
    let ping = memsem().arg("ping").output().expect("memsem runs");
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "{text}");
    assert!(text.contains("classic protocol"), "{text}");
    let json = memsem()
        .args(["ping", "--json"])
        .output()
        .expect("memsem runs");
    assert!(String::from_utf8_lossy(&json.stdout).contains("\"dialect\":\"classic\""));

    // `memsem run` holds the lock on the backend while its command runs.
    let name = &fleet.names()[0];
    let scratch = Scratch::new("memsem-proxied-cli");
    let (inside, go) = (scratch.path("inside"), scratch.path("go"));
    let script = format!(
        "touch '{}'; while [ ! -e '{}' ]; do sleep 0.01; done",
        inside.display(),
        go.display()
    );
    let mut run = memsem()
        .args([
            "--protocol",
            "classic",
            "run",
            "--no-wait",
            name,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memsem runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !inside.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        if let Some(status) = run.try_wait().expect("poll memsem") {
            panic!("memsem run ended early: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        fleet.holders_of(name).len(),
        1,
        "held while the command runs"
    );
    std::fs::write(&go, b"").expect("let the command finish");
    let output = run.wait_with_output().expect("memsem ends");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        fleet.holders_of(name).is_empty(),
        "released after the command"
    );

    let bad = memsem()
        .args(["--protocol", "binary", "ping"])
        .output()
        .expect("memsem runs");
    assert_eq!(
        bad.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

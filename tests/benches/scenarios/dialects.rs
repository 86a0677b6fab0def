//! Scenario 8: an uncontended acquire+release pair in each dialect, meta and classic, on
//! memcached and through twemproxy (nutcracker), each as a multiple of the raw round trip
//! measured in the same run on the same path.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use memsem::Protocol;

use crate::nutcracker::{Nutcracker, Pool};
use crate::procs::Memcached;
use crate::{Sizes, median_us};

const TOKEN: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A raw text-protocol connection.
struct Raw {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(address: &str) -> Raw {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            writer: stream.try_clone().expect("clone a stream"),
            reader: BufReader::new(stream),
        }
    }

    /// Sends `request` and reads lines until one equals `last`; returns the lines.
    fn exchange(&mut self, request: &[u8], last: &str) -> Vec<String> {
        self.writer.write_all(request).expect("send");
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read");
            assert!(!line.is_empty(), "connection closed after {request:?}");
            let done = line.trim_end() == last || (last == "VERSION" && line.starts_with(last));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// One round trip: `mn` (meta) or `version` (classic, and what a proxy passes).
    fn round_trip(&mut self, meta: bool) {
        if meta {
            self.exchange(b"mn\r\n", "MN");
        } else {
            self.exchange(b"version\r\n", "VERSION");
        }
    }

    /// A raw meta pair: `ms … ME`, `md`.
    fn meta_pair(&mut self, key: &str) {
        let mut add = format!("ms {key} {} T60 ME\r\n", TOKEN.len()).into_bytes();
        add.extend_from_slice(TOKEN);
        add.extend_from_slice(b"\r\n");
        assert_eq!(self.exchange(&add, "HD"), ["HD\r\n"]);
        self.exchange(format!("md {key}\r\n").as_bytes(), "HD");
    }

    /// A raw classic pair as memsem sends it: `add` + `gets` pipelined, then `cas` to an
    /// expired time.
    fn classic_pair(&mut self, key: &str) {
        let mut add = format!("add {key} 0 60 {}\r\n", TOKEN.len()).into_bytes();
        add.extend_from_slice(TOKEN);
        add.extend_from_slice(format!("\r\ngets {key}\r\n").as_bytes());
        let lines = self.exchange(&add, "END");
        assert_eq!(lines[0], "STORED\r\n");
        let cas = lines[1]
            .split_whitespace()
            .last()
            .and_then(|cas| cas.parse::<u64>().ok())
            .expect("a CAS in the gets reply");
        let expire = format!("cas {key} 0 2592001 0 {cas}\r\n\r\n");
        assert_eq!(self.exchange(expire.as_bytes(), "STORED"), ["STORED\r\n"]);
    }
}

/// One path to the data: memcached itself, or nutcracker in front of it.
struct Path {
    label: &'static str,
    address: String,
    /// Whether meta commands pass (not through twemproxy).
    meta: bool,
}

/// Per path: medians of the raw round trip, the raw pairs and memsem's pairs.
pub fn meta_vs_classic(sizes: &Sizes) {
    let n = sizes.pairs;
    let warm = n / 10;
    // One worker thread, as in scenario 1: every connection then has the same round trip.
    let server = Memcached::start_with("127.0.0.1", None, &["-t", "1"]);
    let proxy = Nutcracker::start(&[Pool {
        hash: "fnv1a_64".into(),
        distribution: "ketama".into(),
        servers: vec![format!("{}:1", server.address())],
    }]);
    let paths = [
        Path {
            label: "memcached 1.6.18",
            address: server.address(),
            meta: true,
        },
        Path {
            label: "through nutcracker 0.5.0",
            address: proxy.listen[0].clone(),
            meta: false,
        },
    ];
    println!(
        "## 10. Meta vs classic: uncontended acquire+release pair (median of {n}, µs; \
         × = multiple of the raw round trip on the same path)\n"
    );
    println!("| path | what | round trips | µs | × round trip |");
    println!("|---|---|---:|---:|---:|");
    for path in &paths {
        let mut raw = Raw::connect(&path.address);
        let mut protocols = vec![Protocol::Classic];
        if path.meta {
            protocols.insert(0, Protocol::Meta);
        }
        let sems: Vec<_> = protocols
            .iter()
            .map(|&protocol| {
                let client = crate::builder()
                    .servers(&path.address)
                    .protocol(protocol)
                    .build()
                    .expect("memsem client");
                (
                    protocol,
                    client
                        .semaphore(&format!("bench-dialect-{protocol}"))
                        .expect("a valid name"),
                )
            })
            .collect();
        let mut round_trips = Vec::with_capacity(n);
        let mut raw_meta = Vec::with_capacity(n);
        let mut raw_classic = Vec::with_capacity(n);
        let mut memsem: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); sems.len()];
        // Interleaved, so that load drift weighs on every row alike.
        for i in 0..warm + n {
            let timed = |f: &mut dyn FnMut()| {
                let started = Instant::now();
                f();
                started.elapsed()
            };
            let trip = timed(&mut || raw.round_trip(path.meta));
            let meta = path
                .meta
                .then(|| timed(&mut || raw.meta_pair("bench-raw-meta")));
            let classic = timed(&mut || raw.classic_pair("bench-raw-classic"));
            let pairs: Vec<Duration> = sems
                .iter()
                .map(|(_, sem)| {
                    timed(&mut || {
                        let permit = sem.try_acquire().expect("answers").expect("free");
                        permit.release().expect("release");
                    })
                })
                .collect();
            if i >= warm {
                round_trips.push(trip);
                if let Some(meta) = meta {
                    raw_meta.push(meta);
                }
                raw_classic.push(classic);
                for (samples, took) in memsem.iter_mut().zip(pairs) {
                    samples.push(took);
                }
            }
        }
        let trip_us = median_us(round_trips);
        let row = |what: &str, trips: u32, us: f64| {
            println!(
                "| {} | {what} | {trips} | {us:.1} | {:.2} |",
                path.label,
                us / trip_us
            );
        };
        row(
            if path.meta {
                "raw round trip (`mn`)"
            } else {
                "raw round trip (`version`)"
            },
            1,
            trip_us,
        );
        if path.meta {
            row("raw meta pair: `ms ME`, `md`", 2, median_us(raw_meta));
        }
        row(
            "raw classic pair: `add`+`gets`, `cas` expired",
            2,
            median_us(raw_classic),
        );
        for ((protocol, _), samples) in sems.iter().zip(memsem) {
            row(
                &format!("memsem try_acquire + release, {protocol}"),
                2,
                median_us(samples),
            );
        }
    }
    println!();
}

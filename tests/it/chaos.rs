//! Exclusion under faults. Worker processes (examples/chaos.rs) loop acquire → critical
//! section → release over three memcached servers, logging every step, while this driver
//! pauses servers (up to 2 s), stops and restarts one of them, and SIGKILLs workers (which it
//! then replaces). A checker then reads the logs: no two critical sections of one name may
//! overlap — also around a restart of the lock's server, which forgets every lock: the
//! workers' lock-delay (the lease, 4 s) keeps the restarted server from granting a lock
//! until every lease of its earlier incarnation has ended. The cost is reported: how long
//! the restarted server's names went without a holder after each restart.
//!
//! With `MEMSEM_CHAOS_LOCK_DELAY_MS=0` (lock-delay off) the check is the weaker one: overlaps
//! only around a restart, each noticed by the earlier holder (its refresh or release reports
//! the lock lost).
//!
//! Size knobs: `MEMSEM_CHAOS_SECS` (default 15) and `MEMSEM_CHAOS_WORKERS` (default 4). The
//! long run (RELIABILITY.md): `MEMSEM_CHAOS_SECS=60 MEMSEM_CHAOS_WORKERS=16 cargo test
//! --release --test it chaos -- --nocapture`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memsem::Client;

use crate::harness::{Memcached, unique};
use crate::processes::example;

/// The lease the workers take: a killed holder blocks its name at most this long.
const TTL_SECS: u64 = 4;
/// Lock names per server.
const NAMES_PER_SERVER: usize = 2;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One critical section as the logs tell it.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    #[allow(dead_code, reason = "shown when a check fails")]
    token: String,
    fence: u64,
    pid: u32,
    enter: u128,
    /// When the winning add was sent.
    sent: u128,
    exit: Option<u128>,
    /// A refresh or the release reported the lock lost.
    lost_seen: bool,
}

/// A stop-and-restart of the pinned server: from just before the stop until it answers again.
#[derive(Debug, Clone, Copy)]
struct Restart {
    start: u128,
    end: u128,
}

#[derive(Debug, Default)]
struct Tally {
    acquisitions: u64,
    timeouts: u64,
    acquire_errors: BTreeMap<String, u64>,
    refreshes: BTreeMap<String, u64>,
    releases: BTreeMap<String, u64>,
    lost_detected: u64,
}

struct Workers {
    binary: PathBuf,
    /// `MEMSEM_FAIRNESS` for the workers.
    fairness: &'static str,
    args: Vec<String>,
    dir: PathBuf,
    running: Vec<Child>,
    spawned: u32,
    /// pid -> when the driver saw it dead after a SIGKILL.
    killed: HashMap<u32, u128>,
    /// The workers' lock-delay.
    lock_delay_ms: u64,
}

impl Workers {
    fn spawn(&mut self) {
        self.spawned += 1;
        let log = self.dir.join(format!("worker-{}.log", self.spawned));
        let mut args = self.args.clone();
        args.insert(3, log.to_str().unwrap().to_string());
        let child = Command::new(&self.binary)
            .args(&args)
            .env("MEMSEM_FAIRNESS", self.fairness)
            .env("MEMSEM_LOCK_DELAY_MS", self.lock_delay_ms.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a chaos worker");
        self.running.push(child);
    }

    fn kill_one(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let index = rand::random_range(0..self.running.len());
        let mut child = self.running.swap_remove(index);
        let pid = child.id();
        child.kill().expect("SIGKILL a worker");
        child.wait().expect("reap the killed worker");
        self.killed.insert(pid, now_ns());
        self.spawn();
    }
}

#[test]
fn chaos_no_two_holders_ever_with_lock_delay_and_every_loss_is_reported() {
    chaos("polling", knob("MEMSEM_CHAOS_SECS", 15));
}

/// The same faults with the workers waiting in FIFO mode (tickets, hand-offs, reservations).
#[test]
fn chaos_in_fifo_mode_no_two_holders_ever_with_lock_delay() {
    chaos("fifo", knob("MEMSEM_CHAOS_SECS", 15));
}

/// Runs workers whose `MEMSEM_FAIRNESS` is `fairness` for `secs` under faults, then checks
/// their logs.
fn chaos(fairness: &'static str, secs: u64) {
    let workers_n = knob("MEMSEM_CHAOS_WORKERS", 4) as usize;
    let lock_delay_ms = knob("MEMSEM_CHAOS_LOCK_DELAY_MS", TTL_SECS * 1000);
    let servers = [
        Memcached::start(),
        Memcached::start(),
        Memcached::start_pinned(),
    ];
    let restarted = 2;
    let list = servers
        .iter()
        .map(Memcached::address)
        .collect::<Vec<_>>()
        .join(",");
    let names = names_per_server(&list, &servers);
    let names_arg = names.keys().cloned().collect::<Vec<_>>().join(",");
    let dir = std::env::temp_dir().join(unique("memsem-chaos"));
    std::fs::create_dir_all(&dir).unwrap();
    // Fresh servers are in their lock-delay too: start once they are past it (memcached's
    // uptime runs 2 s ahead of its real one).
    for server in &servers {
        let mut raw = server.raw();
        let ready = lock_delay_ms.div_ceil(1000) + 2;
        while raw.stat("uptime") < ready {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let until = SystemTime::now() + Duration::from_secs(secs);
    let until_ms = until.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let mut workers = Workers {
        binary: example("chaos"),
        fairness,
        args: vec![
            "loop".into(),
            list.clone(),
            names_arg,
            until_ms.to_string(),
            TTL_SECS.to_string(),
        ],
        dir: dir.clone(),
        running: Vec::new(),
        spawned: 0,
        killed: HashMap::new(),
        lock_delay_ms,
    };
    for _ in 0..workers_n {
        workers.spawn();
    }

    let (mut pauses, mut kills) = (0u32, 0u32);
    let mut restarts = Vec::new();
    let stop_faults = until - Duration::from_millis(500);
    while SystemTime::now() < stop_faults {
        // Let the workers run a little between faults.
        std::thread::sleep(Duration::from_millis(rand::random_range(100..600)));
        match rand::random_range(0..4) {
            0 | 1 => {
                let server = &servers[rand::random_range(0..servers.len())];
                server.pause();
                // The fault's duration: sleeping lets the time pass.
                std::thread::sleep(Duration::from_millis(rand::random_range(100..2000)));
                server.unpause();
                pauses += 1;
            }
            // A restart once the lock-delay of the last one has passed (so that its cost can
            // be measured), a pause otherwise.
            2 if restarts.last().is_none_or(|r: &Restart| {
                now_ns() > r.end + u128::from(lock_delay_ms + 2000) * 1_000_000
            }) =>
            {
                let start = now_ns();
                servers[restarted].stop();
                std::thread::sleep(Duration::from_millis(rand::random_range(0..500)));
                servers[restarted].restart();
                restarts.push(Restart {
                    start,
                    end: now_ns(),
                });
            }
            2 => {
                let server = &servers[rand::random_range(0..servers.len())];
                server.pause();
                std::thread::sleep(Duration::from_millis(rand::random_range(100..2000)));
                server.unpause();
                pauses += 1;
            }
            _ => {
                workers.kill_one();
                kills += 1;
            }
        }
    }

    // The workers stop by themselves at `until`; give a late one its last wait_acquire.
    let deadline = Instant::now() + Duration::from_secs(TTL_SECS + 10);
    for mut child in std::mem::take(&mut workers.running) {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a chaos worker failed: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "a chaos worker did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let (sections, tally) = read_logs(&dir, &workers.killed);
    let server_of: HashMap<&str, usize> = names.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let report = check(&sections, &restarts, |name| server_of[name] == restarted);
    let cost = unavailability(&sections, &restarts, |name| server_of[name] == restarted);
    println!(
        "chaos ({fairness}): {secs} s, {workers_n} workers ({} spawned), 3 servers, {} names, TTL {TTL_SECS} s, \
         lock-delay {lock_delay_ms} ms",
        workers.spawned,
        names.len()
    );
    println!(
        "faults: {pauses} pauses, {} restarts, {kills} workers killed",
        restarts.len()
    );
    println!(
        "acquisitions {}, wait timeouts {}, acquire errors {:?}",
        tally.acquisitions, tally.timeouts, tally.acquire_errors
    );
    println!(
        "refreshes {:?}, releases {:?}, lost leases detected {}",
        tally.refreshes, tally.releases, tally.lost_detected
    );
    println!(
        "overlaps: {} in total (outside restart windows {}, inside {}, detected {}), \
         fence inversions {}",
        report.outside.len() as u64 + report.inside,
        report.outside.len(),
        report.inside,
        report.inside_detected,
        report.fence_inversions.len()
    );
    println!("after each restart, the restarted server's names had no holder for: {cost}");
    assert!(tally.acquisitions > 0, "the workers made no progress");
    if lock_delay_ms >= TTL_SECS * 1000 {
        assert_eq!(
            report.inside,
            0,
            "two holders at once around a restart despite the lock-delay (logs kept in {})",
            dir.display()
        );
    }
    assert!(
        report.outside.is_empty(),
        "two holders at once outside a restart window (logs kept in {}): {:#?}",
        dir.display(),
        report.outside
    );
    assert_eq!(
        report.inside,
        report.inside_detected,
        "an overlap around a restart went unreported (logs kept in {})",
        dir.display()
    );
    assert!(
        report.fence_inversions.is_empty(),
        "a later holder got a smaller fencing token (logs kept in {}): {:#?}",
        dir.display(),
        report.fence_inversions
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How long after each restart (from when the server answered again) the first lock on one
/// of its names was granted (its add sent): the lock-delay's cost, as `min / median / max`
/// over restarts (a restart followed by none before the run ended is left out).
fn unavailability(
    sections: &[Section],
    restarts: &[Restart],
    on_restarted_server: impl Fn(&str) -> bool,
) -> String {
    let mut gaps: Vec<u128> = restarts
        .iter()
        .filter_map(|restart| {
            sections
                .iter()
                .filter(|s| on_restarted_server(&s.name) && s.sent > restart.end)
                .map(|s| s.enter - restart.end)
                .min()
        })
        .collect();
    if gaps.is_empty() {
        return "no restart was followed by an acquisition".into();
    }
    gaps.sort_unstable();
    let ms = |ns: u128| format!("{:.0} ms", ns as f64 / 1e6);
    format!(
        "{} / {} / {} (min / median / max over {} restarts)",
        ms(gaps[0]),
        ms(gaps[gaps.len() / 2]),
        ms(gaps[gaps.len() - 1]),
        gaps.len()
    )
}

/// `NAMES_PER_SERVER` lock names for each server, found by asking the client's routing.
fn names_per_server(list: &str, servers: &[Memcached]) -> BTreeMap<String, usize> {
    let client = Client::connect(list).unwrap();
    let mut names = BTreeMap::new();
    let mut counts = vec![0; servers.len()];
    let prefix = unique("chaos");
    for i in 0.. {
        if counts.iter().all(|&c| c == NAMES_PER_SERVER) {
            break;
        }
        let name = format!("{prefix}-{i}");
        let address = client.semaphore(&name).unwrap().server().to_string();
        let server = servers.iter().position(|s| s.address() == address).unwrap();
        if counts[server] < NAMES_PER_SERVER {
            counts[server] += 1;
            names.insert(name, server);
        }
    }
    names
}

fn read_logs(dir: &Path, killed: &HashMap<u32, u128>) -> (Vec<Section>, Tally) {
    let mut sections: Vec<Section> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut tally = Tally::default();
    let mut last_seen = 0u128;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["enter", name, token, fence, pid, t, sent] => {
                    tally.acquisitions += 1;
                    let enter = t.parse().unwrap();
                    last_seen = last_seen.max(enter);
                    open.insert(token.to_string(), sections.len());
                    sections.push(Section {
                        name: name.to_string(),
                        token: token.to_string(),
                        fence: fence.parse().unwrap(),
                        pid: pid.parse().unwrap(),
                        enter,
                        sent: sent.parse().unwrap(),
                        exit: None,
                        lost_seen: false,
                    });
                }
                ["exit", _, token, _, t] => {
                    let t = t.parse().unwrap();
                    last_seen = last_seen.max(t);
                    sections[open[*token]].exit = Some(t);
                }
                ["refresh", _, token, _, _, outcome] => {
                    *tally.refreshes.entry(outcome.to_string()).or_default() += 1;
                    if *outcome == "lost" {
                        tally.lost_detected += 1;
                        sections[open[*token]].lost_seen = true;
                    }
                }
                ["release", _, token, _, _, outcome] => {
                    *tally.releases.entry(outcome.to_string()).or_default() += 1;
                    let section = &mut sections[open[*token]];
                    if *outcome == "lost" {
                        if !section.lost_seen {
                            tally.lost_detected += 1;
                        }
                        section.lost_seen = true;
                    }
                }
                ["timeout", ..] => tally.timeouts += 1,
                ["error", _, _, _, kind] => {
                    *tally.acquire_errors.entry(kind.to_string()).or_default() += 1
                }
                // A worker killed in the middle of a write.
                _ => {}
            }
        }
    }
    // A section left open ended when its worker was killed (the driver saw it dead then).
    for section in &mut sections {
        if section.exit.is_none() {
            section.exit = Some(killed.get(&section.pid).copied().unwrap_or(last_seen));
        }
    }
    (sections, tally)
}

#[derive(Debug, Default)]
struct Report {
    outside: Vec<(Section, Section)>,
    inside: u64,
    inside_detected: u64,
    fence_inversions: Vec<(Section, Section)>,
}

fn check(
    sections: &[Section],
    restarts: &[Restart],
    on_restarted_server: impl Fn(&str) -> bool,
) -> Report {
    let mut by_name: BTreeMap<&str, Vec<&Section>> = BTreeMap::new();
    for section in sections {
        by_name.entry(&section.name).or_default().push(section);
    }
    let mut report = Report::default();
    for (name, mut list) in by_name {
        list.sort_by_key(|s| s.enter);
        for (i, a) in list.iter().enumerate() {
            let a_exit = a.exit.unwrap();
            for b in &list[i + 1..] {
                if b.enter >= a_exit {
                    break;
                }
                let around_restart = on_restarted_server(name)
                    && restarts
                        .iter()
                        .any(|r| a.enter < r.end && b.enter > r.start);
                if around_restart {
                    report.inside += 1;
                    report.inside_detected += u64::from(a.lost_seen);
                } else {
                    report.outside.push(((*a).clone(), (*b).clone()));
                }
            }
        }
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let overlapping = b.enter < a.exit.unwrap();
            if !overlapping && b.fence <= a.fence {
                report.fence_inversions.push((a.clone(), b.clone()));
            }
        }
    }
    report
}

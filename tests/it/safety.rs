//! Issue 12: no double holder across memcached restarts (epochs, lock-delay), partitions
//! (the lease deadline) and wrapper crashes; non-retryable refusals. Real memcached
//! processes, killed and restarted on the same port.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use memsem::{Client, Error, LostReason, WaitPolicy};

use crate::harness::{Raw, builder, unique};
use crate::procs::Memcached;
use crate::proxy::{Mode, Proxy};

/// A memcached process on a port of its own, which can be crashed and started again there.
struct Restartable {
    server: Option<Memcached>,
    port: u16,
}

impl Restartable {
    fn start() -> Restartable {
        let server = Memcached::start("127.0.0.1", None);
        let port = server.port;
        Restartable {
            server: Some(server),
            port,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then a new memcached on the same port: it has forgotten every lock and its
    /// CAS values start again at 1.
    fn crash_and_restart(&mut self) {
        drop(self.server.take());
        self.server = Some(Memcached::start("127.0.0.1", Some(self.port)));
    }

    fn client(&self, lock_delay: Duration) -> Client {
        builder()
            .servers(&self.address())
            .io_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .lock_delay(lock_delay)
            .build()
            .expect("client")
    }
}

fn restarted(error: &Error) -> bool {
    matches!(
        error,
        Error::LockLost {
            reason: LostReason::Restarted,
            ..
        }
    )
}

#[test]
fn a_release_with_a_cas_from_before_a_restart_never_deletes_the_new_holders_lock() {
    let mut server = Restartable::start();
    let name = unique("restart-release");
    let a = server.client(Duration::ZERO).semaphore(&name).unwrap();
    let first = a.try_acquire().unwrap().expect("free");
    server.crash_and_restart();
    // Without lock-delay, the restarted server grants the lock again at once (CAS 1 again).
    let b = server.client(Duration::ZERO).semaphore(&name).unwrap();
    let second = b
        .try_acquire()
        .unwrap()
        .expect("the restarted server forgot the lock");

    let error = first.release().unwrap_err();
    assert!(restarted(&error), "{error}");
    assert!(
        b.verify(second.token()).unwrap(),
        "the stale release touched B's lock"
    );
    assert!(
        b.try_acquire().unwrap().is_none(),
        "C got in while B holds it"
    );
    second.release().unwrap();
}

#[test]
fn a_refresh_or_cooldown_from_before_a_restart_is_never_sent() {
    let mut server = Restartable::start();
    let name = unique("restart-refresh");
    let sem = server.client(Duration::ZERO).semaphore(&name).unwrap();
    let mut refreshed = sem.try_acquire().unwrap().expect("free");
    let other = server.client(Duration::ZERO);
    let cooled = other
        .semaphore(&format!("{name}-2"))
        .unwrap()
        .try_acquire()
        .unwrap()
        .expect("free");
    server.crash_and_restart();
    let b = server.client(Duration::ZERO).semaphore(&name).unwrap();
    let second = b.try_acquire().unwrap().expect("forgotten by the restart");

    let error = refreshed.refresh(Duration::from_secs(30)).unwrap_err();
    assert!(restarted(&error), "{error}");
    let error = cooled
        .release_with_cooldown(Duration::from_secs(30))
        .unwrap_err();
    assert!(restarted(&error), "{error}");
    // Nothing was written: B's lock keeps its value and its TTL.
    assert!(b.verify(second.token()).unwrap());
    let mut raw = Raw::connect(&server.address());
    assert!(raw.get(format!("{name}-2").as_bytes()).is_none());
    drop(refreshed);
    assert!(b.verify(second.token()).unwrap());
    second.release().unwrap();
}

#[test]
fn a_restarted_server_grants_no_lock_during_the_lock_delay_and_the_old_holder_is_told() {
    let mut server = Restartable::start();
    let name = unique("lock-delay");
    let delay = Duration::from_secs(3);
    let old = server.client(delay);
    // A server that has been up less than the delay grants nothing either: wait it out.
    let mut held = old
        .semaphore(&name)
        .unwrap()
        .with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(30)))
        .wait_acquire()
        .unwrap();
    server.crash_and_restart();

    let sem = server.client(delay).semaphore(&name).unwrap();
    match sem.try_acquire() {
        Err(Error::LockDelay { remaining, .. }) => {
            assert!(remaining <= delay, "{remaining:?}");
        }
        other => panic!("expected the lock-delay, got {other:?}"),
    }
    let error = held.refresh(Duration::from_secs(30)).unwrap_err();
    assert!(restarted(&error), "{error}");

    let waiting = sem.with_wait_policy(WaitPolicy::new().max_wait(Duration::from_secs(30)));
    let permit = waiting
        .wait_acquire()
        .expect("granted once the delay is over");
    // memcached reports an uptime up to 2 s ahead of its real one: count from that.
    let uptime = Raw::connect(&server.address()).stat("uptime");
    assert!(
        uptime >= delay.as_secs() + 2,
        "granted {uptime} s (reported) after the restart"
    );
    permit.release().unwrap();
}

#[test]
fn fencing_numbers_keep_increasing_across_a_restart() {
    let mut server = Restartable::start();
    let name = unique("fence-restart");
    let fenced = |server: &Restartable| {
        server
            .client(Duration::ZERO)
            .semaphore(&name)
            .unwrap()
            .with_fencing()
            .unwrap()
    };
    let before = fenced(&server).try_acquire().unwrap().expect("free");
    let first = before.fence().expect("fencing is on");
    before.release().unwrap();
    server.crash_and_restart();
    let after = fenced(&server).try_acquire().unwrap().expect("free");
    assert!(after.fence().expect("fencing is on") > first);
    after.release().unwrap();
}

#[test]
fn leases_above_max_lease_are_refused_unless_it_is_raised() {
    let server = Restartable::start();
    let client = server.client(Duration::ZERO);
    let error = client
        .semaphore("long")
        .unwrap()
        .with_ttl(Duration::from_secs(301))
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidConfig(text) if text.contains("max_lease")),
        "{error}"
    );
    let mut permit = client
        .semaphore("long")
        .unwrap()
        .try_acquire()
        .unwrap()
        .unwrap();
    assert!(matches!(
        permit.refresh(Duration::from_secs(600)),
        Err(Error::InvalidConfig(_))
    ));
    let raised = builder()
        .servers(&server.address())
        .max_lease(Duration::from_secs(600))
        .lock_delay(Duration::ZERO)
        .build()
        .unwrap();
    let sem = raised
        .semaphore("long")
        .unwrap()
        .with_ttl(Duration::from_secs(600))
        .unwrap();
    assert_eq!(sem.ttl(), Some(Duration::from_secs(600)));
    permit.release().unwrap();
}

/// A holder whose path to memcached turns into a blackhole (accepted, never answered) is told
/// it lost the lock while the lease still runs on the server — not when a refresh finally
/// errors, and never after the next holder could enter.
#[test]
fn a_keep_alive_cut_off_by_a_blackhole_reports_the_loss_before_the_lease_ends() {
    let server = Memcached::start("127.0.0.1", None);
    let proxy = Proxy::start(&server.address());
    let client = builder()
        .servers(proxy.address())
        .io_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let name = unique("blackhole");
    let sem = client
        .semaphore(&name)
        .unwrap()
        .with_ttl(Duration::from_secs(3))
        .unwrap();
    let (lost_tx, lost_rx) = mpsc::channel();
    let direct = server.address();
    let key = format!("__lock__{name}");
    let held = sem
        .try_acquire()
        .unwrap()
        .expect("free")
        .keep_alive_with(move |why| {
            // At the moment of the report, the server must still hold our lease.
            let still_held = Raw::connect(&direct).get(key.as_bytes()).is_some();
            let _ = lost_tx.send((why.to_string(), still_held));
        });
    proxy.set(Mode::Blackhole);
    let (why, still_held) = lost_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the loss is reported");
    assert_eq!(why, memsem::LostReason::Expired.to_string());
    assert!(
        still_held,
        "reported only after the lease had ended on the server"
    );
    assert!(held.is_lost());
    drop(held);
    proxy.set(Mode::Pass);
}

/// `memsem run` cut off by a blackhole stops its command (SIGTERM) while the lease still
/// runs on the server, exits 75 and says why.
#[test]
fn memsem_run_cut_off_by_a_blackhole_stops_its_command_before_the_lease_ends() {
    let server = Memcached::start("127.0.0.1", None);
    let proxy = Proxy::start(&server.address());
    let name = unique("cli-blackhole");
    let dir = std::env::temp_dir().join(unique("memsem-blackhole"));
    std::fs::create_dir_all(&dir).unwrap();
    let memsem = crate::harness::workspace_binary("memsem");
    // On SIGTERM the command asks the server itself (not through the proxy) whether the
    // lock is still held: `status` exits 1 when it is.
    let script = format!(
        "trap '{memsem} --servers {direct} status -q {name}; echo $? > {d}/held; exit 0' TERM; \
         touch {d}/started; while :; do sleep 0.05; done",
        memsem = memsem.display(),
        direct = server.address(),
        d = dir.display()
    );
    let run = Command::new(&memsem)
        .args(["--servers", proxy.address(), "--lock-delay", "0"])
        .args(["--io-timeout", "500ms", "--connect-timeout", "500ms"])
        .args(["run", "--ttl", "4s", "--kill-after", "500ms", &name])
        .args(["--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::harness::wait_until("the command starts", || dir.join("started").exists());
    proxy.set(Mode::Blackhole);
    let output = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("no refresh was confirmed"), "{stderr}");
    let held = std::fs::read_to_string(dir.join("held")).expect("the command got SIGTERM");
    assert_eq!(
        held.trim(),
        "1",
        "the lease had ended before the command was stopped"
    );
    proxy.set(Mode::Pass);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The tokio keep-alive behind a blackhole: `lost()` completes while the server still holds
/// the lease.
#[test]
fn an_async_keep_alive_cut_off_by_a_blackhole_reports_the_loss_before_the_lease_ends() {
    let server = Memcached::start("127.0.0.1", None);
    let proxy = Proxy::start(&server.address());
    let name = unique("async-blackhole");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (why, still_held) = runtime.block_on(async {
        let client = builder()
            .servers(proxy.address())
            .io_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .build_async()
            .await
            .unwrap();
        let sem = client
            .semaphore(&name)
            .unwrap()
            .with_ttl(Duration::from_secs(3))
            .unwrap();
        let held = sem.try_acquire().await.unwrap().expect("free").keep_alive();
        proxy.set(Mode::Blackhole);
        tokio::time::timeout(Duration::from_secs(30), held.lost())
            .await
            .expect("the loss is reported");
        let still_held = Raw::connect(&server.address())
            .get(format!("__lock__{name}").as_bytes())
            .is_some();
        (held.lost_reason(), still_held)
    });
    assert_eq!(why, Some(memsem::LostReason::Expired));
    assert!(
        still_held,
        "reported only after the lease had ended on the server"
    );
    proxy.set(Mode::Pass);
}

/// The reproduction with the command line: A runs under the lock, the server
/// crashes and comes back empty, B acquires (lock-delay off); when A's command ends, A's
/// release must not delete B's lock (CAS 1 again on the new server), and A exits 75.
#[test]
fn memsem_run_across_a_restart_never_deletes_the_next_holders_lock() {
    let mut server = Restartable::start();
    let name = unique("cli-restart");
    let dir = std::env::temp_dir().join(unique("memsem-cli-restart"));
    std::fs::create_dir_all(&dir).unwrap();
    let address = server.address();
    let memsem = || {
        let mut command = Command::new(crate::harness::workspace_binary("memsem"));
        command
            .env("MEMSEM_SERVERS", &address)
            .env("MEMSEM_LOCK_DELAY", "0")
            .env_remove("MEMSEM_NAMESPACE")
            .env_remove("MEMSEM_TOKEN");
        command
    };
    let script = format!(
        "touch {d}/started; while [ ! -e {d}/go ]; do sleep 0.05; done",
        d = dir.display()
    );
    let a = memsem()
        .args(["run", "--ttl", "60s", &name, "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::harness::wait_until("the command starts", || dir.join("started").exists());
    server.crash_and_restart();
    let b = memsem()
        .args(["acquire", "--ttl", "60s", &name])
        .output()
        .unwrap();
    assert_eq!(
        b.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    let token = String::from_utf8_lossy(&b.stdout).trim().to_string();

    std::fs::write(dir.join("go"), "").unwrap();
    let a = a.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&a.stderr);
    assert_eq!(a.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("restarted"), "{stderr}");
    let verify = memsem()
        .args(["verify", &name, "--token", &token])
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "B lost its lock to A's stale release"
    );
    let c = memsem()
        .args(["acquire", "--no-wait", &name])
        .output()
        .unwrap();
    assert_eq!(c.status.code(), Some(75), "C got in while B holds the lock");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On the command line: a server in its lock-delay makes `--no-wait` exit 75 naming the
/// delay; a TTL above --max-lease is a usage error.
#[test]
fn the_cli_reports_the_lock_delay_and_refuses_leases_above_max_lease() {
    let server = Restartable::start();
    let run = |args: &[&str]| {
        Command::new(crate::harness::workspace_binary("memsem"))
            .env("MEMSEM_SERVERS", server.address())
            .env_remove("MEMSEM_LOCK_DELAY")
            .env_remove("MEMSEM_MAX_LEASE")
            .args(args)
            .output()
            .unwrap()
    };
    // A server started a moment ago is inside the default lock-delay (5 min).
    let out = run(&["run", "--no-wait", &unique("cli-delay"), "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("lock-delay"), "{stderr}");
    let out = run(&[
        "--max-lease",
        "1m",
        "run",
        "--ttl",
        "2m",
        "job",
        "--",
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("max_lease"), "{stderr}");
}

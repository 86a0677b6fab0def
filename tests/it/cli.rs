//! The `memsem` binary against a real memcached.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Memcached, unique};

/// The `memsem` binary of the workspace (package `memsem-cli`), built beside this test binary.
pub(crate) static MEMSEM: std::sync::LazyLock<PathBuf> =
    std::sync::LazyLock::new(|| crate::harness::workspace_binary("memsem"));

/// `memsem` with the server in the environment, as a cron job would have it.
pub(crate) fn memsem(server: &Memcached) -> Command {
    let mut command = Command::new(&*MEMSEM);
    command
        .env("MEMSEM_SERVERS", server.address())
        // Every test starts a fresh memcached: no lock-delay (tests/it/safety.rs covers it).
        .env("MEMSEM_LOCK_DELAY", "0")
        .env_remove("MEMSEM_MAX_LEASE")
        .env_remove("MEMSEM_NAMESPACE")
        .env_remove("MEMSEM_ROUTING")
        .env_remove("MEMSEM_TOKEN")
        // No restart lock-delay: these tests take locks on fresh servers.
        .env("MEMSEM_LOCK_DELAY", "0");
    command
}

pub(crate) fn output(command: &mut Command) -> Output {
    command.output().expect("memsem runs")
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A scratch directory for marker files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    fn display(&self) -> std::path::Display<'_> {
        self.0.display()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    let dir = std::env::temp_dir().join(unique("memsem-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Waits for `path` to exist (the event a child signals with), failing after 20 s.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a background memsem to end, failing after 30 s.
fn wait_with_deadline(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("memsem did not end in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `memsem run` in the background with a shell script as its command.
fn spawn_run(server: &Memcached, options: &[&str], name: &str, script: &str) -> Child {
    memsem(server)
        .arg("run")
        .args(options)
        .args([name, "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memsem starts")
}

fn lock_key(name: &str) -> Vec<u8> {
    format!("__lock__{name}").into_bytes()
}

#[test]
fn second_run_without_waiting_exits_75_naming_the_holder() {
    let server = Memcached::start();
    let name = unique("cli-busy");
    let dir = scratch();
    let script = format!(
        "touch {d}/started; while [ ! -e {d}/go ]; do sleep 0.05; done",
        d = dir.display()
    );
    let first = spawn_run(&server, &["--info", "first job"], &name, &script);
    wait_for_file(&dir.join("started"));

    let second = output(memsem(&server).args(["run", "--no-wait", &name, "--", "true"]));
    assert_eq!(second.status.code(), Some(75), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("first job"),
        "names the holder: {}",
        stderr(&second)
    );
    assert_eq!(stderr(&second).lines().count(), 1, "{}", stderr(&second));

    let overridden = output(memsem(&server).args([
        "run",
        "--no-wait",
        "--conflict-exit-code",
        "0",
        "-q",
        &name,
        "true",
    ]));
    assert_eq!(overridden.status.code(), Some(0));
    assert_eq!(stderr(&overridden), "", "--quiet says nothing");

    std::fs::write(dir.join("go"), "").unwrap();
    let first = wait_with_deadline(first);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
}

#[test]
fn waiting_run_starts_after_the_first_ends() {
    let server = Memcached::start();
    let name = unique("cli-wait");
    let dir = scratch();
    let first_script = format!(
        "touch {d}/started; while [ ! -e {d}/go ]; do sleep 0.05; done; touch {d}/first-done",
        d = dir.display()
    );
    let first = spawn_run(&server, &[], &name, &first_script);
    wait_for_file(&dir.join("started"));

    let second_script = format!(
        "touch {d}/waiting-started; test -e {d}/first-done",
        d = dir.display()
    );
    let second = spawn_run(
        &server,
        &["--wait", "30s", "--poll", "20ms"],
        &name,
        &second_script,
    );
    std::fs::write(dir.join("go"), "").unwrap();
    let first = wait_with_deadline(first);
    let second = wait_with_deadline(second);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(
        second.status.code(),
        Some(0),
        "the second command ran after the first ended: {}",
        stderr(&second)
    );
}

#[test]
fn bounded_wait_gives_up_with_75() {
    let server = Memcached::start();
    let name = unique("cli-timeout");
    let token = stdout(&output(memsem(&server).args(["acquire", &name])));
    let started = Instant::now();
    let waited = output(memsem(&server).args(["run", "--wait", "300ms", &name, "--", "true"]));
    assert_eq!(waited.status.code(), Some(75), "{}", stderr(&waited));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let released = output(memsem(&server).args(["release", &name, "--token", token.trim()]));
    assert!(released.status.success());
}

#[test]
fn run_passes_the_command_exit_status_through() {
    let server = Memcached::start();
    let name = unique("cli-status");
    let run = output(memsem(&server).args(["run", &name, "--", "sh", "-c", "exit 7"]));
    assert_eq!(run.status.code(), Some(7));
    let killed = output(memsem(&server).args(["run", &name, "--", "sh", "-c", "kill -KILL $$"]));
    assert_eq!(killed.status.code(), Some(128 + 9));
    let missing = output(memsem(&server).args(["run", &name, "--", "/no/such/command"]));
    assert_eq!(missing.status.code(), Some(127));
    assert_eq!(
        server.raw().get(&lock_key(&name)),
        None,
        "the lock is released every time"
    );
}

#[test]
fn command_longer_than_the_ttl_keeps_its_lease() {
    let server = Memcached::start();
    let name = unique("cli-long");
    let dir = scratch();
    // More than twice the TTL. (The lease must cover memcached's whole seconds, a margin
    // and the --kill-after grace: 4 s with 500 ms.)
    let script = format!("touch {d}/started; sleep 9", d = dir.display());
    let started = Instant::now();
    let mut long = spawn_run(
        &server,
        &["--ttl", "4s", "--kill-after", "500ms"],
        &name,
        &script,
    );
    wait_for_file(&dir.join("started"));
    let mut checks = 0;
    while long.try_wait().unwrap().is_none() {
        let other = output(memsem(&server).args(["run", "--no-wait", &name, "--", "true"]));
        if long.try_wait().unwrap().is_some() {
            break; // the first may have released just before this check
        }
        assert_eq!(
            other.status.code(),
            Some(75),
            "lock taken from a live job after {:?}: {}",
            started.elapsed(),
            stderr(&other)
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let long = wait_with_deadline(long);
    assert_eq!(long.status.code(), Some(0), "{}", stderr(&long));
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert!(checks >= 10, "only {checks} checks");
}

#[test]
fn deleting_the_key_during_a_run_stops_the_command_and_exits_75() {
    let server = Memcached::start();
    let name = unique("cli-lost");
    let dir = scratch();
    let script = format!(
        "trap 'touch {d}/terminated; exit 0' TERM; touch {d}/started; \
         while :; do sleep 0.05; done",
        d = dir.display()
    );
    let run = spawn_run(
        &server,
        &["--ttl", "4s", "--kill-after", "500ms"],
        &name,
        &script,
    );
    wait_for_file(&dir.join("started"));
    assert!(server.raw().delete(&lock_key(&name)));
    let run = wait_with_deadline(run);
    assert_eq!(run.status.code(), Some(75), "{}", stderr(&run));
    assert!(stderr(&run).contains("lost lock"), "{}", stderr(&run));
    assert!(dir.join("terminated").exists(), "the command got SIGTERM");
}

#[test]
fn command_that_ignores_sigterm_after_a_lost_lease_is_killed() {
    let server = Memcached::start();
    let name = unique("cli-lost-kill");
    let dir = scratch();
    let script = format!(
        "trap '' TERM; touch {d}/started; while :; do sleep 0.05; done",
        d = dir.display()
    );
    let run = spawn_run(
        &server,
        &["--ttl", "4s", "--kill-after", "300ms"],
        &name,
        &script,
    );
    wait_for_file(&dir.join("started"));
    assert!(server.raw().delete(&lock_key(&name)));
    let run = wait_with_deadline(run);
    assert_eq!(run.status.code(), Some(75), "{}", stderr(&run));
}

#[test]
fn on_lost_warn_lets_the_command_finish() {
    let server = Memcached::start();
    let name = unique("cli-lost-warn");
    let dir = scratch();
    let script = format!(
        "touch {d}/started; while [ ! -e {d}/go ]; do sleep 0.05; done; exit 3",
        d = dir.display()
    );
    let mut run = spawn_run(
        &server,
        &["--ttl", "2s", "--on-lost", "warn"],
        &name,
        &script,
    );
    wait_for_file(&dir.join("started"));
    assert!(server.raw().delete(&lock_key(&name)));
    // The warning is the event: read stderr until it says so.
    let mut stderr_pipe = run.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 512];
    while !seen.contains("keeps running") {
        let n = std::io::Read::read(&mut stderr_pipe, &mut buffer).unwrap();
        assert!(n > 0, "stderr closed before the warning: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    std::fs::write(dir.join("go"), "").unwrap();
    let run = wait_with_deadline(run);
    assert_eq!(run.status.code(), Some(3), "{seen}");
}

#[test]
fn sigterm_is_forwarded_to_the_command_and_the_lock_released_after() {
    let server = Memcached::start();
    let name = unique("cli-sigterm");
    let dir = scratch();
    let script = format!(
        "trap 'touch {d}/terminated; exit 0' TERM; touch {d}/started; \
         while :; do sleep 0.05; done",
        d = dir.display()
    );
    let run = spawn_run(&server, &[], &name, &script);
    wait_for_file(&dir.join("started"));
    let killed = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let run = wait_with_deadline(run);
    assert_eq!(
        run.status.code(),
        Some(0),
        "the command's status: {}",
        stderr(&run)
    );
    assert!(dir.join("terminated").exists(), "the command got SIGTERM");
    assert_eq!(server.raw().get(&lock_key(&name)), None, "released");
}

#[test]
fn acquire_verify_release_round_trip() {
    let server = Memcached::start();
    let name = unique("cli-token");
    let acquired = output(memsem(&server).args(["acquire", "--ttl", "30s", &name]));
    assert!(acquired.status.success(), "{}", stderr(&acquired));
    let token = stdout(&acquired).trim().to_string();
    assert_eq!(token.len(), 32);

    let verify = |token: &str| output(memsem(&server).args(["verify", &name, "--token", token]));
    assert_eq!(verify(&token).status.code(), Some(0));
    assert_eq!(
        verify("0123456789abcdef0123456789abcdef").status.code(),
        Some(1)
    );

    let again = output(memsem(&server).args(["acquire", "--no-wait", &name]));
    assert_eq!(again.status.code(), Some(75));

    let refreshed =
        output(memsem(&server).args(["refresh", &name, "--token", &token, "--ttl", "90s"]));
    assert!(refreshed.status.success(), "{}", stderr(&refreshed));
    let (_, ttl) = server.raw().get_with_ttl(&lock_key(&name)).unwrap();
    assert!(ttl > 30, "refreshed to 90 s, has {ttl}");

    let released = output(
        memsem(&server)
            .args(["release", &name])
            .env("MEMSEM_TOKEN", &token),
    );
    assert!(released.status.success(), "{}", stderr(&released));
    assert_eq!(verify(&token).status.code(), Some(1));
    let twice = output(memsem(&server).args(["release", &name, "--token", &token]));
    assert_eq!(
        twice.status.code(),
        Some(1),
        "a released token holds nothing"
    );
}

#[test]
fn status_exits_0_when_free_and_1_when_held() {
    let server = Memcached::start();
    let name = unique("cli-state");
    let free = output(memsem(&server).args(["status", &name]));
    assert_eq!(free.status.code(), Some(0));
    assert!(stdout(&free).contains("free"));
    let token = stdout(&output(memsem(&server).args([
        "acquire",
        "--info",
        "nightly on host-7",
        &name,
    ])));
    let held = output(memsem(&server).args(["status", &name]));
    assert_eq!(held.status.code(), Some(1));
    assert!(
        stdout(&held).contains("nightly on host-7"),
        "{}",
        stdout(&held)
    );
    let _ = output(memsem(&server).args(["release", &name, "--token", token.trim()]));
}

#[test]
fn json_output_parses() {
    let server = Memcached::start();
    let name = unique("cli-json");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = output(memsem(&server).arg("--json").args(args));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&out)))
    };
    let free = json(&["status", &name]);
    assert_eq!(free["held"], false);
    let acquired = json(&["acquire", "--info", "say \"hi\"\t", &name]);
    let token = acquired["token"].as_str().unwrap().to_string();
    let held = json(&["status", &name]);
    assert_eq!(held["held"], true);
    assert_eq!(held["info"], "say \"hi\"\t");
    assert!(held["ttl_secs"].as_u64().unwrap() <= 60);
    assert_eq!(json(&["verify", &name, "--token", &token])["held"], true);
    let ping = json(&["ping"]);
    assert_eq!(ping["all_up"], true);
    assert_eq!(ping["servers"][0]["server"], server.address());
    assert!(ping["servers"][0]["rtt_ms"].as_f64().is_some());
}

#[test]
fn bad_arguments_exit_64_with_a_usage_line() {
    let server = Memcached::start();
    for args in [
        &["run", "name-without-command"][..],
        &["run", "--ttl", "soon", "job", "true"],
        &["run", "--ttl", "0s", "job", "true"],
        &["run", "--wait", "1s", "--no-wait", "job", "true"],
        &["run", "two words", "true"],
        &["frobnicate"],
        &["verify", "job"],
        &["--routing", "random", "status", "job"],
    ] {
        let out = output(memsem(&server).args(args));
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?} says why");
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let no_servers = output(
        Command::new(&*MEMSEM)
            .env_remove("MEMSEM_SERVERS")
            .args(["status", "x"]),
    );
    assert_eq!(no_servers.status.code(), Some(64));
    assert!(stderr(&no_servers).contains("MEMSEM_SERVERS"));
    for args in [&["--help"][..], &["run", "--help"], &["--version"]] {
        let out = output(Command::new(&*MEMSEM).args(args));
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
    let help = output(Command::new(&*MEMSEM).args(["run", "--help"]));
    assert!(stdout(&help).contains("Examples:"));
}

#[test]
fn unreachable_server_exits_69_naming_it() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let address = format!("127.0.0.1:{port}");
    for args in [
        &["status", "job"][..],
        &["run", "job", "--", "true"],
        &["acquire", "--no-wait", "job"],
        &["ping"],
    ] {
        let out = output(
            Command::new(&*MEMSEM)
                .args(["--servers", &address, "--connect-timeout", "300ms"])
                .args(args),
        );
        assert_eq!(out.status.code(), Some(69), "{args:?}: {}", stderr(&out));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(said.contains(&address), "{args:?} names the server: {said}");
    }
}

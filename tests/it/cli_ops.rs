//! The `memsem` binary as operators use it, against a real memcached: one exit status per
//! error for every command, errors said once (and as JSON with `--json`), counting
//! semaphores (`-n`), `break`, cooldowns in `status`, flock-style options, completions and
//! the man page.

use std::net::TcpListener;
use std::process::{Command, Stdio};

use crate::cli::{MEMSEM, memsem, output, stderr, stdout};
use crate::harness::{Memcached, unique};

/// `memsem` against `address` alone, with short time-outs.
fn memsem_at(address: &str) -> Command {
    let mut command = Command::new(&*MEMSEM);
    command
        .args(["--servers", address, "--connect-timeout", "300ms"])
        .args(["--io-timeout", "300ms"])
        .env_remove("MEMSEM_NAMESPACE")
        .env_remove("MEMSEM_ROUTING")
        .env("MEMSEM_LOCK_DELAY", "0");
    command
}

#[test]
fn a_server_that_is_not_memcached_exits_76_from_every_command() {
    for args in [
        &["status", "job"][..],
        &["run", "job", "--", "true"],
        &["acquire", "--no-wait", "job"],
        &["ping"],
    ] {
        let address = crate::faults::fake_server(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        let out = output(memsem_at(&address).args(args));
        assert_eq!(out.status.code(), Some(76), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_error_says_each_cause_once_on_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let out = output(memsem_at(&address).args(["acquire", "--no-wait", "job"]));
    assert_eq!(out.status.code(), Some(69));
    let said = stderr(&out);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert_eq!(said.matches("memsem:").count(), 1, "{said}");
    assert_eq!(said.matches("refused").count(), 1, "said once: {said}");
    assert_eq!(said.matches(&address).count(), 1, "{said}");
}

#[test]
fn a_frozen_server_is_named_without_the_internal_key() {
    let server = Memcached::start();
    server.pause();
    let out = output(memsem_at(&server.address()).args(["acquire", "--no-wait", "frozen-job"]));
    server.unpause();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(!said.contains("__lock__"), "no internal key: {said}");
    assert!(
        said.contains("lock frozen-job"),
        "the lock's name instead: {said}"
    );
    assert!(said.contains(&server.address()), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
}

#[test]
fn json_errors_are_one_object_on_stdout() {
    let server = Memcached::start();
    let name = unique("cli-json-error");
    let token = stdout(&output(memsem(&server).args(["acquire", &name])));
    let busy = output(memsem(&server).args(["--json", "run", "--no-wait", &name, "--", "true"]));
    assert_eq!(busy.status.code(), Some(75));
    let error: serde_json::Value = serde_json::from_str(&stdout(&busy)).expect("JSON on stdout");
    assert_eq!(error["kind"], "held");
    assert_eq!(error["exit_code"], 75);
    assert!(error["error"].as_str().unwrap().contains(&name), "{error}");
    assert!(stderr(&busy).is_empty(), "{}", stderr(&busy));

    let usage = output(memsem(&server).args(["--json", "run", &name]));
    assert_eq!(usage.status.code(), Some(64));
    let error: serde_json::Value = serde_json::from_str(&stdout(&usage)).expect("JSON on stdout");
    assert_eq!(error["kind"], "usage");
    assert_eq!(error["exit_code"], 64);

    let down = output(memsem_at("127.0.0.1:1").args(["--json", "status", &name]));
    assert_eq!(down.status.code(), Some(69));
    let error: serde_json::Value = serde_json::from_str(&stdout(&down)).expect("JSON on stdout");
    assert_eq!(error["kind"], "unavailable");
    assert!(stderr(&down).is_empty(), "{}", stderr(&down));

    let released = output(memsem(&server).args(["release", &name, "--token", token.trim()]));
    assert_eq!(released.status.code(), Some(0), "{}", stderr(&released));
}

#[test]
fn run_without_a_name_before_the_double_dash_exits_64() {
    let server = Memcached::start();
    let out = output(memsem(&server).args(["run", "--", "echo", "hi"]));
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("before `--`"), "{}", stderr(&out));
    assert!(
        stdout(&out).is_empty(),
        "the command did not run: {}",
        stdout(&out)
    );
    assert!(
        server.raw().get(b"__lock__echo").is_none(),
        "no lock named echo"
    );
}

#[test]
fn permits_let_n_holders_in_and_status_counts_them() {
    let server = Memcached::start();
    let name = unique("cli-permits");
    let take = || output(memsem(&server).args(["acquire", "-n", "2", "--no-wait", &name]));
    let first = take();
    let second = take();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let third = take();
    assert_eq!(third.status.code(), Some(75), "{}", stderr(&third));

    let full = output(memsem(&server).args(["status", "-n", "2", &name]));
    assert_eq!(full.status.code(), Some(1));
    assert!(
        stdout(&full).contains("0 of 2 permits free"),
        "{}",
        stdout(&full)
    );
    // A run with the same N waits for a permit, not for the lock as a whole.
    let busy =
        output(memsem(&server).args(["run", "-n", "2", "-E", "9", "-w", "0.2", &name, "true"]));
    assert_eq!(busy.status.code(), Some(9), "-E sets the conflict status");

    let token = stdout(&first);
    let released =
        output(memsem(&server).args(["release", "-n", "2", &name, "--token", token.trim()]));
    assert_eq!(released.status.code(), Some(0), "{}", stderr(&released));
    let status = output(memsem(&server).args(["--json", "status", "--permits", "2", &name]));
    assert_eq!(status.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["available"], 1);
    assert_eq!(status["holders"].as_array().unwrap().len(), 1);

    let ran = output(memsem(&server).args(["run", "-n", "2", "--no-wait", &name, "--", "true"]));
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
}

#[test]
fn break_shows_the_holder_and_asks_unless_yes() {
    let server = Memcached::start();
    let name = unique("cli-break");
    let acquired = output(memsem(&server).args(["acquire", "--info", "dead job", &name]));
    assert_eq!(acquired.status.code(), Some(0));

    // No terminal to ask on and no --yes: nothing is broken.
    let refused = output(memsem(&server).args(["break", &name]).stdin(Stdio::null()));
    assert_eq!(refused.status.code(), Some(64), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("dead job"),
        "shows the holder: {}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    let still = output(memsem(&server).args(["status", &name]));
    assert_eq!(still.status.code(), Some(1), "still held");

    let broken = output(memsem(&server).args(["break", "--yes", &name]));
    assert_eq!(broken.status.code(), Some(0), "{}", stderr(&broken));
    assert!(stderr(&broken).contains("dead job"), "{}", stderr(&broken));
    let free = output(memsem(&server).args(["status", &name]));
    assert_eq!(free.status.code(), Some(0), "{}", stdout(&free));
    let again = output(memsem(&server).args(["break", "--yes", &name]));
    assert_eq!(again.status.code(), Some(1), "nothing left to break");
}

#[test]
fn break_clears_a_perl_lock_without_expiry() {
    let server = Memcached::start();
    let name = unique("cli-break-perl");
    let key = format!("__lock__{name}");
    // What Cache::Memcached::Semaphore stores: a bare 32-hex token, no expiry.
    server
        .raw()
        .set(key.as_bytes(), b"0123456789abcdef0123456789abcdef", 0);
    let status = output(memsem(&server).args(["status", &name]));
    assert_eq!(status.status.code(), Some(1));
    assert!(
        stdout(&status).contains("never expires"),
        "{}",
        stdout(&status)
    );
    let broken = output(memsem(&server).args(["--json", "break", "-y", &name]));
    assert_eq!(broken.status.code(), Some(0), "{}", stderr(&broken));
    let said: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(said["broken"], serde_json::json!([1]));
    assert!(server.raw().get(key.as_bytes()).is_none());
}

#[test]
fn status_tells_a_cooldown_from_a_running_holder() {
    let server = Memcached::start();
    let name = unique("cli-cooldown");
    let ran = output(memsem(&server).args([
        "run",
        "--cooldown",
        "1h",
        "--info",
        "digest",
        &name,
        "--",
        "true",
    ]));
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let status = output(memsem(&server).args(["status", &name]));
    assert_eq!(status.status.code(), Some(1), "closed while cooling down");
    let said = stdout(&status);
    assert!(
        said.contains("cooling down") && said.contains("digest"),
        "{said}"
    );
    assert!(!said.contains("held by"), "{said}");
    let json = output(memsem(&server).args(["--json", "status", &name]));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["cooling_down"], true);

    let held_name = unique("cli-running");
    let acquired = output(memsem(&server).args(["acquire", &held_name]));
    assert_eq!(acquired.status.code(), Some(0));
    let held = output(memsem(&server).args(["status", &held_name]));
    assert!(stdout(&held).contains("held by"), "{}", stdout(&held));
    assert!(!stdout(&held).contains("cooling"), "{}", stdout(&held));
}

#[test]
fn completions_and_the_man_page_need_no_server() {
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
    ] {
        let out = output(
            Command::new(&*MEMSEM)
                .env_remove("MEMSEM_SERVERS")
                .args(args),
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("memsem"), "{args:?}");
    }
    let man = output(Command::new(&*MEMSEM).arg("man"));
    assert!(stdout(&man).starts_with(".ie") || stdout(&man).contains(".TH memsem 1"));
}

/// `memsem run` waiting on a held lock under a pseudo-terminal (`script`), with `TERM` set
/// as given; everything memsem wrote to the terminal.
fn waiting_on_a_terminal(server: &Memcached, term: &str) -> String {
    let name = unique("cli-tty");
    let acquired = output(memsem(server).args(["acquire", &name]));
    assert_eq!(acquired.status.code(), Some(0));
    let run = format!("{} run -w 1.5 {name} -- true", MEMSEM.display());
    let out = output(
        Command::new("script")
            .args(["-qec", &run, "/dev/null"])
            .env("MEMSEM_SERVERS", server.address())
            .env("MEMSEM_LOCK_DELAY", "0")
            .env("TERM", term)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null()),
    );
    assert_eq!(out.status.code(), Some(75), "{}", stdout(&out));
    stdout(&out)
}

#[test]
fn the_live_status_line_repaints_on_a_terminal_but_not_a_dumb_one() {
    let server = Memcached::start();
    let smart = waiting_on_a_terminal(&server, "xterm");
    assert!(smart.contains("waiting for lock"), "{smart:?}");
    assert!(smart.contains("\x1b["), "repainted in place: {smart:?}");
    let dumb = waiting_on_a_terminal(&server, "dumb");
    assert!(!dumb.contains("waiting for lock"), "{dumb:?}");
    assert!(!dumb.contains('\x1b'), "no escapes for TERM=dumb: {dumb:?}");
    assert!(
        dumb.contains("is held"),
        "the outcome is still said: {dumb:?}"
    );
}

//! Issue 12 §4–§6 from the command line: the command dies with its guard, holder info is one
//! line, refused servers end the wait at once, a lost acquire reply is settled before exit,
//! a lease lost at release exits 75, and the command gets its token and fencing number.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::harness::{Raw, unique, workspace_binary};
use crate::procs::Memcached;
use crate::proxy::{Mode, Proxy};

/// `memsem` against `servers`, without lock-delay (a memcached the test just started).
fn memsem(servers: &str) -> Command {
    let mut command = Command::new(workspace_binary("memsem"));
    command
        .env("MEMSEM_SERVERS", servers)
        .env("MEMSEM_LOCK_DELAY", "0")
        .env_remove("MEMSEM_MAX_LEASE")
        .env_remove("MEMSEM_NAMESPACE")
        .env_remove("MEMSEM_ROUTING")
        .env_remove("MEMSEM_TOKEN");
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(unique("memsem-guard"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The content of `path` once it has a whole line.
fn read_line_of(path: &Path) -> String {
    crate::harness::wait_until(&format!("{} written", path.display()), || {
        std::fs::read_to_string(path).is_ok_and(|text| text.ends_with('\n'))
    });
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet: it runs no more).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// The process group of `pid`, from /proc.
fn process_group(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    rest.split(' ').nth(2).unwrap().parse().unwrap()
}

fn spawn(command: &mut Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memsem starts")
}

#[test]
fn sigkill_of_memsem_run_kills_its_command_which_had_its_own_process_group() {
    let server = Memcached::start("127.0.0.1", None);
    let dir = Scratch::new();
    let name = unique("guard-sigkill");
    let script = format!("echo $$ > {}; exec sleep 60", dir.path("pid").display());
    let mut run = spawn(
        memsem(&server.address())
            .args(["run", "--ttl", "30s", &name, "--", "sh", "-c"])
            .arg(&script),
    );
    let pid: u32 = read_line_of(&dir.path("pid")).parse().unwrap();
    assert_eq!(process_group(pid), pid, "the command leads its own group");
    assert!(!gone(pid));
    run.kill().unwrap(); // SIGKILL: memsem runs no clean-up code
    run.wait().unwrap();
    crate::harness::wait_until("the command dies with memsem", || gone(pid));
}

#[test]
fn the_command_gets_its_token_and_a_growing_fencing_number() {
    let server = Memcached::start("127.0.0.1", None);
    let dir = Scratch::new();
    let name = unique("guard-fence");
    // The README's example of a resource that rejects a stale holder.
    let script = format!(
        "last=$(cat {last} 2>/dev/null || echo 0); \
         [ \"$MEMSEM_FENCE\" -gt \"$last\" ] || exit 9; echo \"$MEMSEM_FENCE\" > {last}; \
         echo \"$MEMSEM_TOKEN\" >> {seen}",
        last = dir.path("fence").display(),
        seen = dir.path("tokens").display()
    );
    let mut fences = Vec::new();
    for _ in 0..2 {
        let out = memsem(&server.address())
            .args(["run", "--fencing", &name, "--", "sh", "-c", &script])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        fences.push(read_line_of(&dir.path("fence")).parse::<u64>().unwrap());
    }
    assert!(fences[1] > fences[0], "{fences:?}");
    let tokens = std::fs::read_to_string(dir.path("tokens")).unwrap();
    let tokens: Vec<&str> = tokens.lines().collect();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t.len() == 32), "{tokens:?}");
    assert_ne!(tokens[0], tokens[1]);
    // Without --fencing there is no number to pass.
    let out = memsem(&server.address())
        .args([
            "run",
            &name,
            "--",
            "sh",
            "-c",
            "[ -z \"${MEMSEM_FENCE+x}\" ]",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_lease_found_lost_at_release_exits_75() {
    let server = Memcached::start("127.0.0.1", None);
    let dir = Scratch::new();
    let name = unique("guard-lost-release");
    let script = format!(
        "touch {s}; while [ ! -e {go} ]; do sleep 0.05; done",
        s = dir.path("started").display(),
        go = dir.path("go").display()
    );
    let run = spawn(
        memsem(&server.address())
            .args(["run", "--ttl", "60s", &name, "--", "sh", "-c"])
            .arg(&script),
    );
    crate::harness::wait_until("the command starts", || dir.path("started").exists());
    // Another holder's token replaces ours while the command runs (the keep-alive's next
    // refresh is 20 s away).
    let key = format!("__lock__{name}");
    Raw::connect(&server.address()).set(key.as_bytes(), b"0123456789abcdef0123456789abcdef", 60);
    std::fs::write(dir.path("go"), "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
}

#[test]
fn holder_info_with_a_line_break_is_refused_with_exit_64() {
    let server = Memcached::start("127.0.0.1", None);
    let name = unique("guard-info");
    for info in ["two\nlines", "carriage\rreturn"] {
        let out = memsem(&server.address())
            .args(["run", "--info", info, &name, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(stderr(&out).contains("line break"), "{}", stderr(&out));
    }
    // A command line with a line break still gets one-line default info.
    let out = memsem(&server.address())
        .args(["run", &name, "--", "sh", "-c", "true\ntrue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn an_acquire_whose_reply_was_lost_is_settled_before_memsem_exits() {
    let server = Memcached::start("127.0.0.1", None);
    let proxy = Proxy::start(&server.address());
    let name = unique("guard-settle");
    let key = format!("__lock__{name}");
    // The add is applied, its reply never comes (nor that of the second try).
    proxy.set(Mode::HoldAfterStore);
    let mut acquire = spawn(
        memsem(proxy.address())
            .args(["--io-timeout", "300ms", "--connect-timeout", "300ms"])
            .args(["acquire", "--no-wait", &name]),
    );
    let mut pipe = acquire.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 512];
    while !seen.contains('\n') {
        let n = pipe.read(&mut buffer).unwrap();
        assert!(n > 0, "stderr closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    // memsem has reported the error and is settling: let replies pass again.
    proxy.set(Mode::Pass);
    let status = acquire.wait().unwrap();
    let _ = pipe.read_to_string(&mut seen);
    assert_eq!(status.code(), Some(69), "{seen}");
    assert!(seen.contains("unknown"), "{seen}");
    assert_eq!(
        Raw::connect(&server.address()).get(key.as_bytes()),
        None,
        "a lock was left under the lost acquire's token: {seen}"
    );
}

//! The command line: global options, subcommands and their help.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Distributed locks on memcached: flock(1) for a whole fleet.
#[derive(Debug, Parser)]
#[command(name = "memsem", version, after_help = crate::exit::HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// memcached servers, `host:port[:weight],...` (`[v6]:port`, `/path/to.sock[:weight]` too)
    #[arg(long, env = "MEMSEM_SERVERS", global = true, value_name = "LIST")]
    pub servers: Option<String>,

    /// How a lock name picks its server: `ketama` (libmemcached), `cache-memcached` (Perl) or
    /// `twemproxy:HASH:DIST` (like a twemproxy pool, e.g. `twemproxy:fnv1a_64:ketama`)
    #[arg(long, env = "MEMSEM_ROUTING", global = true, value_name = "ROUTING")]
    pub routing: Option<String>,

    /// Protocol dialect: `auto` (meta where the server has it, else classic), `meta`, or
    /// `classic` (twemproxy, mcrouter, memcached < 1.6.13) [default: auto]
    #[arg(long, env = "MEMSEM_PROTOCOL", global = true, value_name = "PROTOCOL")]
    pub protocol: Option<String>,

    /// Prefix of every key, as in the Perl client's `namespace`
    #[arg(long, env = "MEMSEM_NAMESPACE", global = true, value_name = "NS")]
    pub namespace: Option<String>,

    /// How long to wait for a TCP connection [default: 1s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration)]
    pub connect_timeout: Option<Duration>,

    /// How long to wait for a request and its reply [default: 1s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration)]
    pub io_timeout: Option<Duration>,

    /// The longest lease (--ttl) allowed [default: 5m]; raise the lock-delay with it
    #[arg(long, env = "MEMSEM_MAX_LEASE", global = true, value_name = "DURATION", value_parser = duration)]
    pub max_lease: Option<Duration>,

    /// After a memcached server (re)starts, grant no lock on it for this long [default:
    /// --max-lease]; 0 turns it off (a holder from before the restart may then overlap)
    #[arg(long, env = "MEMSEM_LOCK_DELAY", global = true, value_name = "DURATION", value_parser = duration)]
    pub lock_delay: Option<Duration>,

    /// Speak TLS to every server (memcached -Z), trusting the system's roots or --tls-ca
    #[arg(long, env = "MEMSEM_TLS", global = true)]
    pub tls: bool,

    /// Trust the CA certificates of this PEM file (turns TLS on)
    #[arg(long, env = "MEMSEM_TLS_CA", global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate chain (PEM) for mutual TLS, with --tls-key (turns TLS on)
    #[arg(
        long,
        env = "MEMSEM_TLS_CERT",
        global = true,
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert (turns TLS on)
    #[arg(
        long,
        env = "MEMSEM_TLS_KEY",
        global = true,
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// The name the servers' certificates must carry, instead of each server's host
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// User for ASCII auth (memcached -Y), with --password-file
    #[arg(
        long,
        env = "MEMSEM_USERNAME",
        global = true,
        value_name = "USER",
        requires = "password_file"
    )]
    pub username: Option<String>,

    /// File holding the ASCII auth password (its first line)
    #[arg(
        long,
        env = "MEMSEM_PASSWORD_FILE",
        global = true,
        value_name = "FILE",
        requires = "username"
    )]
    pub password_file: Option<PathBuf>,

    /// Say nothing on stderr but errors
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Print data (tokens, status, ping results) as one JSON object
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command while holding the lock NAME
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Take the lock and print its token; give it back later with `release`
    #[command(after_help = ACQUIRE_HELP)]
    Acquire(AcquireArgs),
    /// Give back a lock taken with `acquire`
    #[command(after_help = RELEASE_HELP)]
    Release(ReleaseArgs),
    /// Extend the lease of a lock taken with `acquire`
    #[command(after_help = REFRESH_HELP)]
    Refresh(RefreshArgs),
    /// Say whether the lock is free or held, for how long and by whom (exit 0 free, 1 held)
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Check that a token holds the lock (exit 0 if it does, 1 if not)
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Break a lock whose holder is gone: shows the holder, asks before deleting it
    #[command(name = "break", after_help = BREAK_HELP)]
    Break(BreakArgs),
    /// Check every server: reachable or not, and the round-trip time (exit 69 if any is down)
    #[command(after_help = PING_HELP)]
    Ping,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_help = COMPLETIONS_HELP)]
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout
    #[command(after_help = MAN_HELP)]
    Man,
    /// Serve an old lock server's wire protocol (keyedmutexd, Lock::Server), locks on the fleet
    #[command(subcommand)]
    Serve(crate::serve::Protocol),
}

impl Command {
    /// The lock the command is about, if any.
    pub fn lock_name(&self) -> Option<&str> {
        Some(match self {
            Command::Run(args) => &args.name,
            Command::Acquire(args) => &args.name,
            Command::Release(args) => &args.name,
            Command::Refresh(args) => &args.name,
            Command::Status(args) => &args.name,
            Command::Verify(args) => &args.name,
            Command::Break(args) => &args.name,
            Command::Ping | Command::Completions { .. } | Command::Man | Command::Serve(_) => {
                return None;
            }
        })
    }
}

const RUN_HELP: &str = "\
Examples:
  # At most one nightly report in the fleet; skip this run if another host has it
  memsem --servers mc1:11211,mc2:11211 run --no-wait nightly-report -- ./report.sh

  # At most 4 encoders at once across the fleet; wait up to 10 seconds for a slot
  memsem run -n 4 -w 10 encoders -- ./encode.sh

  # Wait up to 10 minutes for the lock, keep it closed 1 hour after the job
  memsem run --wait 10m --cooldown 1h send-digest -- ./digest --all

  # In a crontab, with the servers in the environment; 'already running' is not an error
  MEMSEM_SERVERS=mc1:11211,mc2:11211
  */5 * * * * memsem run -q --no-wait -E 0 sync -- /opt/sync.sh

The lease (--ttl) is refreshed every TTL/3 while the command runs, so the command may run
far longer than the TTL. If the lease is lost (the key expired, was evicted or deleted, the
server restarted) — or no refresh was confirmed by the lease's end minus --kill-after and a
margin (memcached unreachable) — memsem says so and by default stops the command (SIGTERM,
SIGKILL after --kill-after) before the lease can end, and exits 75. SIGINT, SIGTERM and
SIGHUP are passed on to the command's process group; the lock is given back when it ends.
On Linux the command is killed if memsem dies. The command gets MEMSEM_TOKEN (and with
--fencing MEMSEM_FENCE, a number larger than every earlier holder's, for a resource to
reject stale holders).";

const ACQUIRE_HELP: &str = "\
Examples:
  token=$(memsem acquire --ttl 10m deploy) || exit 1
  ./deploy-step-1 && memsem refresh deploy --token \"$token\" --ttl 10m && ./deploy-step-2
  memsem release deploy --token \"$token\"

The lock is held until `release`, or until its TTL runs out: refresh it for long work.";

const RELEASE_HELP: &str = "\
Examples:
  memsem release deploy --token \"$token\"
  MEMSEM_TOKEN=$token memsem release deploy --cooldown 5m

Only the holder's token releases the lock; a token that no longer holds it exits 1 and
leaves the lock untouched.";

const REFRESH_HELP: &str = "\
Examples:
  memsem refresh deploy --token \"$token\" --ttl 10m

Exits 1, changing nothing, when the token no longer holds the lock.";

const STATUS_HELP: &str = "\
Examples:
  memsem status nightly-report
  memsem status --json nightly-report | jq .info
  memsem status -q deploy && echo 'deploy lock is free'";

const VERIFY_HELP: &str = "\
Examples:
  memsem verify deploy --token \"$token\" || { echo 'lost the deploy lock'; exit 1; }";

const BREAK_HELP: &str = "\
Examples:
  memsem break deploy            # shows the holder, asks y/N on the terminal
  memsem break --yes deploy      # in scripts: no question
  memsem break -n 4 encoders     # every holder of a 4-permit semaphore

Only for a lock whose holder is known to be dead (a crashed host, a Perl lock taken
without expiry): a holder that still runs goes on as if it held the lock. The key is
deleted only if it is unchanged since it was shown. Exits 0 when broken, 1 when there was
nothing to break, the holder changed meanwhile, or the answer was no.";

const COMPLETIONS_HELP: &str = "\
Examples:
  memsem completions bash > /etc/bash_completion.d/memsem
  memsem completions zsh > \"${fpath[1]}/_memsem\"
  memsem completions fish > ~/.config/fish/completions/memsem.fish";

const MAN_HELP: &str = "\
Examples:
  memsem man > /usr/local/share/man/man1/memsem.1 && man memsem";

const PING_HELP: &str = "\
Examples:
  memsem --servers mc1:11211,mc2:11211 ping
  MEMSEM_SERVERS=mc1:11211 memsem ping --json";

/// How long to wait for the lock.
#[derive(Debug, Args)]
#[command(next_help_heading = "Waiting")]
pub struct WaitArgs {
    /// Give up after this long (exit 75): seconds as in flock (`10`, `0.5`) or `30s`, `10m`
    /// [default: wait forever]
    #[arg(long, short, visible_alias = "timeout", value_name = "DURATION", value_parser = duration)]
    pub wait: Option<Duration>,

    /// Try once; exit 75 at once if the lock is held
    #[arg(long, visible_aliases = ["nb", "nonblock"], conflicts_with = "wait")]
    pub no_wait: bool,

    /// Base delay between attempts while waiting (spread ±50%)
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "100ms")]
    pub poll: Duration,
}

impl WaitArgs {
    /// `Some(limit)` for a bounded wait (zero for `--no-wait`), `None` for forever.
    pub fn limit(&self) -> Option<Duration> {
        if self.no_wait {
            Some(Duration::ZERO)
        } else {
            self.wait
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnLost {
    /// Stop the command (SIGTERM, then SIGKILL after --kill-after) and exit 75
    Kill,
    /// Say so on stderr and let the command run on
    Warn,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The lock's name (before `--` and the command)
    pub name: String,

    /// How many may hold the lock at once (a counting semaphore); the same N for every user
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(memsem::MAX_PERMITS)))]
    pub permits: u32,

    /// The lease, refreshed every TTL/3 while the command runs (whole seconds)
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "60s")]
    pub ttl: Duration,

    /// Keep the lock closed this long after the command ends
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub cooldown: Option<Duration>,

    /// Holder information shown to others [default: "host=HOST pid=PID cmd=CMD"]
    #[arg(long, value_name = "TEXT")]
    pub info: Option<String>,

    /// Queue for the lock first come, first served (FIFO tickets and hand-offs) instead of
    /// polling; plain-add users of the name (Perl, polling memsem) get in only when the
    /// queue is empty
    #[arg(long)]
    pub fifo: bool,

    /// Draw a fencing number (larger than every earlier holder's) and pass it to the command
    /// in MEMSEM_FENCE, beside its token in MEMSEM_TOKEN
    #[arg(long)]
    pub fencing: bool,

    /// Exit status when the lock is not acquired (as flock's -E)
    #[arg(long, short = 'E', value_name = "N", default_value_t = crate::exit::TEMPFAIL)]
    pub conflict_exit_code: u8,

    /// What to do when the lease is lost while the command runs
    #[arg(long, value_enum, value_name = "ACTION", default_value = "kill")]
    pub on_lost: OnLost,

    /// After SIGTERM, how long to wait before SIGKILL when the lease was lost; the loss is
    /// acted on this long (plus a margin) before the lease can end, so --ttl must exceed it
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "3s")]
    pub kill_after: Duration,

    #[command(flatten)]
    pub wait: WaitArgs,

    /// The command and its arguments (after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// The lock's name
    pub name: String,

    /// How many may hold the lock at once (a counting semaphore); the same N for every user
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(memsem::MAX_PERMITS)))]
    pub permits: u32,

    /// Exit status when the lock is not acquired (as flock's -E)
    #[arg(long, short = 'E', value_name = "N", default_value_t = crate::exit::TEMPFAIL)]
    pub conflict_exit_code: u8,

    /// The lease: the lock ends by itself this long after acquire (or the last refresh)
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "60s")]
    pub ttl: Duration,

    /// Holder information shown to others [default: "host=HOST pid=PPID cmd=memsem acquire NAME",
    /// PPID being the calling shell's]
    #[arg(long, value_name = "TEXT")]
    pub info: Option<String>,

    /// Queue for the lock first come, first served (FIFO tickets) instead of polling
    #[arg(long)]
    pub fifo: bool,

    #[command(flatten)]
    pub wait: WaitArgs,
}

/// The token printed by `acquire`.
#[derive(Debug, Args)]
pub struct TokenArg {
    /// The token printed by `memsem acquire`
    #[arg(
        long,
        env = "MEMSEM_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The lock's name
    pub name: String,
    /// How many may hold the lock at once (a counting semaphore); the same N for every user
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(memsem::MAX_PERMITS)))]
    pub permits: u32,
    #[command(flatten)]
    pub token: TokenArg,
    /// Keep the lock closed this long after the release
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub cooldown: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The lock's name
    pub name: String,
    /// How many may hold the lock at once (a counting semaphore); the same N for every user
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(memsem::MAX_PERMITS)))]
    pub permits: u32,
    #[command(flatten)]
    pub token: TokenArg,
    /// The new lease, from now
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "60s")]
    pub ttl: Duration,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The lock's name
    pub name: String,
    /// How many may hold the lock at once (a counting semaphore); the same N for every user
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(memsem::MAX_PERMITS)))]
    pub permits: u32,
}

#[derive(Debug, Args)]
pub struct BreakArgs {
    /// The lock's name
    pub name: String,
    /// How many may hold the lock at once (a counting semaphore); the same N for every user
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(memsem::MAX_PERMITS)))]
    pub permits: u32,

    /// Break without asking
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The lock's name
    pub name: String,
    /// How many may hold the lock at once (a counting semaphore); the same N for every user
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(memsem::MAX_PERMITS)))]
    pub permits: u32,
    #[command(flatten)]
    pub token: TokenArg,
}

/// A duration: bare seconds as flock takes them (`10`, `0.5`), or humantime (`500ms`,
/// `30s`, `10m`, `1h 30m`).
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return text
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| format!("{text:?} is not a number of seconds"));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("{error} (expected seconds, or a duration like 500ms, 30s, 10m)"))
}

/// Checks what clap cannot: in `memsem run NAME -- COMMAND`, the name comes before `--`
/// (`memsem run -- echo hi` would otherwise lock `echo` and run `hi`).
pub fn check_run_name(args: &[OsString], cli: &Cli) -> Result<(), String> {
    let Command::Run(run) = &cli.command else {
        return Ok(());
    };
    let Some(start) = args.iter().position(|arg| arg == "run") else {
        return Ok(());
    };
    let Some(dashes) = args[start..].iter().position(|arg| arg == "--") else {
        return Ok(());
    };
    let before = &args[start + 1..start + dashes];
    if before.iter().any(|arg| *arg == *run.name) {
        Ok(())
    } else {
        Err("the lock name comes before `--`: memsem run NAME -- COMMAND [ARG]...".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_with_or_without_a_double_dash() {
        let with = Cli::try_parse_from(["memsem", "run", "job", "--", "ls", "-l"]).unwrap();
        let without = Cli::try_parse_from(["memsem", "run", "job", "ls", "-l"]).unwrap();
        for cli in [with, without] {
            let Command::Run(run) = cli.command else {
                panic!("not run")
            };
            assert_eq!(run.command, ["ls", "-l"]);
        }
    }

    #[test]
    fn wait_and_no_wait_conflict() {
        let parsed = Cli::try_parse_from(["memsem", "run", "--no-wait", "-w", "1s", "job", "true"]);
        assert!(parsed.is_err());
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        run
    }

    #[test]
    fn wait_takes_bare_seconds_as_flock_does_and_humantime() {
        let secs = |text: &str| {
            run_args(&["memsem", "run", "-w", text, "job", "true"])
                .wait
                .wait
        };
        assert_eq!(secs("10"), Some(Duration::from_secs(10)));
        assert_eq!(secs("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(secs("2m"), Some(Duration::from_secs(120)));
        assert_eq!(secs("0"), Some(Duration::ZERO));
        for bad in ["1.2.3", "-1", "soon", "."] {
            let parsed = Cli::try_parse_from(["memsem", "run", "-w", bad, "job", "true"]);
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn permits_and_conflict_exit_code_have_flock_style_short_options() {
        let run = run_args(&["memsem", "run", "-n", "4", "-E", "0", "--nb", "job", "true"]);
        assert_eq!(run.permits, 4);
        assert_eq!(run.conflict_exit_code, 0);
        assert!(run.wait.no_wait);
        assert_eq!(run_args(&["memsem", "run", "job", "true"]).permits, 1);
        for bad in ["0", "1001", "x"] {
            assert!(Cli::try_parse_from(["memsem", "status", "-n", bad, "job"]).is_err());
        }
    }

    #[test]
    fn run_needs_the_name_before_the_double_dash() {
        let check = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            let cli = Cli::try_parse_from(&args).unwrap();
            check_run_name(&args, &cli)
        };
        assert!(check(&["memsem", "run", "--", "echo", "hi"]).is_err());
        assert!(check(&["memsem", "run", "--ttl", "10s", "--", "echo", "hi"]).is_err());
        assert!(check(&["memsem", "run", "job", "--", "echo", "hi"]).is_ok());
        assert!(check(&["memsem", "run", "job", "echo", "--", "hi"]).is_ok());
        assert!(
            check(&[
                "memsem",
                "--servers",
                "x:1",
                "run",
                "-w",
                "5",
                "job",
                "--",
                "ls"
            ])
            .is_ok()
        );
        assert!(check(&["memsem", "status", "job"]).is_ok());
    }

    #[test]
    fn help_separates_global_options_from_the_command_s() {
        let mut command = Cli::command();
        command.build();
        let help = command
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("Global options:"), "{help}");
        assert!(help.contains("Waiting:"), "{help}");
        let global = help.find("Global options:").unwrap();
        assert!(
            help.find("--ttl").unwrap() < global,
            "run's own options first"
        );
    }
}

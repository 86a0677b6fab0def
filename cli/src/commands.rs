//! The subcommands other than `run`, `status` and `break`, and the client every subcommand
//! shares.

use std::time::Duration;

use memsem::{Client, Error, Semaphore, TlsConfig};
use serde_json::json;

use clap::CommandFactory;

use crate::acquire::{self, Acquired};
use crate::cli::{AcquireArgs, Cli, Command, Global, RefreshArgs, ReleaseArgs};
use crate::events::Events;
use crate::exit;
use crate::inspect;
use crate::run;
use crate::show;

/// Runs the parsed command line; the exit status.
pub fn dispatch(cli: Cli) -> u8 {
    let Cli { global, command } = cli;
    // What needs no server.
    match &command {
        Command::Completions { shell } => return completions(*shell),
        Command::Man => return man(),
        _ => {}
    }
    if let Some(name) = command.lock_name() {
        exit::set_lock(name);
    }
    let client = match client(&global) {
        Ok(client) => client,
        Err(error) => return exit::report(&error),
    };
    let outcome = match command {
        Command::Run(args) => {
            let info = match &args.info {
                Some(info) => info.clone(),
                None => show::default_info(std::process::id(), &run::command_text(&args.command)),
            };
            let lock = Lock {
                name: &args.name,
                permits: args.permits,
                ttl: Some(args.ttl),
                cooldown: args.cooldown,
                info: &info,
                fifo: args.fifo,
            };
            let sem = lock.semaphore(&client).and_then(|sem| match args.fencing {
                true => sem.with_fencing(),
                false => Ok(sem),
            });
            sem.map(|sem| run::run(sem, &args, global.quiet))
        }
        Command::Acquire(args) => acquire_command(&client, &args, &global),
        Command::Release(args) => release(&client, &args, &global),
        Command::Refresh(args) => refresh(&client, &args, &global),
        Command::Status(args) => inspect::status(&client, &args, &global),
        Command::Break(args) => inspect::break_lock(&client, &args, &global),
        Command::Verify(args) => {
            let sem = client
                .semaphore(&args.name)
                .and_then(|sem| sem.with_permits(args.permits));
            sem.and_then(|sem| verify(&sem, &args.token.token, &global))
        }
        Command::Ping => Ok(ping(&client, &global)),
        Command::Completions { .. } | Command::Man => Ok(0),
        Command::Serve(protocol) => Ok(crate::serve::run(builder(&global), protocol)),
    };
    let code = outcome.unwrap_or_else(|error| exit::report(&error));
    settle(&client, &global);
    code
}

/// Before exiting, lets the library's clean-up settle what this process could not confirm
/// (an acquire or release whose reply was lost: read back, deleted while it holds our
/// token), within a bound the time-outs set: the clean-up thread ends with the process.
fn settle(client: &Client, global: &Global) {
    let connect = global.connect_timeout.unwrap_or(Duration::from_secs(1));
    let io = global.io_timeout.unwrap_or(Duration::from_secs(1));
    if !client.wait_for_cleanup(connect + io * 3) {
        eprintln!(
            "memsem: could not make sure that no lock was left under this process's token: \
             it ends with its TTL"
        );
    }
}

/// The client the global options (or the environment) describe.
fn client(global: &Global) -> Result<Client, Error> {
    builder(global)?.build()
}

/// The client builder the global options (or the environment) describe.
fn builder(global: &Global) -> Result<memsem::ClientBuilder, Error> {
    let servers = global.servers.as_deref().ok_or_else(|| {
        Error::InvalidConfig(
            "no servers: give --servers host:port[:weight],/path/to.sock[:weight],... or set MEMSEM_SERVERS".into(),
        )
    })?;
    let mut builder = Client::builder().servers(servers);
    if let Some(routing) = &global.routing {
        builder = builder.routing(routing.parse()?);
    }
    if let Some(protocol) = &global.protocol {
        builder = builder.protocol(protocol.parse()?);
    }
    if let Some(namespace) = &global.namespace {
        builder = builder.namespace(namespace);
    }
    if let Some(timeout) = global.connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    if let Some(timeout) = global.io_timeout {
        builder = builder.io_timeout(timeout);
    }
    if let Some(max_lease) = global.max_lease {
        builder = builder.max_lease(max_lease);
    }
    if let Some(delay) = global.lock_delay {
        builder = builder.lock_delay(delay);
    }
    let files = [&global.tls_ca, &global.tls_cert, &global.tls_key];
    if global.tls || files.iter().any(|file| file.is_some()) {
        let mut tls = TlsConfig::new();
        if let Some(ca) = &global.tls_ca {
            tls = tls.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&global.tls_cert, &global.tls_key) {
            tls = tls.client_cert(cert, key);
        }
        if let Some(name) = &global.tls_server_name {
            tls = tls.server_name(name);
        }
        builder = builder.tls(tls);
    }
    if let (Some(user), Some(file)) = (&global.username, &global.password_file) {
        let text = std::fs::read_to_string(file).map_err(|error| {
            Error::InvalidConfig(format!("password file {}: {error}", file.display()))
        })?;
        builder = builder.auth(user, text.lines().next().unwrap_or(""));
    }
    Ok(builder)
}

/// A lock as the command line describes it.
struct Lock<'a> {
    name: &'a str,
    permits: u32,
    ttl: Option<Duration>,
    cooldown: Option<Duration>,
    info: &'a str,
    fifo: bool,
}

impl Lock<'_> {
    fn semaphore(&self, client: &Client) -> Result<Semaphore, Error> {
        let mut sem = client.semaphore(self.name)?.with_permits(self.permits)?;
        if let Some(ttl) = self.ttl {
            sem = sem.with_ttl(ttl)?;
        }
        if let Some(cooldown) = self.cooldown {
            sem = sem.with_cooldown(cooldown)?;
        }
        if !self.info.is_empty() {
            sem = sem.with_info(self.info)?;
        }
        if self.fifo {
            sem = sem.with_fairness(memsem::Fairness::Fifo)?;
        }
        Ok(sem)
    }
}

/// `memsem completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> u8 {
    clap_complete::generate(shell, &mut Cli::command(), "memsem", &mut std::io::stdout());
    0
}

/// `memsem man`: the man page (roff) on stdout.
fn man() -> u8 {
    let page = clap_mangen::Man::new(Cli::command());
    match page.render(&mut std::io::stdout()) {
        Ok(()) => 0,
        Err(error) => {
            exit::tell(
                "software",
                &format!("cannot write the man page: {error}"),
                exit::SOFTWARE,
            );
            exit::SOFTWARE
        }
    }
}

fn acquire_command(client: &Client, args: &AcquireArgs, global: &Global) -> Result<u8, Error> {
    // The lock outlives this process: name the shell or script that asked for it.
    let info = match &args.info {
        Some(info) => info.clone(),
        None => show::default_info(
            std::os::unix::process::parent_id(),
            &format!("memsem acquire {}", args.name),
        ),
    };
    let lock = Lock {
        name: &args.name,
        permits: args.permits,
        ttl: Some(args.ttl),
        cooldown: None,
        info: &info,
        fifo: args.fifo,
    };
    let sem = lock.semaphore(client)?;
    let mut events = match Events::new() {
        Ok(events) => events,
        Err(error) => {
            exit::tell(
                "software",
                &format!("cannot handle signals: {error}"),
                exit::SOFTWARE,
            );
            return Ok(exit::SOFTWARE);
        }
    };
    match acquire::acquire(
        &sem,
        args.wait.limit(),
        args.wait.poll,
        &mut events,
        global.quiet,
    )? {
        Acquired::Permit(permit) => {
            let ttl = permit.ttl().map(|ttl| ttl.as_secs());
            let slot = permit.slot();
            let token = permit.forget();
            if global.json {
                let data = json!({
                    "name": args.name,
                    "server": sem.server(),
                    "token": token,
                    "ttl_secs": ttl,
                    "slot": slot,
                });
                println!("{data}");
            } else {
                println!("{token}");
            }
            Ok(0)
        }
        Acquired::Busy(holder) => Ok(busy(
            &args.name,
            holder.as_ref(),
            global.quiet,
            args.conflict_exit_code,
        )),
        Acquired::Interrupted(signal) => Ok(exit::for_signal(signal)),
    }
}

/// Says that the lock is held and by whom (unless `quiet`; always with `--json`); `code`.
pub fn busy(name: &str, holder: Option<&memsem::Holder>, quiet: bool, code: u8) -> u8 {
    if !quiet || exit::json() {
        let by = holder
            .map(|holder| format!(" by {}", show::describe(holder)))
            .unwrap_or_default();
        exit::tell("held", &format!("lock {name} is held{by}"), code);
    }
    code
}

/// `LockLost` as the exit status 1 with a message; other errors pass through.
fn unless_lost(outcome: Result<(), Error>, global: &Global) -> Result<u8, Error> {
    match outcome {
        Ok(()) => Ok(0),
        Err(error) if error.is_lock_lost() => {
            if !global.quiet || exit::json() {
                exit::tell(exit::kind(&error), &exit::chain(&error), exit::NO);
            }
            Ok(exit::NO)
        }
        Err(error) => Err(error),
    }
}

fn release(client: &Client, args: &ReleaseArgs, global: &Global) -> Result<u8, Error> {
    let sem = client.semaphore(&args.name)?.with_permits(args.permits)?;
    let outcome = sem
        .resume(&args.token.token)
        .and_then(|permit| match args.cooldown {
            Some(cooldown) => permit.release_with_cooldown(cooldown),
            None => permit.release(),
        });
    unless_lost(outcome, global)
}

fn refresh(client: &Client, args: &RefreshArgs, global: &Global) -> Result<u8, Error> {
    let sem = client.semaphore(&args.name)?.with_permits(args.permits)?;
    let outcome = sem.resume(&args.token.token).and_then(|mut permit| {
        let refreshed = permit.refresh(args.ttl);
        let _ = permit.forget();
        refreshed
    });
    unless_lost(outcome, global)
}

fn verify(sem: &Semaphore, token: &str, global: &Global) -> Result<u8, Error> {
    let name = sem.name();
    let held = match sem.resume(token) {
        Ok(permit) => {
            let _ = permit.forget();
            true
        }
        Err(error) if error.is_lock_lost() => false,
        Err(error) => return Err(error),
    };
    if global.json {
        println!("{}", json!({ "name": name, "held": held }));
    } else if !global.quiet {
        let answer = if held {
            "held by this token"
        } else {
            "not held by this token"
        };
        println!("{name}: {answer}");
    }
    Ok(if held { 0 } else { exit::NO })
}

fn ping(client: &Client, global: &Global) -> u8 {
    let answers = client.ping();
    let all_up = answers.iter().all(|(_, answer)| answer.is_ok());
    if global.json {
        let servers: Vec<_> = answers
            .iter()
            .map(|(server, answer)| match answer {
                Ok(status) => json!({
                    "server": server,
                    "up": true,
                    "rtt_ms": status.round_trip().as_secs_f64() * 1000.0,
                    "version": status.version(),
                    "dialect": status.dialect(),
                    "tls": status.tls(),
                    "auth": status.auth(),
                }),
                Err(error) => json!({ "server": server, "up": false, "error": exit::chain(error) }),
            })
            .collect();
        println!("{}", json!({ "all_up": all_up, "servers": servers }));
    } else {
        for (server, answer) in &answers {
            match answer {
                Ok(status) => {
                    if !global.quiet {
                        let ms = status.round_trip().as_secs_f64() * 1000.0;
                        let mut extras = String::new();
                        if status.tls() {
                            extras.push_str(", TLS");
                        }
                        if status.auth() {
                            extras.push_str(", authenticated");
                        }
                        println!(
                            "{server}: up, {ms:.3} ms, memcached {}, {} protocol{extras}",
                            status.version(),
                            status.dialect()
                        );
                    }
                }
                Err(error) => println!("{server}: DOWN: {}", exit::chain(error)),
            }
        }
    }
    // The same status as any other command would give for the first failing server.
    answers
        .iter()
        .find_map(|(_, answer)| answer.as_ref().err())
        .map_or(0, exit::code)
}

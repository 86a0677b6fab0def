//! `memsem run`: hold the lock while a command runs, keeping the lease alive.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use memsem::{Error, KeepAlive, Permit, Semaphore, lease_margin};

use crate::acquire::{self, Acquired};
use crate::child::{self, Guarded};
use crate::cli::{OnLost, RunArgs};
use crate::events::{Event, Events, Notifier};
use crate::exit;

/// How long after SIGKILL the command is taken to be gone (the kernel ends it at once; this
/// covers the time for memsem to see it).
const KILL_SLACK: Duration = Duration::from_millis(250);

/// How long before the lease's end (by this process's count) the command must be told to
/// stop: the lease margin (memcached's whole seconds, clock drift), the `--kill-after`
/// grace, and the kill itself. `Duration::ZERO` with `--on-lost warn`.
fn stop_time(args: &RunArgs) -> Duration {
    match args.on_lost {
        OnLost::Kill => args.kill_after + KILL_SLACK,
        OnLost::Warn => Duration::ZERO,
    }
}

/// Refuses a lease too short to stop the command before it can end.
fn check_lease(args: &RunArgs) -> Result<(), Error> {
    let needed = lease_margin(args.ttl) + stop_time(args) + Duration::from_secs(1);
    if args.on_lost == OnLost::Kill && args.ttl < needed {
        return Err(Error::InvalidConfig(format!(
            "--ttl {} is too short for --kill-after {}: the command could outlive its lease; \
             use a --ttl of at least {} s or a shorter --kill-after",
            humantime::format_duration(args.ttl),
            humantime::format_duration(args.kill_after),
            needed.as_secs() + 1
        )));
    }
    Ok(())
}

/// How long the command runs before its lease is handed to the library's keep-alive
/// (two threads). A shorter command never needs a refresh — the first is due a third of the
/// TTL after the acquire, 100 ms at the least — and is spared them.
const KEEP_ALIVE_AFTER: Duration = Duration::from_millis(50);

/// When to start the keep-alive: [`KEEP_ALIVE_AFTER`] from now, but no later than a quarter
/// of the time left before the loss must be reported (the lease's end minus the margin and
/// `stop_time`), so that a loss is reported as soon as with a keep-alive started at once.
fn keep_alive_due(permit: &Permit, stop_time: Duration) -> Instant {
    let now = Instant::now();
    let (Some(ttl), Some(end)) = (permit.ttl(), permit.expires_at()) else {
        return now;
    };
    let report_at = end
        .checked_sub(lease_margin(ttl) + stop_time)
        .unwrap_or(now);
    now + KEEP_ALIVE_AFTER.min(report_at.saturating_duration_since(now) / 4)
}

/// The lease while the command runs: the permit alone at first, then kept alive.
struct Lease {
    permit: Option<Permit>,
    kept: Option<KeepAlive>,
}

impl Lease {
    /// Hands the permit to the keep-alive, which refreshes the lease every TTL/3 and reports
    /// a loss as an event: also when no refresh was confirmed by the lease's end minus the
    /// margin and `stop_time`, so that the command is gone before the lease can end.
    fn keep_alive(&mut self, stop_time: Duration, notifier: Notifier) {
        if let Some(permit) = self.permit.take() {
            self.kept = Some(permit.keep_alive_stopping_within(stop_time, move |why| {
                notifier.send(Event::Lost(why.to_string()));
            }));
        }
    }

    /// The permit, unless the keep-alive found it lost.
    fn into_permit(self) -> Option<Permit> {
        match self.kept {
            Some(kept) => kept.into_permit(),
            None => self.permit,
        }
    }
}

/// Runs `args.command` under the lock; the exit status to return.
pub fn run(sem: Semaphore, args: &RunArgs, quiet: bool) -> u8 {
    if let Err(error) = check_lease(args) {
        return exit::report(&error);
    }
    let mut events = match Events::new() {
        Ok(events) => events,
        Err(error) => {
            eprintln!("memsem: cannot handle signals: {error}");
            return exit::SOFTWARE;
        }
    };
    let permit = match acquire::acquire(&sem, args.wait.limit(), args.wait.poll, &mut events, quiet)
    {
        Ok(Acquired::Permit(permit)) => permit,
        Ok(Acquired::Busy(holder)) => {
            return crate::commands::busy(
                sem.name(),
                holder.as_ref(),
                quiet,
                args.conflict_exit_code,
            );
        }
        Ok(Acquired::Interrupted(signal)) => return exit::for_signal(signal),
        Err(error) => return exit::report(&error),
    };

    let (program, rest) = args.command.split_first().expect("clap requires a command");
    // What the command may check a resource against: the holder's token, and (with
    // --fencing) the fencing number, larger than every earlier holder's.
    let mut env = vec![("MEMSEM_TOKEN", permit.token().to_string())];
    if let Some(fence) = permit.fence() {
        env.push(("MEMSEM_FENCE", fence.to_string()));
    }
    let child = match child::spawn(program, rest, &env) {
        Ok(child) => child,
        Err(error) => {
            eprintln!("memsem: cannot run {}: {error}", program.to_string_lossy());
            let _ = give_back(permit, quiet);
            return match error.kind() {
                ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
        }
    };
    events.watch_child(child.pid());

    let keep_alive_at = keep_alive_due(&permit, stop_time(args));
    let mut lease = Lease {
        permit: Some(permit),
        kept: None,
    };
    let outcome = supervise(child, &mut lease, keep_alive_at, &sem, args, &mut events);
    let lost_at_release = match lease.into_permit() {
        Some(permit) => !give_back(permit, quiet),
        None => false,
    };
    match outcome {
        // Another holder may have run beside the command: not a success.
        Ok(_) if lost_at_release && args.on_lost == OnLost::Kill => exit::TEMPFAIL,
        Ok(status) => status,
        Err(code) => code,
    }
}

/// Waits for the command to end, passing on signals, keeping the lease alive from
/// `keep_alive_at` on and acting on its loss. `Ok` with the command's status, or `Err` with
/// memsem's own.
fn supervise(
    mut guarded: Guarded,
    lease: &mut Lease,
    keep_alive_at: Instant,
    sem: &Semaphore,
    args: &RunArgs,
    events: &mut Events,
) -> Result<u8, u8> {
    let pid = guarded.pid();
    let mut lost = false;
    let mut keep_alive_at = Some(keep_alive_at);
    let mut kill_at: Option<Instant> = None;
    loop {
        let wake_at = keep_alive_at.into_iter().chain(kill_at).min();
        let event = events.next(wake_at.map(|at| at.saturating_duration_since(Instant::now())));
        match event {
            Some(Event::Exited(Ok(()))) => {
                guarded.reclaim_terminal();
                let status = match guarded.wait() {
                    Ok(status) => status,
                    Err(error) => {
                        eprintln!("memsem: waiting for the command failed: {error}");
                        return Err(exit::SOFTWARE);
                    }
                };
                return if lost && args.on_lost == OnLost::Kill {
                    Err(exit::TEMPFAIL)
                } else {
                    Ok(status_code(status))
                };
            }
            Some(Event::Exited(Err(error))) => {
                eprintln!("memsem: waiting for the command failed: {error}");
                return Err(exit::SOFTWARE);
            }
            Some(Event::Signal(signal)) => child::signal_group(pid, signal),
            Some(Event::Lost(why)) => {
                lost = true;
                eprintln!(
                    "memsem: lost lock {} while the command ran: {why}",
                    sem.name()
                );
                match args.on_lost {
                    OnLost::Kill => {
                        eprintln!(
                            "memsem: stopping the command (SIGTERM, SIGKILL after {})",
                            humantime::format_duration(args.kill_after)
                        );
                        child::signal_group(pid, libc::SIGTERM);
                        kill_at = Some(Instant::now() + args.kill_after);
                    }
                    OnLost::Warn => eprintln!("memsem: the command keeps running (--on-lost warn)"),
                }
            }
            None => {
                let now = Instant::now();
                if keep_alive_at.is_some_and(|at| now >= at) {
                    keep_alive_at = None;
                    lease.keep_alive(stop_time(args), events.notifier());
                }
                if kill_at.is_some_and(|at| now >= at) {
                    child::signal_group(pid, libc::SIGKILL);
                    kill_at = None;
                }
            }
        }
    }
}

/// The shell's view of a status: the exit code, or 128 + the signal that killed it.
fn status_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(exit::SOFTWARE),
        (None, Some(signal)) => exit::for_signal(signal),
        (None, None) => exit::SOFTWARE,
    }
}

/// Releases the permit (with the semaphore's cooldown), reporting a failure on stderr;
/// `false` when the lease was found lost.
fn give_back(permit: Permit, quiet: bool) -> bool {
    let name = permit.name().to_string();
    match permit.release() {
        Ok(()) => true,
        Err(error) if error.is_lock_lost() => {
            eprintln!("memsem: lock {name} was lost before the command ended: {error}");
            false
        }
        Err(error) => {
            if !quiet {
                eprintln!("memsem: could not release lock {name} (it ends with its TTL): {error}");
            }
            true
        }
    }
}

/// The command line as text, for the default holder information.
pub fn command_text(command: &[OsString]) -> String {
    command
        .iter()
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_follows_the_shell() {
        let exited = ExitStatus::from_raw(7 << 8);
        assert_eq!(status_code(exited), 7);
        let killed = ExitStatus::from_raw(libc::SIGTERM);
        assert_eq!(status_code(killed), 143);
    }
}

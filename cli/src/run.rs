//! `memsem run`: hold the lock while a command runs, keeping the lease alive.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use memsem::{Error, Permit, Semaphore, lease_margin};

use crate::acquire::{self, Acquired, Event};
use crate::child::{self, Guarded};
use crate::cli::{OnLost, RunArgs};
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

/// Runs `args.command` under the lock; the exit status to return.
pub fn run(sem: Semaphore, args: &RunArgs, quiet: bool) -> u8 {
    if let Err(error) = check_lease(args) {
        return exit::report(&error);
    }
    let (events_tx, events) = mpsc::channel();
    if let Err(error) = acquire::catch_signals(events_tx.clone()) {
        eprintln!("memsem: cannot handle signals: {error}");
        return exit::SOFTWARE;
    }
    let permit = match acquire::acquire(&sem, args.wait.limit(), args.wait.poll, &events, quiet) {
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
    let pid = child.pid();
    let waiter_events = events_tx.clone();
    thread::spawn(move || {
        let _ = waiter_events.send(Event::Exited(wait_without_reaping(pid)));
    });

    // The library's keep-alive refreshes the lease every TTL/3 and reports a loss as an
    // event: also when no refresh was confirmed by the lease's end minus the margin and the
    // time the command needs to stop, so that it is gone before the lease can end.
    let held = permit.keep_alive_stopping_within(stop_time(args), move |why| {
        let _ = events_tx.send(Event::Lost(why.to_string()));
    });

    let outcome = supervise(child, &sem, args, &events);
    let lost_at_release = match held.into_permit() {
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

/// Waits for the command to end, passing on signals and acting on a lost lease. `Ok` with
/// the command's status, or `Err` with memsem's own.
fn supervise(
    mut guarded: Guarded,
    sem: &Semaphore,
    args: &RunArgs,
    events: &Receiver<Event>,
) -> Result<u8, u8> {
    let pid = guarded.pid();
    let mut lost = false;
    let mut kill_at: Option<Instant> = None;
    loop {
        let event = match kill_at {
            Some(at) => events.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Event::Exited(Ok(()))) => {
                guarded.reclaim_terminal();
                let status = match guarded.child.wait() {
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
            Ok(Event::Exited(Err(error))) => {
                eprintln!("memsem: waiting for the command failed: {error}");
                return Err(exit::SOFTWARE);
            }
            Ok(Event::Signal(signal)) => child::signal_group(pid, signal),
            Ok(Event::Lost(why)) => {
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
            Err(RecvTimeoutError::Timeout) => {
                child::signal_group(pid, libc::SIGKILL);
                kill_at = None;
            }
            Err(RecvTimeoutError::Disconnected) => return Err(exit::SOFTWARE),
        }
    }
}

/// Blocks until the child `pid` has ended, leaving it to be reaped by `Child::wait`: until
/// then its pid cannot be reused, so signalling it stays safe.
fn wait_without_reaping(pid: libc::pid_t) -> std::io::Result<()> {
    loop {
        // SAFETY: waitid only writes into the zeroed siginfo we own.
        let status = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if status == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != ErrorKind::Interrupted {
            return Err(error);
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

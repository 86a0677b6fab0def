//! The command `memsem run` guards: started in a process group of its own, and (on Linux)
//! killed by the kernel when memsem dies, so it never runs on without its lock.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

#[cfg(target_os = "linux")]
mod program;
#[cfg(target_os = "linux")]
mod vfork;

/// The command's process; its process group has the same id.
pub struct Guarded {
    pid: libc::pid_t,
    /// The terminal was handed to the command's group: take it back when it ends.
    terminal: bool,
}

/// Starts `program` with `args` and `env` in its own process group. On Linux it gets
/// `PR_SET_PDEATHSIG(SIGKILL)`: if memsem dies (even by SIGKILL), the kernel kills it. When
/// memsem runs in the foreground of a terminal, the command's group gets the terminal (as a
/// shell does for a job), so that it can read from it and ^C reaches it directly.
///
/// On Linux the child is started as posix_spawn does it — `clone(CLONE_VM | CLONE_VFORK)`,
/// no copy of memsem's memory — and set up before it executes the program; elsewhere with
/// fork.
pub fn spawn(program: &OsString, args: &[OsString], env: &[(&str, String)]) -> io::Result<Guarded> {
    let terminal = owns_terminal();
    // SAFETY: getpid has no memory effects.
    let parent = unsafe { libc::getpid() };
    #[cfg(target_os = "linux")]
    let pid = {
        let mut program = program::Program::new(program, args, env)?;
        vfork::start(&mut program, parent, terminal)?
    };
    #[cfg(not(target_os = "linux"))]
    let pid = fork(program, args, env, parent, terminal)?;
    if terminal {
        // Also from this side, whichever of the two runs first (as shells do).
        hand_terminal(pid);
    }
    Ok(Guarded { pid, terminal })
}

/// Starts the command with std's fork and exec, set up by [`in_child`].
#[cfg(not(target_os = "linux"))]
fn fork(
    program: &OsString,
    args: &[OsString],
    env: &[(&str, String)],
    parent: libc::pid_t,
    terminal: bool,
) -> io::Result<libc::pid_t> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (setpgid, signal, tcsetpgrp, getpid).
    unsafe {
        command.pre_exec(move || in_child(parent, terminal));
    }
    // Reaped by `Guarded::wait`; dropping a `Child` neither kills nor waits.
    let child = command.spawn()?;
    Ok(child.id() as libc::pid_t)
}

impl Guarded {
    /// The command's pid, which is also its process group's id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Takes the terminal back once the command has ended.
    pub fn reclaim_terminal(&mut self) {
        if std::mem::take(&mut self.terminal) {
            // SAFETY: getpgrp has no memory effects.
            hand_terminal(unsafe { libc::getpgrp() });
        }
    }

    /// Waits for the command to end and reaps it; its status.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only into `status`.
            if unsafe { libc::waitpid(self.pid, &mut status, 0) } == self.pid {
                return Ok(ExitStatus::from_raw(status));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

/// Sends `signal` to the command's whole process group (its children too).
pub fn signal_group(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill has no memory effects. The group leader is reaped only after its exit
    // event is handled, so the group id still names our group.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Whether memsem is in the foreground process group of the terminal on stdin.
fn owns_terminal() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only read process state.
    unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// Makes `group` the terminal's foreground group; SIGTTOU is ignored meanwhile, since the
/// caller may be in a background group by then.
fn hand_terminal(group: libc::pid_t) {
    // SAFETY: signal and tcsetpgrp are async-signal-safe and touch no memory of ours.
    unsafe {
        let previous = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(0, group);
        libc::signal(libc::SIGTTOU, previous);
    }
}

/// Runs in the child before exec: its own process group, the terminal, the death signal.
/// Calls only async-signal-safe functions and allocates nothing, also on failure.
fn in_child(parent: libc::pid_t, terminal: bool) -> io::Result<()> {
    // SAFETY: async-signal-safe calls on the child's own process state.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if terminal {
            hand_terminal(libc::getpid());
        }
        #[cfg(target_os = "linux")]
        {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // memsem may have died before the death signal was armed: then the child has
            // been re-parented already, and must not run unguarded.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ECHILD));
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = parent;
    }
    Ok(())
}

//! Starting the command as posix_spawn does: `clone(CLONE_VM | CLONE_VFORK)` runs the child
//! on a stack of its own in memsem's memory, with memsem's thread suspended until the child
//! has called execve (or given up). Nothing is copied — fork would copy the page tables and
//! make every page memsem writes afterwards fault — and the child can still be set up (its
//! process group, the terminal, `PR_SET_PDEATHSIG`), which posix_spawn cannot do.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use super::program::Program;

/// The child's stack: it only sets itself up and calls execve.
const STACK_SIZE: usize = 64 * 1024;

/// What the child reads, and the errno it leaves when it cannot start the program.
struct Shared<'a> {
    program: &'a mut Program,
    parent: libc::pid_t,
    terminal: bool,
    error: AtomicI32,
}

/// Starts `program` in a child set up by [`super::in_child`]; its pid.
pub fn start(
    program: &mut Program,
    parent: libc::pid_t,
    terminal: bool,
) -> io::Result<libc::pid_t> {
    let mut shared = Shared {
        program,
        parent,
        terminal,
        error: AtomicI32::new(0),
    };
    let mut stack: Vec<u8> = Vec::with_capacity(STACK_SIZE);
    // The stack grows down from its end, which must be 16-byte aligned.
    let top = stack.as_mut_ptr().wrapping_add(STACK_SIZE);
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: sigset_t is plain data, filled by sigfillset; pthread_sigmask only reads and
    // writes the two sets. clone runs `child` on `stack`, which outlives the call: with
    // CLONE_VFORK this thread is suspended until the child has called execve or exited, so
    // `shared` is neither moved nor read meanwhile.
    let pid = unsafe {
        // No signal may run one of memsem's handlers in the child before it has reset them.
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
        let pid = libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut shared).cast(),
        );
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        if pid < 0 {
            return Err(error);
        }
        pid
    };
    drop(stack);
    match shared.error.load(Ordering::SeqCst) {
        0 => Ok(pid),
        error => {
            // The child has exited: reap it.
            let mut status = 0;
            // SAFETY: waitpid writes only into `status`.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
            Err(io::Error::from_raw_os_error(error))
        }
    }
}

/// The child, between clone and execve. It shares memsem's memory: it calls only
/// async-signal-safe functions, allocates nothing and cannot unwind.
extern "C" fn child(shared: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `start` passes a pointer to its `Shared`, which nobody else touches while this
    // thread of memsem is suspended.
    let shared = unsafe { &mut *shared.cast::<Shared<'_>>() };
    // SAFETY: signal, sigemptyset and pthread_sigmask change only this process's own
    // signal state (no CLONE_SIGHAND: the handlers are a copy).
    unsafe {
        // memsem's handlers (and std's SIGPIPE ignore) are not the command's. Handlers end
        // with execve anyway; an ignored signal would stay ignored.
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    let error = match super::in_child(shared.parent, shared.terminal) {
        Ok(()) => {
            // SAFETY: as above. The command starts with no signal blocked, as with std.
            unsafe {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            }
            shared.program.exec()
        }
        Err(error) => error.raw_os_error().unwrap_or(libc::ECHILD),
    };
    shared.error.store(error, Ordering::SeqCst);
    // SAFETY: _exit ends the child at once, running nothing of memsem's.
    unsafe { libc::_exit(127) }
}

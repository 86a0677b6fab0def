//! What the supervising loops of `run` and `acquire` wait for — a signal to memsem, the
//! command's end, a lost lease — gathered on the calling thread, with no helper thread of
//! its own: signals through a self-pipe, the command's end through a pidfd, other threads'
//! news (the keep-alive's) as a message plus a byte on the same pipe.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

/// What the supervising loops of `run` and `acquire` react to.
#[derive(Debug)]
pub enum Event {
    /// memsem received this signal.
    Signal(i32),
    /// The command ended (not yet reaped).
    Exited(io::Result<()>),
    /// The lease could not be kept: why.
    Lost(String),
}

/// The signals memsem passes on to its command (or that end a wait).
pub const FORWARDED: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// The events of one `run` or `acquire`, from their creation on.
pub struct Events {
    signals: SignalDelivery<UnixStream, SignalOnly>,
    sent: Receiver<Event>,
    notifier: Notifier,
    /// The command's pidfd, until its end has been reported.
    child: Option<OwnedFd>,
    /// The pidfd was found readable: the command has ended.
    exited: bool,
    queue: VecDeque<Event>,
}

/// Sends an [`Event`] to the [`Events`] from another thread, waking it.
#[derive(Clone)]
pub struct Notifier {
    events: Sender<Event>,
    wake: Arc<UnixStream>,
}

impl Notifier {
    pub fn send(&self, event: Event) {
        if self.events.send(event).is_ok() {
            // A full pipe already holds a wake-up byte: nothing is lost.
            let _ = (&*self.wake).write(&[0]);
        }
    }
}

impl Events {
    /// Catches SIGINT, SIGTERM and SIGHUP from now on (as events; after the `Events` are
    /// dropped they are ignored).
    pub fn new() -> io::Result<Events> {
        let (read, write) = UnixStream::pair()?;
        let wake = write.try_clone()?;
        wake.set_nonblocking(true)?;
        let signals = SignalDelivery::with_pipe(read, write, SignalOnly, FORWARDED)?;
        let (events, sent) = mpsc::channel();
        Ok(Events {
            signals,
            sent,
            notifier: Notifier {
                events,
                wake: Arc::new(wake),
            },
            child: None,
            exited: false,
            queue: VecDeque::new(),
        })
    }

    /// What other threads send their events with.
    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    /// Reports [`Event::Exited`] once the child `pid` has ended, leaving it to be reaped by
    /// the caller: until then its pid cannot be reused, so signalling it stays safe.
    pub fn watch_child(&mut self, pid: libc::pid_t) {
        match pidfd_open(pid) {
            Ok(fd) => self.child = Some(fd),
            // A kernel older than 5.3: a thread waits instead.
            Err(_) => {
                let notifier = self.notifier();
                std::thread::spawn(move || {
                    notifier.send(Event::Exited(wait_without_reaping(pid)));
                });
            }
        }
    }

    /// The next event, waiting at most `timeout` (`None`: forever); `None` when the time ran
    /// out first.
    pub fn next(&mut self, timeout: Option<Duration>) -> Option<Event> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        loop {
            if let Some(event) = self.ready() {
                return Some(event);
            }
            let left = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    Some(left)
                }
                None => None,
            };
            let pipe = self.signals.get_read().as_raw_fd();
            let child = self.child.as_ref().map(AsRawFd::as_raw_fd);
            match wait_readable(pipe, child, left) {
                Ok(child_ended) => self.exited |= child_ended,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Polling two descriptors of our own cannot fail short of a bug: end the
                    // wait rather than spin.
                    return Some(Event::Exited(Err(error)));
                }
            }
        }
    }

    /// An event already there: signals first, then other threads' news, then the
    /// command's end.
    fn ready(&mut self) -> Option<Event> {
        // Drains the pipe, then reads what the handlers recorded: a signal or message that
        // comes after writes a byte that wakes the next poll.
        for signal in self.signals.pending() {
            self.queue.push_back(Event::Signal(signal));
        }
        while let Ok(event) = self.sent.try_recv() {
            self.queue.push_back(event);
        }
        if let Some(event) = self.queue.pop_front() {
            return Some(event);
        }
        if std::mem::take(&mut self.exited) && self.child.take().is_some() {
            return Some(Event::Exited(Ok(())));
        }
        None
    }
}

/// A pidfd for `pid` (Linux 5.3 and later).
fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor; nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Waits until `pipe` or `child` is readable or `timeout` runs out; whether `child` is.
fn wait_readable(pipe: RawFd, child: Option<RawFd>, timeout: Option<Duration>) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: pipe,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: child.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let count: libc::nfds_t = if child.is_some() { 2 } else { 1 };
    // Rounded up, so that a wait never ends before its time and spins.
    let millis = match timeout {
        Some(timeout) => {
            let millis = timeout.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX)
        }
        None => -1,
    };
    // SAFETY: `fds` is a valid array of `count` pollfd structures for the whole call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, millis) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(child.is_some() && fds[1].revents != 0)
}

/// Blocks until the child `pid` has ended, without reaping it.
fn wait_without_reaping(pid: libc::pid_t) -> io::Result<()> {
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
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_notified_from_another_thread_ends_the_wait() {
        // Whether the notice comes before or during the wait, the pipe keeps it.
        let mut events = Events::new().unwrap();
        let notifier = events.notifier();
        let thread = std::thread::spawn(move || {
            notifier.send(Event::Lost("gone".into()));
        });
        let event = events.next(Some(Duration::from_secs(10)));
        assert!(matches!(event, Some(Event::Lost(why)) if why == "gone"));
        thread.join().unwrap();
    }

    #[test]
    fn a_wait_without_events_times_out() {
        let mut events = Events::new().unwrap();
        let started = Instant::now();
        assert!(events.next(Some(Duration::from_millis(30))).is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn the_end_of_a_child_is_reported_once_and_leaves_it_unreaped() {
        let mut events = Events::new().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        events.watch_child(child.id() as libc::pid_t);
        let event = events.next(Some(Duration::from_secs(10)));
        assert!(matches!(event, Some(Event::Exited(Ok(())))), "{event:?}");
        assert!(events.next(Some(Duration::from_millis(10))).is_none());
        assert!(child.wait().unwrap().success());
    }
}

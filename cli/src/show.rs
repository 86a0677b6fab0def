//! How memsem shows things to people: a holder in one line, the default holder information,
//! and the live status line while waiting.

use std::time::Duration;

use console::{Term, style};
use memsem::{Holder, MAX_INFO_BYTES};

/// One line about a holder: who (its info, or token prefix) and the time left; a holder
/// that let go into a cooldown is said to be cooling down.
pub fn describe(holder: &Holder) -> String {
    let who = who(holder);
    match (holder.is_cooling_down(), left(holder)) {
        (true, Some(left)) => format!("{who}, cooling down (free again in {left})"),
        (true, None) => format!("{who}, cooling down"),
        (false, Some(left)) => format!("{who} (expires in {left})"),
        (false, None) => format!("{who} (never expires)"),
    }
}

/// Who holds it: its information, or the start of its token when it stored none.
pub fn who(holder: &Holder) -> String {
    match holder.info() {
        Some(info) => printable(info),
        None => format!("token {}…", holder.token_prefix()),
    }
}

/// The time the server says the key has left, as people write it.
pub fn left(holder: &Holder) -> Option<String> {
    holder
        .ttl()
        .map(|ttl| humantime::format_duration(ttl).to_string())
}

/// A duration as people write it, to the millisecond (`2s 345ms`).
pub fn human(duration: Duration) -> humantime::FormattedDuration {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(millis))
}

/// `text` with control characters (newlines, escapes) shown as spaces.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The default holder information: `host=HOST pid=PID cmd=COMMAND`, at most
/// [`MAX_INFO_BYTES`], on one line (a command's line breaks become spaces).
pub fn default_info(pid: u32, command: &str) -> String {
    let host = gethostname::gethostname();
    let mut info = format!(
        "host={} pid={pid} cmd={}",
        printable(&host.to_string_lossy()),
        printable(command)
    );
    if info.len() > MAX_INFO_BYTES {
        let mut end = MAX_INFO_BYTES;
        while !info.is_char_boundary(end) {
            end -= 1;
        }
        info.truncate(end);
    }
    info
}

/// A line on stderr repainted in place while memsem waits. Off unless stderr is a terminal
/// that can repaint (not `TERM=dumb`); the lock name is bold unless colours are off
/// (`NO_COLOR`, `CLICOLOR=0`, or not a colour terminal).
pub struct StatusLine {
    term: Term,
    pub enabled: bool,
    shown: bool,
    last: String,
}

impl StatusLine {
    /// A status line, shown only if `wanted` (not `--quiet`) and the terminal can repaint.
    pub fn new(wanted: bool) -> StatusLine {
        let term = Term::stderr();
        let enabled = wanted && term.is_term() && !console::is_dumb();
        StatusLine {
            term,
            enabled,
            shown: false,
            last: String::new(),
        }
    }

    /// Shows "waiting for lock NAME (Ns); ABOUT", cut to the terminal's width.
    pub fn waiting(&mut self, name: &str, waited_secs: u64, about: &str) {
        if !self.enabled {
            return;
        }
        let plain = format!("memsem: waiting for lock {name} ({waited_secs}s){about}");
        if self.shown && self.last == plain {
            return;
        }
        let width = usize::from(self.term.size().1).max(20) - 1;
        let text = if console::measure_text_width(&plain) > width {
            console::truncate_str(&plain, width, "…").into_owned()
        } else {
            let name = style(name).for_stderr().bold();
            format!("memsem: waiting for lock {name} ({waited_secs}s){about}")
        };
        let _ = self.term.clear_line();
        let _ = self.term.write_str(&text);
        let _ = self.term.flush();
        self.last = plain;
        self.shown = true;
    }

    /// Removes the line, if shown.
    pub fn clear(&mut self) {
        if self.shown {
            let _ = self.term.clear_line();
            let _ = self.term.flush();
            self.shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_info_is_one_line() {
        let lines = default_info(7, "sh -c 'a\r\nb'");
        assert!(!lines.contains(['\r', '\n']), "{lines}");
    }

    #[test]
    fn default_info_names_host_pid_and_command_within_the_limit() {
        let info = default_info(42, "backup --all");
        assert!(info.starts_with("host="), "{info}");
        assert!(info.ends_with(" pid=42 cmd=backup --all"), "{info}");
        let long = default_info(1, &"é".repeat(2000));
        assert!(long.len() <= MAX_INFO_BYTES);
        let lines = default_info(7, "sh -c 'a\r\nb'");
        assert!(!lines.contains(['\r', '\n']), "{lines}");
    }

    #[test]
    fn printable_hides_control_characters() {
        assert_eq!(printable("a\nb\x1b[1m"), "a b [1m");
    }
}

//! What a lock's value says about its holder: the token, then a line of metadata (host, pid,
//! acquire and refresh times), then the caller's info.
//!
//! ```text
//! 1f0c…32 hex…\nmemsem1 host=web-3 pid=4242 acquired=1763840000123 refreshed=1763840030456\nnightly import
//! ```
//!
//! A lock released with a cooldown keeps its value with `released=<ms>` added to the
//! metadata line, so that readers can tell a cooldown from a running holder.
//!
//! A value without the metadata line (the Perl module stores the bare token) is a holder
//! about which nothing else is known.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MARK: &str = "memsem1 ";

/// This process's host name, as the kernel knows it (no spaces, never empty); read once.
fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(read_host_name)
}

/// This process's id, read once: a system call saved on every acquire. (A process forked
/// from this one without `exec` that kept using its parent's client would record the
/// parent's id: the id is for people reading the holder record, no lock logic reads it.)
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

fn read_host_name() -> String {
    let clean: String = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    if clean.is_empty() {
        "unknown".to_string()
    } else {
        clean
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The metadata of a holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) acquired_ms: u64,
    pub(crate) refreshed_ms: u64,
    /// When the holder released the lock into a cooldown; `None` while it holds it.
    pub(crate) released_ms: Option<u64>,
}

impl Meta {
    /// The metadata of this process, acquiring now.
    #[cfg(test)]
    pub(crate) fn here() -> Meta {
        let now = now_ms();
        Meta {
            host: host_name().to_string(),
            pid: process_id(),
            acquired_ms: now,
            refreshed_ms: now,
            released_ms: None,
        }
    }

    /// Appends the metadata line (without a line end) to `out`.
    fn write_line(&self, out: &mut Vec<u8>) {
        write_line(
            out,
            &self.host,
            self.pid,
            self.acquired_ms,
            self.refreshed_ms,
        );
        if let Some(released) = self.released_ms {
            out.extend_from_slice(b" released=");
            decimal(out, released);
        }
    }

    fn parse(line: &str) -> Option<Meta> {
        let fields = line.strip_prefix(MARK)?;
        let mut meta = Meta {
            host: String::new(),
            pid: 0,
            acquired_ms: 0,
            refreshed_ms: 0,
            released_ms: None,
        };
        for field in fields.split(' ') {
            let (name, value) = field.split_once('=')?;
            match name {
                "host" => meta.host = value.to_string(),
                "pid" => meta.pid = value.parse().ok()?,
                "acquired" => meta.acquired_ms = value.parse().ok()?,
                "refreshed" => meta.refreshed_ms = value.parse().ok()?,
                "released" => meta.released_ms = Some(value.parse().ok()?),
                _ => {}
            }
        }
        Some(meta)
    }

    /// When it was acquired; `None` for a time the clock cannot hold (garbage in the value).
    pub(crate) fn acquired_at(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_millis(self.acquired_ms))
    }

    /// When it was released into a cooldown; `None` while held (or for garbage).
    pub(crate) fn released_at(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_millis(self.released_ms?))
    }

    /// When it was last refreshed; `None` for a time the clock cannot hold.
    pub(crate) fn refreshed_at(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_millis(self.refreshed_ms))
    }
}

/// Appends `n` in decimal to `out`.
fn decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `memsem1 host=… pid=… acquired=… refreshed=…` to `out`.
fn write_line(out: &mut Vec<u8>, host: &str, pid: u32, acquired_ms: u64, refreshed_ms: u64) {
    out.extend_from_slice(MARK.as_bytes());
    out.extend_from_slice(b"host=");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b" pid=");
    decimal(out, pid.into());
    out.extend_from_slice(b" acquired=");
    decimal(out, acquired_ms);
    out.extend_from_slice(b" refreshed=");
    decimal(out, refreshed_ms);
}

/// A lock value taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) token: Vec<u8>,
    pub(crate) meta: Option<Meta>,
    pub(crate) info: Option<String>,
}

impl Record {
    /// The value of a lock acquired now by this process: `token`, the metadata line of
    /// [`Meta::here`], and `info`; built in one buffer (what [`encode`](Self::encode) of such
    /// a record gives).
    pub(crate) fn fresh(token: &[u8], info: Option<&str>) -> Vec<u8> {
        let host = host_name();
        let info_len = info.map_or(0, |info| info.len() + 1);
        let mut value = Vec::with_capacity(token.len() + host.len() + 80 + info_len);
        value.extend_from_slice(token);
        value.push(b'\n');
        let now = now_ms();
        write_line(&mut value, host, process_id(), now, now);
        if let Some(info) = info {
            value.push(b'\n');
            value.extend_from_slice(info.as_bytes());
        }
        value
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut value = self.token.clone();
        if let Some(meta) = &self.meta {
            value.push(b'\n');
            meta.write_line(&mut value);
        }
        if let Some(info) = &self.info {
            value.push(b'\n');
            value.extend_from_slice(info.as_bytes());
        }
        value
    }

    pub(crate) fn decode(value: &[u8]) -> Record {
        let mut parts = value.splitn(2, |&b| b == b'\n');
        let token = parts.next().unwrap_or_default().to_vec();
        let rest = parts
            .next()
            .map(|rest| String::from_utf8_lossy(rest).into_owned());
        let Some(rest) = rest else {
            return Record {
                token,
                meta: None,
                info: None,
            };
        };
        let (first, after) = match rest.split_once('\n') {
            Some((first, after)) => (first.to_string(), Some(after.to_string())),
            None => (rest.clone(), None),
        };
        match Meta::parse(&first) {
            Some(meta) => Record {
                token,
                meta: Some(meta),
                info: after,
            },
            None => Record {
                token,
                meta: None,
                info: Some(rest),
            },
        }
    }

    /// The same record, marked as released now into a cooldown (a value without metadata,
    /// as the Perl module writes, stays as it is).
    pub(crate) fn cooled(value: &[u8]) -> Vec<u8> {
        let mut record = Record::decode(value);
        match record.meta.as_mut() {
            Some(meta) => meta.released_ms = Some(now_ms()),
            None => return value.to_vec(),
        }
        record.encode()
    }

    /// The same record, refreshed now.
    pub(crate) fn refreshed(value: &[u8]) -> Vec<u8> {
        let mut record = Record::decode(value);
        match record.meta.as_mut() {
            Some(meta) => meta.refreshed_ms = now_ms(),
            None => return value.to_vec(),
        }
        record.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cooled_record_says_when_it_was_released_and_keeps_the_rest() {
        let record = Record {
            token: b"abc".to_vec(),
            meta: Some(Meta::here()),
            info: Some("job".into()),
        };
        let cooled = Record::decode(&Record::cooled(&record.encode()));
        assert_eq!(cooled.token, record.token);
        assert_eq!(cooled.info, record.info);
        let meta = cooled.meta.unwrap();
        assert!(meta.released_at().is_some());
        assert!(record.meta.unwrap().released_at().is_none());
        assert_eq!(Record::cooled(b"perltoken"), b"perltoken");
    }

    #[test]
    fn round_trips_token_meta_and_info() {
        let record = Record {
            token: b"abc".to_vec(),
            meta: Some(Meta::here()),
            info: Some("job\nwith lines".into()),
        };
        assert_eq!(Record::decode(&record.encode()), record);
    }

    #[test]
    fn perl_values_are_a_bare_token() {
        let record = Record::decode(b"0123456789abcdef0123456789abcdef");
        assert_eq!(record.token, b"0123456789abcdef0123456789abcdef");
        assert_eq!((record.meta, record.info), (None, None));
    }

    #[test]
    fn foreign_second_lines_are_info() {
        let record = Record::decode(b"tok\nsomething else");
        assert_eq!(record.meta, None);
        assert_eq!(record.info.as_deref(), Some("something else"));
    }

    #[test]
    fn refresh_moves_only_the_refresh_time() {
        let mut meta = Meta::here();
        meta.refreshed_ms = 5;
        meta.acquired_ms = 5;
        let value = Record {
            token: b"t".to_vec(),
            meta: Some(meta),
            info: None,
        }
        .encode();
        let refreshed = Record::decode(&Record::refreshed(&value));
        let meta = refreshed.meta.unwrap();
        assert_eq!(meta.acquired_ms, 5);
        assert!(meta.refreshed_ms > 5);
        assert_eq!(Record::refreshed(b"bare"), b"bare");
    }

    #[test]
    fn absurd_times_from_the_network_are_no_panic_and_never_look_stale() {
        let value = format!(
            "t\n{MARK}host=h pid=1 acquired={} refreshed={}",
            u64::MAX,
            u64::MAX
        );
        let meta = Record::decode(value.as_bytes()).meta.unwrap();
        let now = SystemTime::now();
        assert!(meta.acquired_at().is_none_or(|at| at > now));
        assert!(
            meta.refreshed_at().is_none_or(|at| at > now),
            "a far-future refresh is never reaped"
        );
    }

    #[test]
    fn a_fresh_value_is_the_encoding_of_a_record_made_here() {
        for info in [None, Some("nightly import")] {
            let value = Record::fresh(b"tok", info);
            let record = Record::decode(&value);
            assert_eq!(record.encode(), value);
            assert_eq!(record.token, b"tok");
            assert_eq!(record.info.as_deref(), info);
            let meta = record.meta.unwrap();
            let here = Meta::here();
            assert_eq!((meta.host, meta.pid), (here.host, here.pid));
            assert_eq!(meta.acquired_ms, meta.refreshed_ms);
            assert!(meta.acquired_ms.abs_diff(here.acquired_ms) < 60_000);
        }
    }

    #[test]
    fn host_names_have_no_spaces() {
        let host = host_name();
        assert!(!host.is_empty() && !host.contains(' '));
    }
}

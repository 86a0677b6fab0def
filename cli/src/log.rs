//! The library's warnings on stderr. The library reports what it retries or cleans up (a
//! failed refresh, a lock lost by the keep-alive) through `tracing`; this subscriber prints
//! its WARN and ERROR events as `tracing-subscriber`'s plain format does (` WARN message
//! key=value`), and keeps nothing else: no span registry to set up at start, no work until
//! something is logged.

use std::fmt::{self, Write as _};
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Prints the library's warnings and errors on stderr from now on.
pub fn init() {
    let _ = tracing::subscriber::set_global_default(Warnings);
}

struct Warnings;

impl Subscriber for Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let _ = std::io::stderr().lock().write_all(line(event).as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The event as one line.
fn line(event: &Event<'_>) -> String {
    let mut fields = Fields {
        line: String::new(),
    };
    fields.line.push_str(match *event.metadata().level() {
        Level::ERROR => "ERROR ",
        Level::WARN => " WARN ",
        Level::INFO => " INFO ",
        Level::DEBUG => "DEBUG ",
        Level::TRACE => "TRACE ",
    });
    let start = fields.line.len();
    event.record(&mut FieldsFrom {
        fields: &mut fields,
        start,
    });
    fields.line.push('\n');
    fields.line
}

struct Fields {
    line: String,
}

/// Writes the fields after `start`, separated by spaces: the message as it is (terminal
/// escapes shown, not sent), the others as `name=value` with the value's `Debug`.
struct FieldsFrom<'a> {
    fields: &'a mut Fields,
    start: usize,
}

impl Visit for FieldsFrom<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let line = &mut self.fields.line;
        if line.len() > self.start {
            line.push(' ');
        }
        let _ = match field.name() {
            "message" => write!(Escaping(line), "{value:?}"),
            name => write!(line, "{}={value:?}", name.trim_start_matches("r#")),
        };
    }
}

/// Shows the characters a terminal would act on (ESC, BEL, BS, FF, DEL, C1 controls).
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for ch in text.chars() {
            match ch {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => {
                    write!(self.0, "\\x{:02x}", ch as u32)?;
                }
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                ch => self.0.push(ch),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects the lines the events would print.
    struct Collect(Arc<Mutex<Vec<String>>>);

    impl Subscriber for Collect {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            Warnings.enabled(metadata)
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            self.0.lock().unwrap().push(line(event));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// What `tracing-subscriber` writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn events() {
        let error = "timed out";
        tracing::warn!(lock = "job", error = %error, "refreshing the lease failed; retrying");
        tracing::warn!(margin = 3, "no refresh \x1b[31m confirmed");
        tracing::warn!(r#type = ?Some(1), "debug\u{85}value");
        tracing::error!("plain");
        tracing::info!("not shown");
    }

    #[test]
    fn warnings_print_as_the_plain_tracing_subscriber_format_does() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Collect(Arc::clone(&lines)), events);
        let ours = lines.lock().unwrap().concat();
        let buffer = Buffer::default();
        let reference = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_max_level(LevelFilter::WARN)
            .with_target(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(reference, events);
        let theirs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours.lines().count(), 4, "{ours}");
    }
}

//! The floor of `memsem run NAME -- COMMAND` (benchmark 5): the least a program can do to run
//! a command under a memcached lock, with the standard library only. It connects, adds the
//! key (`ms KEY 32 T60 ME`), spawns COMMAND and waits for it, then deletes the key (`md
//! KEY`). No CAS check, no lease refresh, no signal handling, no retries.
//!
//! ```text
//! cargo build --release -p memsem-tests --example floor_run
//! target/release/examples/floor_run HOST:PORT KEY COMMAND [ARGS...]
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, key, command, rest @ ..] = args.as_slice() else {
        eprintln!("usage: floor_run HOST:PORT KEY COMMAND [ARGS...]");
        return ExitCode::from(64);
    };
    match run(address, key, command, rest) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("floor_run: {error}");
            ExitCode::from(69)
        }
    }
}

fn run(address: &str, key: &str, command: &str, rest: &[String]) -> std::io::Result<u8> {
    if key.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(std::io::Error::other(
            "the key must be printable, without spaces",
        ));
    }
    let stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    let token = format!("{:032x}", std::process::id());
    write!(writer, "ms {key} 32 T60 ME\r\n{token}\r\n")?;
    reader.read_line(&mut line)?;
    if line != "HD\r\n" {
        return Ok(75);
    }
    let status = Command::new(command).args(rest).status()?;
    write!(writer, "md {key}\r\n")?;
    line.clear();
    reader.read_line(&mut line)?;
    Ok(status.code().unwrap_or(1).clamp(0, 255) as u8)
}

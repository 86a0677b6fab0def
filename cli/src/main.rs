//! `memsem`: flock(1) for a whole fleet. Runs a command while holding a lock on memcached,
//! and takes, gives back and inspects locks from shell scripts.

mod acquire;
mod child;
mod cli;
mod commands;
mod events;
mod exit;
mod inspect;
mod log;
mod parse;
mod run;
mod serve;
mod show;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match parse::parse(&args) {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version on stdout with success; usage errors go to stderr
            // with its own code 2, which sysexits calls EX_USAGE (64) — or, with --json,
            // to stdout as an object like every other error.
            if !error.use_stderr() {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            if args.iter().any(|arg| arg == "--json") {
                exit::set_json(true);
                let rendered = error.render().to_string();
                // The message without the usage lines that follow it.
                let message: Vec<&str> = rendered
                    .lines()
                    .take_while(|line| !line.trim().is_empty())
                    .map(str::trim)
                    .collect();
                let message = message.join(" ");
                exit::tell("usage", message.trim_start_matches("error: "), exit::USAGE);
            } else {
                let _ = error.print();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    exit::set_json(cli.global.json);
    if let Err(message) = cli::check_run_name(&args, &cli) {
        exit::tell("usage", &message, exit::USAGE);
        return ExitCode::from(exit::USAGE);
    }
    if !cli.global.quiet {
        log::init();
    }
    ExitCode::from(commands::dispatch(cli))
}

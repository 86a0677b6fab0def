//! `memsem`: flock(1) for a whole fleet. Runs a command while holding a lock on memcached,
//! and takes, gives back and inspects locks from shell scripts.

mod acquire;
mod cli;
mod commands;
mod exit;
mod run;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version on stdout with success; usage errors go to stderr
            // with its own code 2, which sysexits calls EX_USAGE (64).
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    ExitCode::from(commands::dispatch(cli))
}

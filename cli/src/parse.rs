//! Reading the command line. `memsem run`, whose start-up a short job pays on every call, is
//! first parsed against a command line holding only `run` and the global options: clap then
//! builds one subcommand instead of a dozen, and copies the global options into it alone.
//! Everything else — other subcommands, help, version, any error — goes through the whole
//! command line ([`Cli`]), so that what memsem prints never differs.

use std::ffi::{OsStr, OsString};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::cli::{Cli, Command, Global, RunArgs};

/// `memsem run` alone; the same definitions as in [`Cli`].
#[derive(Debug, Parser)]
#[command(name = "memsem", version)]
struct RunOnly {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: RunCommand,
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    Run(RunArgs),
}

/// The command line `args` (the program's name first), as [`Cli`] parses it.
pub fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    let run_only = RunOnly::command();
    if subcommand(&run_only, args).is_some_and(|name| name == "run")
        && let Ok(RunOnly {
            global,
            command: RunCommand::Run(run),
        }) = run_only
            .try_get_matches_from(args)
            .and_then(|mut matches| RunOnly::from_arg_matches_mut(&mut matches))
    {
        return Ok(Cli {
            global,
            command: Command::Run(run),
        });
    }
    Cli::try_parse_from(args)
}

/// The subcommand's name: the first argument that is neither one of `command`'s own
/// options (the global ones) nor the value of one. `None` when an argument is anything else
/// (help, version, an unknown option, a short option cluster that is not all global flags):
/// the whole command line decides.
fn subcommand<'a>(command: &clap::Command, args: &'a [OsString]) -> Option<&'a OsStr> {
    let takes_value = |found: Option<&clap::Arg>| found.map(|arg| arg.get_action().takes_values());
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let text = arg.to_str()?;
        if let Some(long) = text.strip_prefix("--") {
            if long.is_empty() {
                return None;
            }
            let (name, inline_value) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            let found = command.get_arguments().find(|a| a.get_long() == Some(name));
            if takes_value(found)? && !inline_value {
                rest.next();
            }
        } else if let Some(shorts) = text.strip_prefix('-').filter(|s| !s.is_empty()) {
            for short in shorts.chars() {
                let found = command
                    .get_arguments()
                    .find(|a| a.get_short() == Some(short));
                if takes_value(found)? {
                    return None;
                }
            }
        } else {
            return Some(arg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<OsString> {
        line.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_subcommand_is_found_past_the_global_options_and_their_values() {
        let command = RunOnly::command();
        let found = |line: &[&str]| subcommand(&command, &args(line)).map(|s| s.to_owned());
        assert_eq!(found(&["memsem", "run", "job", "true"]).unwrap(), "run");
        assert_eq!(
            found(&["memsem", "--servers", "run", "status", "x"]).unwrap(),
            "status"
        );
        assert_eq!(
            found(&["memsem", "--servers=a:1", "-q", "--json", "run"]).unwrap(),
            "run"
        );
        assert_eq!(
            found(&["memsem", "--lock-delay", "0", "run", "j", "--", "ls"]).unwrap(),
            "run"
        );
        for unsure in [
            &["memsem", "--help", "run"][..],
            &["memsem", "-V"],
            &["memsem", "--bogus", "run"],
            &["memsem", "-qx", "run"],
            &["memsem", "--", "run"],
            &["memsem"],
        ] {
            assert_eq!(found(unsure), None, "{unsure:?}");
        }
    }

    #[test]
    fn run_is_parsed_as_the_whole_command_line_parses_it() {
        let line = args(&[
            "memsem",
            "--servers",
            "a:1",
            "-q",
            "run",
            "-n",
            "2",
            "--ttl",
            "30s",
            "--json",
            "job",
            "--",
            "ls",
            "-l",
        ]);
        let fast = parse(&line).unwrap();
        let whole = Cli::try_parse_from(&line).unwrap();
        assert_eq!(format!("{fast:?}"), format!("{whole:?}"));
    }

    #[test]
    fn errors_and_help_come_from_the_whole_command_line() {
        for line in [
            &["memsem", "run"][..],
            &["memsem", "run", "--help"],
            &["memsem", "run", "--ttl", "soon", "job", "true"],
        ] {
            let fast = parse(&args(line)).unwrap_err().render().to_string();
            let whole = Cli::try_parse_from(line).unwrap_err().render().to_string();
            assert_eq!(fast, whole, "{line:?}");
        }
    }
}

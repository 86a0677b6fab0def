//! `memsem status` and `memsem break`: looking at a lock's holders, and removing a dead one.

use std::io::{BufRead, IsTerminal, Write};

use memsem::{Client, Error, Holder, Semaphore};
use serde_json::{Value, json};

use crate::cli::{BreakArgs, Global, StatusArgs};
use crate::exit;
use crate::show::{self, describe};

/// `memsem status`: exit 0 while a permit is free, 1 when every permit is held or cooling
/// down.
pub fn status(client: &Client, args: &StatusArgs, global: &Global) -> Result<u8, Error> {
    let sem = client.semaphore(&args.name)?.with_permits(args.permits)?;
    let holders = sem.holders()?;
    let available = args.permits.saturating_sub(holders.len() as u32);
    if global.json {
        let mut data = json!({
            "name": args.name,
            "server": sem.server(),
            "held": available == 0,
            "permits": args.permits,
            "available": available,
            "holders": holders.iter().map(holder_json).collect::<Vec<_>>(),
        });
        // One permit: the holder's fields at the top, as scripts read them.
        if let (Some(first), 1) = (holders.first(), args.permits)
            && let (Value::Object(data), Value::Object(fields)) = (&mut data, holder_json(first))
        {
            data.extend(fields);
        }
        println!("{data}");
    } else if !global.quiet {
        print_status(&sem, &holders, available);
    }
    Ok(if available == 0 { exit::NO } else { 0 })
}

fn print_status(sem: &Semaphore, holders: &[Holder], available: u32) {
    let name = sem.name();
    match (sem.permits(), holders) {
        (1, []) => println!("{name}: free"),
        (1, [holder]) if holder.is_cooling_down() => {
            let left = show::left(holder).unwrap_or_else(|| "never".into());
            println!(
                "{name}: cooling down, free again in {left} (released by {})",
                show::who(holder)
            );
        }
        (1, [holder, ..]) => println!("{name}: held by {}", describe(holder)),
        (permits, holders) => {
            println!("{name}: {available} of {permits} permits free");
            for holder in holders {
                println!("  permit {}: {}", holder.slot(), describe(holder));
            }
        }
    }
}

fn holder_json(holder: &Holder) -> Value {
    json!({
        "slot": holder.slot(),
        "ttl_secs": holder.ttl().map(|ttl| ttl.as_secs()),
        "info": holder.info(),
        "token_prefix": holder.token_prefix(),
        "host": holder.host(),
        "pid": holder.pid(),
        "cooling_down": holder.is_cooling_down(),
    })
}

/// `memsem break`: shows each holder and deletes its key once confirmed (or with `--yes`),
/// only if it is unchanged since it was shown. Exit 0 when every holder shown was broken, 1
/// when there was none, one changed meanwhile, or the answer was no.
pub fn break_lock(client: &Client, args: &BreakArgs, global: &Global) -> Result<u8, Error> {
    let sem = client.semaphore(&args.name)?.with_permits(args.permits)?;
    let holders = sem.holders()?;
    if holders.is_empty() {
        exit::tell(
            "free",
            &format!("lock {} is not held: nothing to break", args.name),
            exit::NO,
        );
        return Ok(exit::NO);
    }
    let mut all_broken = true;
    let mut broken = Vec::new();
    for holder in &holders {
        let what = match args.permits {
            1 => format!("lock {} held by {}", args.name, describe(holder)),
            _ => format!(
                "lock {} (permit {}) held by {}",
                args.name,
                holder.slot(),
                describe(holder)
            ),
        };
        if !args.yes {
            match confirm(&what) {
                Some(true) => {}
                Some(false) => {
                    all_broken = false;
                    continue;
                }
                None => {
                    let message =
                        format!("{what}: not breaking it without --yes (no terminal to ask on)");
                    exit::tell("usage", &message, exit::USAGE);
                    return Ok(exit::USAGE);
                }
            }
        }
        if sem.break_holder(holder)? {
            if !global.quiet && !global.json {
                eprintln!("memsem: broke {what}");
            }
            broken.push(holder.slot());
        } else {
            all_broken = false;
            if !global.quiet || global.json {
                exit::tell(
                    "changed",
                    &format!("{what}: not broken, it changed since it was read (look again)"),
                    exit::NO,
                );
            }
        }
    }
    if global.json && all_broken {
        println!("{}", json!({ "name": args.name, "broken": broken }));
    }
    Ok(if all_broken { 0 } else { exit::NO })
}

/// Asks on the terminal whether to break: `None` when there is no terminal to ask on.
fn confirm(what: &str) -> Option<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    eprint!("memsem: break {what}? It must not be running any more. [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if stdin.lock().read_line(&mut answer).is_err() {
        return Some(false);
    }
    Some(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

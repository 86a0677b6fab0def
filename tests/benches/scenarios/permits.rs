//! Scenario 4: what an acquire costs with N permits, half of them held by somebody else.

use std::time::Instant;

use memsem::Permit;

use crate::{Sizes, median_us, stats};

/// The counters one acquire is charged: gets (slot reads) and sets (adds).
fn gets_and_sets(address: &str) -> (u64, u64) {
    let stats = stats(address);
    let counter = |name: &str| stats.get(name).copied().unwrap_or(0);
    (counter("cmd_get"), counter("cmd_set"))
}

pub fn acquire_cost(address: &str, sizes: &Sizes) {
    let n = sizes.acquires;
    let warm = n / 10;
    println!(
        "## 4. N permits: one acquire with half the slots held by others (median of {n}, µs)\n"
    );
    println!(
        "An acquire with 1 permit is one add; with N > 1 it is one pipelined read of all N slot \
         keys, then one add to a free slot picked at random. gets/sets per acquire are the \
         server's `stats` cmd_get/cmd_set deltas over the timed acquires (the releases, CAS \
         deletes, count in neither). \"µs to read all slots\" times `holders()`, which is that \
         read alone.\n"
    );
    println!(
        "| permits | held by others | round trips | µs per acquire | × 1 permit | µs to read all slots | gets/acq | sets/acq | commands/acq |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let client = crate::client(address).expect("memsem client");
    let others = crate::client(address).expect("the other holders' client");
    let mut one_permit_us = None;
    for &permits in sizes.permit_counts {
        let name = format!("bench-permits-{permits}");
        let held: Vec<Permit> = (0..permits / 2)
            .map(|_| {
                others
                    .semaphore(&name)
                    .and_then(|sem| sem.with_permits(permits))
                    .expect("a valid semaphore")
                    .try_acquire()
                    .expect("memcached answers")
                    .expect("a free slot")
            })
            .collect();
        let sem = client
            .semaphore(&name)
            .and_then(|sem| sem.with_permits(permits))
            .expect("a valid semaphore");
        let acquire = || {
            sem.try_acquire()
                .expect("memcached answers")
                .expect("a free slot")
        };
        for _ in 0..warm {
            acquire().release().expect("release");
        }
        let (gets_before, sets_before) = gets_and_sets(address);
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let permit = acquire();
            samples.push(started.elapsed());
            permit.release().expect("release");
        }
        let (gets_after, sets_after) = gets_and_sets(address);
        // The first round trip of an acquire alone: the read of every slot.
        let mut reads = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let holders = sem.holders().expect("memcached answers");
            reads.push(started.elapsed());
            assert_eq!(holders.len() as u32, permits / 2);
        }
        for permit in held {
            permit.release().expect("release a held slot");
        }
        let us = median_us(samples);
        let read_us = median_us(reads);
        let base = *one_permit_us.get_or_insert(us);
        let gets = (gets_after - gets_before) as f64 / n as f64;
        let sets = (sets_after - sets_before) as f64 / n as f64;
        println!(
            "| {permits} | {} | {} | {us:.1} | {:.2} | {read_us:.1} | {gets:.1} | {sets:.1} | {:.1} |",
            permits / 2,
            if permits == 1 { 1 } else { 2 },
            us / base,
            gets + sets,
        );
    }
    println!();
}

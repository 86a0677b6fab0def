//! The `metrics` feature against a real memcached: what an operator's recorder receives.

use std::time::Duration;

use memsem::{Error, WaitPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use crate::harness::{Memcached, unique};

/// One metric: its name, its labels (sorted) and its value.
type Metric = (String, Vec<(String, String)>, DebugValue);

fn metrics_of(snapshotter: &Snapshotter) -> Vec<Metric> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<_> = key
                .labels()
                .map(|label| (label.key().to_string(), label.value().to_string()))
                .collect();
            labels.sort();
            (key.name().to_string(), labels, value)
        })
        .collect()
}

/// The values of the metric `name` with exactly `labels`.
fn values<'a>(
    metrics: &'a [Metric],
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a DebugValue> {
    metrics
        .iter()
        .filter(move |(n, l, _)| {
            n == name
                && l.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .eq(labels.iter().copied())
        })
        .map(|(_, _, value)| value)
}

fn counter(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> u64 {
    values(metrics, name, labels)
        .map(|value| match value {
            DebugValue::Counter(count) => *count,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn samples(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> usize {
    values(metrics, name, labels)
        .map(|value| match value {
            DebugValue::Histogram(samples) => samples.len(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

#[test]
fn acquisitions_contention_waits_and_losses_are_counted_with_bounded_labels() {
    let server = Memcached::start();
    let name = unique("metrics");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    ::metrics::with_local_recorder(&recorder, || {
        let policy = WaitPolicy::new()
            .poll_time(Duration::from_millis(20))
            .max_wait(Duration::from_millis(200));
        let sem = server.semaphore(&name).with_wait_policy(policy);
        let mut held = sem.try_acquire().unwrap().expect("free");
        assert!(sem.try_acquire().unwrap().is_none());
        assert!(matches!(sem.wait_acquire(), Err(Error::Timeout { .. })));
        assert!(server.raw().delete(format!("__lock__{name}").as_bytes()));
        assert!(
            held.refresh(Duration::from_secs(60))
                .unwrap_err()
                .is_lock_lost()
        );
        held.forget();
        sem.wait_acquire().unwrap().release().unwrap();
    });
    let metrics = metrics_of(&snapshotter);
    assert_eq!(
        counter(&metrics, "memsem_acquisitions_total", &[]),
        2,
        "{metrics:?}"
    );
    // One refused try, then at least two refused attempts of the timed-out wait.
    assert!(
        counter(&metrics, "memsem_contended_total", &[]) >= 3,
        "{metrics:?}"
    );
    assert_eq!(counter(&metrics, "memsem_wait_timeouts_total", &[]), 1);
    let outcome = |outcome| samples(&metrics, "memsem_wait_seconds", &[("outcome", outcome)]);
    assert_eq!(outcome("timeout"), 1);
    assert_eq!(outcome("acquired"), 1);
    let missing = [("reason", "missing")];
    assert_eq!(counter(&metrics, "memsem_lost_total", &missing), 1);
    assert!(
        metrics
            .iter()
            .all(|(_, labels, _)| labels.iter().all(|(key, _)| key != "lock")),
        "no lock names unless asked: {metrics:?}"
    );

    // Asked for (a process-wide switch, so within this one test): the name is a label.
    let named = DebuggingRecorder::new();
    let snapshotter = named.snapshotter();
    ::metrics::with_local_recorder(&named, || {
        memsem::metrics::label_lock_names(true);
        let taken = server.semaphore(&name).try_acquire();
        memsem::metrics::label_lock_names(false);
        taken.unwrap().expect("free").release().unwrap();
    });
    let metrics = metrics_of(&snapshotter);
    let labels = [("lock", name.as_str())];
    let named = counter(&metrics, "memsem_acquisitions_total", &labels);
    assert_eq!(named, 1, "{metrics:?}");
}

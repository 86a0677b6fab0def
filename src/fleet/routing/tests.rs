use super::*;

fn specs(weights: &[u32]) -> Vec<ServerSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| ServerSpec::new(format!("10.0.0.{}", i + 1), 11211).with_weight(w))
        .collect()
}

fn invalid_config_message(result: Result<impl fmt::Debug>) -> String {
    match result {
        Err(Error::InvalidConfig(message)) => message,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

/// Every routing memsem has: its own two and each twemproxy combination.
fn all_routings() -> Vec<Routing> {
    let mut all = vec![Routing::Ketama, Routing::CacheMemcached];
    for &hash in TwemproxyHash::ALL {
        for distribution in [TwemproxyDistribution::Ketama, TwemproxyDistribution::Modula] {
            all.push(Routing::Twemproxy { hash, distribution });
        }
    }
    all
}

/// A deterministic spread of keys: ASCII, lock names and high bytes.
fn keys(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut key = format!("__lock__job-{i}").into_bytes();
            if i % 3 == 0 {
                key.push(0x80 | (i % 128) as u8);
            }
            key
        })
        .collect()
}

#[test]
fn routing_parses_and_displays_its_names() {
    for routing in [Routing::Ketama, Routing::CacheMemcached] {
        assert_eq!(routing.to_string().parse::<Routing>().unwrap(), routing);
    }
    for &hash in TwemproxyHash::ALL {
        for distribution in [TwemproxyDistribution::Ketama, TwemproxyDistribution::Modula] {
            let routing = Routing::Twemproxy { hash, distribution };
            let text = routing.to_string();
            assert_eq!(text, format!("twemproxy:{hash}:{distribution}"));
            assert_eq!(text.parse::<Routing>().unwrap(), routing);
        }
    }
    let default = Routing::Twemproxy {
        hash: TwemproxyHash::Fnv1a64,
        distribution: TwemproxyDistribution::Ketama,
    };
    assert_eq!("twemproxy".parse::<Routing>().unwrap(), default);
    assert_eq!("twemproxy:fnv1a_64".parse::<Routing>().unwrap(), default);
    for bad in [
        "twemproxy:",
        "twemproxy:md5:",
        "twemproxy:md5:ketama:x",
        "twemproxy:sha1",
        "ketama:md5",
        "twemproxy:md5:random",
    ] {
        let message = invalid_config_message(bad.parse::<Routing>());
        assert!(!message.is_empty(), "{bad}");
    }
    let message = invalid_config_message("twemproxy:md5:random".parse::<Routing>());
    assert!(message.contains("random"), "{message}");
    assert_eq!("ketama".parse::<Routing>().unwrap(), Routing::Ketama);
    let message = invalid_config_message("Ketama".parse::<Routing>());
    assert!(message.contains("\"Ketama\""), "{message}");
}

#[test]
fn ring_new_validates_hand_built_specs() {
    assert!(invalid_config_message(Ring::new(Routing::Ketama, &[])).contains("no memcached"));
    let cases = [
        (ServerSpec::new("", 11211), "empty host"),
        (ServerSpec::new("a", 0), "port 0"),
        (ServerSpec::new("a", 1).with_weight(0), "weight 0"),
    ];
    for (spec, expected) in cases {
        for routing in [Routing::Ketama, Routing::CacheMemcached] {
            let message = invalid_config_message(Ring::new(routing, std::slice::from_ref(&spec)));
            assert!(message.contains(expected), "{message}");
        }
    }
    let twice = [
        ServerSpec::new("a", 1),
        ServerSpec::new("a", 1).with_weight(2),
    ];
    assert!(invalid_config_message(Ring::new(Routing::Ketama, &twice)).contains("twice"));
}

#[test]
fn ketama_lookup_is_a_lower_bound_with_wrap_around() {
    let servers = specs(&[1, 1, 1]);
    let ring = Ring::new(Routing::Ketama, &servers).unwrap();
    let Table::Ketama { points } = &ring.table else {
        panic!("not a ketama table");
    };
    for key in keys(500) {
        let hash = ketama::md5_word(&key, 0);
        let expected = points
            .iter()
            .find(|p| p.value >= hash)
            .unwrap_or(&points[0])
            .server as usize;
        assert_eq!(ring.server_for(&key), expected);
    }
}

#[test]
fn bucket_layout_repeats_each_server_weight_times_in_order() {
    let ring = Ring::new(Routing::CacheMemcached, &specs(&[1, 1, 3])).unwrap();
    let Table::Buckets { ends, .. } = &ring.table else {
        panic!("not a bucket table");
    };
    let layout: Vec<usize> = (0..5).map(|b| bucket_owner(ends, b)).collect();
    assert_eq!(layout, [0, 1, 2, 2, 2]);
    for key in keys(500) {
        let expected = [0, 1, 2, 2, 2][ketama::cmhash(&key) as usize % 5];
        assert_eq!(ring.server_for(&key), expected);
    }
}

#[test]
fn one_server_takes_every_key() {
    for routing in all_routings() {
        let ring = Ring::new(routing, &specs(&[5])).unwrap();
        for key in keys(100) {
            assert_eq!(ring.server_for(&key), 0);
        }
    }
}

#[test]
fn odd_keys_never_panic() {
    let long = vec![0xffu8; 100_000];
    for routing in all_routings() {
        let ring = Ring::new(routing, &specs(&[1, 2, 3])).unwrap();
        for key in [&b""[..], b"\0", b"\xff\xfe", &long] {
            assert!(ring.server_for(key) < 3);
        }
    }
}

#[test]
fn ketama_removing_a_server_moves_only_its_keys() {
    let servers = specs(&[1, 1, 1, 1, 1]);
    let before = Ring::new(Routing::Ketama, &servers).unwrap();
    let removed = 2;
    let mut remaining = servers.clone();
    remaining.remove(removed);
    let after = Ring::new(Routing::Ketama, &remaining).unwrap();
    // Index in `remaining` of each index in `servers`.
    let renumber = |index: usize| if index > removed { index - 1 } else { index };
    let (mut moved, mut orphaned) = (0, 0);
    let keys = keys(10_000);
    for key in &keys {
        let old = before.server_for(key);
        let new = after.server_for(key);
        if old == removed {
            orphaned += 1;
        } else if renumber(old) != new {
            moved += 1;
        }
    }
    assert_eq!(moved, 0, "keys of surviving servers moved");
    // The removed server held about a fifth of the keys.
    assert!((1_000..3_000).contains(&orphaned), "{orphaned}");
}

#[test]
fn routing_spreads_keys_by_weight() {
    for routing in all_routings() {
        let ring = Ring::new(routing, &specs(&[1, 1, 3])).unwrap();
        let mut counts = [0usize; 3];
        for key in keys(10_000) {
            counts[ring.server_for(&key)] += 1;
        }
        // Weight 3 of 5 should take about 60%: well over 1.5 times each other server
        // (twemproxy's fnv1_64 spreads these similar keys unevenly, 21/27/52%).
        assert!(
            counts[2] * 2 > counts[0] * 3 && counts[2] * 2 > counts[1] * 3,
            "{routing}: {counts:?}"
        );
    }
}
